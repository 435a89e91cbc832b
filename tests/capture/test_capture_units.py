"""The pure parts of capture and replay: pseudonyms, what a token exchange keeps, request matching."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from auditor.errors import redact, redact_bulk, register_secret
from auditor.graph.capture import Pseudonyms, clean_headers, token_answer, token_form
from auditor.simulator.replay import index_capture, request_key

KEY = b"k" * 32


def _jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (
            "GET https://graph.microsoft.com/v1.0/users?$top=999",
            "GET https://127.0.0.1:9/v1.0/users?$top=999",
            True,
        ),
        (
            "GET https://graph.microsoft.com/v1.0/users?$top=999&$skiptoken=AAA",
            "GET https://127.0.0.1:9/v1.0/users?$top=999&$skiptoken=BBB",
            True,
        ),
        ("GET /v1.0/users?$top=999&$skiptoken=A", "GET /v1.0/users?$top=999", False),  # page 2 is not page 1
        ("GET /v1.0/users?%24select=id%2Cmail&%24top=999", "GET /v1.0/users?$top=999&$select=id,mail", True),
        (
            "GET /v1.0/servicePrincipals?$filter=displayName eq 'USS AzureAD'",
            "GET /v1.0/servicePrincipals?%24filter=displayName%20eq%20%27USS%20AzureAD%27",
            True,
        ),
        (
            "GET /users/1/mailboxSettings",
            "GET https://graph.microsoft.com/v1.0/users/1/mailboxSettings",
            True,
        ),
        ("GET /v1.0/users/1/mailboxSettings", "GET /v1.0/users/2/mailboxSettings", False),
        ("GET /v1.0/organization", "POST /v1.0/organization", False),
        ("GET /v1.0/users?$filter=a eq 'x'", "GET /v1.0/users?$filter=a eq 'y'", False),
    ],
)
def test_request_key(a: str, b: str, same: bool) -> None:
    assert (request_key(*a.split(" ", 1)) == request_key(*b.split(" ", 1))) is same


def test_pseudonyms_are_stable_and_keep_the_shape() -> None:
    p = Pseudonyms(KEY)
    upn = p.address("Ann.Lee@Contoso.example")
    assert upn == p.address("ann.lee@contoso.example")  # addresses are case-insensitive
    assert upn.endswith(p.domain("contoso.example")) and upn.startswith("u-")
    assert p.address("bob@contoso.example").split("@")[1] == upn.split("@")[1]
    assert p.name("Ann Lee") == p.name("Ann Lee") != p.name("Ann Leigh")
    assert p.name("Ann Lee").startswith("name-")
    assert p.proxy_address("SMTP:ann.lee@contoso.example") == f"SMTP:{upn}"
    assert Pseudonyms(b"x" * 32).name("Ann Lee") != p.name("Ann Lee")  # a new capture, a new key


@pytest.mark.parametrize(
    ("obj", "kept", "gone"),
    [
        (
            {
                "id": "1",
                "displayName": "Ann Lee",
                "userPrincipalName": "ann@c.example",
                "mail": "ann@c.example",
            },
            ["1"],
            ["Ann Lee", "ann@c.example"],
        ),
        (  # the vendor app and Microsoft's apps keep their names: the audit finds the vendor by name
            {"id": "2", "appId": "a", "displayName": "USS AzureAD", "appOwnerOrganizationId": "o"},
            ["USS AzureAD", "2"],
            [],
        ),
        (
            {"@odata.type": "#microsoft.graph.group", "id": "3", "displayName": "Finance Team", "mail": None},
            ["3"],
            ["Finance Team"],
        ),
        (
            {"@odata.type": "#microsoft.graph.directoryRole", "id": "4", "displayName": "Security Reader"},
            ["Security Reader"],
            [],
        ),
        (
            {
                "id": "5",
                "displayName": "Contoso Ltd",
                "verifiedDomains": [{"name": "contoso.example"}],
                "city": "Leeds",
            },
            ["5"],
            ["Contoso Ltd", "contoso.example", "Leeds"],
        ),
        (
            {"automaticRepliesSetting": {"internalReplyMessage": "<p>Out until Monday, call 0123</p>"}},
            [],
            ["Out until Monday"],
        ),
        (
            {"value": [{"id": "6", "proxyAddresses": ["SMTP:x@c.example", "smtp:y@c.example"]}]},
            ["SMTP:", "smtp:"],
            ["x@c.example", "y@c.example"],
        ),
        ({"value": [{"id": "7", "displayName": None, "mail": None}]}, ["7"], []),
    ],
)
def test_scrub(obj: dict[str, Any], kept: list[str], gone: list[str]) -> None:
    text = json.dumps(Pseudonyms(KEY).scrub(obj))
    assert all(value in text for value in kept), text
    assert not [value for value in gone if value in text], text


def test_names_seen_are_replaced_in_later_text() -> None:
    p = Pseudonyms(KEY)
    pseudonym = p.address("ann@c.example")
    assert p.in_text("The requested user 'ann@c.example' is invalid.") == (
        f"The requested user '{pseudonym}' is invalid."
    )
    assert p.in_text("nothing known") == "nothing known"
    name = p.name("Board Room")
    assert (
        p.in_text('Mailbox "Board Room" (Board Room) is hidden.') == f'Mailbox "{name}" ({name}) is hidden.'
    )
    # An address never seen before is still an address: it is pseudonymised, consistently, and once.
    unseen = p.in_text("Forwarding to bob.smith@other.example failed")
    assert unseen == f"Forwarding to {p.address('bob.smith@other.example')} failed"
    assert p.in_text(unseen) == unseen
    oneil = "o'neil@c.example"
    assert p.in_text(f"'{oneil}'") == f"'{p.address(oneil)}'"


@pytest.mark.parametrize(
    "form",
    [
        {"client_id": "c", "client_secret": "s3cr3t-value", "grant_type": "client_credentials", "scope": "x"},
        b"client_id=c&client_secret=s3cr3t-value&grant_type=client_credentials&scope=x",
        "client_id=c&client_assertion=s3cr3t-value&client_assertion_type=jwt-bearer&scope=x",
        {"client_id": "c", "refresh_token": "s3cr3t-value", "password": "s3cr3t-value"},
    ],
)
def test_token_form_keeps_no_credential(form: Any) -> None:
    kept = token_form(form)
    assert kept["client_id"] == "c"
    assert "s3cr3t-value" not in json.dumps(kept)


def test_token_answer_keeps_claims_not_tokens() -> None:
    token = _jwt({"tid": "t", "roles": ["User.Read.All"], "oid": "o", "exp": 1, "appid": "a"})
    body = token_answer(
        {
            "token_type": "Bearer",
            "expires_in": 3599,
            "access_token": token,
            "refresh_token": "r",
            "id_token": "i",
        }
    )
    assert body == {
        "token_type": "Bearer",
        "expires_in": 3599,
        "token_claims": {"tid": "t", "appid": "a", "roles": ["User.Read.All"]},
    }
    assert token_answer({"token_type": "Bearer", "access_token": "opaque"}) == {"token_type": "Bearer"}
    error = {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}
    assert token_answer(error) == error


def test_clean_headers_drop_credentials() -> None:
    headers = [("Authorization", "Bearer x"), ("Cookie", "a=b"), ("Set-Cookie", "c=d"), ("Retry-After", "3")]
    assert clean_headers(headers) == {"retry-after": "3"}


def _batch_record(
    seq: int, items: list[tuple[str, str]], answers: list[tuple[str, int]] | None, status: int = 200
) -> dict[str, Any]:
    body = {
        "responses": [{"id": i, "status": s, "headers": {}, "body": {"n": seq}} for i, s in answers or []]
    }
    return {
        "seq": seq,
        "kind": "graph",
        "request": {
            "method": "POST",
            "url": "https://graph.microsoft.com/v1.0/$batch",
            "body": {"requests": [{"id": i, "method": "GET", "url": u} for i, u in items]},
        },
        "response": {"status": status, "headers": {}, "body": body if status == 200 else {"error": {}}},
    }


def test_batch_items_are_indexed_by_their_request_not_their_position() -> None:
    records = [
        _batch_record(1, [("a", "/users/1/x"), ("b", "/users/2/x")], None, status=429),  # failed as a whole
        _batch_record(2, [("0", "/users/2/x"), ("1", "/users/1/x")], [("1", 429), ("0", 200)]),
        _batch_record(3, [("0", "/users/1/x")], [("0", 200)]),
    ]
    replay = index_capture(records, "t")
    one, two = request_key("GET", "/v1.0/users/1/x"), request_key("GET", "/v1.0/users/2/x")
    first = replay.take(one)
    assert first is not None and first.status == 429 and first.batch_seq == 1
    assert [a.status for a in (replay.take(one), replay.take(one), replay.take(one))] == [429, 200, 200]
    assert [a.status for a in (replay.take(two), replay.take(two), replay.take(two))] == [429, 200, 200]


def test_an_item_left_out_of_a_batch_answer_is_left_out_again() -> None:
    replay = index_capture([_batch_record(1, [("0", "/users/1/x"), ("1", "/users/2/x")], [("1", 200)])], "t")
    left_out = replay.take(request_key("GET", "/v1.0/users/1/x"))
    assert left_out is not None and left_out.no_answer == "omitted"
    answered = replay.take(request_key("GET", "/v1.0/users/2/x"))
    assert answered is not None and (answered.status, answered.no_answer) == (200, None)


@pytest.mark.parametrize(
    "text",
    [
        '{"value": [{"id": "1", "displayName": "Ann"}], "@odata.nextLink": "https://x/v1.0/users?$skiptoken=eyJhYmM"}',
        '{"form": {"client_secret": "abc", "Client_Assertion": "def"}}',
        "Authorization: Bearer abc.def.ghi and eyJhbGciOi.eyJzdWIiOi.c2ln",
        "password=hunter22; passwd: x; ACCESS_TOKEN=y; id_token=z; refresh_token=w",
        "a registered value reg1st3red-S3cret-value inside plain text",
        "nothing at all to hide here",
    ],
)
def test_redact_bulk_is_redact(text: str) -> None:
    register_secret("reg1st3red-S3cret-value")
    assert redact_bulk(text) == redact(text)
    assert "reg1st3red-S3cret-value" not in redact_bulk(text)
