"""Attacks on usage and budgets, as a second tenant would try them with credentials from
`llmbus clients create`: budgets change only with admin credentials, and a client is
answered about its own usage and budgets only."""

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmbus.client import Client
from llmbus.services.usage.service import serve as serve_usage
from llmbus.shared import subjects
from llmbus.shared.bus import answers
from llmbus.shared.errors import RequestError
from llmbus.shared.settings import Settings
from support import connected, new_client, pipeline, projected_requests, running, wait_for

pytestmark = [
    pytest.mark.refusals,
    pytest.mark.skipif(
        bool(os.environ.get("NATS_URL")), reason="needs the embedded server's authentication"
    ),
]
MODEL = "fake-gpt"
TEAM_CAP = {"name": "red-cap", "scope": {"team": "red"}, "window": "daily", "limit_usd": "5",
            "mode": "hard"}  # fmt: skip


@pytest.fixture
async def clients(settings: Settings) -> AsyncIterator[dict[str, Path]]:
    yield {
        "alice": await new_client(settings, "alice", "alice", team_id="red"),
        "bob": await new_client(settings, "bob", "bob", team_id="blue"),
        "root": await new_client(settings, "root", "ops", admin=True),
    }


async def test_a_budget_is_set_only_with_admin_credentials(
    settings: Settings, clients: dict[str, Path]
) -> None:
    async with running(serve_usage, settings), connected(settings) as nc:
        await wait_for(lambda: answers(nc, subjects.BUDGET_STATUS), 30, "the usage service")
        async with Client(creds=clients["bob"], settings=settings) as bob:
            with pytest.raises(RequestError) as refused:
                await bob.budgets.set(TEAM_CAP)
            assert refused.value.error_type == "forbidden"
            assert "admin" in str(refused.value)
        async with Client(creds=clients["root"], settings=settings) as root:
            assert (await root.budgets.set(TEAM_CAP)).name == "red-cap"
            assert [b.name for b in await root.budgets.status()] == ["red-cap"]
        async with Client(creds=clients["bob"], settings=settings) as bob:
            assert await bob.budgets.status() == []  # blue's requests fall under no budget
            with pytest.raises(RequestError, match="books requests"):
                await bob.budgets.remaining(team_id="red")


async def test_a_client_is_answered_about_its_own_usage_only(
    settings: Settings, clients: dict[str, Path]
) -> None:
    async with pipeline(settings) as (_, events, _operator):
        for name in ("alice", "bob"):
            async with Client(creds=clients[name], settings=settings) as client:
                await client.complete(f"{name}'s question", model=MODEL)
        await wait_for(lambda: len(events.on(subjects.USAGE_RECORDED)) == 2, 30, "usage")
        async with Client(creds=clients["root"], settings=settings) as root:

            async def both_projected() -> bool:
                return await projected_requests(root) == 2

            await wait_for(both_projected, 30, "both requests projected")
            everyone = await root.usage.query(by=["user"])
        async with Client(creds=clients["bob"], settings=settings) as bob:
            own = await bob.usage.query(by=["user"])
            with pytest.raises(RequestError) as refused:
                await bob.usage.query(filters={"user": "alice"})
        assert sorted(row["user"] for row in everyone.rows) == ["alice", "bob"]
        assert [row["user"] for row in own.rows] == ["bob"]
        assert refused.value.error_type == "forbidden"
