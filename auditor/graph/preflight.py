"""The Graph and sign-in side of ``auditor doctor``: get a token, read what it carries, look things up.

Everything SDK-shaped stays here (``auditor.doctor`` never imports azure or msgraph): a failed sign-in
becomes a :class:`~auditor.errors.GraphError` with the AADSTS code's fix, a Graph failure the same
error the audit would report, and the token is reduced to its claims at once, so the access token
itself never leaves this module.

The token is decoded, not verified: the auditor is its intended client, not its audience, and only
wants to know which application permissions (``roles``) Entra put into it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

from auditor.errors import ErrorCode, GraphError, redact

from .client import ConnectionSettings, GraphSession, jwt_claims, open_session, tenant_mismatch
from .reader import GraphReader, translate_auth_error

__all__ = ["Preflight", "TokenGrant", "jwt_claims", "preflight_session"]


@dataclass(frozen=True)
class TokenGrant:
    """What an app-only access token says about the app in this tenant (never the token itself)."""

    roles: frozenset[str]  # application permissions consented in this tenant when it was issued
    app_id: str | None  # appid / azp claim: the client the token was issued to
    tenant_id: str | None  # tid claim
    expires_on: datetime


class Preflight:
    """One tenant's sign-in and the few reads ``auditor doctor`` makes, as one app."""

    def __init__(self, session: GraphSession, tenant_label: str) -> None:
        self.session = session
        self.settings = session.settings
        self.tenant_label = tenant_label
        self.reader = GraphReader(session, tenant_label)

    async def token(self) -> TokenGrant:
        """Get an access token for Graph and read its claims; raises GraphError (AUTH_FAILED with the
        AADSTS hint, NETWORK_ERROR, GRAPH_ERROR for a token that is not a JWT, WRONG_TENANT for a token
        issued for another tenant)."""
        settings = self.settings
        try:
            access = await self.session.credential.get_token(settings.scope)
        except ClientAuthenticationError as exc:
            raise translate_auth_error(
                exc, settings.client_id, self.tenant_label, settings.tenant_id
            ) from None
        except ServiceRequestError as exc:
            raise GraphError(
                f"Could not reach the sign-in endpoint {settings.authority} for tenant {self.tenant_label}: "
                f"{redact(str(exc))}",
                code=ErrorCode.NETWORK_ERROR,
            ) from None
        except (ValueError, OSError) as exc:
            # The credential could not use its material (an unreadable certificate, a bad token file).
            raise translate_auth_error(
                exc, settings.client_id, self.tenant_label, settings.tenant_id
            ) from None
        try:
            claims = jwt_claims(access.token)
        except ValueError as exc:
            raise GraphError(
                f"Signed in to tenant {self.tenant_label}, but {exc}; its permissions cannot be read.",
                code=ErrorCode.GRAPH_ERROR,
                hint="Check that authority and graph_endpoint point at Microsoft Entra ID and Microsoft Graph.",
            ) from None
        # A token for another tenant (e.g. a managed identity's home tenant) is the tenant's problem to fix.
        wrong = tenant_mismatch(settings.tenant_id, None, _text(claims.get("tid")))
        if wrong is not None:
            raise wrong
        roles = claims.get("roles") or []
        return TokenGrant(
            roles=frozenset(str(r) for r in roles) if isinstance(roles, list) else frozenset(),
            app_id=_text(claims.get("appid") or claims.get("azp")),
            tenant_id=_text(claims.get("tid")),
            expires_on=datetime.fromtimestamp(access.expires_on, UTC),
        )

    async def service_principals(self, odata_filter: str, select: list[str]) -> list[dict[str, Any]]:
        """``GET /servicePrincipals?$filter=...`` (Application.Read.All); raises GraphError."""
        return await self.reader.service_principals(odata_filter, select)

    async def application_passwords(self, app_id: str) -> list[dict[str, Any]] | None:
        """The ``passwordCredentials`` (secret ids, hints and end dates, never values) of the app
        registration with ``app_id``, or ``None`` when it is not registered in this tenant (it lives in
        its home tenant) or cannot be read. Needs Application.Read.All."""
        quoted = app_id.replace("'", "''")
        build = self.reader.url_request(
            f"/applications(appId='{quoted}')?$select=id,appId,passwordCredentials"
        )
        try:
            body = await self.reader.send(build, "Application.Read.All")
        except GraphError as exc:
            if exc.status in (400, 403, 404):
                return None
            raise
        passwords = body.get("passwordCredentials")
        return [dict(p) for p in passwords if isinstance(p, dict)] if isinstance(passwords, list) else None


@asynccontextmanager
async def preflight_session(settings: ConnectionSettings, tenant_label: str) -> AsyncIterator[Preflight]:
    """Open a credential and Graph client for one tenant (closed on exit). A credential that cannot be
    built from its material raises GraphError AUTH_FAILED, like a failed sign-in."""
    async with AsyncExitStack() as stack:
        try:
            session = await stack.enter_async_context(open_session(settings))
        except (ValueError, OSError) as exc:
            raise translate_auth_error(exc, settings.client_id, tenant_label, settings.tenant_id) from None
        yield Preflight(session, tenant_label)


def _text(value: object) -> str | None:
    return str(value) if value else None
