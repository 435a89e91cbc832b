"""Benchmark: build a 1,000 x 2,000 synthetic fleet, then materialise every user once.

Prints wall time and peak memory (tracemalloc, Python allocations) for each phase, and a served
paging figure: one tenant's 2,000 users paged through the HTTPS simulator by the real SDK.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditor.simulator import GraphSimulator
from auditor.simulator.fleet import FleetSpec, generate_fleet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--users", type=int, default=2000)
    args = parser.parse_args()

    tracemalloc.start()
    started = time.perf_counter()
    world = generate_fleet(FleetSpec(tenants=args.tenants, users=args.users))
    build_seconds = time.perf_counter() - started
    _, build_peak = tracemalloc.get_traced_memory()
    current_after_build = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()  # it slows allocation-heavy code many times over: time the walk without it

    started = time.perf_counter()
    users = shared = 0
    for tenant in world.tenants.values():
        for user in tenant.users:
            users += 1
            shared += user.purpose == "shared"
    walk_seconds = time.perf_counter() - started

    print(f"fleet {args.tenants} tenants x {args.users} users")
    print(
        f"  build:            {build_seconds:8.3f} s   retained {current_after_build / 2**20:7.1f} MiB"
        f"   peak {build_peak / 2**20:7.1f} MiB"
    )
    print(
        f"  walk every user:  {walk_seconds:8.3f} s   {users:,} users ({shared:,} shared)"
        f"   {users / walk_seconds:,.0f} users/s"
    )

    # One tenant served over HTTPS and paged by the real SDK.

    tenant = next(iter(world.tenants.values()))
    with GraphSimulator(world) as sim:
        seconds, pages, count = asyncio.run(_page(sim, tenant.tenant_id, models=False))
        print(f"  page 1 tenant over HTTPS, raw JSON:  {seconds:6.3f} s, {pages} pages, {count:,} users")
        seconds, pages, count = asyncio.run(_page(sim, tenant.tenant_id, models=True, max_pages=1))
        print(
            f"  first page again as SDK User models: {seconds:6.3f} s, {count:,} users"
            f"  ({seconds / max(count, 1) * 1000:.1f} ms per user: why the auditor reads lists as raw JSON)"
        )
    print(f"  process max RSS:  {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:7.1f} MiB")


async def _page(
    sim: GraphSimulator, tenant_id: str, *, models: bool, max_pages: int = 10**6
) -> tuple[float, int, int]:
    import json

    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from kiota_abstractions.method import Method
    from kiota_abstractions.request_information import RequestInformation
    from msgraph.generated.users.users_request_builder import UsersRequestBuilder

    from auditor.graph.client import ConnectionSettings, open_session, send_for_bytes

    app = next(iter(sim.world.apps.values()))
    settings = ConnectionSettings(
        tenant_id=tenant_id,
        client_id=app.client_id,
        method="secret",
        authority=sim.authority,
        graph_endpoint=sim.graph_url,
        scope=sim.scope,
        client_secret=sim.credentials[f"{app.env_prefix}_SECRET"],
        ca_bundle=sim.ca_file,
    )
    started = time.perf_counter()
    async with open_session(settings) as session:
        if models:
            query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
                select=["id", "userPrincipalName"], top=999
            )
            page = await session.client.users.get(RequestConfiguration(query_parameters=query))
            return time.perf_counter() - started, 1, len(page.value or [])
        url: str | None = session.base_url + "/users?$select=id,userPrincipalName&$top=999"
        pages = count = 0
        while url and pages < max_pages:
            info = RequestInformation()
            info.http_method = Method.GET
            info.url = url
            info.headers.try_add("Accept", "application/json")
            raw = await send_for_bytes(session.client, info)
            body = json.loads(raw or b"{}")
            pages += 1
            count += len(body["value"])
            url = body.get("@odata.nextLink")
    return time.perf_counter() - started, pages, count


if __name__ == "__main__":
    main()
