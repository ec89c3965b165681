"""`llmbus usage export` and llmbus.usage.rows: every usage row, paged by position within the
NATS message limit, into CSV, JSON or Parquet files that hold what a usage query sums."""

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest
from pydantic import ValidationError
from test_usage_projection import day_of, history

from llmbus.client import Client
from llmbus.services.usage.projection import UsageProjection
from llmbus.services.usage.projection.export import page_bytes
from llmbus.services.usage.service import serve as serve_usage
from llmbus.shared import subjects
from llmbus.shared.contracts import UsageRecorded, UsageRows, UsageRowsQuery
from llmbus.shared.contracts.usage_rows import USAGE_ROW_COLUMNS
from llmbus.shared.errors import RequestError
from llmbus.shared.rpc.replies import HEADER_ROOM
from llmbus.shared.settings import Settings
from support import connected, llmbus_cli, new_client, projected_requests, running, wait_for

EVENTS = 240  # seven hours apart: 70 days, four users (one of them None), three models
PARIS = ZoneInfo("Europe/Paris")


def read_pages(
    projection: UsageProjection, query: UsageRowsQuery, max_bytes: int
) -> list[UsageRows]:
    pages = [projection.rows(query, max_bytes)]
    while pages[-1].next_after is not None:
        cursor = {"after": pages[-1].next_after, "through": pages[-1].through}
        pages.append(projection.rows(query.model_copy(update=cursor), max_bytes))
    return pages


def usage_ids(pages: list[UsageRows]) -> list[str]:
    return [row["usage_id"] for page in pages for row in page.rows]


def test_pages_fit_the_reply_limit_and_hold_every_row_once(tmp_path: Path) -> None:
    events = history(EVENTS)
    max_payload = 16 * 1024  # a small server: many pages
    with UsageProjection(tmp_path / "usage.duckdb") as projection:
        projection.apply(events)
        by_bytes = read_pages(
            projection, UsageRowsQuery(limit=500), page_bytes(max_payload, HEADER_ROOM)
        )
        by_rows = read_pages(projection, UsageRowsQuery(limit=7), 1 << 20)

    assert len(by_bytes) > 5
    assert (
        max(len(page.model_dump_json().encode()) for page in by_bytes) <= max_payload - HEADER_ROOM
    )
    assert len(by_rows) == -(-EVENTS // 7) and max(len(page.rows) for page in by_rows) == 7
    for pages in (by_bytes, by_rows):
        # in position order, none lost and none twice
        assert usage_ids(pages) == [event.usage_id for _, event in events]
        assert pages[0].total == EVENTS
        assert [page.total for page in pages[1:]] == [None] * (len(pages) - 1)


def test_a_row_says_what_its_event_said(tmp_path: Path) -> None:
    events = history(12)
    with UsageProjection(tmp_path / "usage.duckdb") as projection:
        projection.apply(events)
        [page] = read_pages(projection, UsageRowsQuery(), 1 << 20)
    received = UsageRows.model_validate_json(page.model_dump_json())  # as a client reads it
    for row, (_, event) in zip(received.rows, events, strict=True):
        assert list(row) == list(USAGE_ROW_COLUMNS)
        said = {column: getattr(event, column, None) for column in USAGE_ROW_COLUMNS}
        said |= {"original_cost_usd": event.cost_usd, "occurred_at": row["occurred_at"]}
        assert row == said  # costs to the last digit
        assert row["occurred_at"].endswith("Z")
        assert datetime.fromisoformat(row["occurred_at"]) == event.occurred_at


def test_the_pages_are_one_snapshot(tmp_path: Path) -> None:
    events = history(100)
    with UsageProjection(tmp_path / "usage.duckdb") as projection:
        projection.apply(events[:60])
        first = projection.rows(UsageRowsQuery(limit=25), 1 << 20)
        projection.apply(events[60:])  # recorded while the export runs
        rest = read_pages(
            projection,
            UsageRowsQuery(limit=25, after=first.next_after, through=first.through),
            1 << 20,
        )
    assert first.total == 60
    assert usage_ids([first, *rest]) == [event.usage_id for _, event in events[:60]]


def test_ranges_and_filters_are_those_of_a_usage_query(tmp_path: Path) -> None:
    events = history(EVENTS)
    since, until = datetime(2024, 3, 10), datetime(2024, 4, 20, 12)  # naive: in Paris
    query = UsageRowsQuery(
        since=since, until=until, timezone="Europe/Paris", filters={"user": "grace", "tag": "demo"}
    )
    with UsageProjection(tmp_path / "usage.duckdb") as projection:
        projection.apply(events)
        pages = read_pages(projection, query, 1 << 20)
    expected = [
        e.usage_id
        for _, e in events
        if e.user_id == "grace" and "demo" in e.tags
        and since.replace(tzinfo=PARIS) <= e.occurred_at < until.replace(tzinfo=PARIS)
    ]  # fmt: skip
    assert expected and usage_ids(pages) == expected
    assert pages[0].total == len(expected)


@pytest.mark.parametrize("filters", [{"hour": "2024-03-01T07:00"}, {"colour": "red"}])
def test_a_filter_on_a_field_a_query_cannot_filter_on_is_refused(filters: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match=r"filter|input should be"):
        UsageRowsQuery.model_validate({"filters": filters})


@contextlib.asynccontextmanager
async def recorded_usage(settings: Settings) -> AsyncIterator[tuple[Client, list[UsageRecorded]]]:
    """The usage service, fed EVENTS calls over 70 days as completion workers publish them, and
    an operator's client once it has projected them all."""
    events = [event for _, event in history(EVENTS)]
    async with (
        running(serve_usage, settings),
        connected(settings) as nc,
        Client(settings=settings) as client,
    ):
        js = nc.jetstream()
        for event in events:
            msg_id = {subjects.MSG_ID_HEADER: f"usage:{event.usage_id}"}
            await js.publish(
                subjects.USAGE_RECORDED, event.model_dump_json().encode(), headers=msg_id
            )

        async def projected() -> bool:
            return await projected_requests(client) == EVENTS

        await wait_for(projected, 60, "the usage service to project every call")
        yield client, events


async def export(out: Path, fmt: str, *options: str) -> None:
    done = await asyncio.to_thread(
        llmbus_cli, "usage", "export", "--format", fmt, "--out", str(out), *options
    )
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout


def source(out: Path, fmt: str) -> str:
    if out.is_dir():
        return f"read_parquet('{out}/*/*.parquet', hive_partitioning = true)"
    return f"read_{fmt}('{out}')"


def file_totals(out: Path, fmt: str) -> dict[str, tuple[int, float, int]]:
    """requests, cost and tokens by model, as DuckDB reads the file; costs summed exactly."""
    sql = (
        "SELECT model, count(DISTINCT usage_id), count(*), "
        "sum(CAST(cost_usd AS DECIMAL(18, 10))), sum(total_tokens) "
        f"FROM {source(out, fmt)} GROUP BY model"
    )
    totals = {}
    for model, distinct, rows, cost, tokens in duckdb.sql(sql).fetchall():
        assert distinct == rows  # no row twice
        totals[model] = (rows, float(cost), tokens)
    return totals


def staging_left(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".export")]


def query_totals(rows: list[dict[str, Any]]) -> dict[str, tuple[int, float, int]]:
    return {row["model"]: (row["requests"], row["cost_usd"], row["total_tokens"]) for row in rows}


async def test_each_format_has_every_row_and_the_totals_of_a_usage_query(
    settings: Settings, tmp_path: Path
) -> None:
    async with recorded_usage(settings) as (client, events):
        everything = query_totals((await client.usage.query(["model"])).rows)
        for fmt, name in (("csv", "usage.csv"), ("json", "usage.jsonl"), ("parquet", "u.parquet")):
            await export(tmp_path / name, fmt)
            assert file_totals(tmp_path / name, fmt) == everything, fmt
        await export(tmp_path / "days", "parquet", "--partition")
        assert file_totals(tmp_path / "days", "parquet") == everything
        assert {p.name for p in (tmp_path / "days").iterdir()} == {
            f"day={day_of(event)}" for event in events
        }

        # a range in Paris and filters: the same rows as the query, partitioned by Paris days
        narrowed = ["--since", "2024-03-10", "--until", "2024-04-20T12:00", "--tz", "Europe/Paris"]
        narrowed += ["--where", "team=research", "--where", "tag=demo"]
        query = await client.usage.query(
            ["model"], since=datetime(2024, 3, 10), until=datetime(2024, 4, 20, 12),
            filters={"team": "research", "tag": "demo"}, timezone="Europe/Paris",
        )  # fmt: skip
        await export(tmp_path / "days", "parquet", "--partition", "--force", *narrowed)
        assert file_totals(tmp_path / "days", "parquet") == query_totals(query.rows)
        days = duckdb.sql(f"SELECT day, epoch(occurred_at) FROM {source(tmp_path / 'days', '')}")
        for day, seconds in days.fetchall():
            assert str(day) == datetime.fromtimestamp(seconds, PARIS).date().isoformat()
        await export(tmp_path / "usage.csv", "csv", "--force", *narrowed)
        assert file_totals(tmp_path / "usage.csv", "csv") == query_totals(query.rows)

    columns = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{tmp_path / 'u.parquet'}')")
    types = dict(row[:2] for row in columns.fetchall())
    assert list(types) == list(USAGE_ROW_COLUMNS)
    assert (
        types["cost_usd"] == "DECIMAL(18,10)" and types["occurred_at"] == "TIMESTAMP WITH TIME ZONE"
    )
    assert staging_left(tmp_path) == []


async def test_the_service_pages_every_row_once_through_the_sdk(settings: Settings) -> None:
    async with recorded_usage(settings) as (client, events):
        pages = [page async for page in client.usage.rows(page_rows=7)]
    assert len(pages) == -(-EVENTS // 7)
    assert pages[0].total == EVENTS
    assert usage_ids(pages) == [event.usage_id for event in events]


@pytest.mark.skipif(
    bool(os.environ.get("NATS_URL")), reason="needs the embedded server's authentication"
)
async def test_a_client_without_admin_credentials_exports_its_own_rows_only(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = await new_client(settings, "grace-app", "grace", team_id="research")
    async with recorded_usage(settings) as (_operator, events):
        monkeypatch.setenv("NATS_CREDS", str(creds))  # the CLI runs as grace-app
        await export(tmp_path / "own.csv", "csv")
        others = await asyncio.to_thread(
            llmbus_cli, "usage", "export", "--format", "csv", "--out", str(tmp_path / "ada.csv"),
            "--where", "user=ada",
        )  # fmt: skip
        async with Client(creds=creds, settings=settings) as grace:
            with pytest.raises(RequestError) as refused:
                _ = [page async for page in grace.usage.rows(filters={"user": "ada"})]

    users = Counter(
        row[0]
        for row in duckdb.sql(f"SELECT user_id FROM read_csv('{tmp_path / 'own.csv'}')").fetchall()
    )
    assert users == {"grace": sum(event.user_id == "grace" for event in events)}
    assert others.returncode == 1 and "admin credentials" in others.stderr
    assert not (tmp_path / "ada.csv").exists()
    assert refused.value.error_type == "forbidden"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["--format", "csv", "--partition"], "--partition writes Parquet only"),
        (["--format", "json", "--partition"], "--partition writes Parquet only"),
        (["--format", "csv", "--where", "colour=red"], "--where cannot filter on colour"),
        (["--format", "csv", "--where", "day=2024-03-01"], "--where cannot filter on day"),
        (["--format", "csv", "--where", "team"], "--where expects KEY=VALUE"),
        (["--format", "csv", "--tz", "Mars/Olympus"], "unknown timezone"),
        (["--format", "csv", "--since", "last week"], "--since must be an ISO date"),
    ],
)
def test_bad_options_are_a_clear_error(tmp_path: Path, options: list[str], error: str) -> None:
    out = tmp_path / "usage.out"
    done = llmbus_cli("usage", "export", "--out", str(out), *options)
    assert done.returncode == 1
    assert error in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing staged


def test_an_existing_out_is_kept_without_force(tmp_path: Path) -> None:
    out = tmp_path / "usage.parquet"
    out.write_text("last month's export")
    done = llmbus_cli("usage", "export", "--format", "parquet", "--out", str(out))
    assert done.returncode == 1 and "exists: pass --force to replace it" in done.stderr
    assert out.read_text() == "last month's export"
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    forced = llmbus_cli("usage", "export", "--format", "parquet", "--partition", "--out",
                        str(home), "--force")  # fmt: skip
    assert forced.returncode == 1 and "more than day=… partitions" in forced.stderr
    assert (home / "notes").is_dir()
