"""The obvious script, for the speed-up figure: one tenant after another, one GET per user's mailboxSettings.

No batching, no concurrency: sign in (client credentials), page through `/users`, then
`GET /users/{id}/mailboxSettings` for every user with a mail address, and count the shared mailboxes.
It talks to the same simulator as the auditor (`sim_process.py`), over HTTPS with httpx.

    python benchmarks/naive_audit.py CONFIG.toml   (with the simulator's credentials in the environment)
"""

from __future__ import annotations

import os
import sys
import time
import tomllib
from pathlib import Path

import httpx


def main() -> None:
    config = tomllib.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    auth = config["auth"]
    secret = os.environ[auth["client_secret_env"]]
    graph = auth["graph_endpoint"].rstrip("/") + "/v1.0"
    started = time.perf_counter()
    shared = requests = 0
    with httpx.Client(verify=auth["ca_bundle"], timeout=60) as http:
        for tenant in config["tenants"]:
            token = http.post(
                f"{auth['authority'].rstrip('/')}/{tenant['tenant_id']}/oauth2/v2.0/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": auth["client_id"],
                    "client_secret": secret,
                    "scope": f"{auth['graph_endpoint'].rstrip('/')}/.default",
                },
            ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            url: str | None = f"{graph}/users?$select=id,mail&$top=999"
            users = []
            while url:
                body = http.get(url, headers=headers).json()
                requests += 1
                users += body.get("value", [])
                url = body.get("@odata.nextLink")
            for user in users:
                if not user.get("mail"):
                    continue
                answer = http.get(f"{graph}/users/{user['id']}/mailboxSettings", headers=headers)
                requests += 1
                if answer.status_code == 200 and answer.json().get("userPurpose") in (
                    "shared",
                    {"value": "shared"},
                ):
                    shared += 1
    seconds = time.perf_counter() - started
    print(f"naive: {len(config['tenants'])} tenants, {requests} requests, {shared} shared, {seconds:.1f} s")


if __name__ == "__main__":
    main()
