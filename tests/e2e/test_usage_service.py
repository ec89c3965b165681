"""The usage service: exact totals, a rebuildable projection, and the CLI that queries it."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmbus.client import Client, CompletionError
from llmbus.services.completion.service import serve as serve_completion
from llmbus.services.usage.service import serve as serve_usage
from llmbus.shared import subjects
from llmbus.shared.settings import Settings
from support import (
    completion_service_ready,
    connected,
    llmbus_cli,
    pipeline,
    projected_requests,
    running,
    wait_for,
    watching_events,
)

QUERIES: list[dict[str, Any]] = [
    {},
    {"by": ["model"]},
    {"by": ["team", "user"]},
    {"by": ["day", "model"]},
    {"by": ["month", "status"]},
    {"by": ["provider"], "filters": {"team": "team-a"}},
]


async def answers(client: Client) -> list[list[dict[str, Any]]]:
    return [(await client.usage.query(**q)).rows for q in QUERIES]


async def test_totals_equal_the_events_and_a_rebuild_answers_identically(
    settings: Settings,
) -> None:
    async with connected(settings) as nc, watching_events(nc) as events:
        async with (
            running(serve_completion, settings),
            running(serve_usage, settings),
            Client(settings=settings) as client,
        ):
            await wait_for(lambda: completion_service_ready(nc), 60, "the completion worker")
            calls = []
            for i in range(30):
                model = ("fake-gpt", "llmbus-sim/small", "llmbus-sim/large", "fail-500")[i % 4]
                user, team = (("ann", "team-a"), ("bo", "team-a"), ("cy", "team-b"))[i % 3]
                calls.append(
                    client.complete(f"question {i}", model=model, user_id=user, team_id=team)
                )
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            assert sum(isinstance(o, CompletionError) for o in outcomes) == 7  # the fail-500s
            await wait_for(lambda: len(events.on(subjects.USAGE_RECORDED)) == 30, what="usage")

            async def projected() -> bool:
                return await projected_requests(client) == 30

            await wait_for(projected, what="the usage service to project all 30")
            recorded = events.on(subjects.USAGE_RECORDED)

            totals = (await client.usage.query()).rows[0]
            assert totals["requests"] == 30 and totals["errors"] == 7
            assert totals["cost_usd"] == pytest.approx(
                sum(e["cost_usd"] for e in recorded), abs=1e-12
            )
            assert totals["prompt_tokens"] == sum(e["prompt_tokens"] for e in recorded)
            by_model = {r["model"]: r for r in (await client.usage.query(["model"])).rows}
            assert by_model["fail-500"]["cost_usd"] == 0 and by_model["fail-500"]["errors"] == 7
            before = await answers(client)

        # the usage service is stopped: the CLI owns the DuckDB file now
        rebuilt = await asyncio.to_thread(llmbus_cli, "projections", "rebuild")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "from 30 usage events" in rebuilt.stdout

        async with running(serve_usage, settings), Client(settings=settings) as client:

            async def answering() -> bool:
                return await projected_requests(client) >= 0

            await wait_for(answering, 30, "the usage service to answer")
            assert await answers(client) == before


async def test_the_cli_prints_usage_as_json_csv_and_a_table(settings: Settings) -> None:
    async with pipeline(settings) as (_, _, client):
        done = await asyncio.to_thread(
            llmbus_cli, "complete", "hello there", "--model", "llmbus-sim/small", "--user", "ann"
        )
        assert done.returncode == 0, done.stderr
        assert "[llmbus-sim/small]" in done.stdout and "$0.0000" in done.stdout

        async def projected() -> bool:
            return await projected_requests(client) == 1

        await wait_for(projected, what="the completion to be projected")

        as_json = await asyncio.to_thread(llmbus_cli, "usage", "--by", "user", "--format", "json")
        assert as_json.returncode == 0, as_json.stderr
        rows = json.loads(as_json.stdout)
        assert [(r["user"], r["requests"]) for r in rows] == [("ann", 1)]
        assert rows[0]["cost_usd"] > 0

        totals = json.loads(
            (await asyncio.to_thread(llmbus_cli, "usage", "--format", "json")).stdout
        )
        assert len(totals) == 1 and totals[0]["cost_usd"] == rows[0]["cost_usd"]

        as_csv = await asyncio.to_thread(llmbus_cli, "usage", "--by", "model", "--format", "csv")
        assert as_csv.stdout.splitlines()[0].startswith("model,")
        assert "llmbus-sim/small" in as_csv.stdout

        table = await asyncio.to_thread(llmbus_cli, "usage", "--by", "day")
        assert table.returncode == 0 and "cost_usd" in table.stdout

        bad = await asyncio.to_thread(llmbus_cli, "usage", "--by", "colour")
        assert bad.returncode != 0 and "colour" in bad.stderr

        top = await asyncio.to_thread(
            llmbus_cli, "usage", "--by", "user", "--metric", "latency_ms_p95", "--tz",
            "Asia/Tokyo", "--since", "2000-01-01", "--order-by", "cost_usd", "--top", "1",
            "--format", "json",
        )  # fmt: skip
        assert top.returncode == 0, top.stderr
        [row] = json.loads(top.stdout)
        assert row.keys() == {"user", "latency_ms_p95", "cost_usd"} and row["user"] == "ann"
        assert row["latency_ms_p95"] > 0 and row["cost_usd"] == rows[0]["cost_usd"]

        elsewhere = await asyncio.to_thread(llmbus_cli, "usage", "--tz", "Mars/Olympus")
        assert elsewhere.returncode == 1
        assert "unknown timezone 'Mars/Olympus'" in elsewhere.stderr


def test_query_commands_say_clearly_when_no_stack_is_running(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llmbus", "usage"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 1
    assert "no NATS server" in result.stderr and "llmbus up" in result.stderr
