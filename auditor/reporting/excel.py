"""The Excel report (``audit.xlsx``), written with openpyxl: no Office, no PowerShell module.

Sheets: Summary, Tenants, Findings, Shared mailboxes, Remediation, Errors, each drawn from the same
rows as the HTML page (:mod:`auditor.reporting.rows`). With history (``insights``), a Changes sheet
(what changed since the previous run) follows the Summary and a Trend sheet (the last 30 runs) ends the
workbook; the Tenants sheet gains the gap-age and accrued-cost columns and the Summary the history figures.
When history is unavailable both sheets hold the reason instead. Every sheet has a styled, frozen header row, an
Excel table (which brings the autofilter), fitted column widths, number / currency / date formats and
status colours by conditional formatting.

Tenant data is never a formula: every text cell is written with the string data type, and one that a
spreadsheet would read as a formula or DDE payload (``=``, ``+``, ``-``, ``@``, tab, CR) also gets the
"quote prefix" style, so it stays inert even when someone edits the cell. Characters XML cannot hold
become U+FFFD instead of failing the report.
"""

from __future__ import annotations

import errno
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from copy import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell, WriteOnlyCell
from openpyxl.formatting.rule import CellIsRule
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet as Worksheet
from openpyxl.worksheet.filters import AutoFilter
from openpyxl.worksheet.table import Table as ExcelTable
from openpyxl.worksheet.table import TableColumn, TableStyleInfo

from auditor.history.insights import RunInsights
from auditor.model import RunResult, Severity, Status
from auditor.reporting import rows
from auditor.reporting.atomic import atomic_path
from auditor.reporting.rows import Column, ColumnKind, Table
from auditor.reporting.text import report_text

try:  # openpyxl writes through lxml when it is installed (a dependency: it is a fifth faster)
    from lxml.etree import SerialisationError

    _SERIALISATION_ERRORS: tuple[type[Exception], ...] = (SerialisationError,)
except ImportError:  # pragma: no cover - lxml missing: openpyxl's own writer raises OSError
    _SERIALISATION_ERRORS = ()

__all__ = [
    "HISTORY_SHEETS",
    "SHEETS",
    "build_workbook",
    "excel_text",
    "money_format",
    "render_excel",
    "sheet_names",
]

# Sheet titles, in order; their tables' names (for structured references) follow.
SHEETS: Final = ("Summary", "Tenants", "Findings", "Shared mailboxes", "Remediation", "Errors")
# With history: "Changes" goes right after the Summary, "Trend" last.
HISTORY_SHEETS: Final = ("Changes", "Trend")
_TABLE_NAMES: Final = {
    "Changes": "ChangeList",
    "Trend": "TrendList",
    "Tenants": "TenantList",
    "Findings": "FindingList",
    "Shared mailboxes": "SharedMailboxList",
    "Remediation": "RemediationList",
    "Errors": "ErrorList",
}

# Text a spreadsheet would evaluate (OWASP "CSV injection" prefixes).
_FORMULA_PREFIXES: Final = ("=", "+", "-", "@", "\t", "\r")
_MAX_CELL_TEXT: Final = 32_767

_HEADER_FILL: Final = PatternFill("solid", start_color="1F3A5F", end_color="1F3A5F")
_HEADER_FONT: Final = Font(bold=True, color="FFFFFF")
_HEADER_BORDER: Final = Border(bottom=Side(style="medium", color="0B1F33"))
_TITLE_FONT: Final = Font(bold=True, size=16)
_UNKNOWN_FONT: Final = Font(italic=True, color="57606A")
_LINK_FONT: Final = Font(color="0563C1", underline="single")
_TOP: Final = Alignment(vertical="top")
_WRAP_TOP: Final = Alignment(vertical="top", wrap_text=True)
_RIGHT_TOP: Final = Alignment(horizontal="right", vertical="top")
_TABLE_STYLE: Final = TableStyleInfo(name="TableStyleLight9", showRowStripes=True)

# Same palette as the HTML report: (fill, font colour).
_STATUS_COLOURS: Final[Mapping[Status, tuple[str, str]]] = {
    Status.COMPLIANT: ("DAFBE1", "116329"),
    Status.NON_COMPLIANT: ("FFEBE9", "A40E26"),
    Status.REMEDIATED: ("DDF4FF", "0550AE"),
    Status.NOT_CONNECTED: ("EAEEF2", "424A53"),
    Status.AMBIGUOUS: ("FFF8C5", "7D4E00"),
    Status.ERROR: ("FBEFFF", "6639BA"),
}
_SEVERITY_COLOURS: Final[Mapping[Severity, tuple[str, str]]] = {
    Severity.CRITICAL: ("FFEBE9", "A40E26"),
    Severity.HIGH: ("FFEBE9", "A40E26"),
    Severity.MEDIUM: ("FFF8C5", "7D4E00"),
    Severity.LOW: ("EAEEF2", "424A53"),
    Severity.INFO: ("EAEEF2", "424A53"),
}

_COUNT_FORMAT: Final = "#,##0"
_DAYS_FORMAT: Final = "#,##0.0"
_DATETIME_FORMAT: Final = "yyyy-mm-dd hh:mm:ss"
_MIN_WIDTH: Final = 8
_MAX_WIDTH: Final = 60
_WIDE_WIDTH: Final = 80
_LINE_HEIGHT: Final = 15  # points per line of 11 pt text


def render_excel(run: RunResult, out_path: Path, *, insights: rows.Insights = None) -> Path:
    """Write the workbook for ``run`` atomically to ``out_path``; returns it.

    ``insights`` (from :mod:`auditor.history`) adds the Changes and Trend sheets and the gap columns;
    a ``HistoryUnavailable`` puts its reason where they would be; None leaves them out.

    The workbook is written in openpyxl's write-only (streaming) mode: each row goes to the file as it is
    appended, so memory does not grow with the fleet's mailbox count.
    """
    try:
        workbook = build_workbook(run, insights)
        with atomic_path(Path(out_path)) as tmp:
            workbook.save(tmp)
    except _SERIALISATION_ERRORS as exc:  # lxml reports a failed write (a full disk) in its own way
        raise _as_os_error(exc) from exc
    return Path(out_path)


def _as_os_error(exc: Exception) -> OSError:
    """lxml's "IO_ENOSPC"-style serialisation error as the OSError a failed write is everywhere else."""
    name = str(exc).strip().removeprefix("IO_")
    code = getattr(errno, name, None) if name.isidentifier() else None
    if isinstance(code, int):
        return OSError(code, os.strerror(code))
    return OSError(errno.EIO, f"the workbook could not be written ({exc})")


def sheet_names(insights: rows.Insights = None) -> tuple[str, ...]:
    """The workbook's sheet titles, in order, with or without history."""
    if insights is None:
        return SHEETS
    changes, trend = HISTORY_SHEETS
    return (SHEETS[0], changes, *SHEETS[1:], trend)


def build_workbook(run: RunResult, insights: rows.Insights = None) -> Workbook:
    """The write-only workbook for ``run``, every sheet filled (save it once); ``insights`` as for
    :func:`render_excel`."""
    workbook = Workbook(write_only=True)
    workbook.properties.creator = f"uss-auditor {run.tool_version}"
    workbook.properties.title = f"USS AzureAD audit {rows.format_datetime(run.started_at)}"
    summary = workbook.create_sheet(SHEETS[0])
    _summary_sheet(summary, run, rows.history_figures(insights))
    tables: dict[str, Callable[[], Table]] = {
        "Tenants": lambda: rows.tenant_rows(run, insights),
        "Findings": lambda: rows.finding_rows(run),
        "Remediation": lambda: rows.remediation_rows(run),
        "Errors": lambda: rows.error_rows(run),
    }
    if isinstance(insights, RunInsights):
        history = insights
        tables["Changes"] = lambda: rows.change_rows(history)
        tables["Trend"] = lambda: rows.trend_rows(history)
    notice = rows.history_notice(insights)
    for title in sheet_names(insights)[1:]:
        sheet = workbook.create_sheet(title)
        if title == "Shared mailboxes":
            # The one sheet that grows with the fleet's mailboxes: streamed a tenant at a time, twice (the
            # column widths, then the rows), never held whole.
            _rows_sheet(
                sheet,
                rows.SHARED_MAILBOX_COLUMNS,
                lambda: rows.shared_mailbox_records(run),
                rows.shared_mailbox_count(run),
                rows.SHARED_MAILBOX_EMPTY_NOTE,
                _TABLE_NAMES[title],
                run.currency,
            )
        elif title in tables:
            # One table at a time: its rows are built, streamed out, and dropped before the next.
            _table_sheet(sheet, tables[title](), _TABLE_NAMES[title], run.currency)
        elif notice is not None:
            _notice_sheet(sheet, notice)
    return workbook


def excel_text(value: object) -> str:
    """How a text value is stored: as a string, control and bidi characters marked visibly and capped
    at the reports' free-text length (:mod:`auditor.reporting.text`), anything XML still cannot hold
    replaced, never beyond Excel's cell limit. (Tests compare against this.)"""
    text: str = ILLEGAL_CHARACTERS_RE.sub("\ufffd", report_text(str(value)))
    return text[:_MAX_CELL_TEXT]


# --- sheets ---------------------------------------------------------------------------------------------


def _summary_sheet(sheet: Worksheet, run: RunResult, history: Sequence[rows.Figure] = ()) -> None:
    widths = (34, 30, 18, 60, 80)
    for letter, width in zip("ABCDE", widths, strict=True):
        sheet.column_dimensions[letter].width = width
    header_row = 3
    sheet.freeze_panes = f"A{header_row + 1}"
    _page_setup(sheet, header_row, fit_width=True)

    title = _text_cell(sheet, "USS AzureAD audit: permissions and shared-mailbox billing")
    title.font = _TITLE_FONT
    sheet.append([title])
    if run.vendor_nowhere_notice:
        # Row 2 is free above the figures: the one warning that concerns the config, not a tenant.
        warning = _text_cell(sheet, f"WARNING: {run.vendor_nowhere_notice}")
        warning.font = Font(bold=True, color="B3261E")
        sheet.append([warning])
    else:
        sheet.append([])

    figures = (*rows.run_figures(run), *history)
    _header(sheet, header_row, ("Figure", "Value", "Note"))
    for figure in figures:
        value = WriteOnlyCell(sheet)
        _put_value(value, Column(figure.key, figure.label, figure.kind), figure.value, run.currency)
        sheet.append([_text_cell(sheet, figure.label), value, _text_cell(sheet, figure.note)])
    last = header_row + len(figures)
    _add_table(sheet, "RunFigures", header_row, last, ("Figure", "Value", "Note"))

    statuses = rows.status_rows(run)
    sheet.append([])
    status_header = last + 2
    _header(sheet, status_header, [c.header for c in statuses.columns])
    for offset, record in enumerate(statuses.records(), start=1):
        cells = []
        lines = 1
        for index, column in enumerate(statuses.columns, start=1):
            cell = WriteOnlyCell(sheet)
            _put_value(cell, column, record[column.key], "")
            if index in (4, 5):  # the prose columns ("What it means", "What to do") wrap
                cell.alignment = _WRAP_TOP
                lines = max(lines, _wrapped_lines(str(cell.value or ""), widths[index - 1]))
            cells.append(cell)
        # An explicit height: LibreOffice prints wrapped cells at the default height (overlapping the next
        # row) unless the row says how tall it is; Excel then keeps this height too.
        sheet.row_dimensions[status_header + offset].height = _LINE_HEIGHT * lines + 3
        sheet.append(cells)
    status_last = status_header + len(statuses)
    _add_table(sheet, "StatusCounts", status_header, status_last, [c.header for c in statuses.columns])
    _status_colours(sheet, f"A{status_header + 1}:A{status_last}")


def _wrapped_lines(text: str, width: float) -> int:
    """How many lines ``text`` takes in a column ``width`` characters wide (wrapping at spaces)."""
    room = max(1, int(width) - 2)
    lines = 0
    for paragraph in text.split("\n"):
        length = 0
        count = 1
        for word in paragraph.split():
            need = len(word) if length == 0 else length + 1 + len(word)
            if need > room and length:
                count += 1
                length = len(word)
            else:
                length = need
            while length > room:
                count += 1
                length -= room
        lines += count
    return max(1, lines)


def _notice_sheet(sheet: Worksheet, notice: str) -> None:
    """A history sheet without history: the reason, so "no history" never reads as "no changes"."""
    sheet.column_dimensions["A"].width = _WIDE_WIDTH
    cell = _text_cell(sheet, notice)
    cell.font = _UNKNOWN_FONT
    sheet.append([cell])


def _table_sheet(sheet: Worksheet, table: Table, table_name: str, currency: str) -> None:
    records = table.records()
    _rows_sheet(sheet, table.columns, lambda: records, len(records), table.empty_note, table_name, currency)


def _rows_sheet(
    sheet: Worksheet,
    columns: Sequence[Column],
    records: Callable[[], Iterable[Mapping[str, Any]]],
    count: int,
    empty_note: str,
    table_name: str,
    currency: str,
) -> None:
    """A data sheet of ``count`` rows; ``records()`` gives them afresh each time it is called (twice)."""
    # Write-only: widths, panes and print setup go before the first row.
    _fit_columns(sheet, columns, records())
    sheet.freeze_panes = "B2" if table_name in ("TenantList", "ChangeList") else "A2"
    _page_setup(sheet, 1)
    _header(sheet, 1, [c.header for c in columns])
    written = 0
    styles = CellStyles(sheet)
    _take_cells_as_given(sheet)
    for record in records():
        row_currency = str(record.get("currency") or currency)
        cells = []
        for column in columns:
            cell = WriteOnlyCell(sheet)
            _put_value(cell, column, record[column.key], row_currency, styles)
            cells.append(cell)
        sheet.append(cells)
        written += 1
    if written != count:  # the table's range below must cover exactly the rows written
        raise ValueError(f"sheet {sheet.title}: {written} rows written, {count} expected")
    last_row = 1 + count
    if count:
        _add_table(sheet, table_name, 1, last_row, [c.header for c in columns])
    else:
        note = _text_cell(sheet, empty_note)
        note.font = _UNKNOWN_FONT
        sheet.append([note])

    keys = [c.key for c in columns]
    for key in ("status", "previous_status"):
        if key in keys and count:
            letter = get_column_letter(keys.index(key) + 1)
            _status_colours(sheet, f"{letter}2:{letter}{last_row}")
    if "severity" in keys and count:
        letter = get_column_letter(keys.index("severity") + 1)
        _severity_colours(sheet, f"{letter}2:{letter}{last_row}")


# --- cells ---------------------------------------------------------------------------------------------


def _header(sheet: Worksheet, row: int, headers: Iterable[str]) -> None:
    """Append the header row (it must be row ``row``: its height is set before it is written)."""
    sheet.row_dimensions[row].height = 30
    cells = []
    for text in headers:
        cell = _text_cell(sheet, text)
        cell.fill = _HEADER_FILL
        cell.font = _HEADER_FONT
        cell.border = _HEADER_BORDER
        cell.alignment = Alignment(wrap_text=True, vertical="center")
        cells.append(cell)
    sheet.append(cells)


def _text_cell(sheet: Worksheet, value: object) -> Cell:
    cell = WriteOnlyCell(sheet)
    _put_text(cell, value)
    return cell


def _put_text(cell: Cell, value: object) -> None:
    """Store ``value`` as an inert string, whatever it looks like; an empty text leaves the cell empty."""
    if _set_text(cell, value):
        cell.quotePrefix = True


def _set_text(cell: Cell, value: object) -> bool:
    """:func:`_put_text` without the style: True when the text needs Excel's quote prefix (it would
    otherwise read as a formula)."""
    text = excel_text(value)
    if not text:
        cell.value = None
        return False
    cell.value = text
    cell.data_type = "s"  # openpyxl types "=..." as a formula; force a string
    return text.startswith(_FORMULA_PREFIXES)


def _take_cells_as_given(sheet: Worksheet) -> None:
    """Let ``sheet`` take appended rows of cells as they are.

    openpyxl's write-only ``append`` first tries every item as a plain value and takes a cell only from the
    ValueError that raises (formatting the cell's repr on the way): about a sixth of the time of writing a
    large sheet. A data sheet's rows are all cells (:func:`_rows_sheet`), so each is placed at its row and
    column, as openpyxl does, without that detour. ``tests/reporting`` reads every sheet back."""

    def cells_to_row(cells: Iterable[Cell], row_idx: int) -> Iterator[Cell]:
        for col_idx, cell in enumerate(cells, 1):
            if cell is None:
                continue
            cell.column = col_idx
            cell.row = row_idx
            if cell.hyperlink is not None:
                cell.hyperlink.ref = cell.coordinate
            yield cell

    sheet._values_to_row = cells_to_row


class CellStyles:
    """The few styles of a data sheet's cells, each registered with the workbook once.

    openpyxl hashes every font, alignment and number format it is given to find the style's index in the
    workbook, which cost most of the time of writing a large sheet; a cell whose style was seen before
    gets a copy of that style's indexes instead. Only module-level style objects are used (the key is their
    identity, and each is kept alive by the cache)."""

    def __init__(self, sheet: Worksheet) -> None:
        self.sheet = sheet
        self._seen: dict[tuple[int, int, str | None, bool], tuple[Any, Any, Any]] = {}

    def apply(
        self,
        cell: Cell,
        *,
        font: Font | None = None,
        alignment: Alignment | None = None,
        number_format: str | None = None,
        quote: bool = False,
    ) -> None:
        key = (id(font), id(alignment), number_format, quote)
        seen = self._seen.get(key)
        if seen is None:
            model = WriteOnlyCell(self.sheet)
            if font is not None:
                model.font = font
            if alignment is not None:
                model.alignment = alignment
            if number_format is not None:
                model.number_format = number_format
            if quote:
                model.quotePrefix = True
            seen = self._seen[key] = (font, alignment, model._style)
        cell._style = copy(seen[2])


def _put_value(
    cell: Cell, column: Column, value: Any, currency: str, styles: CellStyles | None = None
) -> None:
    """Store one table value in ``cell`` by its column's kind, with that kind's style."""
    apply = (styles or CellStyles(cell.parent)).apply
    kind = column.kind
    number_format: str | None = None
    if kind in (ColumnKind.COUNT, ColumnKind.MONEY):
        if value is None:
            quote = _set_text(cell, rows.UNKNOWN)
            apply(cell, font=_UNKNOWN_FONT, alignment=_RIGHT_TOP, quote=quote)
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            apply(cell, quote=_set_text(cell, value))
            return
        cell.value = value
        number_format = _COUNT_FORMAT if kind is ColumnKind.COUNT else money_format(currency)
    elif kind is ColumnKind.DAYS:
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            apply(cell, quote=_set_text(cell, "" if value is None else value), alignment=_align(column))
            return
        cell.value = value
        number_format = _DAYS_FORMAT
    elif kind is ColumnKind.DATETIME:
        if value is None:
            _set_text(cell, "")
            return
        if not isinstance(value, datetime):
            apply(cell, quote=_set_text(cell, value), alignment=_align(column))
            return
        cell.value = _naive_utc(value)
        number_format = _DATETIME_FORMAT
    elif kind is ColumnKind.FLAG:
        apply(cell, quote=_set_text(cell, "Yes" if value else "No"), alignment=_align(column))
        return
    elif kind is ColumnKind.LINK:
        quote = _set_text(cell, value or "")
        if value and str(value).startswith("https://"):
            cell.hyperlink = excel_text(value)
            apply(cell, quote=quote, font=_LINK_FONT, alignment=_align(column))
        else:
            apply(cell, quote=quote, alignment=_align(column))
        return
    else:
        apply(cell, quote=_set_text(cell, "" if value is None else value), alignment=_align(column))
        return
    apply(cell, number_format=number_format, alignment=_align(column))


def _align(column: Column) -> Alignment:
    # Top-aligned, so a row whose prose wraps still reads left to right; prose columns wrap.
    return _WRAP_TOP if column.wide else _TOP


def money_format(currency: str) -> str:
    """Excel number format for an amount in ``currency`` (``"£"#,##0.00``; ``#,##0.00 "CHF"``)."""
    symbol = rows.currency_symbol(currency)
    if symbol is not None:
        return f'"{symbol}"#,##0.00'
    code = re.sub(r"[^A-Za-z]", "", currency)[:8]
    return f'#,##0.00" {code}"' if code else "#,##0.00"


def _naive_utc(value: datetime) -> datetime:
    # Excel has no time zones: store UTC wall-clock time (headers say "UTC").
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


# --- sheet furniture --------------------------------------------------------------------------------------


def _add_table(sheet: Worksheet, name: str, first_row: int, last_row: int, headers: Sequence[str]) -> None:
    ref = f"A{first_row}:{get_column_letter(len(headers))}{last_row}"
    table = ExcelTable(displayName=name, ref=ref)
    table.tableStyleInfo = _TABLE_STYLE
    # Write-only mode cannot read the header cells back: the table's columns are named here, as written.
    table.tableColumns = [
        TableColumn(id=index, name=excel_text(header)) for index, header in enumerate(headers, start=1)
    ]
    table.autoFilter = AutoFilter(ref=ref)
    with warnings.catch_warnings():  # "you must add table columns manually": done just above
        warnings.filterwarnings("ignore", message="In write-only mode", category=UserWarning)
        sheet.add_table(table)


def _status_colours(sheet: Worksheet, ref: str) -> None:
    for status, (fill, font) in _STATUS_COLOURS.items():
        sheet.conditional_formatting.add(ref, _equals_rule(status.value, fill, font))


def _severity_colours(sheet: Worksheet, ref: str) -> None:
    for severity, (fill, font) in _SEVERITY_COLOURS.items():
        sheet.conditional_formatting.add(ref, _equals_rule(severity.value, fill, font))


def _equals_rule(text: str, fill: str, font: str) -> CellIsRule:
    return CellIsRule(
        operator="equal",
        formula=[f'"{text}"'],
        fill=PatternFill("solid", start_color=fill, end_color=fill),
        font=Font(color=font, bold=True),
    )


def _fit_columns(sheet: Worksheet, columns: Sequence[Column], records: Iterable[Mapping[str, Any]]) -> None:
    # One pass over the records (they may be streamed from disk): the longest text per narrow column.
    longest = [
        max((len(word) for word in column.header.split()), default=0) + 3  # room for the filter button
        for column in columns
    ]
    narrow = [(i, column) for i, column in enumerate(columns) if not column.wide]
    for record in records:
        for i, column in narrow:
            longest[i] = max(longest[i], len(_display_text(column, record.get(column.key))))
    for index, column in enumerate(columns):
        letter = get_column_letter(index + 1)
        if column.wide:
            sheet.column_dimensions[letter].width = _WIDE_WIDTH
        else:
            sheet.column_dimensions[letter].width = min(_MAX_WIDTH, max(_MIN_WIDTH, longest[index] + 2))


def _display_text(column: Column, value: Any) -> str:
    if value is None:
        return rows.UNKNOWN if column.kind in (ColumnKind.COUNT, ColumnKind.MONEY) else ""
    if column.kind is ColumnKind.MONEY and isinstance(value, int | float):
        return f"£{value:,.2f}"
    if column.kind is ColumnKind.COUNT and isinstance(value, int):
        return f"{value:,}"
    if column.kind is ColumnKind.DAYS and isinstance(value, int | float):
        return f"{value:,.1f}"
    if column.kind is ColumnKind.DATETIME:
        return "2025-01-01 00:00:00"
    if column.kind is ColumnKind.FLAG:
        return "Yes" if value else "No"
    return str(value)


def _page_setup(sheet: Worksheet, title_row: int, *, fit_width: bool = False) -> None:
    # Landscape with the header repeated on every page; only the narrow Summary is shrunk to one page
    # width (a data sheet of 18 columns would print unreadably small).
    sheet.page_setup.orientation = "landscape"
    sheet.print_title_rows = f"{title_row}:{title_row}"
    if fit_width:
        sheet.page_setup.fitToWidth = 1
        sheet.page_setup.fitToHeight = 0
        sheet.sheet_properties.pageSetUpPr.fitToPage = True
