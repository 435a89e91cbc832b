"""The simulator's `GET /users/delta`, read through GraphReader.users_delta (real msgraph-sdk over HTTPS):
Graph's documented shapes (learn.microsoft.com graph/api/user-delta, graph/delta-query-overview,
graph-api-notes.md §3.8): paged first round ending in a deltaLink, `$deltatoken=latest`, changes only on
the next round, `@removed` with its reason, 410 for a token no longer valid, only `$select` supported."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from auditor.errors import GraphError
from auditor.graph.reader import GraphReader
from auditor.simulator import GraphSimulator
from auditor.simulator.world import UserRecord
from tests.conftest import DEMO_TENANTS, graph_session

SELECT = ["id", "displayName", "mail", "onPremisesSyncEnabled"]


def new_user(uid: str, name: str) -> UserRecord:
    return UserRecord(
        uid, name, f"{name.lower()}@contoso.example", f"{name.lower()}@contoso.example", True, True
    )


async def test_rounds_of_the_users_delta(fresh_sim: GraphSimulator) -> None:
    tenant = fresh_sim.world.tenant(DEMO_TENANTS["contoso"])
    assert tenant is not None
    users = tenant.users
    async with graph_session(fresh_sim, "contoso") as session:
        reader = GraphReader(session, "Contoso")
        first = await reader.users_delta(SELECT)
        assert len(first.items) == len(users)
        assert fresh_sim.count(route="users.delta") == -(-len(users) // 200)  # paged by nextLink
        assert all(set(item) <= {*SELECT} for item in first.items)
        assert parse_qs(urlsplit(first.delta_link).query)["$deltatoken"]

        latest = await reader.users_delta(SELECT, latest=True)
        assert latest.items == []

        nothing = await reader.users_delta(SELECT, first.delta_link)
        assert nothing.items == []

        victims, renamed, converted = [users[0].id, users[1].id], users[2].id, users[5].id
        users.add(new_user("0f0f0f0f-1111-4222-8333-444455556666", "Newcomer"))
        users.update(renamed, display_name="Renamed")
        users.remove(victims[0])
        users.remove(victims[1], hard=True)
        users.convert_mailbox(converted, "shared")  # not a directory change: no delta entry
        changes = await reader.users_delta(SELECT, nothing.delta_link)
        by_id = {item["id"]: item for item in changes.items}
        assert len(changes.items) == 4
        assert by_id[victims[0]] == {"id": victims[0], "@removed": {"reason": "changed"}}
        assert by_id[victims[1]] == {"id": victims[1], "@removed": {"reason": "deleted"}}
        assert by_id["0f0f0f0f-1111-4222-8333-444455556666"]["displayName"] == "Newcomer"
        # The properties selected in the first round, without asking again.
        assert by_id[renamed]["displayName"] == "Renamed" and set(by_id[renamed]) == set(SELECT)
        assert converted not in by_id
        assert len(users) == len(first.items) - 1  # one added, two removed
        # The latest-token from before the changes sees them too; the new link sees nothing.
        assert len((await reader.users_delta(SELECT, latest.delta_link)).items) == 4
        assert (await reader.users_delta(SELECT, changes.delta_link)).items == []

        users.token_epoch += 1
        with pytest.raises(GraphError) as gone:
            await reader.users_delta(SELECT, changes.delta_link)
        assert gone.value.status == 410
        assert "Resync required" in gone.value.message


async def test_only_select_is_supported_and_foreign_links_are_refused(fresh_sim: GraphSimulator) -> None:
    async with graph_session(fresh_sim, "contoso") as session:
        reader = GraphReader(session, "Contoso")
        with pytest.raises(GraphError) as refused:
            await reader.send(reader.url_request("/users/delta?$top=5"), "User.Read.All")
        assert refused.value.status == 400
        before = len(fresh_sim.requests())
        with pytest.raises(GraphError) as foreign:
            await reader.users_delta(SELECT, "https://evil.example/v1.0/users/delta?$deltatoken=abc")
        assert "evil.example" in foreign.value.message
        assert len(fresh_sim.requests()) == before  # nothing was sent
