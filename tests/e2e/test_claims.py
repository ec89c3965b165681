"""A request is sent to a model once: a worker claims it, durably, before the call.

JetStream redelivers a message whose worker seems silent. On a busy machine that happens while
the first worker is still at the model; the claim in the shared event store, not the delivery,
decides who calls. Only once a claim's lease has lapsed may another worker call again.
"""

import asyncio
import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmbus.services.completion.application import CompletionApplication, Outcome
from llmbus.services.completion.outbox import route
from llmbus.services.usage.service import serve as serve_usage
from llmbus.shared import subjects
from llmbus.shared.eventstore import open_store
from llmbus.shared.sections import PostgresSettings
from llmbus.shared.settings import Settings
from llmbus.testing.fake_openai import FakeProvider
from support import (
    completion_service_ready,
    connected,
    running,
    spawn_service,
    stop_process,
    wait_for,
    watching_events,
)

LEASE_S = 10.0


@pytest.fixture(params=["sqlite", "postgres"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return Settings(state_dir=tmp_path)
    pg: PostgresSettings = request.getfixturevalue("postgres_schema")
    return Settings(state_dir=tmp_path, event_store="postgres", postgres=pg)


def two_workers(settings: Settings) -> tuple[CompletionApplication, CompletionApplication]:
    """Two applications on one store: what two worker processes share."""
    return (
        open_store(CompletionApplication, settings, "completion"),
        open_store(CompletionApplication, settings, "completion"),
    )


def received(request_id: str, attempt: int) -> Outcome:
    usage = {"usage_id": f"{request_id}:{attempt}", "request_id": request_id}
    return Outcome(request_id, {"request_id": request_id}, "received",
                   {"request_id": request_id, "content": f"attempt {attempt}"}, usage)  # fmt: skip


def test_a_claimed_request_is_not_claimed_again_while_its_lease_runs(
    store_settings: Settings,
) -> None:
    first, second = two_workers(store_settings)
    now = time.time()
    mine = first.claim("r1", "worker-a", now, LEASE_S)
    assert mine.mine is not None and mine.mine.attempt == 1

    theirs = second.claim("r1", "worker-b", now + 1, LEASE_S)
    assert theirs.mine is None and theirs.held_by is not None
    assert theirs.held_by.holder == "worker-a"

    first.record(received("r1", 1))
    done = second.claim("r1", "worker-b", now + 2, LEASE_S)
    assert done.ended is not None and done.ended.outcome == {"request_id": "r1",
                                                             "content": "attempt 1"}  # fmt: skip


def test_a_renewed_claim_holds_past_its_first_lease(store_settings: Settings) -> None:
    first, second = two_workers(store_settings)
    now = time.time()
    claim = first.claim("r2", "worker-a", now, LEASE_S).mine
    assert claim is not None
    first.renew([claim], now + LEASE_S / 2, LEASE_S)
    later = second.claim("r2", "worker-b", now + LEASE_S + 1, LEASE_S)
    assert later.held_by is not None and later.held_by.holder == "worker-a"


def test_after_a_lapsed_claim_the_next_call_is_a_second_attempt_and_both_are_recorded(
    store_settings: Settings,
) -> None:
    first, second = two_workers(store_settings)
    now = time.time()
    assert first.claim("r3", "worker-a", now, LEASE_S).mine is not None
    # worker-a went silent for longer than its lease: worker-b may call, as attempt 2
    takeover = second.claim("r3", "worker-b", now + LEASE_S + 1, LEASE_S).mine
    assert takeover is not None and takeover.attempt == 2

    second.record(received("r3", 2))
    # worker-a was only slow: its call ends after all, and was paid for
    stored = first.record(received("r3", 1))
    assert stored.outcome is not None and stored.outcome["content"] == "attempt 2"
    first.record(received("r3", 1))  # its message redelivered: the call is not counted twice

    published = [
        out
        for n in first.recorder.select_notifications(0, 100)
        for out in route(first.mapper.to_domain_event(n))
    ]
    assert [out.subject for out in published].count(subjects.COMPLETION_RECEIVED) == 1
    usage_ids = [json.loads(out.payload)["usage_id"] for out in published
                 if out.subject == subjects.USAGE_RECORDED]  # fmt: skip
    assert sorted(usage_ids) == ["r3:1", "r3:2"]


def test_two_workers_racing_for_one_attempt_get_one_claim(store_settings: Settings) -> None:
    first, second = two_workers(store_settings)
    now = time.time()
    answers = [first.claim("r4", "worker-a", now, LEASE_S),
               second.claim("r4", "worker-b", now, LEASE_S)]  # fmt: skip
    assert [a.mine is not None for a in answers] == [True, False]
    batch = first.claim_many([("r4", "worker-c", now, LEASE_S), ("r5", "worker-c", now, LEASE_S)])
    assert batch[0].mine is None and batch[1].mine is not None


# ------------------------------------------------------------ as it failed: a saturated machine


def spin(until: float) -> None:
    while time.monotonic() < until:
        pass


@pytest.fixture
def saturated_cpu() -> Iterator[None]:
    """Busy-loop processes on every core for the whole test; each also stops by itself."""
    until = time.monotonic() + 240
    spinners = [
        multiprocessing.get_context("spawn").Process(target=spin, args=(until,), daemon=True)
        for _ in range(2 * (os.cpu_count() or 2))
    ]
    for spinner in spinners:
        spinner.start()
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.join()


async def test_three_workers_on_a_saturated_machine_call_the_model_once_per_request(
    settings: Settings, config_file: Path, fake_provider: FakeProvider, saturated_cpu: None
) -> None:
    total = 60
    model = "slow-1500"
    calls_before = fake_provider.calls(model)
    # a short ack_wait: JetStream redelivers while the first worker is still at the model
    workers = [
        spawn_service("completion", config_file, LLMBUS_ACK_WAIT_S="1", LLMBUS_CONCURRENCY="30")
        for _ in range(3)
    ]
    try:
        async with (
            connected(settings) as nc,
            watching_events(nc) as events,
            running(serve_usage, settings),
        ):
            await wait_for(lambda: completion_service_ready(nc), 120, "a worker")
            js = nc.jetstream()
            for i in range(total):
                body = {"request_id": f"busy-{i}", "model": model,
                        "messages": [{"role": "user", "content": f"question {i}"}]}  # fmt: skip
                await js.publish(subjects.COMPLETION_REQUESTED, json.dumps(body).encode())
            await events.wait_terminal(total, timeout=180)

            async def all_settled() -> bool:
                info = await js.consumer_info(
                    subjects.REQUESTS_STREAM, subjects.COMPLETION_CONSUMER
                )
                return info.num_pending == 0 and info.num_ack_pending == 0

            await wait_for(all_settled, 120, "every request acked")
    finally:
        for worker in workers:
            await asyncio.to_thread(stop_process, worker)
    assert all(worker.returncode == 0 for worker in workers)
    assert fake_provider.calls(model) - calls_before == total
    info = await _events_by_subject(settings)
    assert info.get(subjects.COMPLETION_RECEIVED) == total
    assert info.get(subjects.USAGE_RECORDED) == total
    assert subjects.COMPLETION_FAILED not in info
    assert sorted(e["request_id"] for e in events.terminal()) == sorted(
        f"busy-{i}" for i in range(total)
    )


async def _events_by_subject(settings: Settings) -> dict[str, int]:
    async with connected(settings) as nc:
        stream = await nc.jetstream().stream_info(
            subjects.EVENTS_STREAM, subjects_filter="llmbus.>"
        )
        return dict(stream.state.subjects or {})
