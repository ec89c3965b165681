"""Pipeline overhead: llmbus end to end vs bare `litellm.acompletion`, same fake provider, one run.

    cd /work/main && .venv/bin/python bench/pipeline.py [--requests 2000] [--concurrency 64]

Both sides call ONE fake OpenAI-compatible provider process (`llmbus.testing.fake_openai`, no
added latency), in the same run:

* bare litellm: `litellm.acompletion(model="openai/fake-gpt", api_base=..., api_key=...,
  messages=...)` from a client process of its own (a child of this script, driven over its
  stdin, so that this process never imports litellm).
* the llmbus pipeline: embedded nats-server (JetStream, temp dir), the completion service as its
  own process (`python -m llmbus serve completion`, SQLite event store), and this process as the
  client through `llmbus.Client.complete()`: publish -> worker -> litellm -> events stored ->
  reply on the Llmbus-Reply-To inbox.

Both sides are warmed up first. Then the measured load alternates between them in --rounds
rounds (N/rounds requests at --concurrency each), and so do the sequential latency requests: the
machine may be shared, and alternating spreads any background load over both sides alike. The
CPU time of every process (from /proc) is reported per request too: it does not depend on
background load the way wall-clock throughput does.

SPEC targets: pipeline throughput >= 0.8 x bare; added p50 at concurrency 1 <= 3 ms. This is a
benchmark, not a test: it exits 0 whether or not the targets are met.

--profile FILE runs the completion worker under pyinstrument; it writes a text report to FILE when
the worker is stopped with SIGINT at the end. pyinstrument samples the main thread only: work done
in asyncio.to_thread (event-store reads and writes) shows as time awaited, not its insides.
"""

import argparse
import asyncio
import atexit
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Before any import of litellm, here or in a child: offline, the remote price map costs seconds.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

MODEL = "fake-gpt"
API_KEY = "sk-bench"
KEY_ENV = "LLMBUS_BENCH_FAKE_KEY"
PROMPT = "Say hello to the benchmark, please."
MESSAGES = [{"role": "user", "content": PROMPT}]
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
# pyinstrument renderer by the --profile file's suffix; anything else gets the text report
RENDERERS = {".html": "html", ".json": "json", ".pstats": "pstats", ".pyisession": "pyisession"}

Call = Callable[[], Awaitable[Any]]


# ---------------------------------------------------------------- load generation (both sides)


async def timed_load(call: Call, n: int, concurrency: int) -> dict[str, Any]:
    """n calls with `concurrency` in flight."""
    remaining = n
    errors: list[str] = []

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                await call()
            except Exception as exc:  # counted and reported, never fatal: it is a benchmark
                errors.append(repr(exc)[:300])

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(min(concurrency, n))))
    return {"n": n, "seconds": time.perf_counter() - started, "errors": errors[:3],
            "error_count": len(errors)}  # fmt: skip


async def sequential(call: Call, n: int) -> dict[str, Any]:
    """n calls one at a time; latencies in ms of the successful ones."""
    latencies: list[float] = []
    errors: list[str] = []
    for _ in range(n):
        started = time.perf_counter()
        try:
            await call()
        except Exception as exc:
            errors.append(repr(exc)[:300])
            continue
        latencies.append((time.perf_counter() - started) * 1000)
    return {"n": n, "latencies": latencies, "errors": errors[:3], "error_count": len(errors)}


async def run_op(call: Call, op: dict[str, Any]) -> dict[str, Any]:
    if op["op"] == "load":
        return await timed_load(call, op["n"], op["concurrency"])
    return await sequential(call, op["n"])


# ---------------------------------------------------------------- the bare litellm client (child)


async def bare_child(api_base: str) -> None:
    """Reads one JSON op per stdin line, answers one JSON line each; stops at end of input."""
    import litellm

    litellm.suppress_debug_info = True

    async def call() -> Any:
        response = await litellm.acompletion(
            model=f"openai/{MODEL}", api_base=api_base, api_key=API_KEY, messages=MESSAGES
        )
        if not response.choices[0].message.content:
            raise RuntimeError("empty reply")
        return response

    loop = asyncio.get_running_loop()
    print(json.dumps({"ready": True}), flush=True)
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        print(json.dumps(await run_op(call, json.loads(line))), flush=True)


class BareClient:
    def __init__(self, api_base: str) -> None:
        self.api_base = api_base
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--bare-child", self.api_base,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        ready = await asyncio.wait_for(self._read(), READY_TIMEOUT_S)
        assert ready.get("ready"), ready

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def _read(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the bare litellm client exited ({await self.process.wait()})")
        result: dict[str, Any] = json.loads(line)
        return result

    async def run(self, op: dict[str, Any]) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(op).encode() + b"\n")
        await self.process.stdin.drain()
        return await self._read()

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            await self.process.wait()


# ---------------------------------------------------------------- CPU accounting from /proc


def process_cpu_s(pid: int, main_thread_only: bool = False) -> float:
    path = f"/proc/{pid}/task/{pid}/stat" if main_thread_only else f"/proc/{pid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_S  # utime + stime


def machine_busy_s() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) * TICK_S


def child_pids(marker: str) -> list[int]:
    found = []
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        for pid in children.read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if marker.encode() in cmdline:
                found.append(int(pid))
    return found


@dataclass
class CpuMeter:
    pids: dict[str, int]
    # of these, the main thread alone too: the event loop, as opposed to to_thread work
    main_threads: tuple[str, ...] = ()
    used: dict[str, float] = field(default_factory=dict)  # accumulated seconds per name

    def snapshot(self) -> dict[str, float]:
        shot = {name: process_cpu_s(pid) for name, pid in self.pids.items()}
        for name in self.main_threads:
            shot[f"{name} main thread"] = process_cpu_s(self.pids[name], main_thread_only=True)
        shot["machine (all processes)"] = machine_busy_s()
        return shot

    def add(self, before: dict[str, float], after: dict[str, float]) -> None:
        for name in after:
            self.used[name] = self.used.get(name, 0.0) + after[name] - before[name]


# ---------------------------------------------------------------- the llmbus side


def write_config(
    folder: Path, nats_url: str, api_base: str, concurrency: int, event_store: str = "sqlite"
) -> Path:
    import yaml

    config: dict[str, Any] = {
        "state_dir": str(folder / "state"),
        "nats_url": nats_url,
        "event_store": event_store,
        "log_level": "WARNING",
        "completion": {"concurrency": concurrency},
        "models": [
            {
                "name": MODEL,
                "litellm_model": f"openai/{MODEL}",
                "api_base": api_base,
                "api_key_env": KEY_ENV,
                "input_cost_per_token": 1e-6,
                "output_cost_per_token": 2e-6,
            }
        ],
    }
    if event_store == "postgres":
        # a schema of its own in the local PostgreSQL, dropped when the bench exits
        config["postgres"] = {
            "host": os.environ.get("POSTGRES_HOST", "127.0.0.1"),
            "dbname": os.environ.get("POSTGRES_DBNAME", "test"),
            "schema_name": f"llmbus_bench_{os.getpid()}",
        }
        create_schema(config["postgres"])
    path = folder / "llmbus.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def create_schema(pg: dict[str, str]) -> None:
    import psycopg

    def run(sql: str) -> None:
        with psycopg.connect(host=pg["host"], dbname=pg["dbname"], user="postgres",
                             autocommit=True) as conn:  # fmt: skip
            conn.execute(sql)

    run(f"CREATE SCHEMA IF NOT EXISTS {pg['schema_name']}")
    atexit.register(run, f"DROP SCHEMA IF EXISTS {pg['schema_name']} CASCADE")


def secured_server(folder: Path) -> tuple[Any, Path]:
    """nats-server as `llmbus up` runs it (authentication on), and credentials for a client,
    as an application holds them: llmbus is measured the way it ships."""
    from llmbus.shared.auth.clients import issue_client
    from llmbus.shared.auth.config import ensure_auth
    from llmbus.shared.auth.files import AuthFiles
    from llmbus.shared.natsserver import secured_nats

    state = folder / "state"
    _, creds = issue_client(ensure_auth(AuthFiles.of(state)), "bench", "bench-user")
    server = secured_nats(state)
    server.start()
    return server, creds


async def provision(settings: Any) -> Any:
    """The operator's connection, with the streams provisioned and the client published."""
    from llmbus.shared import bus
    from llmbus.shared.auth.directory import publish_clients
    from llmbus.shared.auth.files import AuthFiles
    from llmbus.shared.auth.registry import load_clients

    admin = await bus.connect(settings, "bench-admin")
    await bus.provision(admin.jetstream(), settings)
    registry = AuthFiles.of(settings.state_dir).registry
    await publish_clients(admin.jetstream(), load_clients(registry))
    return admin


def spawn(service: str, config: Path, log: Path, profile: Path | None = None) -> subprocess.Popen:
    python = [sys.executable]
    if profile is not None:
        # pyinstrument runs the module in its own process: the pid below is the worker's.
        renderer = RENDERERS.get(profile.suffix, "text")
        python += ["-m", "pyinstrument", "-r", renderer, "-o", str(profile)]
        python += ["--show-all"] if renderer in ("text", "html") else []
    seed = config.parent / "state" / "auth" / "services" / f"{service}.nk"  # secured_server's
    return subprocess.Popen(
        [*python, "-m", "llmbus", "serve", service],
        env=os.environ | {"LLMBUS_CONFIG": str(config), KEY_ENV: API_KEY, "NATS_CREDS": str(seed)},
        stdin=subprocess.DEVNULL,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def stop(process: subprocess.Popen, sig: signal.Signals, what: str) -> str:
    if process.poll() is not None:
        return f"{what} had already exited with {process.returncode}"
    started = time.perf_counter()
    process.send_signal(sig)
    try:
        code = process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return f"{what} did NOT exit within {STOP_TIMEOUT_S:.0f} s of {sig.name}; killed"
    return f"{what} exited with code {code} {time.perf_counter() - started:.1f} s after {sig.name}"


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


async def wait_ready(nc: Any, worker: subprocess.Popen, log: Path) -> float:
    from llmbus.shared import subjects

    started = time.perf_counter()
    js = nc.jetstream()
    while time.perf_counter() - started < READY_TIMEOUT_S:
        if worker.poll() is not None:
            raise SystemExit(f"the completion worker exited early:\n{tail(log)}")
        info = await js.consumer_info(subjects.REQUESTS_STREAM, subjects.COMPLETION_CONSUMER)
        if (info.num_waiting or 0) > 0:
            return time.perf_counter() - started
        await asyncio.sleep(0.05)
    raise SystemExit(f"the completion worker was not ready in {READY_TIMEOUT_S:.0f} s")


async def events_stored(nc: Any, expected: int, timeout_s: float = 30.0) -> int:
    """Messages on the events stream once the outbox relay has caught up (or the timeout)."""
    from llmbus.shared import subjects

    js = nc.jetstream()
    deadline = time.perf_counter() + timeout_s
    while True:
        count = (await js.stream_info(subjects.EVENTS_STREAM)).state.messages
        if count >= expected or time.perf_counter() > deadline:
            return count
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------- the run


@dataclass
class Side:
    name: str
    loads: list[dict[str, Any]] = field(default_factory=list)
    seqs: list[dict[str, Any]] = field(default_factory=list)
    cpu: CpuMeter | None = None

    @property
    def requests(self) -> int:
        return sum(r["n"] for r in self.loads)

    @property
    def throughput(self) -> float:
        ok = sum(r["n"] - r["error_count"] for r in self.loads)
        return ok / sum(r["seconds"] for r in self.loads)

    def round_throughputs(self) -> list[float]:
        return [(r["n"] - r["error_count"]) / r["seconds"] for r in self.loads]

    @property
    def latencies(self) -> list[float]:
        return [ms for r in self.seqs for ms in r["latencies"]]

    def errors(self) -> tuple[int, int, list[str]]:
        samples = [e for r in self.loads + self.seqs for e in r["errors"]]
        return (
            sum(r["error_count"] for r in self.loads),
            sum(r["error_count"] for r in self.seqs),
            samples[:2],
        )


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def measured(side: Side, run: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
                   op: dict[str, Any]) -> None:  # fmt: skip
    """Runs one op and files its result; CPU time is metered for the loads only."""
    if op["op"] != "load":
        side.seqs.append(await run(op))
        return
    assert side.cpu is not None
    before = side.cpu.snapshot()
    side.loads.append(await run(op))
    side.cpu.add(before, side.cpu.snapshot())


async def run_all(folder: Path, api_base: str, fake_pid: int, args: argparse.Namespace,
                  notes: list[str]) -> tuple[Side, Side]:  # fmt: skip
    from llmbus.client import Client
    from llmbus.shared.settings import Settings

    bare_client = BareClient(api_base)
    bare_start = asyncio.create_task(bare_client.start())  # imports litellm meanwhile
    server, creds = secured_server(folder)
    worker = usage = admin = client = None
    try:
        config = write_config(folder, server.url, api_base, args.concurrency, args.event_store)
        notes.append(f"completion event store: {args.event_store}")
        settings = Settings(nats_url=server.url, state_dir=folder / "state")
        admin = await provision(settings)
        worker_log = folder / "completion.log"
        worker = spawn("completion", config, worker_log, args.profile)
        if args.with_usage:
            usage = spawn("usage", config, folder / "usage.log")
        ready_s = await wait_ready(admin, worker, worker_log)
        notes.append(f"completion worker ready {ready_s:.1f} s after spawn")
        await bare_start
        client = Client(server.url, creds=creds, settings=settings, timeout_s=60.0)
        await client.connect()

        async def llmbus_call() -> Any:
            received = await client.complete(PROMPT, model=MODEL)
            if not received.content:
                raise RuntimeError("empty reply")
            return received

        async def llmbus_run(op: dict[str, Any]) -> dict[str, Any]:
            return await run_op(llmbus_call, op)

        assert server.process is not None
        bare = Side("bare litellm", cpu=CpuMeter(
            {"bare litellm client": bare_client.pid, "fake provider": fake_pid},
            main_threads=("bare litellm client",),
        ))  # fmt: skip
        pids = {"llmbus client (this process)": os.getpid(), "completion worker": worker.pid,
                "nats-server": server.process.pid, "fake provider": fake_pid}  # fmt: skip
        if usage is not None:
            pids["usage service"] = usage.pid
        pipe = Side("llmbus pipeline", cpu=CpuMeter(pids, main_threads=("completion worker",)))

        # warm-up: connection pools, litellm's lazy imports and caches, consumers, SQLite pages
        for run in (bare_client.run, llmbus_run):
            await run({"op": "load", "n": args.warmup, "concurrency": args.concurrency})
            await run({"op": "seq", "n": max(10, args.warmup // 10)})
        for i, n in enumerate(split(args.requests, args.rounds)):
            load = {"op": "load", "n": n, "concurrency": args.concurrency}
            order = [(bare, bare_client.run), (pipe, llmbus_run)]
            for side, run in order if i % 2 == 0 else reversed(order):
                await measured(side, run, load)
            print(
                f"  round {i + 1}/{args.rounds}: {n} requests at concurrency {args.concurrency}: "
                f"bare {bare.round_throughputs()[-1]:.1f} req/s, "
                f"llmbus {pipe.round_throughputs()[-1]:.1f} req/s",
                flush=True,
            )
        for i, n in enumerate(split(args.latency_requests, args.rounds)):
            order = [(bare, bare_client.run), (pipe, llmbus_run)]
            for side, run in order if i % 2 == 0 else reversed(order):
                await measured(side, run, {"op": "seq", "n": n})

        sent = args.warmup + max(10, args.warmup // 10) + args.requests + args.latency_requests
        stored = await events_stored(admin, 2 * sent)
        notes.append(
            f"events stream holds {stored} messages after {sent} llmbus requests "
            f"(expected {2 * sent}: completion.received + usage.recorded for each)"
        )
        return bare, pipe
    finally:
        if client is not None:
            await client.close()
        if not bare_start.done():
            bare_start.cancel()
        await bare_client.close()
        if worker is not None:
            # SIGINT is what pyinstrument needs to write its report; the service drains on both.
            sig = signal.SIGINT if args.profile else signal.SIGTERM
            notes.append(stop(worker, sig, "completion worker"))
            log_lines = (folder / "completion.log").read_text(errors="replace").splitlines()
            bad = [ln for ln in log_lines if " ERROR " in ln or "Traceback" in ln]
            if bad:
                notes.append(f"worker log has {len(bad)} error lines; first: {bad[0][:300]}")
        if usage is not None:
            notes.append(stop(usage, signal.SIGTERM, "usage service"))
        if admin is not None:
            await admin.close()
        server.stop()


# ---------------------------------------------------------------- report


def number(value: float) -> str:
    return "n/a" if value != value else f"{value:.2f}"  # NaN: no sequential requests were run


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def report(bare: Side, pipe: Side, args: argparse.Namespace, notes: list[str],
           load: tuple[float, float]) -> dict[str, Any]:  # fmt: skip
    ratio = pipe.throughput / bare.throughput
    stats = {}
    for side in (bare, pipe):
        lat = side.latencies
        stats[side.name] = {
            "p50": statistics.median(lat) if lat else float("nan"),
            "p95": percentile(lat, 95),
            "p99": percentile(lat, 99),
            "mean": statistics.fmean(lat) if lat else float("nan"),
        }
    b, p = stats[bare.name], stats[pipe.name]
    print()
    print(
        f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} before / {load[1]:.2f} "
        f"after; N = {args.requests} per side at concurrency {args.concurrency} in "
        f"{args.rounds} alternating rounds (after {args.warmup} warm-up each); "
        f"{args.latency_requests} sequential per side for latency"
    )
    print(
        "processes: bare = litellm client + fake provider (2); llmbus = client + completion "
        "worker + nats-server + fake provider"
        + (" + usage service (5)" if args.with_usage else " (4); usage service not running")
    )
    print(f"{'':30} {'bare litellm':>13} {'llmbus':>13}")
    rows = [
        (f"throughput @ c={args.concurrency} (req/s)", bare.throughput, pipe.throughput),
        ("p50 @ c=1 (ms)", b["p50"], p["p50"]),
        ("p95 @ c=1 (ms)", b["p95"], p["p95"]),
        ("p99 @ c=1 (ms)", b["p99"], p["p99"]),
        ("mean @ c=1 (ms)", b["mean"], p["mean"]),
    ]
    for name, left, right in rows:
        print(f"{name:30} {number(left):>13} {number(right):>13}")
    rounds = ", ".join(
        f"{x / y:.2f}"
        for x, y in zip(pipe.round_throughputs(), bare.round_throughputs(), strict=True)
    )
    verdict = "ok" if ratio >= 0.8 else "MISSED"
    print(f"{'throughput ratio':30} {ratio:13.3f}   target >= 0.80: {verdict} (rounds: {rounds})")
    added = p["p50"] - b["p50"]
    verdict = "ok" if added <= 3.0 else "MISSED"
    print(f"{'added p50 @ c=1 (ms)':30} {number(added):>13}   target <= 3.00: {verdict}")
    print(f"{'added p95 @ c=1 (ms)':30} {number(p['p95'] - b['p95']):>13}")
    print(f"CPU ms per request during the c={args.concurrency} load (from /proc, 10 ms ticks):")
    cpu: dict[str, dict[str, float]] = {}
    for side in (bare, pipe):
        assert side.cpu is not None
        cpu[side.name] = {k: v * 1000 / side.requests for k, v in side.cpu.used.items()}
        ours = sum(v for k, v in cpu[side.name].items() if k in side.cpu.pids)
        other = cpu[side.name]["machine (all processes)"] - ours
        print(f"  {side.name}: sum of its processes {ours:.2f}; everything else {other:.2f}")
        for k, v in cpu[side.name].items():
            print(f"    {k:40} {v:6.2f}")
    errors = bare.errors(), pipe.errors()
    print(f"errors (load, sequential): bare {errors[0][:2]}, llmbus {errors[1][:2]}")
    for sample in errors[0][2] + errors[1][2]:
        print(f"  error sample: {sample}")
    for note in notes:
        print(f"note: {note}")
    return {
        "cores": os.cpu_count(),
        "load_average": load,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "with_usage": args.with_usage,
        "throughput": {bare.name: bare.throughput, pipe.name: pipe.throughput},
        "ratio": ratio,
        "round_ratios": rounds,
        "latency_ms": stats,
        "added_p50_ms": added,
        "cpu_ms_per_request": cpu,
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--requests", "-n", type=int, default=2000, help="per side, at -c")
    parser.add_argument("--concurrency", "-c", type=int, default=64)
    parser.add_argument("--latency-requests", type=int, default=300, help="per side, one by one")
    parser.add_argument("--warmup", type=int, default=200, help="per side, at -c, not measured")
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two sides")
    parser.add_argument("--event-store", choices=["sqlite", "postgres"], default="sqlite",
                        help="the completion service's event store (postgres: local, a schema "
                        "of its own)")  # fmt: skip
    parser.add_argument("--with-usage", action="store_true", help="also run the usage service")
    parser.add_argument("--profile", type=Path, help="run the worker under pyinstrument -> FILE")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--bare-child", metavar="API_BASE", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.bare_child:
        asyncio.run(bare_child(args.bare_child))
        return
    from llmbus.testing.fake_openai import running_fake_provider

    notes: list[str] = []
    load_before = os.getloadavg()[0]
    with running_fake_provider() as fake, tempfile.TemporaryDirectory() as folder:
        fake_pids = child_pids("llmbus.testing.fake_openai")
        print(f"fake provider at {fake.base_url} (its own process, pid {fake_pids})", flush=True)
        fake_pid = fake_pids[0] if fake_pids else 0  # 0: its CPU time reads as 0
        bare, pipe = asyncio.run(run_all(Path(folder), fake.base_url, fake_pid, args, notes))
        notes.append(f"fake provider served {fake.stats()['total']} calls in all")
    if args.profile:
        notes.append(f"worker profile written to {args.profile}")
    summary = report(bare, pipe, args, notes, (load_before, os.getloadavg()[0]))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
