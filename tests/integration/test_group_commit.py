"""Many concurrent outcomes are stored in few transactions, each exactly once."""

import asyncio
from pathlib import Path

from llmbus.services.completion.application import CompletionApplication, Outcome
from llmbus.services.completion.domain import Completion
from llmbus.shared.batching import GroupCommit
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
