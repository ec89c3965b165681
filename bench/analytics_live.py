"""Visibility under load for bench/analytics.py: how soon a published UsageRecorded counts in
the answers of llmbus.usage.query, against the real usage service.

The stack is pipeline.py's, imported from it: an embedded nats-server with authentication on,
the streams provisioned, and `python -m llmbus serve usage` as a process of its own (SQLite event
store, its own DuckDB projection, empty at the start). This process then

- publishes synthetic UsageRecorded events to llmbus.usage.recorded at a steady rate, with the
  completion service's credentials and its Nats-Msg-Id (`usage:<usage_id>`), as the completion
  worker's outbox relay does; every (rate / markers-per-second)th event is a marker: user
  `bench-user` (the benchmark client's own, so the client may ask about it) and a workflow id
  of its own;
- meanwhile asks llmbus.usage.query, through `llmbus.Client` with a client's credentials, for
  bench-user's usage grouped by workflow, every --poll-ms, back to back with the answers.

A marker's visibility is the time from just before its publish to the arrival of the first
answer that counts it: an upper bound, which includes the query's own round trip.
"""

import asyncio
import random
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# isort: off
from analytics_data import Synthetic
from pipeline import (  # it also sets LITELLM_LOCAL_MODEL_COST_MAP
    READY_TIMEOUT_S, percentile, process_cpu_s, provision, secured_server, spawn, stop, tail,
    write_config,
)  # fmt: skip
# isort: on

MARKER_USER = "bench-user"  # the user pipeline.secured_server's client books to
TICK_S = 0.005
DRAIN_TIMEOUT_S = 120.0


def memory(pid: int) -> dict[str, int]:
    """VmHWM (peak resident) and VmRSS (resident now) of a process, in bytes."""
    found: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                found[name] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return found


async def ask_totals(nc: Any) -> int:
    """How many usage events the service's projection counts, asked as the operator."""
    from llmbus.shared import subjects
    from llmbus.shared.contracts import UsageQueryResult

    reply = await nc.request(subjects.USAGE_QUERY, b'{"metrics": ["requests"]}', timeout=10.0)
    return UsageQueryResult.model_validate_json(reply.data).events_projected


async def drained(nc: Any, expected: int) -> int:
    """Waits (up to DRAIN_TIMEOUT_S) until the projection counts `expected` events."""
    started = time.perf_counter()
    while True:
        projected = await ask_totals(nc)
        if projected >= expected or time.perf_counter() - started > DRAIN_TIMEOUT_S:
            return projected
        await asyncio.sleep(0.1)


async def wait_ready(nc: Any, usage: Any, log: Path) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < READY_TIMEOUT_S:
        if usage.poll() is not None:
            raise SystemExit(f"the usage service exited early:\n{tail(log)}")
        try:
            await ask_totals(nc)
            return time.perf_counter() - started
        except Exception:
            await asyncio.sleep(0.1)
    raise SystemExit(f"the usage service was not ready in {READY_TIMEOUT_S:.0f} s")


class Load:
    """Publishes `rate` events a second for `seconds`, `markers_per_s` of them markers."""

    def __init__(self, js: Any, rate: float, seconds: float, markers_per_s: float) -> None:
        self.js = js
        self.rate = rate
        self.total = int(rate * seconds)
        self.every = max(1, round(rate / markers_per_s))
        self.synth = Synthetic(seed=11, total=1, end=datetime.now(UTC))
        self.rng = random.Random(11)
        self.run = f"{time.time_ns():x}"
        self.published: dict[str, float] = {}  # marker workflow id -> perf_counter at publish
        self.sent = 0
        self.seconds = 0.0
        self.done = False

    async def publish(self) -> None:
        from llmbus.shared import subjects

        started = time.perf_counter()
        try:
            while self.sent < self.total:
                due = min(self.total, int((time.perf_counter() - started) * self.rate) + 1)
                sends = []
                while self.sent < due:
                    sends.append(self._one(self.sent, subjects.USAGE_RECORDED))
                    self.sent += 1
                await asyncio.gather(*sends)
                await asyncio.sleep(TICK_S)
        finally:
            self.seconds = time.perf_counter() - started
            self.done = True

    async def _one(self, i: int, subject: str) -> None:
        serial = f"{self.run}-{i}"
        extra: dict[str, Any] = {"usage_id": f"live-{serial}:1", "request_id": f"live-{serial}"}
        marker = i % self.every == self.every // 2
        if marker:
            extra |= {"user_id": MARKER_USER, "workflow_id": f"vis-{serial}"}
        event = self.synth.event(self.rng, datetime.now(UTC), serial, **extra)
        payload = event.model_dump_json().encode()
        if marker:
            self.published[f"vis-{serial}"] = time.perf_counter()
        await self.js.publish(subject, payload, headers={"Nats-Msg-Id": f"usage:{event.usage_id}"})


async def poll(client: Any, load: Load, poll_s: float, patience_s: float) -> dict[str, Any]:
    seen: dict[str, float] = {}
    round_trips: list[float] = []
    errors: list[str] = []
    deadline = None
    while True:
        started = time.perf_counter()
        try:
            result = await client.usage.query(by=["workflow"], metrics=["requests"], timeout_s=30)
        except Exception as exc:  # counted, never fatal: it is a benchmark
            errors.append(repr(exc)[:200])
            result = None
        arrived = time.perf_counter()
        round_trips.append((arrived - started) * 1000)
        for row in result.rows if result is not None else []:
            marker = row["workflow"]
            if marker in load.published and marker not in seen:
                seen[marker] = (arrived - load.published[marker]) * 1000
        if load.done:
            deadline = deadline or arrived + patience_s
            if len(seen) >= len(load.published) or arrived > deadline:
                break
        await asyncio.sleep(poll_s)
    return {"seen": seen, "round_trips": round_trips, "errors": errors}


async def visibility(rate: float, seconds: float, markers_per_s: float, poll_ms: float) -> dict[str, Any]:  # fmt: skip
    from llmbus.client import Client
    from llmbus.shared import bus
    from llmbus.shared.settings import Settings

    out: dict[str, Any] = {"rate_asked": rate, "seconds_asked": seconds}
    with tempfile.TemporaryDirectory(prefix="llmbus-analytics-live-") as tmp:
        folder = Path(tmp)
        server, creds = secured_server(folder)
        usage = admin = publisher = client = None
        log = folder / "usage.log"
        try:
            config = write_config(folder, server.url, "http://127.0.0.1:9/v1", 1)
            settings = Settings(nats_url=server.url, state_dir=folder / "state")
            admin = await provision(settings)
            usage = spawn("usage", config, log)
            out["ready_s"] = await wait_ready(admin, usage, log)
            seed = folder / "state" / "auth" / "services" / "completion.nk"
            publisher = await bus.connect(settings, "bench-usage-publisher", creds=seed)
            client = Client(server.url, creds=creds, settings=settings, timeout_s=30.0)
            await client.connect()
            assert server.process is not None
            pids = {"usage service": usage.pid, "nats-server": server.process.pid}
            cpu_before = {name: process_cpu_s(pid) for name, pid in pids.items()}
            # warm-up: the first events, the first query, DuckDB's first appends
            warm = Load(publisher.jetstream(), 1000.0, 0.2, 50.0)
            await warm.publish()
            await drained(admin, warm.sent)
            await client.usage.query(by=["workflow"], metrics=["requests"], timeout_s=30)
            load = Load(publisher.jetstream(), rate, seconds, markers_per_s)
            polled, _ = await asyncio.gather(
                poll(client, load, poll_ms / 1000, patience_s=30.0), load.publish()
            )
            started = time.perf_counter()
            projected = await drained(admin, warm.sent + load.sent)
            out["drain_s"] = time.perf_counter() - started
            out["cpu_s"] = {n: process_cpu_s(p) - cpu_before[n] for n, p in pids.items()}
            out["usage_service_memory"] = memory(usage.pid)
            out["usage_service_pid"] = usage.pid
            visible = sorted(polled["seen"].values())
            out |= {
                "published": load.sent, "publish_s": load.seconds,
                "rate": load.sent / load.seconds if load.seconds else 0.0,
                "projected": projected - warm.sent, "markers": len(load.published),
                "markers_seen": len(visible), "query_errors": polled["errors"][:3],
                "query_error_count": len(polled["errors"]), "queries": len(polled["round_trips"]),
                "visible_ms": {q: percentile(visible, q) for q in (50, 99)}
                | {"max": max(visible, default=float("nan"))},
                "query_round_trip_ms": {q: percentile(polled["round_trips"], q) for q in (50, 99)},
            }  # fmt: skip
        finally:
            if client is not None:
                await client.close()
            if publisher is not None:
                await publisher.close()
            if usage is not None:
                out["stopped"] = stop(usage, signal.SIGTERM, "usage service")
                bad = [ln for ln in log.read_text(errors="replace").splitlines()
                       if " ERROR " in ln or "Traceback" in ln]  # fmt: skip
                if bad:
                    out["log_errors"] = f"{len(bad)} error lines; first: {bad[0][:300]}"
            if admin is not None:
                await admin.close()
            server.stop()
    return out
