"""A demo-like run built straight from the model, for the report tests and the README screenshots.

Fifteen tenants mirror ``config/demo-fleet.toml`` (every status, most findings, remediation outcomes,
errors, unknown costs, Fabrikam's hostile mailbox names). ``sample_run(hostile=True)`` adds a tenant
whose every free-text field is an attack on the reports (markup, script, formulas, a control character).

``tests/reporting/data/audit.json`` is ``sample_run().to_dict()`` saved: the screenshots render from it
and a test keeps it in step. Regenerate it with ``python -m tests.reporting.sample``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Final

from auditor.errors import ErrorCode, TenantError
from auditor.evaluate import admin_consent_url
from auditor.model import (
    Billing,
    Finding,
    FindingCode,
    IdentificationMethod,
    IdentifiedServicePrincipal,
    MailboxCensus,
    Remediation,
    RemediationAction,
    RunMode,
    RunResult,
    ServicePrincipalRecord,
    Severity,
    SharedMailbox,
    Status,
    TenantResult,
    money,
)

MARGIES: Final = "Margie's Travel"
SAVED_RUN: Final = Path(__file__).parent / "data" / "audit.json"

PRICE: Final = 2.50
CURRENCY: Final = "GBP"
VENDOR_APP_ID: Final = "7e1b3f0c-2d54-4c8e-9a61-5f0c3b2a9d17"
PUBLISHER: Final = "c0ffee00-5ca1-4ab1-9e55-00000000c0de"
STARTED: Final = datetime(2025, 11, 26, 2, 0, 0, tzinfo=UTC)
FINISHED: Final = STARTED + timedelta(minutes=3, seconds=17)

# Strings that attack an HTML page or a spreadsheet when shown unescaped / unquoted.
XSS_PAYLOADS: Final = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "<svg onload=alert(1)>",
    "javascript:alert(1)",
    "</script><script>alert(2)</script>",
    "{{ 7*7 }}",
)
FORMULA_PAYLOADS: Final = ('=HYPERLINK("http://x","y")', "+1+1", "-2", "@SUM(A1)", "=1+1")
HOSTILE_TENANT_NAME: Final = '"><img src=x onerror=alert(1)> Hostile <script>alert(1)</script>'
HOSTILE_TENANT_ID: Final = "3c8f1e52-7a41-4d0b-9c6e-1f2a3b4c5d99"

_NAMES: Final = (
    "Accounts",
    "Reception",
    "Sales",
    "Support",
    "Invoices",
    "HR",
    "Recruitment",
    "Marketing",
    "Press",
    "Facilities",
    "IT Helpdesk",
    "Payroll",
    "Orders",
    "Returns",
    "Events",
    "Legal",
)


def _tid(n: int) -> str:
    return f"3c8f1e52-7a41-4d0b-9c6e-1f2a3b4c5d{n:02d}"


def _guid(*parts: object) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(map(str, parts))))


def _mailboxes(
    domain: str, count: int, *, signin: int = 0, licensed: int = 0, extra: Sequence[SharedMailbox] = ()
) -> tuple[SharedMailbox, ...]:
    boxes = list(extra)
    for i in range(count - len(extra)):
        name = _NAMES[i % len(_NAMES)] + (f" {i // len(_NAMES) + 1}" if i >= len(_NAMES) else "")
        local = name.lower().replace(" ", "-")
        boxes.append(
            SharedMailbox(
                id=_guid(domain, i),
                display_name=name,
                user_principal_name=f"{local}@{domain}",
                mail=f"{local}@{domain}",
                account_enabled=i < signin,
                licensed=signin <= i < signin + licensed,
            )
        )
    return tuple(boxes)


def _sp(
    tenant: int, *, enabled: bool = True, method: IdentificationMethod = IdentificationMethod.APP_ID
) -> IdentifiedServicePrincipal:
    record = ServicePrincipalRecord(
        id=_guid("sp", tenant),
        app_id=VENDOR_APP_ID,
        display_name="USS AzureAD",
        account_enabled=enabled,
        app_owner_organization_id=PUBLISHER,
    )
    return IdentifiedServicePrincipal(record, method)


def _billing(status: Status, census: MailboxCensus | None) -> Billing:
    if status in (Status.NON_COMPLIANT, Status.REMEDIATED):
        if census is None:
            return Billing(None, PRICE, None, CURRENCY)
        return Billing(census.shared, PRICE, money(Decimal(str(PRICE)) * census.shared), CURRENCY)
    if status in (Status.COMPLIANT, Status.NOT_CONNECTED):
        return Billing(0, PRICE, 0.0, CURRENCY)
    return Billing(None, PRICE, None, CURRENCY)


def _tenant(
    n: int,
    name: str,
    status: Status,
    *,
    findings: Sequence[Finding] = (),
    census: MailboxCensus | None = None,
    sp: IdentifiedServicePrincipal | None = None,
    tags: Sequence[str] = (),
    remediation: Remediation | None = None,
    error: TenantError | None = None,
    tenant_id: str | None = None,
) -> TenantResult:
    return TenantResult(
        name=name,
        tenant_id=tenant_id or _tid(n),
        status=status,
        billing=_billing(status, census),
        tags=tuple(tags),
        service_principal=sp,
        findings=tuple(findings),
        mailboxes=census,
        remediation=remediation or Remediation(),
        error=error,
    )


def _label(name: str, n: int) -> str:
    return f"{name} ({_tid(n)})"


def _sp_text(n: int) -> str:
    return f"'USS AzureAD' (object id {_guid('sp', n)}, appId {VENDOR_APP_ID})"


_ROLE_FIX: Final = (
    "Fix: Entra admin center > Roles and administrators > Security Reader > Add assignments: select "
    "'USS AzureAD', assignment type Active, Permanently assigned, scope Directory (or run "
    "`auditor audit --remediate`)."
)


def _role_missing(name: str, n: int) -> Finding:
    return Finding(
        FindingCode.ROLE_MISSING,
        Severity.HIGH,
        f"{_sp_text(n)} in tenant {_label(name, n)} has no active Security Reader "
        f"(5d6b6bb7-de71-4623-b4af-96380a352509) assignment at scope '/', so USS cannot recognise shared "
        f"mailboxes and bills them as users. {_ROLE_FIX}",
    )


def sample_run(*, hostile: bool = False) -> RunResult:
    """The demo-like run; with ``hostile`` a tenant full of attack strings is added."""
    tenants = [
        _tenant(
            1,
            "Contoso Healthcare",
            Status.COMPLIANT,
            sp=_sp(1),
            tags=("gold", "eu"),
            census=MailboxCensus(
                _mailboxes("contoso-health.example", 12), user=156, room=3, equipment=1, no_mailbox=8
            ),
        ),
        _fabrikam(),
        _tenant(
            3,
            "Northwind Traders",
            Status.NON_COMPLIANT,
            sp=_sp(3),
            tags=("gold",),
            census=MailboxCensus(_mailboxes("northwind.example", 9), user=106, no_mailbox=5),
            findings=(
                Finding(
                    FindingCode.ROLE_SCOPED,
                    Severity.HIGH,
                    f"{_sp_text(3)} in tenant {_label('Northwind Traders', 3)} holds Security Reader "
                    f"(5d6b6bb7-de71-4623-b4af-96380a352509) only at scope /administrativeUnits/"
                    f"{_guid('au', 3)}, not tenant-wide ('/'): USS cannot see mailboxes outside it and bills "
                    f"them as users. {_ROLE_FIX}",
                ),
            ),
            remediation=Remediation(
                RemediationAction.FAILED,
                "POST /roleManagement/directory/roleAssignments answered 403 Authorization_RequestDenied: "
                "the auditor app lacks RoleManagement.ReadWrite.Directory in this tenant.",
                request_id="b7a1c3de-0f4e-4a8b-9c2d-3e4f5a6b7c8d",
                at=STARTED + timedelta(minutes=2, seconds=41),
            ),
        ),
        _tenant(
            4,
            "Adatum Corporation",
            Status.REMEDIATED,
            sp=_sp(4),
            tags=("silver",),
            census=MailboxCensus(_mailboxes("adatum.example", 6), user=80, no_mailbox=4),
            findings=(
                Finding(
                    FindingCode.ROLE_ELIGIBLE_ONLY,
                    Severity.HIGH,
                    f"{_sp_text(4)} in tenant {_label('Adatum Corporation', 4)} is only PIM-eligible for "
                    f"Security Reader (5d6b6bb7-de71-4623-b4af-96380a352509), not active; a service principal "
                    f"cannot activate an eligible role, so it does not hold it. {_ROLE_FIX}",
                ),
            ),
            remediation=Remediation(
                RemediationAction.CREATED,
                "Assigned Security Reader at '/' to the vendor service principal and read it back.",
                role_assignment_id="lAPpYvVpN0KRkAEhdxReEJC2sEqbR_9Hjauk7WZ3m2I-1",
                request_id="0d9e8f7a-6b5c-4d3e-8f1a-2b3c4d5e6f70",
                at=STARTED + timedelta(minutes=2, seconds=44),
            ),
        ),
        _tenant(
            5,
            "Tailspin Toys",
            Status.COMPLIANT,
            sp=_sp(5),
            census=MailboxCensus(_mailboxes("tailspin.example", 5), user=68, no_mailbox=2),
            findings=(
                Finding(
                    FindingCode.ROLE_EXPIRING,
                    Severity.HIGH,
                    f"{_sp_text(5)} in tenant {_label('Tailspin Toys', 5)} holds Security Reader "
                    f"(5d6b6bb7-de71-4623-b4af-96380a352509) at scope '/' only until 2025-12-05 02:00 UTC "
                    f"(9 days): after that USS bills shared mailboxes as users again. Fix: make the "
                    f"assignment permanent (Entra admin center > Roles and administrators > Security Reader "
                    f"> Assignments > Update: Permanently assigned), or add a permanent active assignment.",
                ),
            ),
        ),
        _tenant(
            6,
            "Woodgrove Bank",
            Status.COMPLIANT,
            sp=_sp(6),
            tags=("gold", "finance"),
            census=MailboxCensus(_mailboxes("woodgrove.example", 11), user=133, no_mailbox=6),
            findings=(
                Finding(
                    FindingCode.ROLE_VIA_GROUP,
                    Severity.MEDIUM,
                    f"{_sp_text(6)} in tenant {_label('Woodgrove Bank', 6)} holds Security Reader "
                    f"(5d6b6bb7-de71-4623-b4af-96380a352509) only through group membership ('USS Security "
                    f"Readers' ({_guid('group', 6)})). This counts as compliant, but it is not documented that "
                    f"a service principal's directory permissions flow through a group, and it breaks if the "
                    f"membership changes. Recommended: also assign the role to the service principal "
                    f"directly. {_ROLE_FIX}",
                ),
            ),
        ),
        _tenant(
            7,
            "Litware Inc.",
            Status.REMEDIATED,
            sp=_sp(7),
            census=MailboxCensus(_mailboxes("litware.example", 4), user=54, no_mailbox=2),
            findings=(
                _role_missing("Litware Inc.", 7),
                Finding(
                    FindingCode.SP_LOOKALIKE,
                    Severity.MEDIUM,
                    f"Service principal 'USS AzureAD' (object id {_guid('lookalike', 7)}, appId "
                    f"{_guid('lookalike-app', 7)}) in tenant {_label('Litware Inc.', 7)} is named like the "
                    f"vendor app but is not it: it is registered inside this tenant itself "
                    f"(appOwnerOrganizationId is this tenant). It is never audited as the vendor app nor "
                    f"given any role. Review it in Entra admin center > Enterprise applications and remove "
                    f"it if it is not needed.",
                ),
            ),
            remediation=Remediation(
                RemediationAction.ALREADY_PRESENT,
                "Re-read just before writing: the vendor service principal (not the look-alike) already "
                "holds Security Reader at '/' (assigned since the audit read). Nothing was written.",
                role_assignment_id="lAPpYvVpN0KRkAEhdxReEBdCn2tQ0kGm7ZlqWx3T5kQ-1",
                request_id="5f4e3d2c-1b0a-4987-8654-3210fedcba98",
                at=STARTED + timedelta(minutes=2, seconds=47),
            ),
        ),
        _tenant(
            8,
            "Proseware",
            Status.AMBIGUOUS,
            census=MailboxCensus(_mailboxes("proseware.example", 3), user=47),
            findings=(
                Finding(
                    FindingCode.SP_AMBIGUOUS,
                    Severity.HIGH,
                    f"2 service principals named 'USS AzureAD' match the config in tenant "
                    f"{_label('Proseware', 8)} and the config does not say which is the vendor's (object id "
                    f"{_guid('sp', 8)}, appId {VENDOR_APP_ID}, published by {PUBLISHER}; object id "
                    f"{_guid('legacy', 8)}, appId 0b7d4c8e-1f3a-4e6b-9d2c-5a8f7e6d4c31, published by "
                    f'{PUBLISHER}). Nothing was judged or remediated. Fix: set vendor.app_id = "<the vendor '
                    f"app's appId>\" in the config (ask the vendor, or check which one the USS portal shows), "
                    f"then re-run.",
                ),
            ),
            remediation=Remediation(
                RemediationAction.REFUSED, "Ambiguous tenant: the vendor app cannot be told apart."
            ),
        ),
        _tenant(
            9,
            MARGIES,
            Status.NOT_CONNECTED,
            census=MailboxCensus(_mailboxes("margiestravel.example", 2), user=38),
            findings=(
                Finding(
                    FindingCode.SP_NOT_FOUND,
                    Severity.INFO,
                    f"No service principal of the vendor app ('USS AzureAD', appId {VENDOR_APP_ID}) exists in "
                    f"tenant {_label(MARGIES, 9)}: the USS connection was "
                    f"never made or was removed, so USS does not sync or bill this tenant. If this tenant "
                    f"should be protected by USS, connect it from the USS portal, then re-run.",
                ),
            ),
        ),
        _alpine(),
        _tenant(
            11,
            "Coho Winery",
            Status.NON_COMPLIANT,
            sp=_sp(11, enabled=False),
            census=MailboxCensus(_mailboxes("cohowinery.example", 3), user=42),
            findings=(
                Finding(
                    FindingCode.SP_DISABLED,
                    Severity.CRITICAL,
                    f"The vendor service principal {_sp_text(11)} is disabled in tenant "
                    f"{_label('Coho Winery', 11)} (accountEnabled = false): USS cannot sign in to sync this "
                    f"tenant. Fix: Entra admin center > Enterprise applications > USS AzureAD > Properties > "
                    f"'Enabled for users to sign-in?' = Yes.",
                ),
            ),
        ),
        _tenant(
            12,
            "Fourth Coffee",
            Status.ERROR,
            sp=_sp(12),
            census=MailboxCensus(_mailboxes("fourthcoffee.example", 5), user=65),
            error=TenantError(
                ErrorCode.PERMISSION_DENIED,
                "Reading /roleManagement/directory/roleAssignments was denied (403 "
                "Authorization_RequestDenied) (request-id 9a8b7c6d-5e4f-4321-8765-43210fedcba9)",
                "Grant the Microsoft Graph application permission RoleManagement.Read.Directory to the "
                "auditor app 'Contoso MSP Auditor' and have an administrator of tenant Fourth Coffee "
                f"({_tid(12)}) grant admin consent, then re-run.",
            ),
        ),
        _tenant(
            13,
            "Relecloud",
            Status.ERROR,
            tags=("customer-managed",),
            error=TenantError(
                ErrorCode.AUTH_FAILED,
                "Sign-in to tenant Relecloud failed: AADSTS7000215: Invalid client secret provided.",
                "The client secret in RELECLOUD_AUDITOR_SECRET is not valid (expired or rotated): create a "
                "new secret for 'Relecloud auditor (customer-managed)' and update the environment "
                "variable.",
            ),
        ),
        _tenant(
            14,
            "Lucerne Publishing",
            Status.NON_COMPLIANT,
            sp=_sp(14, method=IdentificationMethod.PUBLISHER),
            tags=("silver",),
            census=MailboxCensus(
                _mailboxes("lucernepublishing.example", 64), user=1860, room=12, equipment=4, no_mailbox=210
            ),
            findings=(
                _role_missing("Lucerne Publishing", 14),
                Finding(
                    FindingCode.PIM_UNAVAILABLE,
                    Severity.INFO,
                    f"Privileged Identity Management data is not available in tenant "
                    f"{_label('Lucerne Publishing', 14)}: the tenant has no Microsoft Entra ID P2 / ID "
                    f"Governance licence. Eligible-only and time-bound Security Reader assignments could not "
                    f"be checked; the verdict relies on active role assignments, which were read.",
                ),
            ),
            remediation=Remediation(
                RemediationAction.REFUSED,
                "remediate = false for this tenant in the config: nothing was written.",
            ),
        ),
        _tenant(
            15,
            "Trey Research",
            Status.COMPLIANT,
            sp=_sp(15, method=IdentificationMethod.DISPLAY_NAME),
            census=MailboxCensus(
                _mailboxes("treyresearch.example", 6),
                user=68,
                no_mailbox=3,
                unclassified=3,
                unclassified_reason="403 ErrorAccessDenied: an Exchange application access policy",
            ),
            findings=(
                Finding(
                    FindingCode.SP_NAME_ONLY,
                    Severity.LOW,
                    f"The vendor app in tenant {_label('Trey Research', 15)} was recognised by display name "
                    f"only: {_sp_text(15)}, published by tenant {PUBLISHER}. Pin it so a look-alike can "
                    f"never be mistaken for it: after confirming it is the vendor's app, set vendor.app_id = "
                    f'"{VENDOR_APP_ID}" (or vendor.publisher_tenant_id = "{PUBLISHER}") in the config.',
                ),
                Finding(
                    FindingCode.MAILBOX_SCAN_INCOMPLETE,
                    Severity.MEDIUM,
                    f"3 of 80 users in tenant {_label('Trey Research', 15)} could not be classified after "
                    f"retries; the 6 shared mailboxes found, and any billing figure, are a lower bound. Fix: "
                    f"re-run later; if it persists, check that the auditor app has the Microsoft Graph "
                    f"permission MailboxSettings.Read and is not limited by an Exchange application access "
                    f"policy.",
                ),
            ),
        ),
    ]
    if hostile:
        tenants.extend((_hostile(), hostile_error_tenant()))
    return RunResult(
        run_id="20251126T020000Z-4f9c2a",
        started_at=STARTED,
        finished_at=FINISHED,
        tool_version="0.1.0",
        mode=RunMode.REMEDIATE,
        tenants=tuple(tenants),
        currency=CURRENCY,
    )


def _fabrikam() -> TenantResult:
    domain = "fabrikam-retail.example"
    hostile = (
        SharedMailbox(
            _guid(domain, "html"),
            "<script>alert('owned')</script> Sales",
            f"sales-html@{domain}",
            f"sales-html@{domain}",
        ),
        SharedMailbox(
            _guid(domain, "formula"),
            '=HYPERLINK("http://x.example","click me")',
            f"formula@{domain}",
            f"formula@{domain}",
        ),
    )
    census = MailboxCensus(
        _mailboxes(domain, 23, signin=1, licensed=1, extra=hostile), user=203, room=4, no_mailbox=10
    )
    signin = next(m for m in census.shared_mailboxes if m.account_enabled)
    licensed = next(m for m in census.shared_mailboxes if m.licensed)
    label = _label("Fabrikam Retail", 2)
    return _tenant(
        2,
        "Fabrikam Retail",
        Status.NON_COMPLIANT,
        sp=_sp(2),
        tags=("gold", "retail"),
        census=census,
        findings=(
            _role_missing("Fabrikam Retail", 2),
            Finding(
                FindingCode.SHARED_MAILBOX_SIGNIN_ENABLED,
                Severity.MEDIUM,
                f"1 shared mailbox(es) in tenant {label} allow direct sign-in: {signin.user_principal_name}. "
                f"Nobody should sign in to a shared mailbox; Microsoft recommends blocking it. Fix: Microsoft "
                f"365 admin center > Users > Active users > select the mailbox > Block sign-in.",
            ),
            Finding(
                FindingCode.SHARED_MAILBOX_LICENSED,
                Severity.LOW,
                f"1 shared mailbox(es) in tenant {label} have a licence assigned: "
                f"{licensed.user_principal_name}. A shared mailbox needs no licence unless it is over 50 GB "
                f"or uses an archive or litigation hold. Fix: review and remove unneeded licences in the "
                f"Microsoft 365 admin center.",
            ),
        ),
        remediation=Remediation(
            RemediationAction.PLANNED,
            "Would assign Security Reader at '/' to the vendor service principal; confirmation was not "
            "given (--yes), so nothing was written.",
        ),
    )


def _alpine() -> TenantResult:
    n = 10
    link = admin_consent_url("https://login.microsoftonline.com", _tid(n), VENDOR_APP_ID)
    return _tenant(
        n,
        "Alpine Ski House",
        Status.NON_COMPLIANT,
        sp=_sp(n),
        tags=("eu",),
        census=MailboxCensus(_mailboxes("alpineskihouse.example", 7), user=100, no_mailbox=3),
        findings=(
            Finding(
                FindingCode.EXCHANGE_PERMISSION_MISSING,
                Severity.HIGH,
                f"{_sp_text(n)} in tenant {_label('Alpine Ski House', n)} lacks the Office 365 Exchange "
                f"Online application permission Exchange.ManageAsApp: connections made before the vendor "
                f"added it lack it, and without it USS cannot read mailbox types. Fix: a Global "
                f"Administrator of the tenant grants admin consent to the vendor app at {link} (the auditor "
                f"never writes this consent).",
            ),
        ),
    )


def _hostile() -> TenantResult:
    domain = "hostile.example"
    names = (*XSS_PAYLOADS, *FORMULA_PAYLOADS, "bell\x07char")
    boxes = tuple(
        SharedMailbox(
            id=_guid(domain, i),
            display_name=name,
            user_principal_name=f"{name}@{domain}" if i % 2 else f"box{i}@{domain}",
            mail=name if i % 3 == 0 else f"box{i}@{domain}",
            account_enabled=False,
            licensed=False,
        )
        for i, name in enumerate(names)
    )
    # A look-alike's display name planting a fake consent link before the real one.
    fake = f"https://evil.example/{HOSTILE_TENANT_ID}/adminconsent?client_id={VENDOR_APP_ID}"
    link = admin_consent_url("https://login.microsoftonline.com", HOSTILE_TENANT_ID, VENDOR_APP_ID)
    sp = IdentifiedServicePrincipal(
        ServicePrincipalRecord(
            id=_guid("sp", 99),
            app_id=VENDOR_APP_ID,
            display_name='USS AzureAD"><img src=x onerror=alert(1)>',
            account_enabled=True,
            app_owner_organization_id=PUBLISHER,
        ),
        IdentificationMethod.APP_ID,
    )
    return _tenant(
        99,
        HOSTILE_TENANT_NAME,
        Status.NON_COMPLIANT,
        tenant_id=HOSTILE_TENANT_ID,
        sp=sp,
        tags=("<b>vip</b>", "=1+1", "it's"),
        census=MailboxCensus(boxes, user=5),
        findings=(
            Finding(
                FindingCode.EXCHANGE_PERMISSION_MISSING,
                Severity.HIGH,
                f"'{fake} <script>alert(1)</script>' lacks the Exchange permission. Fix: consent at {link} "
                f"(the auditor never writes this consent).",
            ),
            Finding(
                FindingCode.ROLE_MISSING,
                Severity.HIGH,
                '=HYPERLINK("http://x","y") <img src=x onerror=alert(1)>',
            ),
        ),
        remediation=Remediation(
            RemediationAction.CREATED_UNVERIFIED, "</script><script>alert(2)</script> +1+1"
        ),
        error=None,
    )


def hostile_error_tenant() -> TenantResult:
    """An error tenant whose message and hint carry payloads (Graph messages echo tenant data)."""
    return _tenant(
        98,
        "@SUM(A1) Errors Ltd",
        Status.ERROR,
        error=TenantError(
            ErrorCode.GRAPH_ERROR,
            "<img src=x onerror=alert(3)> unexpected answer",
            '=HYPERLINK("http://x","y")',
        ),
    )


def main() -> None:
    """Write ``data/audit.json`` from :func:`sample_run` (run after changing the sample)."""
    SAVED_RUN.parent.mkdir(parents=True, exist_ok=True)
    SAVED_RUN.write_text(json.dumps(sample_run().to_dict(), indent=2, ensure_ascii=False) + "\n", "utf-8")
    print(f"wrote {SAVED_RUN}")


if __name__ == "__main__":
    main()
