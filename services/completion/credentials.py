"""The credential check at start: is each configured model's provider key there, and accepted?

Every model of the catalog (settings.models) and every model a role names is checked once when
a completion worker starts, all at once and under one timeout
(completion.credential_check_timeout_s), with the cheapest call a provider answers: listing its
models. A key that is missing, rejected, or whose provider cannot be reached marks the model
unhealthy in the worker's Health, so routing passes over it; `watch` checks those again every
completion.credential_recheck_s and marks each healthy once it passes.

No key, and no part of one, is logged: the table holds model names, providers, results and
milliseconds, and a provider's reply body (which may echo the key) is never read.
"""

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp

from llmbus.services.completion.key_probes import (
    Probe,
    Status,
    key_names,
    outcome_of_error,
    outcome_of_status,
    probe_for,
    provider_key,
)
from llmbus.shared.catalog import SIM_PROVIDER, ModelCatalog, UnknownModelError
from llmbus.shared.routing.health import Health
from llmbus.shared.settings import Settings

log = logging.getLogger("llmbus.completion.credentials")

# what marks a model unhealthy; "unchecked" (no cheap call, an unknown name) leaves it alone
FAILING: frozenset[Status] = frozenset({"missing key", "rejected", "unreachable"})


@dataclass(frozen=True)
class CheckResult:
    model: str
    provider: str
    status: Status
    detail: str = ""  # never the key: an env var's name, an HTTP status, "timeout", ...
    ms: float = 0.0

    @property
    def text(self) -> str:
        return f"{self.status} ({self.detail})" if self.detail else self.status

    @property
    def failing(self) -> bool:
        return self.status in FAILING


def health_reason(result: CheckResult) -> str:
    if result.status == "missing key":
        return f"credential check: missing key ({result.detail})"
    if result.status == "rejected":
        return f"credential check: key rejected ({result.detail})"
    return f"credential check: provider unreachable ({result.detail})"


def table(results: Iterable[CheckResult]) -> str:
    rows = [("model", "provider", "result", "ms")]
    rows += [(r.model, r.provider, r.text, f"{r.ms:.0f}") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"  {model:<{widths[0]}}  {provider:<{widths[1]}}  {text:<{widths[2]}}  {ms:>5}"
        for model, provider, text, ms in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


class CredentialCheck:
    def __init__(self, settings: Settings, catalog: ModelCatalog, health: Health) -> None:
        self.catalog = catalog
        self.health = health
        self.timeout_s = settings.completion.credential_check_timeout_s
        self.recheck_s = settings.completion.credential_recheck_s
        self.models = models_to_check(settings)
        self.failing: set[str] = set()  # the models this check marked unhealthy

    async def check(self, models: Iterable[str] | None = None) -> list[CheckResult]:
        """Check `models` (default: all), mark them healthy or not, and log the table. Returns
        within the timeout: a call still running then counts as unreachable (timeout)."""
        names = list(self.models if models is None else models)
        results = await self._check_all(names)
        for result in results:
            if result.status == "ok":
                self.health.mark_healthy(result.model)
                self.failing.discard(result.model)
            elif result.failing:
                self.health.mark_unhealthy(result.model, health_reason(result))
                self.failing.add(result.model)
        return results

    async def recheck(self) -> list[CheckResult]:
        """Check again the models that failed, here or in a call (a rejected key); those that
        pass become healthy, and so do those no cheap call can check: their next call tells."""
        before = self.failing | set(self.health.unhealthy())
        if not before:
            return []
        results = await self.check(sorted(before))
        for result in results:
            if result.status == "unchecked":
                self.health.mark_healthy(result.model)
        passed = sorted(before - self.failing)
        if passed:
            log.info("credential recheck: %s now pass(es)", ", ".join(passed))
        return results

    async def watch(self, stop: asyncio.Event) -> None:
        """Recheck the failing models every recheck_s until `stop`; a failed recheck is logged."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.recheck_s)
                return
            except TimeoutError:
                pass
            try:
                await self.recheck()
            except Exception:
                log.exception(
                    "the credential recheck failed; it runs again in %.0f s", self.recheck_s
                )

    async def _check_all(self, names: list[str]) -> list[CheckResult]:
        if not names:
            return []
        started = time.perf_counter()
        results: dict[str, CheckResult] = {}
        probes: dict[str, Probe] = {}
        for name in names:
            planned = self._plan(name)
            if isinstance(planned, CheckResult):
                results[name] = planned
            else:
                probes[name] = planned
        if probes:
            results.update(await self._run_probes(probes, started))
        ordered = [results[name] for name in names]
        log.info(
            "credential check of %d model(s), %.0f ms (limit %.1f s):\n%s",
            len(ordered), (time.perf_counter() - started) * 1000, self.timeout_s, table(ordered),
        )  # fmt: skip
        return ordered

    def _plan(self, name: str) -> CheckResult | Probe:
        """The result without a call (sim, missing key, unchecked), or the call to make."""
        try:
            route = self.catalog.resolve(name)
        except UnknownModelError:
            return CheckResult(name, "?", "unchecked", "unknown model")
        if route.provider == SIM_PROVIDER:
            return CheckResult(name, route.provider, "ok", "built in")
        key = provider_key(route)
        # a model that names its variable fails without it, whatever its provider; otherwise a
        # provider without a listing (Bedrock, Vertex AI, ...) may authenticate without a key
        if key is None and route.api_key_env is None and probe_for(route, "") is None:
            return CheckResult(name, route.provider, "unchecked", "no cheap check")
        if key is None:
            where = " or ".join(f"${n}" for n in key_names(route)[:2])
            return CheckResult(name, route.provider, "missing key", f"{where} not set")
        probe = probe_for(route, key)
        if probe is None:
            return CheckResult(name, route.provider, "unchecked", "no cheap check")
        return probe

    async def _run_probes(
        self, probes: Mapping[str, Probe], started: float
    ) -> dict[str, CheckResult]:
        remaining = max(self.timeout_s - (time.perf_counter() - started), 0.001)
        timeout = aiohttp.ClientTimeout(total=remaining)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            calls = {
                probe: asyncio.create_task(self._call(session, probe))
                for probe in set(probes.values())
            }
            try:
                await asyncio.wait(calls.values(), timeout=remaining)
            finally:
                for task in calls.values():
                    task.cancel()
                await asyncio.gather(*calls.values(), return_exceptions=True)
        results = {}
        for name, probe in probes.items():
            route = self.catalog.resolve(name)
            task = calls[probe]
            if task.cancelled() or task.exception() is not None:
                # still running at the timeout (a finished call never raises: see _call)
                status: Status = "unreachable"
                detail, ms = "timeout", (time.perf_counter() - started) * 1000
            else:
                status, detail, ms = task.result()
            results[name] = CheckResult(name, route.provider, status, detail, ms)
        return results

    async def _call(
        self, session: aiohttp.ClientSession, probe: Probe
    ) -> tuple[Status, str, float]:
        started = time.perf_counter()
        try:
            async with session.get(
                probe.url, headers=dict(probe.headers), allow_redirects=False
            ) as reply:
                status, detail = outcome_of_status(reply.status)  # the body is never read
        except Exception as exc:
            status, detail = outcome_of_error(exc)
        return status, detail, (time.perf_counter() - started) * 1000


def models_to_check(settings: Settings) -> list[str]:
    """The catalog's models, then those the roles name (a name that is a role is not a model)."""
    names = [entry.name for entry in settings.models]
    names += [name for role in settings.roles.values() for name in role.names]
    return [name for name in dict.fromkeys(names) if name not in settings.roles]
