"""Statuses, findings, snapshots and results: the data that flows through the auditor.

Two halves:

* the **snapshot** (:class:`TenantSnapshot`): raw facts read from Graph for one tenant, before any
  judgement. Each section is a :data:`Section`: either :class:`Collected` (read, possibly empty) or
  :class:`Failed` (could not be read, with the reason), so "could not read" can never be mistaken for
  "read and found nothing". ``None`` means the collector did not try (not applicable).
* the **result** (:class:`TenantResult`, :class:`RunResult`): the verdict, findings and billing impact,
  with the audit.json conversion of DESIGN §3.3 (:meth:`RunResult.to_dict` / :meth:`RunResult.from_dict`).

Everything is frozen; datetimes are timezone-aware (UTC).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any, Final, Generic, TypeAlias, TypeVar

from auditor.errors import ErrorCode, TenantError

SCHEMA_VERSION: Final = 1

JsonDict: TypeAlias = dict[str, Any]
T = TypeVar("T")


# --- vocabulary -----------------------------------------------------------------------------------------


class Status(StrEnum):
    """A tenant's verdict (DESIGN §3.4)."""

    COMPLIANT = "compliant"
    NON_COMPLIANT = "non_compliant"
    REMEDIATED = "remediated"
    NOT_CONNECTED = "not_connected"
    AMBIGUOUS = "ambiguous"
    ERROR = "error"


class Severity(StrEnum):
    """How urgent a finding is; :attr:`rank` orders them (critical first)."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"

    @property
    def rank(self) -> int:
        """0 for critical ... 4 for info, for sorting."""
        return list(Severity).index(self)


class FindingCode(StrEnum):
    """Stable finding codes (DESIGN §3.4). Reports, history and filters key on these."""

    SP_NOT_FOUND = "SP_NOT_FOUND"
    SP_AMBIGUOUS = "SP_AMBIGUOUS"
    SP_LOOKALIKE = "SP_LOOKALIKE"
    SP_NAME_ONLY = "SP_NAME_ONLY"
    SP_DISABLED = "SP_DISABLED"
    ROLE_MISSING = "ROLE_MISSING"
    ROLE_SCOPED = "ROLE_SCOPED"
    ROLE_ELIGIBLE_ONLY = "ROLE_ELIGIBLE_ONLY"
    ROLE_EXPIRING = "ROLE_EXPIRING"
    ROLE_VIA_GROUP = "ROLE_VIA_GROUP"
    EXCHANGE_PERMISSION_MISSING = "EXCHANGE_PERMISSION_MISSING"
    MAILBOX_SCAN_INCOMPLETE = "MAILBOX_SCAN_INCOMPLETE"
    SHARED_MAILBOX_SIGNIN_ENABLED = "SHARED_MAILBOX_SIGNIN_ENABLED"
    SHARED_MAILBOX_LICENSED = "SHARED_MAILBOX_LICENSED"
    PIM_UNAVAILABLE = "PIM_UNAVAILABLE"


# The findings that mean "no active Security Reader at /": the gap remediation can close.
ROLE_GAP_CODES: Final = frozenset(
    {FindingCode.ROLE_MISSING, FindingCode.ROLE_SCOPED, FindingCode.ROLE_ELIGIBLE_ONLY}
)


class IdentificationMethod(StrEnum):
    """How the vendor SP was looked up / recognised, strongest first."""

    APP_ID = "app_id"
    PUBLISHER = "publisher"
    DISPLAY_NAME = "display_name"


class MailboxPurpose(StrEnum):
    """Mailbox census buckets (audit.json ``mailboxes`` keys)."""

    SHARED = "shared"
    USER = "user"
    ROOM = "room"
    EQUIPMENT = "equipment"
    OTHER = "other"
    NO_MAILBOX = "no_mailbox"  # 404 MailboxNotEnabledForRESTAPI: guest, unlicensed, soft-deleted
    # A synced user's mailbox hosted in on-premises Exchange (hybrid tenant): Graph cannot classify it.
    ON_PREMISES = "on_premises"
    UNCLASSIFIED = "unclassified"  # could not be classified after retries

    @classmethod
    def from_user_purpose(cls, value: object) -> MailboxPurpose:
        """Bucket for a Graph ``mailboxSettings.userPurpose`` value.

        Accepts the plain string and the ``{"value": ...}`` shape seen in an old doc example
        (graph-api-notes §0.3). ``linked`` (a user mailbox homed in another forest) counts as ``user``.
        """
        if isinstance(value, Mapping):
            value = value.get("value")
        text = str(value or "").strip().casefold()
        mapping = {
            "shared": cls.SHARED,
            "user": cls.USER,
            "linked": cls.USER,
            "room": cls.ROOM,
            "equipment": cls.EQUIPMENT,
        }
        return mapping.get(text, cls.OTHER)


class RemediationAction(StrEnum):
    """Outcome of the remediation step for one tenant (DESIGN §3.3)."""

    NONE = "none"
    PLANNED = "planned"
    CREATED = "created"
    # Written (Graph accepted it, or said it already exists) but not yet visible to reads after
    # remediation.verify_timeout_seconds of directory replication; the next run confirms it.
    CREATED_UNVERIFIED = "created_unverified"
    ALREADY_PRESENT = "already_present"
    REFUSED = "refused"
    FAILED = "failed"


class RunMode(StrEnum):
    """What a run was allowed to do."""

    AUDIT = "audit"
    DRY_RUN = "dry_run"
    REMEDIATE = "remediate"


@dataclass(frozen=True)
class Finding:
    """One observation about a tenant, with an admin-ready message (what, where, what to do)."""

    code: FindingCode
    severity: Severity
    message: str

    def to_dict(self) -> JsonDict:
        """``{code, severity, message}``."""
        return {"code": self.code.value, "severity": self.severity.value, "message": self.message}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        """Inverse of :meth:`to_dict`."""
        return cls(FindingCode(data["code"]), Severity(data["severity"]), str(data["message"]))


# --- snapshot ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Collected(Generic[T]):
    """A snapshot section that was read. ``value`` may well be empty: that is a real answer."""

    value: T


@dataclass(frozen=True)
class Failed:
    """A snapshot section that could not be read, and why."""

    error: TenantError


# Either the facts, or the reason they are missing. Use ``isinstance(section, Failed)`` to tell apart.
Section: TypeAlias = Collected[T] | Failed


@dataclass(frozen=True)
class ServicePrincipalRecord:
    """A service principal as read from Graph (only the properties the audit needs)."""

    id: str
    app_id: str
    display_name: str
    account_enabled: bool
    app_owner_organization_id: str | None = None
    service_principal_type: str | None = "Application"

    def to_dict(self) -> JsonDict:
        """JSON form (snake_case keys, as in audit.json)."""
        return {
            "id": self.id,
            "app_id": self.app_id,
            "display_name": self.display_name,
            "account_enabled": self.account_enabled,
            "app_owner_organization_id": self.app_owner_organization_id,
            "service_principal_type": self.service_principal_type,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServicePrincipalRecord:
        """Inverse of :meth:`to_dict`."""
        return cls(
            id=str(data["id"]),
            app_id=str(data["app_id"]),
            display_name=str(data["display_name"]),
            account_enabled=bool(data["account_enabled"]),
            app_owner_organization_id=data.get("app_owner_organization_id"),
            service_principal_type=data.get("service_principal_type", "Application"),
        )


@dataclass(frozen=True)
class ServicePrincipalSearch:
    """Every SP the lookups (by pinned appId, by display name) returned; the evaluator deduplicates them."""

    candidates: tuple[ServicePrincipalRecord, ...] = ()


@dataclass(frozen=True)
class RoleAssignmentRecord:
    """An active or eligible directory role assignment relevant to the vendor SP.

    ``via_group_id`` is set when the SP holds it through membership of a (role-assignable) group, in which
    case ``principal_id`` is the group. ``end_date_time`` is known only from PIM schedule instances.
    """

    id: str
    principal_id: str
    role_definition_id: str
    directory_scope_id: str = "/"
    end_date_time: datetime | None = None
    via_group_id: str | None = None
    member_type: str = "Direct"  # PIM memberType: Direct | Group | Inherited

    @property
    def is_via_group(self) -> bool:
        """True when held through a group rather than assigned to the SP itself."""
        return self.via_group_id is not None or self.member_type.casefold() == "group"


@dataclass(frozen=True)
class GroupRecord:
    """A group the vendor SP is a (transitive) member of.

    Without a group read permission Graph lists groups as limited-information objects (``@odata.type``
    and ``id`` only): ``display_name`` is then empty and ``is_assignable_to_role`` None (unknown).
    """

    id: str
    display_name: str = ""
    is_assignable_to_role: bool | None = None


@dataclass(frozen=True)
class RoleEvidence:
    """Directory role facts for the identified vendor SP.

    ``pim_available``: True when the PIM (schedule / eligibility) reads worked, False when the tenant has
    no PIM licence (``AadPremiumLicenseRequired``), None when not checked or failed (``pim_error``).
    Without PIM, eligible-only and end dates are unknown; active assignments are still authoritative.
    """

    active: tuple[RoleAssignmentRecord, ...] = ()
    eligible: tuple[RoleAssignmentRecord, ...] = ()
    groups: tuple[GroupRecord, ...] = ()
    pim_available: bool | None = None
    pim_error: TenantError | None = None


@dataclass(frozen=True)
class ExchangeAppRoles:
    """App roles the vendor SP holds on the Office 365 Exchange Online resource.

    ``role_values`` are resolved values (``Exchange.ManageAsApp``); ``unresolved_role_ids`` are appRoleIds
    that could not be mapped to a value (the evaluator then falls back to well-known ids).
    """

    role_values: tuple[str, ...] = ()
    unresolved_role_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class SharedMailbox:
    """A user object whose mailbox purpose is ``shared``: billed as a person unless the SP can see it."""

    id: str
    display_name: str
    user_principal_name: str
    mail: str | None = None
    account_enabled: bool = False
    licensed: bool = False

    def to_dict(self) -> JsonDict:
        """audit.json ``shared_mailboxes`` item."""
        return {
            "id": self.id,
            "display_name": self.display_name,
            "user_principal_name": self.user_principal_name,
            "mail": self.mail,
            "account_enabled": self.account_enabled,
            "licensed": self.licensed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SharedMailbox:
        """Inverse of :meth:`to_dict`."""
        return cls(
            id=str(data["id"]),
            display_name=str(data.get("display_name") or ""),
            user_principal_name=str(data.get("user_principal_name") or ""),
            mail=data.get("mail"),
            account_enabled=bool(data.get("account_enabled", False)),
            licensed=bool(data.get("licensed", False)),
        )


@dataclass(frozen=True)
class MailboxCensus:
    """Every user in the tenant bucketed by mailbox purpose.

    The shared count is ``len(shared_mailboxes)`` by construction, so the list and the count cannot
    disagree. ``unclassified`` users could not be classified after retries: when it is above zero the
    shared count is a lower bound (``unclassified_reason`` says why). ``on_premises`` users are synced
    from on-premises AD and their mailbox is hosted in on-premises Exchange (a hybrid tenant): Graph
    cannot read their purpose, and the vendor cannot see them either, so they are counted apart
    ("hosted on-premises, not classified"), neither as people nor as failures.
    """

    shared_mailboxes: Sequence[SharedMailbox] = ()  # a tuple, or SpooledMailboxes (auditor.reporting.spool)
    user: int = 0
    room: int = 0
    equipment: int = 0
    other: int = 0
    no_mailbox: int = 0
    unclassified: int = 0
    unclassified_reason: str = ""
    on_premises: int = 0
    # An incremental census (auditor.census): the age in days of the oldest classification it relies on.
    # None: every mailbox was read this run.
    age_days: float | None = None

    def __post_init__(self) -> None:
        for name in ("user", "room", "equipment", "other", "no_mailbox", "on_premises", "unclassified"):
            if getattr(self, name) < 0:
                raise ValueError(f"MailboxCensus.{name} must not be negative")

    @property
    def shared(self) -> int:
        """Number of shared mailboxes found."""
        return len(self.shared_mailboxes)

    @property
    def total_users(self) -> int:
        """Number of user objects examined."""
        return sum(self.counts().values())

    @property
    def complete(self) -> bool:
        """True when every user was classified."""
        return self.unclassified == 0

    def counts(self) -> dict[str, int]:
        """audit.json ``mailboxes``: counts by purpose, every bucket present."""
        return {
            MailboxPurpose.SHARED.value: self.shared,
            MailboxPurpose.USER.value: self.user,
            MailboxPurpose.ROOM.value: self.room,
            MailboxPurpose.EQUIPMENT.value: self.equipment,
            MailboxPurpose.OTHER.value: self.other,
            MailboxPurpose.NO_MAILBOX.value: self.no_mailbox,
            MailboxPurpose.ON_PREMISES.value: self.on_premises,
            MailboxPurpose.UNCLASSIFIED.value: self.unclassified,
        }


@dataclass(frozen=True)
class TenantSnapshot:
    """Raw facts collected from one tenant, before any judgement.

    ``error`` is a whole-tenant failure (sign-in failed, tenant timed out): then the sections are
    irrelevant. Each section is ``None`` (not attempted: e.g. no roles are read when no SP was found),
    :class:`Collected` or :class:`Failed`.
    """

    tenant_name: str
    tenant_id: str
    collected_at: datetime
    error: TenantError | None = None
    service_principals: Section[ServicePrincipalSearch] | None = None
    roles: Section[RoleEvidence] | None = None
    exchange: Section[ExchangeAppRoles] | None = None
    mailboxes: Section[MailboxCensus] | None = None


# --- result -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentifiedServicePrincipal:
    """The vendor SP the verdict is about, and how it was recognised."""

    record: ServicePrincipalRecord
    identified_by: IdentificationMethod

    def to_dict(self) -> JsonDict:
        """audit.json ``service_principal``."""
        data = self.record.to_dict()
        data["identified_by"] = self.identified_by.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IdentifiedServicePrincipal:
        """Inverse of :meth:`to_dict`."""
        return cls(ServicePrincipalRecord.from_dict(data), IdentificationMethod(data["identified_by"]))


@dataclass(frozen=True)
class Billing:
    """What the tenant's shared mailboxes cost while the gap is open.

    ``None`` means unknown (the tenant could not be judged), never zero.
    """

    billed_shared_mailboxes: int | None
    price_per_mailbox: float
    monthly_cost: float | None
    currency: str = "GBP"

    def to_dict(self) -> JsonDict:
        """audit.json ``billing``."""
        return {
            "billed_shared_mailboxes": self.billed_shared_mailboxes,
            "price_per_mailbox": self.price_per_mailbox,
            "monthly_cost": self.monthly_cost,
            "currency": self.currency,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Billing:
        """Inverse of :meth:`to_dict`."""
        return cls(
            billed_shared_mailboxes=data.get("billed_shared_mailboxes"),
            price_per_mailbox=float(data.get("price_per_mailbox") or 0.0),
            monthly_cost=None if data.get("monthly_cost") is None else float(data["monthly_cost"]),
            currency=str(data.get("currency") or "GBP"),
        )


def money(amount: Decimal | float | int) -> float:
    """Round a currency amount half-up to 2 decimals (float ``round`` is banker's and repr-sensitive)."""
    return float(Decimal(str(amount)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class Remediation:
    """What the remediation step did (or would do) for one tenant."""

    action: RemediationAction = RemediationAction.NONE
    detail: str = ""
    role_assignment_id: str | None = None
    request_id: str | None = None
    at: datetime | None = None

    def to_dict(self) -> JsonDict:
        """audit.json ``remediation``: ``{action, detail, ...}``."""
        return {
            "action": self.action.value,
            "detail": self.detail,
            "role_assignment_id": self.role_assignment_id,
            "request_id": self.request_id,
            "at": _iso(self.at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Remediation:
        """Inverse of :meth:`to_dict`."""
        return cls(
            action=RemediationAction(data.get("action", "none")),
            detail=str(data.get("detail") or ""),
            role_assignment_id=data.get("role_assignment_id"),
            request_id=data.get("request_id"),
            at=_parse_dt(data.get("at")),
        )


@dataclass(frozen=True)
class TenantResult:
    """The verdict for one tenant."""

    name: str
    tenant_id: str
    status: Status
    billing: Billing
    tags: tuple[str, ...] = ()
    service_principal: IdentifiedServicePrincipal | None = None
    findings: tuple[Finding, ...] = ()
    mailboxes: MailboxCensus | None = None  # None: not read or could not be read
    remediation: Remediation = field(default_factory=Remediation)
    error: TenantError | None = None

    @property
    def has_role_gap(self) -> bool:
        """True when the SP lacks an active Security Reader at ``/`` (what remediation can fix)."""
        return any(f.code in ROLE_GAP_CODES for f in self.findings)

    def finding_codes(self) -> frozenset[FindingCode]:
        """The set of finding codes, for quick membership tests."""
        return frozenset(f.code for f in self.findings)

    def with_remediation(self, remediation: Remediation, status: Status | None = None) -> TenantResult:
        """A copy with the remediation outcome (and optionally a new status) recorded."""
        return replace(self, remediation=remediation, status=status or self.status)

    def to_dict(self) -> JsonDict:
        """audit.json tenant object (DESIGN §3.3)."""
        return {
            "name": self.name,
            "tenant_id": self.tenant_id,
            "tags": list(self.tags),
            "status": self.status.value,
            "service_principal": self.service_principal.to_dict() if self.service_principal else None,
            "findings": [f.to_dict() for f in self.findings],
            "mailboxes": _mailboxes_dict(self.mailboxes) if self.mailboxes else None,
            "shared_mailboxes": (
                [m.to_dict() for m in self.mailboxes.shared_mailboxes] if self.mailboxes else None
            ),
            "billing": self.billing.to_dict(),
            "remediation": self.remediation.to_dict(),
            "error": self.error.to_dict() if self.error else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TenantResult:
        """Inverse of :meth:`to_dict` (used by ``auditor report`` to re-render a saved run)."""
        counts = data.get("mailboxes")
        census = None
        if counts is not None:
            census = MailboxCensus(
                shared_mailboxes=tuple(
                    SharedMailbox.from_dict(m) for m in data.get("shared_mailboxes") or ()
                ),
                user=int(counts.get("user", 0)),
                room=int(counts.get("room", 0)),
                equipment=int(counts.get("equipment", 0)),
                other=int(counts.get("other", 0)),
                no_mailbox=int(counts.get("no_mailbox", 0)),
                on_premises=int(counts.get("on_premises", 0)),
                unclassified=int(counts.get("unclassified", 0)),
                age_days=(
                    float(counts["census_age_days"]) if counts.get("census_age_days") is not None else None
                ),
            )
        sp = data.get("service_principal")
        error = data.get("error")
        return cls(
            name=str(data["name"]),
            tenant_id=str(data["tenant_id"]),
            tags=tuple(data.get("tags") or ()),
            status=Status(data["status"]),
            service_principal=IdentifiedServicePrincipal.from_dict(sp) if sp else None,
            findings=tuple(Finding.from_dict(f) for f in data.get("findings") or ()),
            mailboxes=census,
            billing=Billing.from_dict(data.get("billing") or {}),
            remediation=Remediation.from_dict(data.get("remediation") or {}),
            error=TenantError.from_dict(error) if error else None,
        )


def _mailboxes_dict(census: MailboxCensus) -> JsonDict:
    """audit.json ``mailboxes``: the counts, and ``census_age_days`` when the census is incremental."""
    data: JsonDict = dict(census.counts())
    if census.age_days is not None:
        data["census_age_days"] = round(census.age_days, 1)
    return data


@dataclass(frozen=True)
class RunSummary:
    """Fleet totals for the report header and audit.json ``summary``.

    Mailbox and cost totals add up only what is known; ``tenants_with_unknown_cost`` says how many
    tenants (errors, ambiguous) are not in ``estimated_monthly_cost``, which is then a lower bound.
    """

    tenants: int
    by_status: Mapping[Status, int]
    shared_mailboxes: int
    billed_shared_mailboxes: int
    estimated_monthly_cost: float
    currency: str
    tenants_with_unknown_cost: int
    # What --remediate did (or planned) in this run, by action; empty when it did not run.
    remediation: Mapping[RemediationAction, int] = field(default_factory=dict)

    @classmethod
    def of(cls, results: Iterable[TenantResult], currency: str) -> RunSummary:
        """Compute the summary of a set of tenant results."""
        results = list(results)
        counts = Counter(r.status for r in results)
        cost = sum(
            (Decimal(str(r.billing.monthly_cost)) for r in results if r.billing.monthly_cost is not None),
            Decimal(0),
        )
        return cls(
            tenants=len(results),
            by_status={status: counts.get(status, 0) for status in Status},
            shared_mailboxes=sum(r.mailboxes.shared for r in results if r.mailboxes),
            billed_shared_mailboxes=sum(r.billing.billed_shared_mailboxes or 0 for r in results),
            estimated_monthly_cost=money(cost),
            currency=currency,
            tenants_with_unknown_cost=sum(1 for r in results if r.billing.monthly_cost is None),
            remediation=dict(
                Counter(
                    r.remediation.action
                    for r in results
                    if r.remediation.action is not RemediationAction.NONE
                )
            ),
        )

    def to_dict(self) -> JsonDict:
        """audit.json ``summary``."""
        return {
            "tenants": self.tenants,
            "by_status": {status.value: n for status, n in self.by_status.items()},
            "shared_mailboxes": self.shared_mailboxes,
            "billed_shared_mailboxes": self.billed_shared_mailboxes,
            "estimated_monthly_cost": self.estimated_monthly_cost,
            "currency": self.currency,
            "tenants_with_unknown_cost": self.tenants_with_unknown_cost,
            "remediation": {action.value: n for action, n in sorted(self.remediation.items())},
        }


@dataclass(frozen=True)
class RunResult:
    """One audit run over the selected tenants."""

    run_id: str
    started_at: datetime
    finished_at: datetime
    tool_version: str
    mode: RunMode
    tenants: tuple[TenantResult, ...]
    currency: str = "GBP"
    # How the vendor app was searched for (collect.describe_vendor_search), named when it was found nowhere.
    vendor_search: str = ""

    def summary(self) -> RunSummary:
        """Fleet totals (counts by status, shared and billed mailboxes, estimated monthly cost)."""
        return RunSummary.of(self.tenants, self.currency)

    def to_dict(self) -> JsonDict:
        """The audit.json document (DESIGN §3.3), JSON-serialisable as is."""
        return {
            "schema_version": SCHEMA_VERSION,
            "run": {
                "id": self.run_id,
                "started_at": _iso(self.started_at),
                "finished_at": _iso(self.finished_at),
                "tool_version": self.tool_version,
                "mode": self.mode.value,
                "vendor_search": self.vendor_search,
            },
            "summary": self.summary().to_dict(),
            "tenants": [t.to_dict() for t in self.tenants],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        """Parse an audit.json document. Raises ``ValueError`` for an unsupported schema_version."""
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"unsupported audit.json schema_version {version!r} (this tool reads {SCHEMA_VERSION})"
            )
        run = data["run"]
        return cls(
            run_id=str(run["id"]),
            started_at=_require_dt(run["started_at"]),
            finished_at=_require_dt(run["finished_at"]),
            tool_version=str(run.get("tool_version") or ""),
            mode=RunMode(run.get("mode", RunMode.AUDIT)),
            tenants=tuple(TenantResult.from_dict(t) for t in data.get("tenants") or ()),
            currency=str((data.get("summary") or {}).get("currency") or "GBP"),
            vendor_search=str(run.get("vendor_search") or ""),
        )

    @property
    def vendor_nowhere_notice(self) -> str | None:
        """The warning every output shows when the vendor app was found in none of two or more tenants
        audited without error (:func:`vendor_found_nowhere`); None otherwise."""
        if not vendor_found_nowhere(self.tenants):
            return None
        audited = sum(1 for t in self.tenants if t.status is not Status.ERROR)
        search = self.vendor_search or "the [vendor] settings of the config"
        return (
            f"The vendor app was found in none of the {audited} tenants audited (search: {search}). A vendor "
            f"setting that matches nothing is far likelier than a fleet that never connected USS: check "
            f"app_id, publisher_tenant_id and app_display_name under [vendor] in the config against the "
            f"USS AzureAD enterprise app of one connected tenant, then run `auditor doctor`."
        )


def vendor_found_nowhere(tenants: Iterable[TenantResult]) -> bool:
    """True when two or more tenants were audited without error and the vendor app is in none of them
    (all ``not_connected``): far likelier a wrong [vendor] setting than a fleet that never connected USS
    (DESIGN §3.1: exit code 1)."""
    judged = [t.status for t in tenants if t.status is not Status.ERROR]
    return len(judged) >= 2 and all(status is Status.NOT_CONNECTED for status in judged)


def error_result(
    name: str,
    tenant_id: str,
    error: TenantError,
    *,
    price_per_mailbox: float = 0.0,
    currency: str = "GBP",
    tags: tuple[str, ...] = (),
) -> TenantResult:
    """A result for a tenant that could not be audited at all (e.g. the runner caught a crash)."""
    return TenantResult(
        name=name,
        tenant_id=tenant_id,
        tags=tags,
        status=Status.ERROR,
        billing=Billing(None, price_per_mailbox, None, currency),
        error=error,
    )


def internal_error(message: str) -> TenantError:
    """A :class:`TenantError` for an inconsistency that is the auditor's own fault."""
    return TenantError(ErrorCode.INTERNAL_ERROR, message)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_dt(value: object) -> datetime | None:
    if value is None or value == "":
        return None
    return datetime.fromisoformat(str(value))


def _require_dt(value: object) -> datetime:
    parsed = _parse_dt(value)
    if parsed is None:
        raise ValueError("missing timestamp in audit.json run")
    return parsed
