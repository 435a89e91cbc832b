"""Issue 10's pure logic, table-driven: mailbox answers, the hybrid census, the vendor search and the
"vendor app found nowhere" rule."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from auditor.collect import census_from
from auditor.config import VendorSettings
from auditor.errors import ErrorCode, GraphError
from auditor.evaluate import describe_vendor_search, exit_code, vendor_filters
from auditor.graph.reader import MailboxAnswer, classify_mailbox_item
from auditor.model import Billing, RunMode, RunResult, Status, TenantResult, vendor_found_nowhere

PREVIEW = (
    "Access is denied. Check credentials and try again. REST APIs for this mailbox are currently in "
    "preview. You can find more information about the preview REST APIs at https://dev.outlook.com/."
)


def error(code: str, message: str = "x") -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, {"value": "shared"}, MailboxAnswer("shared")),
        (200, {"userPurpose": "room"}, MailboxAnswer("room")),  # the whole settings object
        (200, {"userPurpose": {"value": "user"}}, MailboxAnswer("user")),  # an old documented shape
        (200, {}, MailboxAnswer("unknown")),
        (
            404,
            error("MailboxNotEnabledForRESTAPI"),
            MailboxAnswer(
                None, no_mailbox=True, status=404, code="MailboxNotEnabledForRESTAPI", hybrid_kind=True
            ),
        ),
        (
            404,
            error("MailboxNotHostedInExchangeOnline"),
            MailboxAnswer(
                None, no_mailbox=True, status=404, code="MailboxNotHostedInExchangeOnline", hybrid_kind=True
            ),
        ),
        (
            404,
            error("ErrorInvalidUser"),
            MailboxAnswer(None, no_mailbox=True, status=404, code="ErrorInvalidUser"),
        ),
        (
            403,
            error("ErrorAccessDenied", PREVIEW),
            MailboxAnswer(
                None, failure="403 ErrorAccessDenied", status=403, code="ErrorAccessDenied", hybrid_kind=True
            ),
        ),
        (
            403,
            error("ErrorAccessDenied", "Access is denied. Check credentials and try again."),
            MailboxAnswer(None, failure="403 ErrorAccessDenied", status=403, code="ErrorAccessDenied"),
        ),
        (429, error("TooManyRequests"), None),
        (503, {}, None),
    ],
)
def test_classify_mailbox_item(status: int, body: dict[str, Any], expected: MailboxAnswer | None) -> None:
    assert classify_mailbox_item(status, body) == expected


def user(uid: str, *, synced: bool = False, mail: bool = True) -> dict[str, Any]:
    return {
        "id": uid,
        "displayName": uid,
        "userPrincipalName": f"{uid}@x.example",
        "mail": f"{uid}@x.example" if mail else None,
        "onPremisesSyncEnabled": True if synced else None,
    }


NOT_ENABLED = MailboxAnswer(
    None, no_mailbox=True, status=404, code="MailboxNotEnabledForRESTAPI", hybrid_kind=True
)
PREVIEW_403 = MailboxAnswer(None, failure="403 ErrorAccessDenied", status=403, hybrid_kind=True)
PLAIN_403 = MailboxAnswer(None, failure="403 ErrorAccessDenied", status=403)


@pytest.mark.parametrize(
    ("people", "answers", "counts"),
    [
        # synced + mail + on-premises answer: on_premises
        ([user("a", synced=True)], {"a": NOT_ENABLED}, {"on_premises": 1}),
        ([user("a", synced=True)], {"a": PREVIEW_403}, {"on_premises": 1}),
        # a cloud-only user answering 404 MailboxNotEnabledForRESTAPI has no mailbox
        ([user("a")], {"a": NOT_ENABLED}, {"no_mailbox": 1}),
        # a cloud-only user answering the preview 403: unclassified, but never "missing permission"
        (
            [user("a"), user("b")],
            {"a": PREVIEW_403, "b": MailboxAnswer("user")},
            {"unclassified": 1, "user": 1},
        ),
        # a synced user in Exchange Online is classified as usual
        ([user("a", synced=True)], {"a": MailboxAnswer("shared")}, {"shared": 1}),
        # every Exchange Online mailbox answered a policy 403 but some are on-premises: still a permission error
        (
            [user("a"), user("b", synced=True)],
            {"a": PLAIN_403, "b": PREVIEW_403},
            "PERMISSION_DENIED",
        ),
        # all on-premises: not a permission error
        (
            [user("a", synced=True), user("b", synced=True)],
            {"a": PREVIEW_403, "b": PREVIEW_403},
            {"on_premises": 2},
        ),
        # a policy hides one mailbox of several: incomplete, not an error
        (
            [user("a"), user("b")],
            {"a": PLAIN_403, "b": MailboxAnswer("user")},
            {"unclassified": 1, "user": 1},
        ),
    ],
)
def test_census_from_hybrid(
    people: list[dict[str, Any]], answers: dict[str, MailboxAnswer], counts: dict[str, int] | str
) -> None:
    if isinstance(counts, str):
        with pytest.raises(GraphError) as caught:
            census_from(people, answers, "T", "app")
        assert caught.value.code is ErrorCode(counts)
        return
    census = census_from(people, answers, "T", "app")
    expected = {k: 0 for k in census.counts()} | counts
    assert census.counts() == expected


@pytest.mark.parametrize(
    ("vendor", "filters"),
    [
        (VendorSettings(), ["displayName eq 'USS AzureAD'"]),
        (
            VendorSettings(app_display_name="", publisher_tenant_id="p1"),
            ["appOwnerOrganizationId eq 'p1'"],
        ),
        (
            VendorSettings(app_id="a1", publisher_tenant_id="p1"),
            ["appId eq 'a1'", "displayName eq 'USS AzureAD'", "appOwnerOrganizationId eq 'p1'"],
        ),
        (VendorSettings(app_display_name="O'Brien"), ["displayName eq 'O''Brien'"]),
    ],
)
def test_vendor_filters(vendor: VendorSettings, filters: list[str]) -> None:
    assert vendor_filters(vendor) == filters
    assert describe_vendor_search(vendor) == "servicePrincipals where " + " or ".join(filters)


def test_a_vendor_without_any_identifier_is_described_as_no_search() -> None:
    # The config refuses such a [vendor]; the words still say what is missing should one be built in code.
    assert vendor_filters(VendorSettings(app_display_name="")) == []
    assert describe_vendor_search(VendorSettings(app_display_name="")) == (
        "no vendor search: [vendor] sets no app_id, app_display_name or publisher_tenant_id"
    )


def result(status: Status) -> TenantResult:
    return TenantResult(f"t-{status.value}", "id", status, Billing(0, 1.0, 0.0))


NC, C, E, N, A = (
    Status.NOT_CONNECTED,
    Status.COMPLIANT,
    Status.ERROR,
    Status.NON_COMPLIANT,
    Status.AMBIGUOUS,
)


@pytest.mark.parametrize(
    ("statuses", "nowhere", "code"),
    [
        ([NC], False, 0),  # one tenant not connected: nothing says the config is wrong
        ([NC, NC], True, 1),
        ([NC, NC, NC], True, 1),
        ([NC, C], False, 0),
        ([NC, A], False, 1),  # found (several times) in one: not "nowhere"
        ([NC, NC, E], True, 3),  # an error wins, the notice still shows
        ([NC, E], False, 3),  # one tenant audited without error
        ([E, E], False, 3),
        ([NC, NC, N], False, 1),
        ([], False, 0),
    ],
)
def test_vendor_found_nowhere_and_exit_code(statuses: list[Status], nowhere: bool, code: int) -> None:
    results = [result(s) for s in statuses]
    assert vendor_found_nowhere(results) is nowhere
    assert exit_code(results) == code
    now = datetime(2026, 1, 1, tzinfo=UTC)
    run = RunResult(
        "r", now, now, "0", RunMode.AUDIT, tuple(results), vendor_search="servicePrincipals where x"
    )
    notice = run.vendor_nowhere_notice
    assert (notice is not None) is nowhere
    if notice:
        assert "servicePrincipals where x" in notice
        assert RunResult.from_dict(run.to_dict()).vendor_nowhere_notice == notice


def test_the_terminal_summary_names_the_search_when_the_vendor_app_is_found_nowhere() -> None:
    from auditor.output import summary_text

    now = datetime(2026, 1, 1, tzinfo=UTC)
    search = "servicePrincipals where appOwnerOrganizationId eq 'p1'"
    nowhere = RunResult("r", now, now, "0", RunMode.AUDIT, (result(NC), result(NC)), vendor_search=search)
    text = summary_text(nowhere)
    assert "WARNING: The vendor app was found in none of the 2 tenants audited" in text and search in text
    fine = RunResult("r", now, now, "0", RunMode.AUDIT, (result(NC), result(C)), vendor_search=search)
    assert "WARNING" not in summary_text(fine)
