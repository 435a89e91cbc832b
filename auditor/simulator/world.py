"""The simulated directory: tenants, app registrations, service principals, roles and users.

The world is plain data. Fixture files and the fleet generator build it; the Graph and identity
routes read it (and the role-assignment POST appends to it). Users are held by a `UserDirectory`,
which for synthetic tenants computes each user from its index instead of storing it, so that a fleet
of 1,000 tenants x 2,000 users costs a few megabytes rather than gigabytes.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

SECURITY_READER = "5d6b6bb7-de71-4623-b4af-96380a352509"
EXCHANGE_ONLINE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"
MICROSOFT_GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
MICROSOFT_TENANT_ID = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
EXCHANGE_APP_ROLES = {
    "Exchange.ManageAsApp": "dc50a0fb-09a3-484d-be87-e023b12c6440",
    "full_access_as_app": "dc890d15-9560-4a4c-9b7f-a736ec74ec40",
    "IMAP.AccessAsApp": "5e5addcd-3e8d-4e90-baf5-964efab2b20a",
}

# Built-in role templates the simulator knows by name (a subset of Entra's catalogue).
ROLE_TEMPLATES = {
    SECURITY_READER: "Security Reader",
    "62e90394-69f5-4237-9190-012177145e10": "Global Administrator",
    "f2ef992c-3afb-46b9-b7cf-a126ee74c451": "Global Reader",
    "194ae4cb-b126-40b2-bd5b-6091b380977d": "Security Administrator",
    "29232cdf-9323-42fd-ade2-1d097af3e4de": "Exchange Administrator",
    "88d8e3e3-8f55-4a1e-953a-9b9898b8876b": "Directory Readers",
}

# The application permissions an auditor app typically gets; fixtures may name this profile.
AUDIT_PERMISSIONS = (
    "Application.Read.All",
    "RoleManagement.Read.Directory",
    "User.Read.All",
    "MailboxSettings.Read",
    "Organization.Read.All",
)
REMEDIATION_PERMISSIONS = (*AUDIT_PERMISSIONS, "RoleManagement.ReadWrite.Directory")
PERMISSION_PROFILES = {"audit": AUDIT_PERMISSIONS, "remediation": REMEDIATION_PERMISSIONS}

MAILBOX_PURPOSES = ("user", "shared", "room", "equipment", "linked", "others")

# How Graph answers for a mailbox hosted in on-premises Exchange (graph-api-notes "Fidelity review"):
# 404 MailboxNotEnabledForRESTAPI (microsoft-graph-docs-contrib#6519, hybrid on-premises mailboxes),
# 404 MailboxNotHostedInExchangeOnline, or 403 ErrorAccessDenied "... REST APIs for this mailbox are
# currently in preview ..." (microsoft-graph-explorer-v4#1478).
ON_PREMISES_ANSWERS = ("not_enabled", "not_hosted", "preview")


def stable_id(*parts: str) -> str:
    """A GUID derived from names, so fixtures can say `principal = "uss"` and get the same id every run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "uss-sim:" + "/".join(parts)))


def assignment_id() -> str:
    """An id shaped like Graph's role assignment ids (base64url, then `-1`)."""
    raw = base64.urlsafe_b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).decode().rstrip("=")
    return f"{raw}-1"


@dataclass
class AppRegistration:
    """An app registration that clients sign in as (the auditor's own app, in the MSP's tenant)."""

    client_id: str
    name: str
    secrets: list[str] = field(default_factory=list)
    # PEM of the public certificates registered on the app, by SHA-256 thumbprint (base64url).
    certificates: dict[str, bytes] = field(default_factory=dict)
    # Subjects of federated credentials (workload identity) issued by the simulator's own issuer.
    federated_subjects: list[str] = field(default_factory=list)
    # What the simulator provisions at start-up ("secret", "certificate", "previous_secret": a rotated-out
    # secret the app no longer accepts), and the environment-variable prefix it publishes them under.
    credential_kinds: tuple[str, ...] = ("secret",)
    env_prefix: str = "USS_SIM_AUDITOR"
    certificate_valid_days: int = 365
    # A managed identity (credential kind "managed_identity") lives in one tenant and gets tokens only for
    # it, whatever tenant the client meant (learn.microsoft.com app-service/overview-managed-identity:
    # managed identities don't support cross-directory scenarios).
    home_tenant_id: str | None = None


@dataclass
class UserRecord:
    """A user object; `purpose` is the mailbox's userPurpose, or None when the user has no mailbox."""

    id: str
    display_name: str
    user_principal_name: str
    mail: str | None
    account_enabled: bool
    licensed: bool
    user_type: str = "Member"
    purpose: str | None = "user"
    # An Exchange application access policy that excludes this mailbox: mailbox routes answer 403.
    mailbox_access_denied: bool = False
    # Synced from on-premises AD (onPremisesSyncEnabled true; null for cloud-only users).
    synced: bool = False
    # A hybrid tenant's mailbox hosted in on-premises Exchange, and how Graph answers for it: one of
    # ON_PREMISES_ANSWERS. None: hosted in Exchange Online (or no mailbox).
    mailbox_on_premises: str | None = None

    def to_graph(self) -> dict[str, Any]:
        first, _, last = self.display_name.partition(" ")
        return {
            "id": self.id,
            "businessPhones": [],
            "displayName": self.display_name,
            "givenName": first or None,
            "surname": last or None,
            "jobTitle": None,
            "mail": self.mail,
            "mobilePhone": None,
            "officeLocation": None,
            "preferredLanguage": "en-GB",
            "userPrincipalName": self.user_principal_name,
            "accountEnabled": self.account_enabled,
            "userType": self.user_type,
            "onPremisesSyncEnabled": True if self.synced else None,
            "assignedLicenses": (
                [{"disabledPlans": [], "skuId": "c7df2760-2c81-4ef7-b578-5b5392b571df"}]
                if self.licensed
                else []
            ),
        }


_SHARED_NAMES = (
    "Sales",
    "Support",
    "Accounts",
    "Info",
    "Reception",
    "HR",
    "Marketing",
    "Billing",
    "Projects",
)
_FIRST = ("Alex", "Sam", "Jo", "Chris", "Priya", "Wei", "Olu", "Maria", "Tom", "Aisha", "Ken", "Lena")
_LAST = ("Smith", "Patel", "Jones", "Chen", "Okafor", "Garcia", "Brown", "Khan", "Novak", "Silva")


@dataclass(frozen=True)
class SyntheticUsers:
    """`count` users computed from their index; exact counts per purpose, spread over all pages.

    Purposes are assigned to positions through a fixed permutation (i -> (a*i + b) mod count), so the
    shared mailboxes are not all on the first page, yet every count is exact and reproducible.
    """

    namespace: int  # 64-bit number that prefixes every id in this tenant
    domain: str
    count: int
    shared: int = 0
    room: int = 0
    equipment: int = 0
    no_mailbox: int = 0
    shared_signin_enabled: int = 0
    shared_licensed: int = 0
    # Users synced from on-premises whose mailbox is hosted in on-premises Exchange (a hybrid tenant).
    on_premises: int = 0

    def __post_init__(self) -> None:
        if self.shared + self.room + self.equipment + self.no_mailbox + self.on_premises > self.count:
            raise ValueError("synthetic users: more special mailboxes than users")

    @cached_property
    def _multiplier(self) -> int:
        # A multiplier coprime with count makes i -> (a*i + b) mod count a permutation of range(count).
        a = 7919
        while _gcd(a, max(self.count, 1)) != 1:
            a += 2
        return a

    def _rank(self, index: int) -> int:
        return (self._multiplier * index + 17) % self.count

    def user(self, index: int) -> UserRecord:
        rank = self._rank(index)
        uid = str(uuid.UUID(int=(self.namespace << 64) | index))
        bounds = self.shared
        if rank < bounds:
            label = _SHARED_NAMES[rank % len(_SHARED_NAMES)]
            local = f"{label.lower()}{rank:04d}"
            return UserRecord(
                id=uid,
                display_name=f"{label} Mailbox {rank:04d}",
                user_principal_name=f"{local}@{self.domain}",
                mail=f"{local}@{self.domain}",
                account_enabled=rank < self.shared_signin_enabled,
                licensed=rank < self.shared_licensed,
                purpose="shared",
            )
        for purpose, amount in (("room", self.room), ("equipment", self.equipment)):
            if rank < bounds + amount:
                local = f"{purpose}{rank - bounds:03d}"
                return UserRecord(
                    uid,
                    f"{purpose.title()} {rank - bounds:03d}",
                    f"{local}@{self.domain}",
                    f"{local}@{self.domain}",
                    False,
                    False,
                    purpose=purpose,
                )
            bounds += amount
        first = _FIRST[rank % len(_FIRST)]
        last = _LAST[(rank // len(_FIRST)) % len(_LAST)]
        local = f"{first.lower()}.{last.lower()}{rank:05d}"
        no_mailbox = rank < bounds + self.no_mailbox
        on_premises = not no_mailbox and rank < bounds + self.no_mailbox + self.on_premises
        return UserRecord(
            id=uid,
            display_name=f"{first} {last}",
            user_principal_name=f"{local}@{self.domain}",
            mail=None if no_mailbox else f"{local}@{self.domain}",
            account_enabled=True,
            licensed=not no_mailbox,
            purpose=None if no_mailbox else "user",
            synced=on_premises,
            mailbox_on_premises=ON_PREMISES_ANSWERS[rank % len(ON_PREMISES_ANSWERS)] if on_premises else None,
        )

    def index_of(self, key: str) -> int | None:
        """The index of the user whose id is `key`, or None. UPN look-ups go through the directory."""
        try:
            value = uuid.UUID(key).int
        except ValueError:
            return None
        if value >> 64 != self.namespace:
            return None
        index = value & ((1 << 64) - 1)
        return index if index < self.count else None


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


class UserDirectory(Sequence[UserRecord]):
    """Explicit users (from a fixture) followed by synthetic ones; indexable and searchable.

    Directory changes made through :meth:`add`, :meth:`update` and :meth:`remove` are journaled (a
    sequence number per change) so that `GET /users/delta` can answer "what changed since this token".
    A change to a mailbox alone (:meth:`convert_mailbox`) is not a directory change and is not journaled:
    delta does not report mailbox changes (graph-api-notes.md §3.8).
    """

    def __init__(self, explicit: list[UserRecord] | None = None, synthetic: SyntheticUsers | None = None):
        self.explicit = explicit or []
        self.synthetic = synthetic
        self._by_id = {u.id.lower(): i for i, u in enumerate(self.explicit)}
        self._by_upn = {u.user_principal_name.lower(): i for i, u in enumerate(self.explicit)}
        # Synthetic users replaced (renamed, converted) or removed: by index.
        self._overrides: dict[int, UserRecord] = {}
        self._removed_synthetic: set[int] = set()
        self._live: list[int] | None = None  # positions still present, once anything was removed
        # The change journal: (sequence, user id, "deleted"/"changed" for removals, "" otherwise).
        self.change_seq = 0
        self.changes: list[tuple[int, str, str]] = []
        # Bumped to invalidate every delta token issued so far (the next delta round answers 410 Gone).
        self.token_epoch = 0

    def _journal(self, user_id: str, removed: str = "") -> None:
        self.change_seq += 1
        self.changes.append((self.change_seq, user_id, removed))

    def _positions(self) -> list[int] | None:
        if self._live is None and (self._removed_synthetic or len(self._by_id) < len(self.explicit)):
            total = len(self.explicit) + (self.synthetic.count if self.synthetic else 0)
            self._live = [i for i in range(total) if self._present(i)]
        return self._live

    def _present(self, position: int) -> bool:
        if position < len(self.explicit):
            user = self.explicit[position]
            return self._by_id.get(user.id.lower()) == position
        return position - len(self.explicit) not in self._removed_synthetic

    def _raw(self, position: int) -> UserRecord:
        if position < len(self.explicit):
            return self.explicit[position]
        assert self.synthetic is not None
        index = position - len(self.explicit)
        return self._overrides.get(index) or self.synthetic.user(index)

    def __len__(self) -> int:
        live = self._positions()
        if live is not None:
            return len(live)
        return len(self.explicit) + (self.synthetic.count if self.synthetic else 0)

    def __getitem__(self, index: int) -> UserRecord:  # type: ignore[override]
        if index < 0:
            index += len(self)
        if index < 0 or index >= len(self):
            raise IndexError(index)
        live = self._positions()
        return self._raw(live[index] if live is not None else index)

    def __iter__(self) -> Iterator[UserRecord]:
        for i in range(len(self)):
            yield self[i]

    def find(self, key: str) -> UserRecord | None:
        """Look a user up by object id or by userPrincipalName (case-insensitive)."""
        lowered = key.lower()
        if lowered in self._by_id:
            return self.explicit[self._by_id[lowered]]
        if lowered in self._by_upn:
            return self.explicit[self._by_upn[lowered]]
        if self.synthetic is not None:
            index = self.synthetic.index_of(lowered)
            if index is not None:
                if index in self._removed_synthetic:
                    return None
                return self._overrides.get(index) or self.synthetic.user(index)
            if "@" in lowered:
                # Synthetic UPNs end in the rank; scanning is fine for a by-hand look-up.
                for i in range(self.synthetic.count):
                    user = self._overrides.get(i) or self.synthetic.user(i)
                    if i not in self._removed_synthetic and user.user_principal_name.lower() == lowered:
                        return user
        return None

    def add(self, user: UserRecord) -> None:
        self._by_id[user.id.lower()] = len(self.explicit)
        self._by_upn[user.user_principal_name.lower()] = len(self.explicit)
        self.explicit.append(user)
        self._live = None
        self._journal(user.id)

    def update(self, user_id: str, **changes: Any) -> UserRecord:
        """Change a user's directory properties (e.g. ``display_name`` for a rename); journaled."""
        current = self.find(user_id)
        if current is None:
            raise KeyError(user_id)
        updated = replace(current, **changes)
        self._store(updated)
        self._journal(updated.id)
        return updated

    def convert_mailbox(self, user_id: str, purpose: str | None) -> UserRecord:
        """Change only the mailbox's userPurpose (Exchange's Set-Mailbox -Type Shared): no directory
        change, so not journaled (delta does not report mailbox changes, graph-api-notes.md §3.8)."""
        current = self.find(user_id)
        if current is None:
            raise KeyError(user_id)
        updated = replace(current, purpose=purpose)
        self._store(updated)
        return updated

    def remove(self, user_id: str, *, hard: bool = False) -> None:
        """Delete a user: soft (``@removed`` reason "changed": restorable for 30 days) or hard
        ("deleted"), as `GET /users/delta` reports them (learn.microsoft.com graph/api/user-delta)."""
        lowered = user_id.lower()
        if lowered in self._by_id:
            user = self.explicit[self._by_id.pop(lowered)]
            self._by_upn.pop(user.user_principal_name.lower(), None)
        else:
            index = self.synthetic.index_of(lowered) if self.synthetic is not None else None
            if index is None or index in self._removed_synthetic:
                raise KeyError(user_id)
            self._removed_synthetic.add(index)
        self._live = None
        self._journal(user_id, "deleted" if hard else "changed")

    def _store(self, user: UserRecord) -> None:
        lowered = user.id.lower()
        if lowered in self._by_id:
            self.explicit[self._by_id[lowered]] = user
            return
        assert self.synthetic is not None
        index = self.synthetic.index_of(lowered)
        assert index is not None
        self._overrides[index] = user


@dataclass
class TenantState:
    """One Entra tenant as the simulator serves it."""

    tenant_id: str
    display_name: str
    domain: str
    p2: bool = True
    # client_id -> application permissions consented for that app in this tenant
    consents: dict[str, set[str]] = field(default_factory=dict)
    service_principals: list[dict[str, Any]] = field(default_factory=list)
    role_assignments: list[dict[str, Any]] = field(default_factory=list)
    # Time-bound active assignments also show here through their endDateTime; eligibility is separate.
    eligibilities: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    app_role_assignments: list[dict[str, Any]] = field(default_factory=list)
    users: UserDirectory = field(default_factory=UserDirectory)
    faults: Any = None  # a FaultProfile, or None for the world's default

    def sp(self, key: str) -> dict[str, Any] | None:
        lowered = key.lower()
        for sp in self.service_principals:
            if sp["id"].lower() == lowered:
                return sp
        return None

    def sp_by_app_id(self, app_id: str) -> dict[str, Any] | None:
        lowered = app_id.lower()
        for sp in self.service_principals:
            if sp["appId"].lower() == lowered:
                return sp
        return None

    def group(self, key: str) -> dict[str, Any] | None:
        for group in self.groups:
            if group["id"].lower() == key.lower():
                return group
        return None


@dataclass
class World:
    """Everything the simulator serves: app registrations and tenants."""

    apps: dict[str, AppRegistration] = field(default_factory=dict)
    tenants: dict[str, TenantState] = field(default_factory=dict)
    default_faults: Any = None

    def tenant(self, key: str) -> TenantState | None:
        """A tenant by id or by a verified domain name (as a token endpoint path allows)."""
        lowered = key.lower()
        if lowered in self.tenants:
            return self.tenants[lowered]
        for tenant in self.tenants.values():
            if (
                tenant.domain.lower() == lowered
                or f"{tenant.domain.split('.')[0]}.onmicrosoft.com" == lowered
            ):
                return tenant
        return None

    def add_tenant(self, tenant: TenantState) -> TenantState:
        add_first_party_principals(tenant)
        self.tenants[tenant.tenant_id.lower()] = tenant
        return tenant


def add_first_party_principals(tenant: TenantState) -> None:
    """Every real tenant holds Microsoft's own service principals; Exchange Online's carries app roles."""
    if tenant.sp_by_app_id(EXCHANGE_ONLINE_APP_ID) is None:
        tenant.service_principals.append(
            service_principal(
                tenant.tenant_id,
                "exchange-online",
                EXCHANGE_ONLINE_APP_ID,
                "Office 365 Exchange Online",
                MICROSOFT_TENANT_ID,
                app_roles=[
                    {
                        "id": role_id,
                        "value": value,
                        "displayName": value,
                        "isEnabled": True,
                        "allowedMemberTypes": ["Application"],
                        "description": value,
                        "origin": "Application",
                    }
                    for value, role_id in EXCHANGE_APP_ROLES.items()
                ],
            )
        )
    if tenant.sp_by_app_id(MICROSOFT_GRAPH_APP_ID) is None:
        tenant.service_principals.append(
            service_principal(
                tenant.tenant_id,
                "microsoft-graph",
                MICROSOFT_GRAPH_APP_ID,
                "Microsoft Graph",
                MICROSOFT_TENANT_ID,
            )
        )


def service_principal(
    tenant_id: str,
    key: str,
    app_id: str,
    display_name: str,
    owner_tenant_id: str,
    *,
    enabled: bool = True,
    app_roles: list[dict[str, Any]] | None = None,
    object_id: str | None = None,
) -> dict[str, Any]:
    """A service principal object with the properties Graph returns by default."""
    return {
        "id": object_id or stable_id(tenant_id, "sp", key),
        "accountEnabled": enabled,
        "appDisplayName": display_name,
        "appId": app_id,
        "appOwnerOrganizationId": owner_tenant_id,
        "displayName": display_name,
        "servicePrincipalType": "Application",
        "signInAudience": "AzureADMultipleOrgs" if owner_tenant_id != tenant_id else "AzureADMyOrg",
        "tags": [],
        "appRoles": app_roles or [],
    }


def thumbprint(der: bytes) -> str:
    """The `x5t#S256` thumbprint (base64url SHA-256 of the DER certificate)."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
