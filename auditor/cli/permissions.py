"""`auditor permissions`: the exact Microsoft Graph application permissions to grant, and what each is for."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from auditor.constants import AUDIT_PERMISSIONS, REMEDIATION_PERMISSIONS
from auditor.doctor import PERMISSION_PURPOSES

__all__ = ["permissions", "permissions_document", "permissions_text"]

# Microsoft Graph's appId: the resource these application permissions belong to.
MICROSOFT_GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


def permissions_document() -> dict[str, Any]:
    """The permission sets as data (the ``--json`` output)."""

    def items(names: tuple[str, ...]) -> list[dict[str, str]]:
        return [
            {"permission": name, "type": "Application", "purpose": PERMISSION_PURPOSES[name]}
            for name in names
        ]

    return {
        "resource": "Microsoft Graph",
        "resource_app_id": MICROSOFT_GRAPH_APP_ID,
        "audit": items(AUDIT_PERMISSIONS),
        "remediation": items(REMEDIATION_PERMISSIONS),
        "remediation_with_one_app": [*AUDIT_PERMISSIONS, *REMEDIATION_PERMISSIONS],
        "remediation_with_separate_app": list(REMEDIATION_PERMISSIONS),
    }


def permissions_text() -> str:
    """The permission sets as text for people."""
    width = max(len(p) for p in (*AUDIT_PERMISSIONS, *REMEDIATION_PERMISSIONS))

    def rows(names: tuple[str, ...]) -> list[str]:
        return [f"  {name.ljust(width)}  {PERMISSION_PURPOSES[name]}" for name in names]

    lines = [
        "Microsoft Graph application permissions (app-only; an administrator of every tenant grants admin "
        "consent).",
        "",
        "Audit only (`auditor audit`, `auditor doctor`): read-only, least privilege:",
        *rows(AUDIT_PERMISSIONS),
        "",
        "Remediation (`auditor audit --remediate`) adds:",
        *rows(REMEDIATION_PERMISSIONS),
        "",
        "  With one app, grant it all of the above. With a separate remediation app ([remediation_auth] in the",
        "  config), the audit app keeps only the read permissions and the remediation app needs only",
        f"  {', '.join(REMEDIATION_PERMISSIONS)}. Tenants with remediate = false never need it.",
        "",
        "A token lists the permissions consented when it was issued: after granting, check with `auditor doctor`.",
    ]
    return "\n".join(lines) + "\n"


def permissions(
    as_json: Annotated[bool, typer.Option("--json", help="Print the permission sets as JSON.")] = False,
) -> None:
    """Print the exact Microsoft Graph application permissions for audit only and for remediation."""
    if as_json:
        typer.echo(json.dumps(permissions_document(), indent=2))
    else:
        typer.echo(permissions_text(), nl=False)
