"""The HTTP gateway: direct HTTP, llmbus's SDK, llmbus's gateway and LiteLLM Proxy, one run.

    cd /work/main && .venv/bin/python bench/gateway.py [--requests 2000] [--concurrency 50]

Every side calls ONE fake OpenAI-compatible provider process (`llmbus.testing.fake_openai`, no
added latency), in the same run:

* direct HTTP: POST /v1/chat/completions to the fake provider, from this process.
* llmbus SDK: `Client.complete()` from this process: llmbus's own pipeline (embedded nats-server
  with authentication, the completion and usage services, each its own process).
* llmbus gateway: POST /v1/chat/completions to `llmbus serve gateway` (its own process) with a
  key from `llmbus keys create`: HTTP -> gateway -> the same pipeline.
* LiteLLM Proxy: POST /v1/chat/completions to `litellm --config ...` with no database (its own
  process, from a separate venv: --litellm, default /var/tmp/litellm-proxy/bin/litellm, made by
  `python3 -m venv /var/tmp/litellm-proxy && /var/tmp/litellm-proxy/bin/pip install
  'litellm[proxy]'`). Without it, that side is skipped and the report says why.

The three HTTP sides use one aiohttp client session each, keep-alive, as an application would.
Sequential latency (concurrency 1) and throughput (--concurrency) are measured in --rounds
rounds, the sides' order alternating, so background load spreads over all of them alike.

Issue 15's targets: the gateway adds <= 3 ms p50 over llmbus's own pipeline (the SDK side), and
llmbus through the gateway beats LiteLLM Proxy on added latency and on throughput. A latency
difference counts as beating only when its 95 % bootstrap interval is below zero. A benchmark,
not a test: it exits 0 whether or not the targets are met.
"""

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from pipeline import (  # it also sets LITELLM_LOCAL_MODEL_COST_MAP, before any litellm import
    API_KEY,
    MESSAGES,
    MODEL,
    PROMPT,
    child_pids,
    percentile,
    provision,
    secured_server,
    sequential,
    spawn,
    split,
    stop,
    tail,
    timed_load,
    wait_ready,
    write_config,
)

Call = Callable[[], Awaitable[Any]]
READY_TIMEOUT_S = 90.0
PROXY_KEY = "sk-bench-proxy-master-key-0123456789"
RESAMPLES = 2000  # bootstrap resamples for the intervals of the latency differences
DEFAULT_PROXY = Path("/var/tmp/litellm-proxy/bin/litellm")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class HttpSide:
    """POST a chat completion over one keep-alive session: the fake provider, the gateway or
    LiteLLM Proxy."""

    def __init__(self, name: str, base_url: str, key: str, concurrency: int) -> None:
        self.name = name
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.concurrency = concurrency
        self.session: Any = None

    async def start(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency)
        self.session = aiohttp.ClientSession(connector=connector)

    async def call(self) -> Any:
        body = {"model": MODEL, "messages": MESSAGES}
        async with self.session.post(self.url, json=body, headers=self.headers) as response:
            data = await response.json()
            if response.status != 200 or not data["choices"][0]["message"]["content"]:
                raise RuntimeError(f"{self.name}: {response.status} {str(data)[:200]}")
            return data

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


async def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, what: str) -> float:
    import aiohttp

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() - started < READY_TIMEOUT_S:
            if process.poll() is not None:
                raise SystemExit(f"{what} exited early:\n{tail(log)}")
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return time.perf_counter() - started
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)  # polling a process we just started
    raise SystemExit(f"{what} not ready within {READY_TIMEOUT_S:.0f} s:\n{tail(log)}")


def start_proxy(binary: Path, folder: Path, api_base: str) -> tuple[subprocess.Popen[bytes], int, Path]:  # fmt: skip
    config = {"model_list": [{"model_name": MODEL, "litellm_params": {
        "model": f"openai/{MODEL}", "api_base": api_base, "api_key": API_KEY}}],
        "litellm_settings": {"drop_params": True}}  # fmt: skip
    path = folder / "litellm-proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    port, log = free_port(), folder / "litellm-proxy.log"
    env = os.environ | {"LITELLM_MASTER_KEY": PROXY_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                        "LITELLM_LOG": "ERROR"}  # fmt: skip
    process = subprocess.Popen(
        [str(binary), "--config", str(path), "--host", "127.0.0.1", "--port", str(port),
         "--num_workers", "1"],
        env=env, stdin=subprocess.DEVNULL, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    return process, port, log


async def run_all(folder: Path, api_base: str, args: argparse.Namespace,
                  notes: list[str]) -> dict[str, dict[str, list[Any]]]:  # fmt: skip
    from llmbus.client import Client
    from llmbus.shared.settings import Settings

    server, creds = secured_server(folder)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    sides: dict[str, Call] = {}
    https: list[HttpSide] = []
    admin = client = None
    try:
        config = write_config(folder, server.url, api_base, max(64, args.concurrency))
        gateway_port = free_port()
        loaded = yaml.safe_load(config.read_text())
        config.write_text(yaml.safe_dump(loaded | {"gateway": {"port": gateway_port}}))
        settings = Settings(nats_url=server.url, state_dir=folder / "state")
        admin = await provision(settings)
        for service in ("completion", "usage", "gateway"):
            profile = args.profile / f"{service}.txt" if args.profile else None
            processes[service] = spawn(service, config, folder / f"{service}.log", profile)
        notes.append(f"completion worker ready {await wait_ready(admin, processes['completion'], folder / 'completion.log'):.1f} s after spawn")  # fmt: skip
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        ready = await wait_http(f"{gateway_url}/readyz", processes["gateway"], folder / "gateway.log", "the gateway")  # fmt: skip
        notes.append(f"gateway ready {ready:.1f} s after spawn")
        operator = Client(server.url, settings=settings, timeout_s=60.0)
        await operator.connect()
        try:
            key = (await operator.keys.create(user_id="bench-user", name="bench")).key
        finally:
            await operator.close()
        client = Client(server.url, creds=creds, settings=settings, timeout_s=60.0)
        await client.connect()

        async def sdk_call() -> Any:
            received = await client.complete(PROMPT, model=MODEL)
            if not received.content:
                raise RuntimeError("empty reply")
            return received

        https.append(HttpSide("direct HTTP", api_base, API_KEY, args.concurrency))
        https.append(HttpSide("llmbus gateway", f"{gateway_url}/v1", key, args.concurrency))
        proxy = Path(args.litellm)
        if args.litellm_found:
            process, port, log = start_proxy(proxy, folder, api_base)
            processes["litellm proxy"] = process
            took = await wait_http(f"http://127.0.0.1:{port}/health/liveliness", process, log, "LiteLLM Proxy")  # fmt: skip
            notes.append(f"LiteLLM Proxy ({proxy}) ready {took:.1f} s after spawn, no database")
            https.append(HttpSide("LiteLLM Proxy", f"http://127.0.0.1:{port}/v1", PROXY_KEY, args.concurrency))  # fmt: skip
        else:
            notes.append(f"LiteLLM Proxy not run: {proxy} does not exist (see this file's docstring)")  # fmt: skip
        for side in https:
            await side.start()
        sides = {"direct HTTP": https[0].call, "llmbus SDK": sdk_call,
                 **{side.name: side.call for side in https[1:]}}  # fmt: skip
        return await measure(sides, args)
    finally:
        for side in https:
            await side.close()
        if client is not None:
            await client.close()
        for name in ("litellm proxy", "gateway", "completion", "usage"):
            if name in processes:
                # pyinstrument writes its report on SIGINT, which the services stop on as well
                sig = signal.SIGINT if args.profile and name != "litellm proxy" else signal.SIGTERM
                notes.append(stop(processes[name], sig, name))
        for name in ("gateway", "completion", "usage"):
            log = folder / f"{name}.log"
            bad = [ln for ln in log.read_text(errors="replace").splitlines()
                   if " ERROR " in ln or "Traceback" in ln] if log.exists() else []  # fmt: skip
            if bad:
                notes.append(f"{name} log has {len(bad)} error lines; first: {bad[0][:300]}")
        if admin is not None:
            await admin.close()
        server.stop()


async def measure(sides: dict[str, Call], args: argparse.Namespace) -> dict[str, dict[str, list[Any]]]:  # fmt: skip
    results: dict[str, dict[str, list[Any]]] = {n: {"loads": [], "seqs": []} for n in sides}
    order = list(sides.items())
    for _, call in order:  # warm-up: pools, lazy imports, caches, the key cache
        await timed_load(call, args.warmup, args.concurrency)
        await sequential(call, max(10, args.warmup // 10))
    for i, n in enumerate(split(args.requests, args.rounds)):
        for name, call in order if i % 2 == 0 else order[::-1]:
            result = await timed_load(call, n, args.concurrency)
            results[name]["loads"].append(result)
            print(f"  round {i + 1}/{args.rounds}: {name:15s} {throughput(result):7.1f} req/s at concurrency {args.concurrency}", flush=True)  # fmt: skip
    for i, n in enumerate(split(args.latency_requests, args.rounds)):
        for name, call in order if i % 2 == 0 else order[::-1]:
            results[name]["seqs"].append(await sequential(call, n))
    return results


def interval(ours: list[float], theirs: list[float], q: float) -> tuple[float, float]:
    """95 % bootstrap interval of percentile q of `ours` less that of `theirs`: whether a
    difference in p99, which rests on a side's ten slowest requests in a thousand, is more than
    the luck of which requests were slow."""
    rng = random.Random(15)
    diffs = sorted(
        percentile(rng.choices(ours, k=len(ours)), q)
        - percentile(rng.choices(theirs, k=len(theirs)), q)
        for _ in range(RESAMPLES)
    )
    return diffs[int(0.025 * RESAMPLES)], diffs[int(0.975 * RESAMPLES)]


def latencies(side: dict[str, list[Any]]) -> list[float]:
    """A side's sequential latencies, every round's, in ms."""
    return [ms for s in side["seqs"] for ms in s["latencies"]]


def throughput(load: dict[str, Any]) -> float:
    return (load["n"] - load["error_count"]) / load["seconds"]


def summarize(results: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, Any]]:
    figures = {}
    for name, r in results.items():
        seq = latencies(r)
        ok = sum(x["n"] - x["error_count"] for x in r["loads"])
        figures[name] = {
            "p50_ms": percentile(seq, 50), "p99_ms": percentile(seq, 99),
            "throughput": ok / sum(x["seconds"] for x in r["loads"]),
            "errors": sum(x["error_count"] for x in r["loads"] + r["seqs"]),
            "error_samples": [e for x in r["loads"] + r["seqs"] for e in x["errors"]][:2],
        }  # fmt: skip
    direct = figures["direct HTTP"]
    for f in figures.values():
        f["added_p50_ms"] = f["p50_ms"] - direct["p50_ms"]
        f["added_p99_ms"] = f["p99_ms"] - direct["p99_ms"]
        f["throughput_vs_direct"] = f["throughput"] / direct["throughput"]
    return figures


def report(results: dict[str, dict[str, list[Any]]], figures: dict[str, dict[str, Any]],
           args: argparse.Namespace, notes: list[str]) -> dict[str, Any]:  # fmt: skip
    print(f"\n{args.latency_requests} sequential requests and {args.requests} at concurrency "
          f"{args.concurrency} per side, {args.rounds} rounds:")  # fmt: skip
    print(f"  {'side':16s} {'p50':>8s} {'p99':>8s} {'+p50':>8s} {'+p99':>8s} {'req/s':>8s} {'x direct':>9s} errors")  # fmt: skip
    for name, f in figures.items():
        print(f"  {name:16s} {f['p50_ms']:8.2f} {f['p99_ms']:8.2f} {f['added_p50_ms']:8.2f} "
              f"{f['added_p99_ms']:8.2f} {f['throughput']:8.1f} {f['throughput_vs_direct']:9.2f} {f['errors']}")  # fmt: skip
    gateway, sdk = figures["llmbus gateway"], figures["llmbus SDK"]
    checks: dict[str, Any] = {"gateway_over_sdk_p50_ms": gateway["p50_ms"] - sdk["p50_ms"]}
    checks["gateway_over_sdk_ok"] = checks["gateway_over_sdk_p50_ms"] <= 3.0
    print(f"\n  the gateway adds {checks['gateway_over_sdk_p50_ms']:.2f} ms p50 over llmbus's own "
          f"pipeline (target <= 3 ms): {'met' if checks['gateway_over_sdk_ok'] else 'MISSED'}")  # fmt: skip
    proxy = figures.get("LiteLLM Proxy")
    if proxy is not None:
        for q in (50, 99):
            what = f"added p{q}"
            ours, theirs = gateway[f"added_p{q}_ms"], proxy[f"added_p{q}_ms"]
            low, high = interval(latencies(results["llmbus gateway"]),
                                 latencies(results["LiteLLM Proxy"]), q)  # fmt: skip
            verdict = "beats it" if high < 0 else "does NOT beat it" if low > 0 else "level"
            checks[f"beats_proxy_{what.replace(' ', '_')}"] = high < 0
            checks[f"proxy_{what.replace(' ', '_')}_interval_ms"] = [low, high]
            print(f"  {what}: gateway {ours:.2f}, LiteLLM Proxy {theirs:.2f} ms: {verdict} "
                  f"(difference {ours - theirs:+.2f} ms, 95 % interval {low:+.2f} to {high:+.2f})")  # fmt: skip
        ours, theirs = gateway["throughput"], proxy["throughput"]
        ahead = sum(throughput(a) > throughput(b) for a, b in
                    zip(results["llmbus gateway"]["loads"], results["LiteLLM Proxy"]["loads"], strict=True))  # fmt: skip
        checks["beats_proxy_throughput"] = ours > theirs
        print(f"  throughput: gateway {ours:.1f}, LiteLLM Proxy {theirs:.1f} req/s: "
              f"{'beats it' if ours > theirs else 'does NOT beat it'} (ahead in {ahead} of "
              f"{len(results['llmbus gateway']['loads'])} rounds)")  # fmt: skip
    for note in notes:
        print(f"  - {note}")
    return {"figures": figures, "checks": checks, "notes": notes, "args": vars(args)}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--requests", "-n", type=int, default=2000, help="per side, at -c")
    p.add_argument("--concurrency", "-c", type=int, default=50)
    p.add_argument("--latency-requests", type=int, default=1000, help="per side, one by one")
    p.add_argument("--warmup", type=int, default=200, help="per side, at -c, not measured")
    p.add_argument("--rounds", type=int, default=4, help="alternations of the sides")
    p.add_argument("--litellm", default=str(DEFAULT_PROXY),
                   help="LiteLLM Proxy's `litellm` command, in a venv of its own")  # fmt: skip
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="run llmbus's processes under pyinstrument: a report each in DIR")  # fmt: skip
    args = p.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    return args


def main() -> None:
    args = parse()
    args.litellm_found = Path(args.litellm).exists()
    from llmbus.testing.fake_openai import running_fake_provider

    notes: list[str] = []
    with running_fake_provider() as fake, tempfile.TemporaryDirectory() as folder:
        print(f"fake provider at {fake.base_url} (pid {child_pids('llmbus.testing.fake_openai')})", flush=True)  # fmt: skip
        results = asyncio.run(run_all(Path(folder), fake.base_url, args, notes))
        notes.append(f"fake provider served {fake.stats()['total']} calls in all")
    summary = report(results, summarize(results), args, notes)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
