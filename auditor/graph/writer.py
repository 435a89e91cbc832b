"""The one write the auditor ever makes: an active directory role assignment at a scope.

It sends exactly one POST per call. The SDK's retry middleware is off for this client (see
`client.make_graph_client`), so a POST that reached Graph but whose answer was lost is never repeated
blindly; the caller re-reads and decides (auditor.remediation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
from azure.core.exceptions import ClientAuthenticationError
from kiota_abstractions.api_error import APIError
from kiota_abstractions.request_information import RequestInformation
from kiota_http.middleware.options import HeadersInspectionHandlerOption, RetryHandlerOption
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.unified_role_assignment import UnifiedRoleAssignment

from auditor.errors import ErrorCode, GraphError, permission_hint

from .client import GraphSession, retry_after_seconds, send_for_bytes
from .reader import translate_auth_error

WRITE_PERMISSION = "RoleManagement.ReadWrite.Directory"


@dataclass(frozen=True)
class WriteAnswer:
    """What Graph answered to one POST (or that no answer came back)."""

    status: int  # 0: no answer (connection lost or timed out): the write may or may not have happened
    assignment_id: str | None = None
    request_id: str | None = None
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None

    @property
    def created(self) -> bool:
        return self.status == 201

    @property
    def conflict(self) -> bool:
        """Graph's "already exists": 400 Request_BadRequest "conflicting object", or a 409."""
        return self.status == 409 or (
            self.status == 400 and "conflicting object" in (self.message or "").lower()
        )

    @property
    def unknown_outcome(self) -> bool:
        """The server may have applied it: re-read before anything else."""
        return self.status in (0, 500, 502, 503, 504)


class RoleAssignmentWriter:
    """Creates role assignments for one tenant through the SDK's request builder."""

    def __init__(self, session: GraphSession, tenant_label: str):
        self.session = session
        self.tenant_label = tenant_label

    async def create(
        self, principal_id: str, role_definition_id: str, directory_scope_id: str
    ) -> WriteAnswer:
        """POST /roleManagement/directory/roleAssignments once. Raises GraphError for a refused sign-in
        or a 403 (with a hint naming the permission); every other answer is returned as it came."""
        body = UnifiedRoleAssignment(
            principal_id=principal_id,
            role_definition_id=role_definition_id,
            directory_scope_id=directory_scope_id,
        )
        builder = self.session.client.role_management.directory.role_assignments
        info: RequestInformation = builder.to_post_request_information(body)
        inspection = HeadersInspectionHandlerOption(inspect_response_headers=True)
        # Belt and braces: even if a client were built with SDK retries on, this request is never retried.
        info.add_request_options([inspection, RetryHandlerOption(max_retries=0, should_retry=False)])
        try:
            raw = await send_for_bytes(self.session.client, info)
        except ODataError as exc:
            request_id = _request_id(exc)
            status = exc.response_status_code or 0
            code = exc.error.code if exc.error else None
            message = exc.error.message if exc.error else str(exc)
            if status in (401, 403):
                settings = self.session.settings
                raise GraphError(
                    f"Graph refused the role assignment in tenant {self.tenant_label}: {status} {code}: {message}",
                    code=ErrorCode.PERMISSION_DENIED,
                    hint=permission_hint(
                        WRITE_PERMISSION,
                        self.tenant_label,
                        f"the remediation app (client id {settings.client_id})",
                    ),
                    status=status,
                    request_id=request_id,
                ) from None
            return WriteAnswer(
                status, None, request_id, code, message, retry_after_seconds(exc.response_headers)
            )
        except APIError as exc:
            # An answer that is not Graph's JSON error envelope, e.g. a gateway's HTML page on a 502/503: the
            # SDK cannot parse it, so only its status is known. A 5xx may have been applied: re-read first.
            status = exc.response_status_code or 0
            return WriteAnswer(
                status,
                None,
                _header(exc.response_headers, "request-id"),
                None,
                f"{status} answer without Graph's error body (e.g. a gateway's error page)",
                retry_after_seconds(exc.response_headers),
            )
        except (httpx.TransportError, OSError) as exc:
            return WriteAnswer(0, message=f"no answer: {type(exc).__name__}: {exc}")
        except ClientAuthenticationError as exc:
            settings = self.session.settings
            raise translate_auth_error(
                exc, settings.client_id, self.tenant_label, settings.tenant_id
            ) from None
        created = json.loads(raw) if raw else {}
        request_id = _header(inspection.response_headers, "request-id")
        return WriteAnswer(201, str(created.get("id") or "") or None, request_id)


def _request_id(exc: ODataError) -> str | None:
    if exc.error is not None and exc.error.inner_error is not None and exc.error.inner_error.request_id:
        return str(exc.error.inner_error.request_id)
    return _header(exc.response_headers, "request-id")


def _header(headers: Any, name: str) -> str | None:
    """One value of a response header as kiota hands them over (a set of values per name)."""
    value = headers.get(name) if headers is not None else None
    if value:
        return str(next(iter(value))) if isinstance(value, (set, list, tuple)) else str(value)
    return None
