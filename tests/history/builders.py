"""Hand-built tenant results and runs with fixed timestamps, for the history tests."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from auditor.errors import ErrorCode, TenantError
from auditor.history.store import HistoryStore, JournalLine
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
)

T0 = datetime(2024, 5, 1, 1, 0, tzinfo=UTC)
DAY = timedelta(days=1)
PRICE = 2.5

CONTOSO = "11111111-1111-1111-1111-111111111111"
FABRIKAM = "22222222-2222-2222-2222-222222222222"
NORTHWIND = "33333333-3333-3333-3333-333333333333"

NAMES = {CONTOSO: "Contoso", FABRIKAM: "Fabrikam", NORTHWIND: "Northwind"}


def mailboxes(*ids: str) -> tuple[SharedMailbox, ...]:
    """Shared mailboxes with display names derived from their ids."""
    return tuple(
        SharedMailbox(id=i, display_name=f"Mailbox {i}", user_principal_name=f"{i}@example.test") for i in ids
    )


def tenant(
    tenant_id: str,
    status: Status,
    *,
    shared: Sequence[str] | None = ("m1", "m2"),
    price: float = PRICE,
    currency: str = "GBP",
    findings: Sequence[FindingCode] | None = None,
    error: TenantError | None = None,
    remediation: RemediationAction = RemediationAction.NONE,
    name: str | None = None,
) -> TenantResult:
    """A tenant result whose billing follows DESIGN §3.4: gaps bill their shared mailboxes, an error or an
    ambiguous tenant's cost is unknown, everything else bills nothing."""
    census = MailboxCensus(shared_mailboxes=mailboxes(*shared), user=10) if shared is not None else None
    if status in (Status.ERROR, Status.AMBIGUOUS) or census is None:
        billing = Billing(None, price, None, currency)
    elif status in (Status.NON_COMPLIANT, Status.REMEDIATED):
        billing = Billing(census.shared, price, census.shared * price, currency)
    else:
        billing = Billing(0, price, 0.0, currency)
    if findings is None:
        findings = {
            Status.NON_COMPLIANT: [FindingCode.ROLE_MISSING],
            Status.AMBIGUOUS: [FindingCode.SP_AMBIGUOUS],
        }.get(status, [])
    if status is Status.ERROR and error is None:
        error = TenantError(ErrorCode.AUTH_FAILED, "sign-in failed")
    return TenantResult(
        name=name or NAMES.get(tenant_id, tenant_id[:8]),
        tenant_id=tenant_id,
        status=status,
        billing=billing,
        tags=("gold",),
        service_principal=None
        if status in (Status.ERROR, Status.NOT_CONNECTED)
        else IdentifiedServicePrincipal(
            ServicePrincipalRecord(f"sp-{tenant_id[:4]}", "app-id", "USS AzureAD", True, "vendor-tenant"),
            IdentificationMethod.PUBLISHER,
        ),
        findings=tuple(Finding(code, Severity.HIGH, f"{code.value} in {tenant_id}") for code in findings),
        mailboxes=census if status is not Status.ERROR else None,
        remediation=Remediation(remediation, "detail" if remediation is not RemediationAction.NONE else ""),
        error=error,
    )


def run(
    at: datetime,
    *tenants: TenantResult,
    run_id: str | None = None,
    mode: RunMode = RunMode.AUDIT,
    currency: str = "GBP",
) -> RunResult:
    """A run started at ``at`` that took a minute."""
    return RunResult(
        run_id=run_id or str(uuid.uuid4()),
        started_at=at,
        finished_at=at + timedelta(minutes=1),
        tool_version="0.1.0",
        mode=mode,
        tenants=tenants,
        currency=currency,
    )


def record_all(path: Path, *runs: RunResult, journal: Sequence[JournalLine] = ()) -> HistoryStore:
    """Record ``runs`` in order into the history at ``path``; returns the open store."""
    store = HistoryStore.open(path)
    for r in runs:
        store.record(r, journal)
    return store


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """``path`` (a file or a directory) made read-only even for root, whom chmod does not stop; skipped where
    chattr +i is not available (a file system without the immutable flag)."""
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], check=False).returncode:  # noqa: S603, S607
        pytest.skip("chattr +i is not available here: cannot make a file read-only for root")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)  # noqa: S603, S607
