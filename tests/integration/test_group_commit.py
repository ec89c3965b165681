"""Many concurrent outcomes and claims are stored in few transactions, each exactly once."""

import asyncio
from pathlib import Path

from llmbus.services.completion.application import CompletionApplication, Outcome
from llmbus.services.completion.domain import Completion
from llmbus.shared.batching import GroupCommit, TickBatch
from llmbus.shared.eventstore import open_store, sqlite_probe
from llmbus.shared.settings import Settings


def outcome(request_id: str, content: str = "hi") -> Outcome:
    event = {"request_id": request_id, "content": content}
    return Outcome(request_id, {"request_id": request_id}, "received", event, {"usage_id": "u"})


async def test_concurrent_outcomes_share_transactions_and_duplicates_keep_the_first(
    tmp_path: Path,
) -> None:
    app = open_store(CompletionApplication, Settings(state_dir=tmp_path), "completion")
    writes = GroupCommit(app.record_many, "test-writer")
    first = await writes.write(outcome("dup", "first"))
    results = await asyncio.gather(
        *(writes.write(outcome(f"r{i}")) for i in range(100)),
        writes.write(outcome("dup", "second")),
    )
    assert writes.items == 102 and writes.batches < 50
    assert [c.request_id for c in results[:100]] == [f"r{i}" for i in range(100)]
    assert results[100].outcome == first.outcome == {"request_id": "dup", "content": "first"}
    stored = app.find("r42")
    assert stored is not None and stored.status == "received"
    writes.close()
    app.close()


async def test_a_failed_batch_fails_each_of_its_writers() -> None:
    def broken(items: list[str]) -> list[str]:
        raise RuntimeError("disk full")

    writes: GroupCommit[str, str] = GroupCommit(broken, "test-broken")
    results = await asyncio.gather(
        *(writes.write(str(i)) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    writes.close()


async def test_claims_asked_in_one_turn_of_the_loop_share_one_transaction(tmp_path: Path) -> None:
    app = open_store(CompletionApplication, Settings(state_dir=tmp_path), "completion")
    claims = TickBatch(app.claim_many)
    asks = [(f"r{i}", "worker-a", 0.0, 30.0) for i in range(20)]
    answers = await asyncio.gather(*(claims.write(ask) for ask in asks))
    assert claims.batches == 1 and claims.items == 20
    assert all(answer.mine is not None for answer in answers)
    # the same requests again, with one new: the batch falls back to one claim at a time, and
    # only the new one is this worker's to call (the others are held, not lapsed, by worker-a)
    again = await asyncio.gather(
        *(claims.write((rid, "worker-b", 1.0, 30.0)) for rid in ("r0", "r1", "new"))
    )
    assert claims.batches == 2
    assert [a.mine is not None for a in again] == [False, False, True]
    assert again[0].held_by is not None and again[0].held_by.holder == "worker-a"
    lone = await claims.write(("r99", "worker-a", 2.0, 30.0))
    assert lone.mine is not None and claims.batches == 3
    app.close()


async def test_a_failed_tick_fails_each_of_its_writers() -> None:
    def broken(items: list[str]) -> list[str]:
        raise RuntimeError("disk full")

    writes: TickBatch[str, str] = TickBatch(broken)
    results = await asyncio.gather(
        *(writes.write(str(i)) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    # a write after the failed tick is flushed in a tick of its own, not left waiting
    [after] = await asyncio.wait_for(
        asyncio.gather(writes.write("after"), return_exceptions=True), 5
    )
    assert isinstance(after, RuntimeError)


def test_the_sqlite_probe_sees_exactly_what_the_store_holds(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    app = open_store(CompletionApplication, settings, "completion")
    probe = sqlite_probe(settings, "completion")
    assert probe is not None
    assert not probe.has_events(Completion.create_id("r1"))
    app.record(outcome("r1"))
    assert probe.has_events(Completion.create_id("r1"))
    assert not probe.has_events(Completion.create_id("r2"))
    probe.close()
    app.close()


def test_there_is_no_probe_for_postgres(tmp_path: Path) -> None:
    assert sqlite_probe(Settings(state_dir=tmp_path, event_store="postgres"), "x") is None
