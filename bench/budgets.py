"""Budget admission: reserve round trip, its cost on the pipeline, and over-reservation. One run.

    cd /work/main && .venv/bin/python bench/budgets.py [--requests 2000] [--concurrency 64]

Two llmbus stacks run side by side, each with an embedded nats-server, a completion worker and a
usage service (own processes, SQLite stores, temp llmbus.yaml), calling ONE fake OpenAI provider
process (`fake-gpt`, priced in the catalog as in bench/pipeline.py). Both configure the same 5
budgets, 2 of which match the benchmark's requests (team=bench: hard, lifetime, never refuses;
model=fake-gpt: soft). Stack "on" has `completion.admission: on`, stack "off" has `off`, so
the only difference between them is the reserve round trip (and its settlement).

1. Admission latency: `llmbus.budget.reserve` request/reply straight to the "on" usage service,
   at concurrency 1 and --concurrency (each reservation then settled on llmbus.budget.settle,
   as a worker does, so open reservations stay at the in-flight count). Then `Client.complete()`
   at concurrency 1, budgets on vs off, alternating.
2. Throughput at --concurrency, on vs off, alternating rounds.
3. Over-reservation: a hard budget of K x a request's true cost, then a burst of --burst
   requests at once, with max_tokens far above the real reply, close to it, and unset. Each
   burst runs on the "on" stack (reservations wait for open ones to settle, the default) and on
   a third stack "nowait" (completion.admission_wait_s: 0, refused at once), started after
   "off" is stopped.

A benchmark, not a test: it exits 0 whatever the figures.
"""

import argparse
import asyncio
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import pipeline as P

TEAM = "bench"
TARGET_P99_MS = 2.0


def budgets() -> list[dict[str, Any]]:
    """5 budgets; requests with team=bench, model=fake-gpt match the first two."""
    return [
        {"name": "team-bench", "scope": {"team": TEAM}, "window": "lifetime",
         "limit_usd": "1000000", "mode": "hard"},
        {"name": "model-fake", "scope": {"model": P.MODEL}, "window": "daily",
         "limit_usd": "1000000", "mode": "soft"},
        {"name": "team-other", "scope": {"team": "other"}, "window": "monthly",
         "limit_usd": "10", "mode": "hard"},
        {"name": "user-alice", "scope": {"user": "alice"}, "window": "daily",
         "limit_usd": "5", "mode": "hard"},
        {"name": "project-x", "scope": {"project": "x"}, "window": "weekly",
         "limit_usd": "50", "mode": "soft"},
    ]  # fmt: skip


class Stack:
    """nats-server + completion worker + usage service, with admission on or off."""

    def __init__(
        self, name: str, folder: Path, api_base: str, admission: str, conc: int,
        wait_s: float | None = None,
    ) -> None:  # fmt: skip
        import yaml

        self.name = name
        self.folder = folder
        folder.mkdir()
        self.server, self.creds = P.secured_server(folder)
        self.config = P.write_config(folder, self.server.url, api_base, conc)
        raw = yaml.safe_load(self.config.read_text())
        raw["budgets"] = budgets()
        raw["completion"]["admission"] = admission
        if wait_s is not None:
            raw["completion"]["admission_wait_s"] = wait_s
        self.config.write_text(yaml.safe_dump(raw))
        self.worker: subprocess.Popen | None = None
        self.usage: subprocess.Popen | None = None
        self.admin: Any = None
        self.client: Any = None

    async def start(self) -> None:
        from llmbus.shared.settings import Settings

        settings = Settings(nats_url=self.server.url, state_dir=self.folder / "state")
        self.admin = await P.provision(settings)
        self.worker = P.spawn("completion", self.config, self.folder / "completion.log")
        self.usage = P.spawn("usage", self.config, self.folder / "usage.log")
        from llmbus.client import Client

        self.client = Client(self.server.url, creds=self.creds, settings=settings, timeout_s=60.0)
        await self.client.connect()

    async def ready(self) -> float:
        from llmbus.shared import subjects

        started = time.perf_counter()
        await P.wait_ready(self.admin, self.worker, self.folder / "completion.log")
        while time.perf_counter() - started < P.READY_TIMEOUT_S:
            assert self.usage is not None
            if self.usage.poll() is not None:
                raise SystemExit(f"usage service exited:\n{P.tail(self.folder / 'usage.log')}")
            try:
                await self.admin.request(subjects.BUDGET_STATUS, b"{}", timeout=1.0)
                return time.perf_counter() - started
            except Exception:
                await asyncio.sleep(0.1)
        raise SystemExit(f"usage service of {self.name} not ready")

    async def complete(self, **fields: Any) -> Any:
        received = await self.client.complete(P.PROMPT, model=P.MODEL, team_id=TEAM, **fields)
        if not received.content:
            raise RuntimeError("empty reply")
        return received

    def pids(self) -> dict[str, int]:
        assert self.worker and self.usage and self.server.process
        return {"completion worker": self.worker.pid, "usage service": self.usage.pid,
                "nats-server": self.server.process.pid}  # fmt: skip

    async def close(self, notes: list[str]) -> None:
        if self.client is not None:
            await self.client.close()
        for proc, what in ((self.worker, "completion"), (self.usage, "usage")):
            if proc is not None:
                notes.append(f"[{self.name}] " + P.stop(proc, signal.SIGTERM, f"{what} service"))
                lines = (self.folder / f"{what}.log").read_text(errors="replace").splitlines()
                bad = [ln for ln in lines if " ERROR " in ln or "Traceback" in ln]
                if bad:
                    notes.append(f"[{self.name}] {what} log: {len(bad)} error lines; "
                                 f"first: {bad[0][:300]}")  # fmt: skip
        if self.admin is not None:
            await self.admin.close()
        self.server.stop()


def pct(values: list[float]) -> str:
    if not values:
        return "n/a"
    p50, p95, p99 = (P.percentile(values, q) for q in (50, 95, 99))
    return f"p50 {p50:6.3f}  p95 {p95:6.3f}  p99 {p99:6.3f} ms"


# ---------------------------------------------------------------- 1. the reserve round trip


async def in_lanes(one: Any, n: int, concurrency: int) -> None:
    """Run `one()` n times, `concurrency` at a time."""
    remaining = n

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    await asyncio.gather(*(lane() for _ in range(concurrency)))


async def admission_latency(stack: Stack, n: int, concurrency: int) -> tuple[list[float], int]:
    from llmbus.shared import subjects
    from llmbus.shared.contracts import UsageRecorded
    from llmbus.shared.contracts.budget import BudgetAdmission, BudgetReservation

    nc = stack.admin
    latencies: list[float] = []
    refused = 0

    async def one() -> None:
        nonlocal refused
        rid = uuid.uuid4().hex
        payload = BudgetReservation(
            request_id=rid, amount_usd=Decimal("0.0006"), lease_s=60.0, team=TEAM,
            model=P.MODEL,
        ).model_dump_json().encode()  # fmt: skip
        started = time.perf_counter()
        reply = await nc.request(subjects.BUDGET_RESERVE, payload, timeout=10.0)
        latencies.append((time.perf_counter() - started) * 1000)
        if not BudgetAdmission.model_validate_json(reply.data).admitted:
            refused += 1
        usage = UsageRecorded(
            usage_id=f"{rid}:1", request_id=rid, provider="openai", model=P.MODEL,
            prompt_tokens=6, completion_tokens=9, total_tokens=15, cost_usd=2.4e-5,
            latency_ms=1.0, status="ok", team_id=TEAM,
        )  # fmt: skip
        await nc.publish(subjects.BUDGET_SETTLE, usage.model_dump_json().encode())

    await in_lanes(one, n, concurrency)
    return latencies, refused


async def admission_step(
    stack: Stack, n: int, concurrency: int, grant_requests: int
) -> tuple[list[float], dict[str, int]]:
    """Time what a worker runs per request: Admission.admit(), then settle() once the call has
    ended, against the stack's usage service. With grant_requests > 0 a grant is asked for once
    and requests are admitted under it; with 0 each request reserves on llmbus.budget.reserve."""
    from llmbus.services.completion.admission import Admission
    from llmbus.shared.catalog import ModelCatalog
    from llmbus.shared.contracts import CompletionRequested, UsageRecorded
    from llmbus.shared.settings import load_settings

    settings = load_settings({"LLMBUS_CONFIG": str(stack.config)})
    settings.completion.grant_requests = grant_requests
    admission = Admission(settings, ModelCatalog(settings), stack.admin)
    await admission.start()
    stop = asyncio.Event()
    returning = asyncio.create_task(admission.run(stop))
    asks = await count_admission_messages(stack)
    messages = [{"role": "user", "content": P.PROMPT}]
    latencies: list[float] = []

    async def one() -> None:
        rid = uuid.uuid4().hex
        request = CompletionRequested(request_id=rid, model=P.MODEL, messages=messages,
                                      team_id=TEAM)  # fmt: skip
        latencies.append(0.0)  # in the order the requests start
        seq = len(latencies) - 1
        started = time.perf_counter()
        refusal = await admission.admit(request, P.MODEL, messages, 256)
        latencies[seq] = (time.perf_counter() - started) * 1000
        assert refusal is None, refusal
        await asyncio.sleep(0)  # the model call
        usage = UsageRecorded(
            usage_id=f"{rid}:1", request_id=rid, provider="openai", model=P.MODEL,
            prompt_tokens=6, completion_tokens=9, total_tokens=15, cost_usd=2.4e-5,
            latency_ms=1.0, status="ok", team_id=TEAM, grant_id=admission.grant_of(rid),
        )  # fmt: skip
        await admission.settle(usage)

    await in_lanes(one, n, concurrency)
    stop.set()
    await returning
    await admission.close()
    return latencies, dict(asks)


def bootstrap_diff(on: list[float], off: list[float], q: float, rounds: int = 400) -> str:
    """A 95% interval for percentile(on) - percentile(off), by resampling both sides."""
    rng = random.Random(7)
    diffs = sorted(
        P.percentile(rng.choices(on, k=len(on)), q) - P.percentile(rng.choices(off, k=len(off)), q)
        for _ in range(rounds)
    )
    return f"[{diffs[int(rounds * 0.025)]:+.3f}, {diffs[int(rounds * 0.975)]:+.3f}]"


# ---------------------------------------------------------------- 3. over-reservation


async def count_admission_messages(stack: Stack) -> dict[str, int]:
    """Count the grant asks and per-request reservations a stack's worker sends from now on."""
    from llmbus.shared import subjects

    counts = {"grant": 0, "reserve": 0}

    def counter(kind: str) -> Any:
        async def count(msg: Any) -> None:
            counts[kind] += 1

        return count

    await stack.admin.subscribe(subjects.BUDGET_GRANT, cb=counter("grant"))
    await stack.admin.subscribe(subjects.BUDGET_RESERVE, cb=counter("reserve"))
    return counts


async def over_reservation(
    stack: Stack, label: str, max_tokens: int | None, k: int, burst: int
) -> dict[str, Any]:
    from llmbus.client import CompletionError
    from llmbus.shared import subjects

    user = f"over-{label}"
    params = {"max_tokens": max_tokens} if max_tokens is not None else {}
    probe = await stack.client.complete(
        P.PROMPT, model=P.MODEL, user_id=f"probe-{label}", params=params
    )
    true_cost = Decimal(str(probe.cost_usd))
    limit = (true_cost * k).quantize(Decimal("1e-10"))
    await stack.client.budgets.set(
        {"name": user, "scope": {"user": user}, "window": "lifetime", "limit_usd": limit,
         "mode": "hard", "thresholds": [1.0]}
    )  # fmt: skip
    worst: list[float] = []

    async def on_exceeded(msg: Any) -> None:
        event = json.loads(msg.data)
        if event.get("budget") == user:
            worst.append(float(event["requested_usd"]))

    sub = await stack.admin.subscribe(subjects.BUDGET_EXCEEDED, cb=on_exceeded)
    admitted = refused = errors = 0
    samples: list[str] = []

    async def one() -> None:
        nonlocal admitted, refused, errors
        try:
            await stack.client.complete(P.PROMPT, model=P.MODEL, user_id=user, params=params)
            admitted += 1
        except CompletionError as exc:
            if exc.failed.error_type.value == "budget_exceeded":
                refused += 1
            else:
                errors += 1
                samples.append(repr(exc)[:200])
        except Exception as exc:
            errors += 1
            samples.append(repr(exc)[:200])

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(burst)))
    seconds = time.perf_counter() - started
    spent = Decimal(0)
    deadline = time.perf_counter() + 20
    while time.perf_counter() < deadline:  # until every reservation is settled
        rows = await stack.client.budgets.status()
        row = next(r for r in rows if r.name == user)
        spent = Decimal(str(row.spent_usd))
        if row.reserved_usd == 0:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)
    await sub.unsubscribe()
    would_fit = min(refused, math.floor((limit - spent) / true_cost)) if true_cost else 0
    return {
        "label": label, "max_tokens": max_tokens, "true_cost": float(true_cost),
        "completion_tokens": probe.usage.completion_tokens if probe.usage else None,
        "prompt_tokens": probe.usage.prompt_tokens if probe.usage else None,
        "worst_case": worst[0] if worst else None, "limit": float(limit), "k": k,
        "burst": burst, "admitted": admitted, "refused": refused, "errors": errors,
        "samples": samples[:2], "spent": float(spent), "reserved_left": row.get("reserved_usd"),
        "would_fit": would_fit, "seconds": seconds,
    }  # fmt: skip


def print_over(r: dict[str, Any]) -> None:
    worst = f"{r['worst_case']:.3e}" if r["worst_case"] else "n/a (no refusal)"
    ratio = f" = {r['worst_case'] / r['true_cost']:.1f} x true" if r["worst_case"] else ""
    print(
        f"  max_tokens={r['max_tokens']}: true cost {r['true_cost']:.3e} USD "
        f"({r['prompt_tokens']} prompt + {r['completion_tokens']} completion tokens), "
        f"reserved worst case {worst}{ratio}"
    )
    print(
        f"    limit {r['limit']:.3e} (K={r['k']}), burst {r['burst']} in {r['seconds']:.2f} s: "
        f"admitted {r['admitted']}, refused {r['refused']}, other errors {r['errors']}; "
        f"refused that would have fit {r['would_fit']}; spent/limit "
        f"{r['spent'] / r['limit']:.1%} (reserved left {r['reserved_left']})"
    )
    for s in r["samples"]:
        print(f"    error sample: {s}")  # fmt: skip


# ---------------------------------------------------------------- the run


async def run(folder: Path, api_base: str, fake_pid: int, args: argparse.Namespace,
              notes: list[str]) -> None:  # fmt: skip
    on = Stack("on", folder / "on", api_base, "on", args.concurrency)
    off = Stack("off", folder / "off", api_base, "off", args.concurrency)
    off_open = True
    try:
        await on.start()
        await off.start()
        for s in (on, off):
            notes.append(f"[{s.name}] ready {await s.ready():.1f} s after spawn")
        print("warming up", flush=True)
        for s in (on, off):
            await P.timed_load(s.complete, args.warmup, args.concurrency)
            await P.sequential(s.complete, 20)
        await admission_latency(on, 200, args.concurrency)

        print("\n1. admission latency (5 budgets, 2 match; target: adds <= "
              f"{TARGET_P99_MS} ms p99)", flush=True)  # fmt: skip
        print("  the worker's admission step, Admission.admit() (then settle()), timed in this "
              "process against the usage service:")  # fmt: skip
        from llmbus.shared.sections import CompletionSettings

        default = CompletionSettings().grant_requests
        for label, grant_requests in (("under a grant", default), ("per-request reserve", 0)):
            for conc in (1, args.concurrency):
                lat, asks = await admission_step(on, args.admission_requests, conc,
                                                 grant_requests)  # fmt: skip
                verdict = "ok" if P.percentile(lat, 99) <= TARGET_P99_MS else "MISSED"
                print(
                    f"    {label:20} c={conc:<3} N={len(lat)}: {pct(lat)}  ({asks['grant']} "
                    f"grant asks, {asks['reserve']} reservations) p99 vs target: {verdict}",
                    flush=True,
                )
                if conc > 1 and grant_requests:
                    # the first `conc` start together, before any grant: they wait for one ask
                    print(f"      {'':20} the first {conc} (no grant yet): max "
                          f"{max(lat[:conc]):.3f} ms; the {len(lat) - conc} after them: "
                          f"{pct(lat[conc:])}", flush=True)  # fmt: skip
        for conc in (1, args.concurrency):
            lat, refused = await admission_latency(on, args.admission_requests, conc)
            print(
                f"    llmbus.budget.reserve round trip alone, c={conc:<3} N={len(lat)}: "
                f"{pct(lat)}   (refused {refused})",
                flush=True,
            )

        asks = await count_admission_messages(on)
        lat_on: list[float] = []
        lat_off: list[float] = []
        for _ in range(args.latency_requests):  # one on, one off: both see the same machine
            lat_on += (await P.sequential(on.complete, 1))["latencies"]
            lat_off += (await P.sequential(off.complete, 1))["latencies"]
        print(f"  Client.complete() at c=1, N={len(lat_on)}/{len(lat_off)}, on and off in turn "
              f"(on: {asks['grant']} grant asks, {asks['reserve']} reservations):")  # fmt: skip
        print(f"    budgets on : {pct(lat_on)}")
        print(f"    budgets off: {pct(lat_off)}")
        for q in (50, 99):
            added = P.percentile(lat_on, q) - P.percentile(lat_off, q)
            print(
                f"    added p{q}: {added:+.3f} ms, 95% interval {bootstrap_diff(lat_on, lat_off, q)}"
            )
        print("    (end to end, the p99 of two separate samples differs by whole ms with "
              "nothing between them: see bench/README.md)", flush=True)  # fmt: skip

        print(f"\n2. throughput at c={args.concurrency}, N={args.requests} per side, "
              f"{args.rounds} alternating rounds", flush=True)  # fmt: skip
        asks = await count_admission_messages(on)
        meters = {s.name: P.CpuMeter(s.pids() | {"fake provider": fake_pid,
                                                 "client (this process)": os.getpid()})
                  for s in (on, off)}  # fmt: skip
        done: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
        for i, n in enumerate(P.split(args.requests, args.rounds)):
            order = [on, off]
            for s in order if i % 2 == 0 else reversed(order):
                before = meters[s.name].snapshot()
                done[s.name].append(await P.timed_load(s.complete, n, args.concurrency))
                meters[s.name].add(before, meters[s.name].snapshot())
            print(
                f"  round {i + 1}: on {n / done['on'][-1]['seconds']:.1f} req/s, "
                f"off {n / done['off'][-1]['seconds']:.1f} req/s",
                flush=True,
            )
        rate = {k: sum(r["n"] - r["error_count"] for r in v) / sum(r["seconds"] for r in v)
                for k, v in done.items()}  # fmt: skip
        errs = {k: sum(r["error_count"] for r in v) for k, v in done.items()}
        print(
            f"  budgets on {rate['on']:.1f} req/s, off {rate['off']:.1f} req/s: "
            f"ratio on/off {rate['on'] / rate['off']:.3f}  (errors on {errs['on']}, "
            f"off {errs['off']}; on: {asks['grant']} grant asks, {asks['reserve']} reservations)"
        )
        print("  CPU ms per request (from /proc, 10 ms ticks):   on     off")
        for key in meters["on"].used:
            print(
                f"    {key:40} {meters['on'].used[key] * 1000 / args.requests:6.2f} "
                f"{meters['off'].used[key] * 1000 / args.requests:6.2f}"
            )

        print(f"\n3. over-reservation: hard budget = K x true cost, {args.burst} requests at once",
              flush=True)  # fmt: skip
        await off.close(notes)
        off_open = False
        # the same bursts on a stack whose reservations may not wait (admission_wait_s: 0)
        nowait = Stack("nowait", folder / "nowait", api_base, "on", args.concurrency, wait_s=0)
        await nowait.start()
        notes.append(f"[nowait] ready {await nowait.ready():.1f} s after spawn")
        await P.sequential(nowait.complete, 20)
        print("  waiting for open reservations to settle (admission_wait_s: 30, the default)"
              " vs refusing at once (0):")  # fmt: skip
        close: int | None = None
        for label, max_tokens in (("big", args.max_tokens), ("close", None), ("none", None)):
            if label == "close":
                max_tokens = close
            for stack, tag in ((on, "wait"), (nowait, "no-wait")):
                r = await over_reservation(stack, f"{label}-{tag}", max_tokens, args.k, args.burst)
                close = close or r["completion_tokens"] or 16
                print(f"  [{tag}]", end="")
                print_over(r)
        await nowait.close(notes)
        stored = await P.events_stored(on.admin, 0, 0)
        notes.append(f"[on] events stream holds {stored} messages")
    finally:
        await on.close(notes)
        if off_open:
            await off.close(notes)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--requests", "-n", type=int, default=2000, help="per side, at -c")
    parser.add_argument("--concurrency", "-c", type=int, default=64)
    parser.add_argument("--admission-requests", type=int, default=2000, help="per concurrency")
    parser.add_argument("--latency-requests", type=int, default=1000, help="per side, c=1")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--burst", type=int, default=200, help="over-reservation burst")
    parser.add_argument("-k", type=int, default=50, help="budget = K x true cost")
    parser.add_argument("--max-tokens", type=int, default=256, help="the loose max_tokens")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    from llmbus.testing.fake_openai import running_fake_provider

    notes: list[str] = []
    load_before = os.getloadavg()
    started = time.perf_counter()
    try:
        with running_fake_provider() as fake, tempfile.TemporaryDirectory() as folder:
            pids = P.child_pids("llmbus.testing.fake_openai")
            print(f"fake provider at {fake.base_url} (pid {pids})", flush=True)
            asyncio.run(run(Path(folder), fake.base_url, pids[0] if pids else 0, args, notes))
            notes.append(f"fake provider served {fake.stats()['total']} calls in all")
    except BaseException:  # a benchmark: report and exit 0
        traceback.print_exc()
    print()
    print(
        f"machine: {os.cpu_count()} cores, load average {load_before[0]:.2f} before / "
        f"{os.getloadavg()[0]:.2f} after (1 min); run took {time.perf_counter() - started:.0f} s"
    )
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
    sys.exit(0)
