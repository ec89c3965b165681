"""The routing decision, timed alone: what a worker adds per request that names a role.

    cd /work/main && .venv/bin/python bench/routing.py [-n 20000]

Offline, in this process: no NATS, no provider. For each kind of request it times
`Router.plan` + `Router.choose` + `Router.base_params` (what intake and admit run before the
first call), and, as the baseline measured in the same run, a request that names a model
(`plan` and `choose` of a direct model: the path every request took before roles). The
cheapest-capable figure includes counting the prompt's tokens and pricing each candidate's
worst case; with budgets on, admission prices the chosen model again (cached token counts
are not shared).

SPEC target: the routing decision <= 0.05 ms p99 per request. This is a benchmark, not a test:
it exits 0 whether or not the target is met.
"""

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from llmbus.shared.catalog import ModelCatalog
from llmbus.shared.routing.health import Health
from llmbus.shared.routing.router import Router
from llmbus.shared.settings import Settings

TARGET_P99_MS = 0.05
MESSAGES = [
    {"role": "system", "content": "You are a careful assistant."},
    {"role": "user", "content": "Summarise the order history of customer 1234 in two lines."},
]
PARAMS: dict[str, Any] = {"max_tokens": 256, "temperature": 0.3}


def settings() -> Settings:
    priced = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
    return Settings.model_validate(
        {
            "models": [
                {"name": "gpt", "litellm_model": "openai/gpt-4o-mini", **priced},
                {"name": "local", "litellm_model": "openai/llama", "api_base": "http://x/v1",
                 "max_input_tokens": 8192, "max_output_tokens": 1024, **priced},
            ],
            "defaults": {"params": {"temperature": 0.7}},
            "roles": {
                "coder": {"model": "gpt", "fallbacks": ["local", "llmbus-sim/large"],
                          "params": {"temperature": 0.2}},
                "clarifier": {"strategy": "cheapest-capable", "requires": {"json_mode": True},
                              "candidates": ["gpt", "llmbus-sim/small", "llmbus-sim/large"]},
            },
        }
    )  # fmt: skip


def timed(n: int, decide: Callable[[], object]) -> list[float]:
    for _ in range(min(n, 1000)):
        decide()  # warm caches: the routes, prices, capabilities and the tokenizer
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        decide()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def decision(router: Router, model: str | None, role: str | None) -> Callable[[], object]:
    def decide() -> object:
        plan = router.plan(model, role)
        choice = router.choose(plan, MESSAGES, PARAMS)
        return router.base_params(plan, choice.models[0])

    return decide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="decisions timed per kind")
    args = parser.parse_args()
    config = settings()
    catalog = ModelCatalog(config)
    catalog.warm_up()
    router = Router(config, catalog, Health())
    kinds = {
        "a model named (baseline)": decision(router, "gpt", None),
        "fallback role": decision(router, None, "coder"),
        "cheapest-capable role": decision(router, None, "clarifier"),
    }
    results = {name: timed(args.n, decide) for name, decide in kinds.items()}
    base = statistics.median(results["a model named (baseline)"])
    print(f"routing decision, N = {args.n} each, one process, no I/O")
    print(f"{'':28}{'p50 ms':>10}{'p99 ms':>10}{'p50 / baseline':>16}")
    for name, samples in results.items():
        p50 = statistics.median(samples)
        p99 = statistics.quantiles(samples, n=100)[98]
        verdict = "ok" if p99 <= TARGET_P99_MS else "MISSED"
        note = "" if name.endswith("(baseline)") else f"   p99 target <= {TARGET_P99_MS}: {verdict}"
        print(f"{name:28}{p50:10.4f}{p99:10.4f}{p50 / base:16.1f}{note}")


if __name__ == "__main__":
    main()
