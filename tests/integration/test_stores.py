"""The event stores, on SQLite files and on PostgreSQL where one is reachable."""

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import nats
import pytest
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.utils import get_topic

from llmbus.services.completion.application import CompletionApplication
from llmbus.services.completion.domain import CallClaim, Completion
from llmbus.services.completion.outbox import route
from llmbus.services.usage.application import BudgetBook, UsageApplication
from llmbus.shared.contracts import UsageRecorded
from llmbus.shared.contracts.budget import BudgetDefinition, BudgetGrantRequest, BudgetGrantReturn
from llmbus.shared.errors import StoreBusyError
from llmbus.shared.eventstore import open_store, retry_on_conflict
from llmbus.shared.outbox import Outbound, OutboxRelay
from llmbus.shared.sections import PostgresSettings
from llmbus.shared.settings import Settings


@pytest.fixture(params=["sqlite", "postgres"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return Settings(state_dir=tmp_path)
    pg: PostgresSettings = request.getfixturevalue("postgres_schema")
    return Settings(state_dir=tmp_path, event_store="postgres", postgres=pg)


def usage(usage_id: str, cost: float = 0.001) -> UsageRecorded:
    return UsageRecorded(
        usage_id=usage_id, request_id=usage_id.split(":")[0], provider="openai", model="m",
        prompt_tokens=10, completion_tokens=5, total_tokens=15, cost_usd=cost, latency_ms=12.5,
        status="ok", user_id="u", occurred_at=datetime(2026, 11, 1, 12, tzinfo=UTC),
    )  # fmt: skip


def test_a_completion_is_stored_once_whoever_stores_it_first(store_settings: Settings) -> None:
    app = open_store(CompletionApplication, store_settings, "completion")
    outcome = {"request_id": "r1", "content": "first"}
    first = app.record_received("r1", {"request_id": "r1"}, outcome, {"usage_id": "r1:1"})
    second = app.record_received(
        "r1", {"request_id": "r1"}, {"request_id": "r1", "content": "second"}, {"usage_id": "r1:1"}
    )
    assert first.outcome == second.outcome == outcome
    stored = app.find("r1")
    assert stored is not None and stored.status == "received" and stored.outcome == outcome
    assert app.find("never-sent") is None
    # the losing call was paid for: it is kept, under a usage_id of its own, for the outbox
    notifications = app.recorder.select_notifications(1, 10)
    assert [n.topic.split(":")[-1] for n in notifications] == [
        "Completion.Requested",
        "Completion.Received",
        "DuplicateCall.Recorded",
    ]
    [(usage_event)] = [app.mapper.to_domain_event(n) for n in notifications[2:]]
    messages = list(route(usage_event))
    assert [m.subject for m in messages] == ["llmbus.usage.recorded"]
    assert json.loads(messages[0].payload)["usage_id"].startswith("r1:")
    assert json.loads(messages[0].payload)["usage_id"] != "r1:1"
    app.close()


def test_usage_is_recorded_once_per_provider_call_even_when_redelivered(
    store_settings: Settings,
) -> None:
    app = open_store(UsageApplication, store_settings, "usage")
    assert app.record([usage("a:1"), usage("b:1")]) == 2
    assert app.record([usage("b:1"), usage("c:1")]) == 1  # b redelivered alongside a new one
    recorded = list(app.all_recorded(batch_size=2))
    assert [e.usage_id for _, e in recorded] == ["a:1", "b:1", "c:1"]
    assert [position for position, _ in recorded] == sorted(p for p, _ in recorded)
    assert recorded[0][1] == usage("a:1")
    app.close()


def test_a_grant_and_the_calls_settled_under_it_are_read_back_as_they_were_stored(
    store_settings: Settings,
) -> None:
    now = datetime(2026, 11, 1, 13, tzinfo=UTC)
    app = open_store(UsageApplication, store_settings, "usage")
    book = BudgetBook(app, clock=lambda: now)
    book.load([BudgetDefinition(name="user-u", scope={"user": "u"}, window="daily",
                                limit_usd=Decimal(1), mode="hard")])  # fmt: skip
    grant = book.grant(BudgetGrantRequest(grant_id="g-1", holder="w", want_usd=Decimal("0.1"),
                                          min_usd=Decimal("0.01"), lease_s=60, user="u"))  # fmt: skip
    assert grant.granted and grant.amount_usd == Decimal("0.1")
    call = usage("r1:1", cost=0.004).model_copy(update={"grant_id": "g-1"})
    app.record([call], book)
    app.record([call], book)  # redelivered: stored and settled once
    book.return_grant(BudgetGrantReturn(grant_id="g-1", unused_usd=Decimal("0.05")))
    app.close()

    again = BudgetBook(open_store(UsageApplication, store_settings, "usage"), clock=lambda: now)
    again.load([])
    [status] = again.status()
    # 0.1 held, 0.004 settled under it, 0.05 returned unused: 0.046 still owed by its calls
    assert (status["spent_usd"], status["reserved_usd"]) == (Decimal("0.004"), Decimal("0.046"))
    again.app.close()


async def outbox_stream(nats_url: str, nats_login: dict[str, Any]) -> tuple[Any, Any, str, Any]:
    """A stream of its own, and a route that publishes each event there by its class name."""
    nc = await nats.connect(nats_url, **nats_login)
    js = nc.jetstream()
    stream = f"OUTBOX_TEST_{uuid.uuid4().hex[:8]}"
    await js.add_stream(name=stream, subjects=[f"{stream}.>"], duplicate_window=600)

    def route(event: DomainEventProtocol[Any]) -> list[Outbound]:
        kind = type(event).__name__
        return [Outbound(f"{stream}.{kind}", b"{}", f"{kind}:{event.originator_id}")]

    return nc, js, stream, route


async def test_the_outbox_relay_publishes_each_event_once_across_a_crash(
    store_settings: Settings, nats_url: str, nats_login: dict[str, Any]
) -> None:
    app = open_store(CompletionApplication, store_settings, "completion")
    for i in range(3):
        app.record_failed(f"r{i}", {"request_id": f"r{i}"}, {"request_id": f"r{i}"})
    nc, js, stream, route = await outbox_stream(nats_url, nats_login)
    await OutboxRelay(app, js, route, service="completion", name="test-outbox").drain()
    assert (await js.stream_info(stream)).state.messages == 6  # Requested and Failed, each

    # a relay that crashed before tracking its position republishes: JetStream drops the repeats
    crashed = OutboxRelay(app, js, route, service="completion", name="never-tracked")
    await crashed.drain()
    assert crashed.published == 6
    assert (await js.stream_info(stream)).state.messages == 6

    app.record_failed("r9", {"request_id": "r9"}, {"request_id": "r9"})
    resumed = OutboxRelay(app, js, route, service="completion", name="test-outbox")
    resumed.position = app.process_recorder.max_tracking_id("test-outbox") or 0
    await resumed.drain()
    assert resumed.published == 2  # only the new request's events
    assert (await js.stream_info(stream)).state.messages == 8
    await js.delete_stream(stream)
    await nc.close()
    app.close()


async def test_a_relay_filtered_by_topic_reads_past_the_events_it_does_not_publish(
    store_settings: Settings, nats_url: str, nats_login: dict[str, Any]
) -> None:
    app = open_store(CompletionApplication, store_settings, "completion")
    for i in range(5):
        app.record_failed(f"r{i}", {"request_id": f"r{i}"}, {"request_id": f"r{i}"})
    nc, js, stream, route = await outbox_stream(nats_url, nats_login)
    requested = get_topic(getattr(Completion, "Requested"))  # noqa: B009 (made by @event)
    relay = OutboxRelay(
        app, js, route, service="completion", name="filtered", batch_size=2, topics=[requested]
    )
    await relay.drain()
    last = app.process_recorder.max_notification_id()
    assert relay.published == 5  # the Requested events only, though batches were 2 long
    assert relay.position == last  # past the last Failed: it will not read them again
    assert app.process_recorder.max_tracking_id("filtered") == last
    await js.delete_stream(stream)
    await nc.close()
    app.close()


@pytest.mark.parametrize(("level", "pragma"), [("normal", 1), ("full", 2)])
def test_the_sqlite_store_commits_at_the_configured_synchronous_level(
    tmp_path: Path, level: str, pragma: int
) -> None:
    settings = Settings(state_dir=tmp_path, sqlite_synchronous=level)  # type: ignore[arg-type]
    app = open_store(CompletionApplication, settings, "completion")
    app.record_failed("r1", {"request_id": "r1"}, {"request_id": "r1"})
    with app.factory.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
        cursor.execute("PRAGMA synchronous")
        assert cursor.fetchone()[0] == pragma
    app.close()


def test_services_starting_together_on_one_postgres_schema_all_open_their_stores(
    tmp_path: Path, postgres_schema: PostgresSettings
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    settings = Settings(state_dir=tmp_path, event_store="postgres", postgres=postgres_schema)
    opens = [(CompletionApplication, "completion"), (UsageApplication, "usage")] * 3
    with ThreadPoolExecutor(len(opens)) as pool:
        apps = list(pool.map(lambda a: open_store(a[0], settings, a[1]), opens))
    assert len(apps) == 6
    for app in apps:
        app.close()


def test_a_command_that_loses_a_save_race_is_read_back_and_retried(
    store_settings: Settings,
) -> None:
    here = open_store(CompletionApplication, store_settings, "completion")
    there = open_store(CompletionApplication, store_settings, "completion")
    request_id = uuid.uuid4().hex
    here.record_failed(request_id, {"model": "m"}, {"request_id": request_id})
    forgotten: list[int] = []
    tries = 0

    def claim_next() -> int:
        nonlocal tries
        tries += 1
        mine = CallClaim(request_id, tries, "here", 10.0)
        if tries == 1:  # another process saves the same aggregate between read and save
            there.save(CallClaim(request_id, 1, "there", 10.0))
        here.save(mine)
        return tries

    assert retry_on_conflict(claim_next, "claim", on_conflict=lambda: forgotten.append(tries)) == 2
    assert forgotten == [1]

    def always_taken() -> None:
        here.save(CallClaim(request_id, 1, "here", 10.0))

    with pytest.raises(StoreBusyError, match="could not claim again: the store kept changing"):
        retry_on_conflict(always_taken, "claim again", attempts=3)
