"""Fixed identifiers and endpoints the auditor relies on.

Everything here is a fact about Microsoft Entra ID / Microsoft Graph or about the vendor app, not a
setting: values that a user may want to change live in the config file instead (see ``config.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType
from typing import Final

# --- Entra ID built-in role ---------------------------------------------------------------------------
# For built-in roles the role template id and the role definition id are the same GUID, so this value
# works both in filters and in POST /roleManagement/directory/roleAssignments.
SECURITY_READER_ROLE_ID: Final = "5d6b6bb7-de71-4623-b4af-96380a352509"
SECURITY_READER_ROLE_NAME: Final = "Security Reader"
# directoryScopeId of a tenant-wide assignment; anything else (an administrative unit, one object) is
# narrower and does not let the vendor see every mailbox.
TENANT_WIDE_SCOPE: Final = "/"

# --- Office 365 Exchange Online (first-party resource app) --------------------------------------------
EXCHANGE_ONLINE_APP_ID: Final = "00000002-0000-0ff1-ce00-000000000000"
EXCHANGE_ONLINE_DISPLAY_NAME: Final = "Office 365 Exchange Online"
EXCHANGE_MANAGE_AS_APP_ROLE_ID: Final = "dc50a0fb-09a3-484d-be87-e023b12c6440"
EXCHANGE_MANAGE_AS_APP_ROLE_VALUE: Final = "Exchange.ManageAsApp"
# Fallback used when the Exchange Online SP's appRoles could not be read to translate an appRoleId into
# its value. Only ids confirmed by several independent sources are listed (graph-api-notes §3.12).
KNOWN_EXCHANGE_APP_ROLES: Final = MappingProxyType(
    {
        EXCHANGE_MANAGE_AS_APP_ROLE_ID: EXCHANGE_MANAGE_AS_APP_ROLE_VALUE,
        "dc890d15-9560-4a4c-9b7f-a736ec74ec40": "full_access_as_app",
        "5e5addcd-3e8d-4e90-baf5-964efab2b20a": "IMAP.AccessAsApp",
    }
)

# Owner (appOwnerOrganizationId) of Microsoft's first-party apps such as Exchange Online.
MICROSOFT_TENANT_ID: Final = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"

# --- The vendor app -------------------------------------------------------------------------------------
DEFAULT_APP_DISPLAY_NAME: Final = "USS AzureAD"

# --- Clouds -----------------------------------------------------------------------------------------------
GRAPH_API_VERSION: Final = "v1.0"


@dataclass(frozen=True)
class CloudEndpoints:
    """Sign-in authority and Microsoft Graph endpoint of one national cloud."""

    name: str
    authority: str  # e.g. https://login.microsoftonline.com (no tenant, no trailing slash)
    graph_endpoint: str  # e.g. https://graph.microsoft.com (no /v1.0, no trailing slash)

    @property
    def scope(self) -> str:
        """The app-only token scope for this cloud's Graph: ``<graph endpoint>/.default``."""
        return graph_scope(self.graph_endpoint)


def graph_scope(graph_endpoint: str) -> str:
    """App-only scope for a Graph endpoint; the scope must follow the endpoint the token is used at."""
    return f"{graph_endpoint.rstrip('/')}/.default"


CLOUDS: Final = MappingProxyType(
    {
        "global": CloudEndpoints(
            "global", "https://login.microsoftonline.com", "https://graph.microsoft.com"
        ),
        "usgov": CloudEndpoints("usgov", "https://login.microsoftonline.us", "https://graph.microsoft.us"),
        "usgov-dod": CloudEndpoints(
            "usgov-dod", "https://login.microsoftonline.us", "https://dod-graph.microsoft.us"
        ),
        "china": CloudEndpoints(
            "china", "https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn"
        ),
    }
)
DEFAULT_CLOUD: Final = "global"

# --- Application permissions (Microsoft Graph, app-only) -----------------------------------------------
# Least-privileged set for a read-only audit (graph-api-notes §1). RoleManagement.Read.Directory also
# covers the PIM schedule/eligibility reads, so the narrower PIM permissions are not listed.
AUDIT_PERMISSIONS: Final = (
    "Application.Read.All",
    "RoleManagement.Read.Directory",
    "User.Read.All",
    "MailboxSettings.Read",
    "Organization.Read.All",
)
# The only write the tool makes (an active Security Reader assignment) needs this, and nothing narrower
# exists for the directory provider.
REMEDIATION_PERMISSIONS: Final = ("RoleManagement.ReadWrite.Directory",)

# --- Judgement thresholds ---------------------------------------------------------------------------------
# A time-bound Security Reader assignment that ends within this many days is reported with a higher
# severity: at most one monthly billing cycle away from shared mailboxes being billed again.
ROLE_EXPIRY_WARNING_DAYS: Final = 30


class ExitCode(IntEnum):
    """Process exit codes (DESIGN §3.1); a scheduler acts on these."""

    OK = 0  # every tenant compliant, remediated or not connected
    GAPS = 1  # at least one tenant non_compliant or ambiguous
    USAGE = 2  # usage or configuration error: nothing was audited
    TENANT_ERROR = 3  # at least one tenant could not be audited; wins over GAPS
    REPORTS_FAILED = 4  # audited (and recorded) but the reports could not be written; previous ones intact
