/* uss-auditor report: table sorting and filtering, opening a tenant from the URL fragment, printing.
   Inlined into audit.html (its hash is in the page's Content-Security-Policy). It never builds HTML
   from data: it only reorders and hides rows the page already has, and sets text and attributes, so
   tenant-supplied text can never become markup. Without JavaScript the page is complete, just static. */
(function () {
  "use strict";

  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  function byId(id) {
    return document.getElementById(id);
  }

  /* --- the tenants table ------------------------------------------------------------------------- */

  function setUpTenantsTable() {
    var table = byId("tenants-table");
    if (!table) {
      return;
    }
    var tbody = table.tBodies[0];
    var rows = Array.prototype.filter.call(tbody.rows, function (row) {
      return row.hasAttribute("data-tenant-id");
    });
    rows.forEach(function (row, index) {
      row.setAttribute("data-index", String(index));
    });
    var emptyRow = byId("tenants-empty");
    var form = byId("tenant-filters");
    var statusSelect = byId("filter-status");
    var tagSelect = byId("filter-tag");
    var textInput = byId("filter-text");
    var counter = byId("tenant-count");
    var announcer = byId("table-announcer");
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);

    function matches(row) {
      var status = statusSelect.value;
      if (status && row.getAttribute("data-status") !== status) {
        return false;
      }
      var tag = tagSelect.value;
      if (tag) {
        var tags = JSON.parse(row.getAttribute("data-tags") || "[]");
        if (tags.indexOf(tag) < 0) {
          return false;
        }
      }
      var words = textInput.value.trim().toLocaleLowerCase().split(/\s+/).filter(Boolean);
      var haystack = row.getAttribute("data-search") || "";
      return words.every(function (word) {
        return haystack.indexOf(word) >= 0;
      });
    }

    function applyFilters() {
      var shown = 0;
      rows.forEach(function (row) {
        var visible = matches(row);
        row.hidden = !visible;
        if (visible) {
          shown += 1;
        }
      });
      if (emptyRow) {
        emptyRow.hidden = shown !== 0;
      }
      var text = "Showing " + shown + " of " + rows.length + " tenants.";
      counter.textContent = text;
      counter.setAttribute("data-shown", String(shown));
    }

    function sortValue(row, column) {
      var cell = row.cells[column];
      return cell ? cell.getAttribute("data-sort-value") || "" : "";
    }

    function sortBy(header, direction) {
      var column = headers.indexOf(header);
      var numeric = header.getAttribute("data-sort-type") === "number";
      var factor = direction === "ascending" ? 1 : -1;
      var sorted = rows.slice().sort(function (a, b) {
        var x = sortValue(a, column);
        var y = sortValue(b, column);
        // Unknown values ("") stay last whichever way the column is sorted.
        if (x === "" || y === "") {
          if (x === y) {
            return Number(a.getAttribute("data-index")) - Number(b.getAttribute("data-index"));
          }
          return x === "" ? 1 : -1;
        }
        var order = numeric ? Number(x) - Number(y) : collator.compare(x, y);
        if (order === 0) {
          return Number(a.getAttribute("data-index")) - Number(b.getAttribute("data-index"));
        }
        return order * factor;
      });
      sorted.forEach(function (row) {
        tbody.appendChild(row);
      });
      if (emptyRow) {
        tbody.appendChild(emptyRow);
      }
      headers.forEach(function (th) {
        if (th === header) {
          th.setAttribute("aria-sort", direction);
        } else {
          th.removeAttribute("aria-sort");
        }
      });
      var name = header.getAttribute("data-label") || header.textContent.trim();
      announcer.textContent = "Sorted by " + name + ", " + direction + ".";
    }

    headers.forEach(function (header) {
      var button = header.querySelector("button.sort");
      if (!button) {
        return;
      }
      button.addEventListener("click", function () {
        var current = header.getAttribute("aria-sort");
        var first = header.getAttribute("data-sort-first") || "ascending";
        var next;
        if (current === "ascending") {
          next = "descending";
        } else if (current === "descending") {
          next = "ascending";
        } else {
          next = first;
        }
        sortBy(header, next);
      });
    });

    [statusSelect, tagSelect].forEach(function (control) {
      control.addEventListener("change", applyFilters);
    });
    textInput.addEventListener("input", applyFilters);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      applyFilters();
    });
    form.addEventListener("reset", function () {
      window.setTimeout(applyFilters, 0);
    });

    // Status cards in the summary filter the table to their status.
    Array.prototype.forEach.call(document.querySelectorAll("[data-filter-status]"), function (button) {
      button.addEventListener("click", function () {
        statusSelect.value = button.getAttribute("data-filter-status");
        applyFilters();
        byId("tenants").scrollIntoView({ block: "start" });
        statusSelect.focus({ preventScroll: true });
      });
    });

    form.hidden = false;
    applyFilters();
  }

  /* --- tenant details: #tenant-... opens that tenant -------------------------------------------- */

  function openFromHash() {
    var id = "";
    try {
      id = decodeURIComponent(window.location.hash.slice(1));
    } catch (error) {
      return;
    }
    if (!id) {
      return;
    }
    var target = byId(id);
    if (!target || target.tagName !== "DETAILS") {
      return;
    }
    target.open = true;
    target.scrollIntoView({ block: "start" });
    var summary = target.querySelector("summary");
    if (summary) {
      summary.focus({ preventScroll: true });
    }
  }

  /* --- printing: every tenant's detail is printed open ------------------------------------------ */

  var closedBeforePrint = [];

  function openAllForPrint() {
    closedBeforePrint = Array.prototype.filter.call(document.querySelectorAll("details.tenant"), function (d) {
      return !d.open;
    });
    closedBeforePrint.forEach(function (d) {
      d.open = true;
    });
  }

  function restoreAfterPrint() {
    closedBeforePrint.forEach(function (d) {
      d.open = false;
    });
    closedBeforePrint = [];
  }

  setUpTenantsTable();
  openFromHash();
  window.addEventListener("hashchange", openFromHash);
  window.addEventListener("beforeprint", openAllForPrint);
  window.addEventListener("afterprint", restoreAfterPrint);
  document.documentElement.setAttribute("data-ready", "true");
})();
