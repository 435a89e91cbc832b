"""The identity side: Entra's client-credentials token endpoint and the tokens Graph accepts.

Clients authenticate with a client secret, a certificate-signed client assertion (PS256/RS256, checked
against the certificate registered on the app), or a federated assertion (workload identity) issued by
the simulator's own issuer. Tokens are JWTs signed by the simulator; they carry the tenant (`tid`), the
app (`appid`) and the application permissions consented for that app in that tenant (`roles`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .world import AppRegistration, World, stable_id

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FEDERATION_AUDIENCE = "api://AzureADTokenExchange"
TOKEN_LIFETIME = 3599


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenError(Exception):
    """An Entra-style token endpoint error (`error`, AADSTS code and description)."""

    def __init__(self, status: int, error: str, aadsts: int, description: str):
        super().__init__(description)
        self.status = status
        self.error = error
        self.aadsts = aadsts
        self.description = description

    def body(self) -> dict[str, Any]:
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
        return {
            "error": self.error,
            "error_description": f"AADSTS{self.aadsts}: {self.description} Trace ID: {trace} "
            f"Correlation ID: {correlation} Timestamp: {stamp}",
            "error_codes": [self.aadsts],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.aadsts}",
        }


@dataclass(frozen=True)
class AccessToken:
    tenant_id: str
    app_id: str
    roles: frozenset[str]
    audience: str
    expires: float


class IdentityService:
    """Issues and checks tokens. One per simulator; keys are made fresh at every start."""

    def __init__(self, world: World, issuer_url: str):
        self.world = world
        self.issuer_url = issuer_url  # also the federation issuer for workload identity tokens
        self._signing_key = secrets.token_bytes(32)
        self._federation_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.audiences: set[str] = {"https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"}
        # Every access token handed out (most recent last, bounded): tests check none of them leaks.
        self.issued: deque[str] = deque(maxlen=10_000)
        # Test hook: hand out opaque tokens (not JWTs). Microsoft tells clients to treat access tokens as
        # opaque (learn.microsoft.com entra/identity-platform/access-tokens: their format may change or be
        # encrypted), so a client must not depend on reading them.
        self.opaque_tokens = False
        self._opaque: dict[str, dict[str, Any]] = {}

    # --- the token endpoint -------------------------------------------------------------------

    def token(self, tenant_key: str, form: dict[str, str], token_url: str) -> dict[str, Any]:
        """Answer `POST /{tenant}/oauth2/v2.0/token`; raises TokenError like Entra does."""
        tenant = self.world.tenant(tenant_key)
        if tenant is None:
            raise TokenError(
                400,
                "invalid_tenant",
                90002,
                f"Tenant '{tenant_key}' not found. Check to make sure you have the correct tenant ID and are "
                "signing into the correct cloud.",
            )
        if form.get("grant_type") != "client_credentials":
            raise TokenError(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        client_id = form.get("client_id", "")
        app = self.world.apps.get(client_id.lower())
        if app is None or client_id.lower() not in tenant.consents:
            raise TokenError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant.display_name}'. "
                "This can happen if the application has not been installed by the administrator of the tenant "
                "or consented to by any user in the tenant.",
            )
        if "client_secret" in form:
            if not any(hmac.compare_digest(form["client_secret"], s) for s in app.secrets):
                raise TokenError(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                    f"secret value, not the client secret ID, for a secret added to app '{app.client_id}'.",
                )
        elif form.get("client_assertion_type") == ASSERTION_TYPE and form.get("client_assertion"):
            self._check_assertion(app, form["client_assertion"], token_url)
        else:
            raise TokenError(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        scope = form.get("scope", "")
        resource = scope.split()[0] if scope.split() else ""
        if not resource.endswith("/.default"):
            raise TokenError(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must have a scope "
                "value with /.default suffixed to the resource identifier (application ID URI).",
            )
        audience = resource[: -len("/.default")]
        now = int(time.time())
        claims = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{tenant.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_LIFETIME,
            "appid": app.client_id,
            "azp": app.client_id,
            "idtyp": "app",
            "oid": stable_id(tenant.tenant_id, "sp", "client:" + app.client_id),
            "tid": tenant.tenant_id,
            "roles": sorted(tenant.consents[client_id.lower()]),
            "ver": "1.0",
        }
        access_token = self._sign_hs256(claims)
        self.issued.append(access_token)
        return {
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME,
            "ext_expires_in": TOKEN_LIFETIME,
            "access_token": access_token,
        }

    # --- the managed identity endpoint (App Service style) ---------------------------------------

    def managed_identity_token(self, client_id: str | None, resource: str) -> dict[str, Any]:
        """Answer ``GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=...[&client_id=...]``.

        The token is for the identity's *home* tenant, whatever tenant the caller had in mind: a managed
        identity takes no tenant id and does not work across directories
        (learn.microsoft.com/azure/app-service/overview-managed-identity, "REST endpoint reference"; the
        answer's fields below are that page's: access_token, expires_on (epoch seconds, a string),
        resource, token_type, client_id; azure-identity's ManagedIdentityClient needs access_token,
        expires_on or expires_in, and resource). Raises TokenError with App Service's 400 when no such
        identity is assigned.
        """
        identities = [a for a in self.world.apps.values() if a.home_tenant_id is not None]
        if client_id:
            identities = [a for a in identities if a.client_id.lower() == client_id.lower()]
        if len(identities) != 1 or not resource:
            raise TokenError(
                400,
                "invalid_request",
                0,
                "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/"
                "PrincipalId."
                if resource
                else "Required query parameter 'resource' is missing.",
            )
        identity = identities[0]
        home = self.world.tenant(identity.home_tenant_id or "")
        assert home is not None, identity.home_tenant_id
        audience = resource.removesuffix("/.default").rstrip("/")
        now = int(time.time())
        claims = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{home.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_LIFETIME,
            "appid": identity.client_id,
            "azp": identity.client_id,
            "idtyp": "app",
            "oid": stable_id(home.tenant_id, "sp", "client:" + identity.client_id),
            "tid": home.tenant_id,
            "roles": sorted(home.consents.get(identity.client_id.lower(), ())),
            "ver": "1.0",
        }
        access_token = self._sign_hs256(claims)
        self.issued.append(access_token)
        return {
            "access_token": access_token,
            "expires_on": str(now + TOKEN_LIFETIME),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        }

    def openid_configuration(self, tenant_key: str, base_url: str) -> dict[str, Any]:
        tenant = self.world.tenant(tenant_key)
        if tenant is None:
            raise TokenError(400, "invalid_tenant", 90002, f"Tenant '{tenant_key}' not found.")
        root = f"{base_url}/{tenant.tenant_id}"
        return {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "issuer": f"{root}/v2.0",
            "jwks_uri": f"{base_url}/{tenant.tenant_id}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": "EU",
        }

    def _check_assertion(self, app: AppRegistration, assertion: str, token_url: str) -> None:
        try:
            header_b64, claims_b64, signature_b64 = assertion.split(".")
            header = json.loads(b64url_decode(header_b64))
            claims = json.loads(b64url_decode(claims_b64))
            signature = b64url_decode(signature_b64)
        except (ValueError, json.JSONDecodeError) as exc:
            raise TokenError(400, "invalid_client", 50027, "JWT token is invalid or malformed.") from exc
        signed = f"{header_b64}.{claims_b64}".encode()
        now = time.time()
        if claims.get("iss") == self.issuer_url:
            # A federated (workload identity) token from our own issuer.
            self._verify_rsa(self._federation_key.public_key(), header.get("alg"), signed, signature)
            if claims.get("aud") != FEDERATION_AUDIENCE or claims.get("sub") not in app.federated_subjects:
                raise TokenError(
                    400,
                    "invalid_client",
                    70021,
                    "No matching federated identity record found for presented assertion. "
                    f"Assertion Issuer: '{claims.get('iss')}'. Assertion Subject: '{claims.get('sub')}'.",
                )
        else:
            thumb = header.get("x5t#S256") or header.get("x5t")
            pem = app.certificates.get(str(thumb).rstrip("="))
            if pem is None:
                raise TokenError(
                    401,
                    "invalid_client",
                    700027,
                    f"The certificate with identifier used to sign the client assertion is not registered on "
                    f"application. [Reason - The key was not found., Thumbprint of key used by client: "
                    f"'{thumb}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see "
                    f"configured keys for app Id '{app.client_id}'.]",
                )
            public_key = x509.load_pem_x509_certificate(pem).public_key()
            if not isinstance(public_key, rsa.RSAPublicKey):
                raise TokenError(
                    401, "invalid_client", 700027, "Client assertion contains an invalid signature."
                )
            self._verify_rsa(public_key, header.get("alg"), signed, signature)
            if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
                raise TokenError(
                    401,
                    "invalid_client",
                    700021,
                    "Client assertion application identifier doesn't match 'client_id' parameter.",
                )
            audience = str(claims.get("aud", ""))
            if audience.split("?")[0].rstrip("/").lower() != token_url.rstrip("/").lower():
                raise TokenError(
                    401,
                    "invalid_client",
                    700016 if not audience else 700212,
                    f"No matching federated identity record found for presented assertion audience '{audience}'.",
                )
        if not (float(claims.get("nbf", 0)) - 300 <= now < float(claims.get("exp", 0))):
            raise TokenError(
                401, "invalid_client", 700024, "Client assertion is not within its valid time range."
            )

    @staticmethod
    def _verify_rsa(key: rsa.RSAPublicKey, alg: Any, signed: bytes, signature: bytes) -> None:
        try:
            if alg == "PS256":
                key.verify(
                    signature,
                    signed,
                    padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
                    hashes.SHA256(),
                )
            elif alg == "RS256":
                key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            else:
                raise InvalidSignature(f"unsupported alg {alg}")
        except InvalidSignature as exc:
            raise TokenError(
                401, "invalid_client", 700027, "Client assertion contains an invalid signature."
            ) from exc

    # --- federated tokens for workload identity tests ------------------------------------------

    def federated_token(self, subject: str, lifetime: int = 3600) -> str:
        """A projected service-account token as a Kubernetes cluster would mount it for the pod."""
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "kid": "sim-federation"}
        claims = {
            "iss": self.issuer_url,
            "sub": subject,
            "aud": FEDERATION_AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
        }
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        signature = self._federation_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"

    # --- access tokens ---------------------------------------------------------------------------

    def _sign_hs256(self, claims: dict[str, Any]) -> str:
        if self.opaque_tokens:
            token = secrets.token_urlsafe(48)
            self._opaque[token] = claims
            return token
        header = b64url(json.dumps({"typ": "JWT", "alg": "HS256", "kid": "sim"}).encode())
        body = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._signing_key, f"{header}.{body}".encode(), hashlib.sha256).digest()
        return f"{header}.{body}.{b64url(signature)}"

    def verify_access_token(self, token: str) -> AccessToken:
        """Check a bearer token as Graph would; raises ValueError with Graph's message when it is bad."""
        opaque = self._opaque.get(token)
        if opaque is not None:
            return self._accepted(opaque)
        try:
            header, body, signature = token.split(".")
            expected = hmac.new(self._signing_key, f"{header}.{body}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, b64url_decode(signature)):
                raise ValueError("Invalid signature.")
            claims = json.loads(b64url_decode(body))
        except (ValueError, json.JSONDecodeError) as exc:
            raise ValueError("Access token validation failure. Invalid audience.") from exc
        return self._accepted(claims)

    def _accepted(self, claims: dict[str, Any]) -> AccessToken:
        if time.time() >= claims["exp"]:
            raise ValueError("Lifetime validation failed, the token is expired.")
        if claims["aud"].rstrip("/") not in self.audiences:
            raise ValueError("Access token validation failure. Invalid audience.")
        return AccessToken(
            claims["tid"], claims["appid"], frozenset(claims["roles"]), claims["aud"], claims["exp"]
        )
