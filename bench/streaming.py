"""Streaming overhead: llmbus `client.stream()` vs bare litellm streaming, same fake provider.

    cd /work/main && .venv/bin/python bench/streaming.py [-n 200] [--streams 500] [--rounds 4]

The setup is pipeline.py's, reused; both sides stream a `drip-MS-N` model of the fake provider
(N words, one every MS ms). TTFT: from just before the publish / acompletion call to the first
non-empty delta the client receives; gap: between consecutive non-empty deltas of one stream.
First -n streams per side one at a time (sides alternating in --rounds rounds), then --bursts
bursts of --streams at once per side, for each stream's largest gap: a stall shows there.

Targets: added TTFT <= 3 ms at p50, <= 5 ms at p99; added gap <= 1 ms at p99; 500 concurrent
streams on one worker with no stall. A benchmark: it exits 0 whatever the figures.
"""

import argparse
import asyncio
import itertools
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pipeline.py: its setup is reused
# isort: off
from pipeline import (  # it also sets LITELLM_LOCAL_MODEL_COST_MAP, before any litellm import
    API_KEY, MESSAGES, PROMPT, READY_TIMEOUT_S, BareClient, CpuMeter, child_pids, percentile,
    provision, secured_server, spawn, split, stop, wait_ready, write_config,
)  # fmt: skip
# isort: on

DRIP = re.compile(r"^drip-(\d+)-(\d+)$")
WARMUP_MODEL = "drip-0-5"
NAN = float("nan")
Record = dict[str, Any]  # one stream: ttft (ms), gaps (ms), problem (None when it was whole)


def record(started: float, times: list[float], text: str, model: str,
           problem: str | None = None) -> Record:  # fmt: skip
    """A stream's figures; `problem` names what was lost or wrong, which keeps it out of them."""
    words = int(DRIP.match(model).group(2))  # type: ignore[union-attr]  # parse() checked it
    if problem is None and text != " ".join(f"w{n}" for n in range(1, words + 1)):
        problem = f"text {text[:80]!r} is not {model}'s reply"
    out: Record = {"problem": problem}
    if times:
        out["ttft"] = round((times[0] - started) * 1000, 4)
        out["gaps"] = [round((b - a) * 1000, 4) for a, b in itertools.pairwise(times)]
    return out


async def run_streams(one: Callable[[str], Awaitable[Record]], op: dict[str, Any]) -> Any:
    """op: {"op": "seq" | "burst", "n", "model"}; seq runs them one at a time, burst all at once."""

    async def safe() -> Record:
        try:
            return await one(op["model"])
        except Exception as exc:  # reported with the figures, never fatal: it is a benchmark
            return {"problem": repr(exc)[:300]}

    started = time.perf_counter()
    if op["op"] == "burst":
        streams = await asyncio.gather(*(safe() for _ in range(op["n"])))
    else:
        streams = [await safe() for _ in range(op["n"])]
    return {"streams": list(streams), "seconds": time.perf_counter() - started}


async def bare_stream(litellm: Any, api_base: str, model: str) -> Record:
    started = time.perf_counter()
    response = await litellm.acompletion(
        model=f"openai/{model}", api_base=api_base, api_key=API_KEY, messages=MESSAGES,
        stream=True, stream_options={"include_usage": True},  # as the worker asks
    )  # fmt: skip
    times, text = [], []
    async for chunk in response:
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta:
            times.append(time.perf_counter())
            text.append(delta)
    return record(started, times, "".join(text), model)


async def llmbus_stream(client: Any, model: str) -> Record:
    started = time.perf_counter()
    stream = client.stream(PROMPT, model=model)  # subscribes and publishes on the first step
    times, text, indices = [], [], []
    async for chunk in stream:
        indices.append(chunk.index)
        if chunk.delta:
            times.append(time.perf_counter())
            text.append(chunk.delta)
    joined, problem = "".join(text), None
    if indices != list(range(len(indices))):
        problem = f"chunk indices out of order or missing: {indices[:60]}"
    elif stream.final is None:
        problem = "no final chunk"
    elif stream.result is None or stream.result.content != joined:
        problem = "the terminal event's content differs from the chunks"
    return record(started, times, joined, model, problem)


async def bare_child(api_base: str) -> None:
    """Reads one JSON op per stdin line, answers one JSON line each; stops at end of input."""
    import litellm

    litellm.suppress_debug_info = True
    one = partial(bare_stream, litellm, api_base)
    loop = asyncio.get_running_loop()
    print(json.dumps({"ready": True}), flush=True)
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        print(json.dumps(await run_streams(one, json.loads(line))), flush=True)


class StreamingBare(BareClient):
    """pipeline's BareClient, running this file's streaming child."""

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--bare-child", self.api_base,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 26,  # a burst's answer is one line of every gap: far past the 64 KiB default
        )  # fmt: skip
        ready = await asyncio.wait_for(self._read(), READY_TIMEOUT_S)
        assert ready.get("ready"), ready


def streaming_config(folder: Path, nats_url: str, api_base: str, args: argparse.Namespace) -> Path:
    """pipeline's config, with the drip models added (priced like fake-gpt) and room for a burst."""
    import yaml

    path = write_config(folder, nats_url, api_base, max(600, args.streams + 100))
    config = yaml.safe_load(path.read_text())
    template = config["models"][0]
    for model in sorted({args.model, args.burst_model, WARMUP_MODEL}):
        config["models"].append(template | {"name": model, "litellm_model": f"openai/{model}"})
    path.write_text(yaml.safe_dump(config))
    return path


async def run_all(folder: Path, api_base: str, args: argparse.Namespace,
                  notes: list[str]) -> tuple[dict[str, Any], dict[str, CpuMeter]]:  # fmt: skip
    from llmbus.client import Client
    from llmbus.shared.settings import Settings

    bare = StreamingBare(api_base)
    bare_start = asyncio.create_task(bare.start())  # imports litellm meanwhile
    server, creds = secured_server(folder)
    worker = admin = client = None
    try:
        config = streaming_config(folder, server.url, api_base, args)
        settings = Settings(nats_url=server.url, state_dir=folder / "state")
        admin = await provision(settings)
        log = folder / "completion.log"
        worker = spawn("completion", config, log)
        notes.append(f"completion worker ready {await wait_ready(admin, worker, log):.1f} s")
        await bare_start
        client = Client(server.url, creds=creds, settings=settings, timeout_s=60.0)
        await client.connect()
        sides = {"bare litellm": bare.run,
                 "llmbus": partial(run_streams, partial(llmbus_stream, client))}  # fmt: skip
        fake = (child_pids("llmbus.testing.fake_openai") or [0])[0]  # 0: its CPU reads as 0
        assert server.process is not None
        pids = {"llmbus client (this process)": os.getpid(), "completion worker": worker.pid,
                "nats-server": server.process.pid, "fake provider": fake}  # fmt: skip
        meters = {"bare litellm": CpuMeter({"bare client": bare.pid, "fake provider": fake}),
                  "llmbus": CpuMeter(pids)}  # fmt: skip
        return await measure(sides, meters, args), meters
    finally:
        if client is not None:
            await client.close()
        if not bare_start.done():
            bare_start.cancel()
        await bare.close()
        if worker is not None:
            notes.append(stop(worker, signal.SIGTERM, "completion worker"))
            lines = (folder / "completion.log").read_text(errors="replace").splitlines()
            bad = [ln for ln in lines if " ERROR " in ln or "Traceback" in ln]
            if bad:
                notes.append(f"worker log has {len(bad)} error lines; first: {bad[0][:300]}")
        if admin is not None:
            await admin.close()
        server.stop()


async def measure(sides: dict[str, Any], meters: dict[str, CpuMeter],
                  args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    names = list(sides)
    results: dict[str, Any] = {name: {"seq": [], "burst": []} for name in names}
    # warm-up: connection pools (a burst's worth), litellm's lazy imports, consumers, SQLite pages
    for run in sides.values():
        await run({"op": "burst", "n": args.streams, "model": WARMUP_MODEL})
        await run({"op": "seq", "n": 10, "model": args.model})
    # alternating the sides spreads any background load over both alike
    for i, n in enumerate(split(args.n, args.rounds)):
        for name in names if i % 2 == 0 else names[::-1]:
            op = {"op": "seq", "n": n, "model": args.model}
            results[name]["seq"].append(await sides[name](op))
        print(f"  sequential round {i + 1}/{args.rounds}: {n} streams per side", flush=True)
    for i in range(args.bursts):
        for name in names if i % 2 == 0 else names[::-1]:
            before = meters[name].snapshot()
            op = {"op": "burst", "n": args.streams, "model": args.burst_model}
            results[name]["burst"].append(await sides[name](op))
            meters[name].add(before, meters[name].snapshot())
        print(f"  burst {i + 1}/{args.bursts}: {args.streams} streams at once per side", flush=True)
    return results


def dist(v: list[float]) -> dict[str, float]:
    return {"p50": percentile(v, 50), "p99": percentile(v, 99), "max": max(v, default=NAN)}


def side_figures(phases: dict[str, Any]) -> dict[str, Any]:
    seq = [s for r in phases["seq"] for s in r["streams"]]
    burst = [s for r in phases["burst"] for s in r["streams"]]
    whole_seq = [s for s in seq if s["problem"] is None]
    whole_burst = [s for s in burst if s["problem"] is None]
    samples = [s["problem"] for s in seq + burst if s["problem"] is not None]
    return {
        "ttft_ms": dist([s["ttft"] for s in whole_seq]),
        "gap_ms": dist([g for s in whole_seq for g in s["gaps"]]),
        "burst_ttft_ms": dist([s["ttft"] for s in whole_burst]),
        "burst_largest_gap_ms": dist([max(s["gaps"], default=NAN) for s in whole_burst]),
        "burst_seconds": [round(r["seconds"], 2) for r in phases["burst"]],
        # apart: a stream's last gap, and a side's first streams after idling through a round
        "gap_ms_not_last": dist([g for s in whole_seq for g in s["gaps"][:-1]]),
        "ttft_ms_past_3": dist([s["ttft"] for r in phases["seq"] for s in r["streams"][3:]
                                if s["problem"] is None]),
        "problems": {"sequential": len(seq) - len(whole_seq),
                     "burst": len(burst) - len(whole_burst), "samples": samples[:3]},
    }  # fmt: skip


def row(label: str, bare: float, ours: float, target: float | None = None) -> str:
    added = ours - bare
    line = f"{label:36} {bare:12.2f} {ours:12.2f} {added:+10.2f} {ours / bare:8.2f}x"
    if target is not None:
        line += f"   target added <= {target:.0f} ms: {'ok' if added <= target else 'MISSED'}"
    return line


def report_sequential(b: dict[str, Any], p: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"sequential: {args.n} streams per side of {args.model}, one at a time, in "
          f"{args.rounds} alternating rounds")  # fmt: skip
    for key, label, targets in (("ttft_ms", "TTFT", {"p50": 3, "p99": 5}),
                                ("gap_ms", "gap between chunks", {"p99": 1})):  # fmt: skip
        for q in ("p50", "p99", "max"):
            print(row(f"{label} {q} (ms)", b[key][q], p[key][q], targets.get(q)))
    for key, label in (("ttft_ms_past_3", "TTFT p99, not a round's first 3"),
                       ("gap_ms_not_last", "gap p99, not a stream's last")):  # fmt: skip
        print(row(f"{label} (ms)", b[key]["p99"], p[key]["p99"]))


def report_bursts(b: dict[str, Any], p: dict[str, Any], meters: dict[str, CpuMeter],
                  args: argparse.Namespace) -> tuple[bool, dict[str, Any], list[str]]:  # fmt: skip
    print(f"burst: {args.streams} streams at once of {args.burst_model}, {args.bursts} per side; "
          f"worker concurrency {max(600, args.streams + 100)}")  # fmt: skip
    for key, label in (("burst_largest_gap_ms", "largest gap per stream"),
                       ("burst_ttft_ms", "burst TTFT")):  # fmt: skip
        for q in ("p50", "p99", "max"):
            print(row(f"{label} {q} (ms)", b[key][q], p[key][q]))
    print(f"{'burst wall time (s)':36} {b['burst_seconds']!s:>12} {p['burst_seconds']!s:>12}")
    # a stall: a gap that neither --stall-ms nor litellm's own CPU cost (bare's worst) explains
    allowed = max(args.stall_ms, b["burst_largest_gap_ms"]["max"])
    stalled = p["problems"]["burst"] > 0 or not p["burst_largest_gap_ms"]["max"] <= allowed
    print(f"no stall (every llmbus stream whole, no gap over {allowed:.0f} ms = max of "
          f"--stall-ms and bare's largest): {'MISSED' if stalled else 'ok'}")  # fmt: skip
    cpu = {name: {k: v / args.bursts for k, v in m.used.items()} for name, m in meters.items()}
    return stalled, cpu, [f"CPU s per burst, {name}: " + ", ".join(
        f"{k} {v:.2f}" for k, v in used.items()) for name, used in cpu.items()]  # fmt: skip


def report(results: dict[str, Any], meters: dict[str, CpuMeter], args: argparse.Namespace,
           notes: list[str], load: tuple[float, float]) -> dict[str, Any]:  # fmt: skip
    fig = {name: side_figures(phases) for name, phases in results.items()}
    b, p = fig["bare litellm"], fig["llmbus"]
    print(
        f"\nmachine: {os.cpu_count()} cores, load average {load[0]:.2f} before / {load[1]:.2f} "
        f"after\n{'':36} {'bare litellm':>12} {'llmbus':>12} {'added':>10} {'ratio':>9}"
    )
    if args.n:
        report_sequential(b, p, args)
    stalled, cpu, lines = report_bursts(b, p, meters, args) if args.bursts else (None, {}, [])
    lines += [f"problems, {name}: {f['problems']}" for name, f in fig.items()]
    print("\n".join(lines + [f"note: {note}" for note in notes]))
    return {"cores": os.cpu_count(), "load_average": load, "figures": fig, "stall": stalled,
            "cpu_s_per_burst": cpu, "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("-n", type=int, default=200, help="sequential streams per side")
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two sides")
    parser.add_argument("--model", default="drip-5-40", help="the sequential streams' drip-MS-N")
    parser.add_argument("--streams", type=int, default=500, help="streams at once in a burst")
    parser.add_argument("--bursts", type=int, default=2, help="bursts per side, alternating")
    parser.add_argument("--burst-model", default="drip-20-50", help="the bursts' drip-MS-N")
    parser.add_argument("--stall-ms", type=float, default=1000.0, help="a gap this long stalls")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--bare-child", metavar="API_BASE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for model in (args.model, args.burst_model):
        if not DRIP.match(model):
            parser.error(f"{model}: a drip-MS-N model is needed (its reply is known, so checked)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.bare_child:
        asyncio.run(bare_child(args.bare_child))
        return
    from llmbus.testing.fake_openai import running_fake_provider

    notes: list[str] = []
    load_before = os.getloadavg()[0]
    with running_fake_provider() as fake, tempfile.TemporaryDirectory() as folder:
        print(f"fake provider at {fake.base_url}", flush=True)
        results, meters = asyncio.run(run_all(Path(folder), fake.base_url, args, notes))
        notes.append(f"fake provider served {fake.stats()['total']} calls in all")
    summary = report(results, meters, args, notes, (load_before, os.getloadavg()[0]))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
