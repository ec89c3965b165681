"""Each service serves Prometheus metrics on its own port: what a scraper reads there after a
few requests matches the events they caused, in requests, latency, tokens, cost, errors,
in-flight work, queue depth and budgets.

Services run in this test's process, so they share one registry (as they would not in
production): the test reads what changed since it began, on each service's own port.
"""

import contextlib
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from llmbus.client import CompletionError
from llmbus.services.conversation.service import serve as serve_conversation
from llmbus.shared import metrics, subjects
from llmbus.shared.bus import answers
from llmbus.shared.errors import ConfigError
from llmbus.shared.settings import Settings, load_settings
from llmbus.stack import Stack
from support import EventLog, connected, pipeline, running, wait_for, with_budgets

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TEAM = "metrics-team"
BUDGET = {"name": "metrics-daily", "scope": {"team": TEAM}, "window": "daily",
          "limit_usd": 2.5, "mode": "soft"}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> int:
    """The first of `count` consecutive ports that are free now."""
    while True:
        base = free_port()
        try:
            with contextlib.ExitStack() as held:
                for port in range(base, base + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base


@pytest.fixture
def metered(settings: Settings, config_file: Path) -> tuple[Settings, dict[str, int]]:
    """The test's settings (streams provisioned) with a metrics port per service, and a budget."""
    ports = {service: free_port() for service in ("completion", "usage", "conversation")}
    config = yaml.safe_load(config_file.read_text())
    for service in ("usage", "conversation"):
        config.setdefault(service, {})["metrics_port"] = ports[service]
    config_file.write_text(yaml.safe_dump(config))
    return with_budgets(config_file, BUDGET, metrics_port=ports["completion"]), ports


async def scrape(port: int) -> Samples:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    response.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def usage_of(events: EventLog, model: str) -> list[Mapping[str, Any]]:
    return [u for u in events.on(subjects.USAGE_RECORDED) if u["model"] == model]


async def test_each_service_serves_what_its_requests_did(
    metered: tuple[Settings, dict[str, int]],
) -> None:
    settings, ports = metered
    async with (
        pipeline(settings) as (nc, events, client),
        running(serve_conversation, settings),
    ):
        await wait_for(lambda: answers(nc, subjects.PROMPT_LIST), 60, "the conversation service")
        before = await scrape(ports["completion"])

        await client.complete("Count my tokens.", model="fake-gpt", team_id=TEAM)
        stream = client.stream("Stream to me.", model="fake-gpt", team_id=TEAM)
        [_ async for _ in stream]
        with pytest.raises(CompletionError) as failed:
            await client.complete("Fail.", model="fail-401", team_id=TEAM)
        with pytest.raises(CompletionError) as unknown:
            await client.complete("Who?", model="no-such-model")
        await events.wait_terminal(4)
        await wait_for(lambda: len(events.on(subjects.USAGE_RECORDED)) >= 3, 30, "usage events")

        after = await scrape(ports["completion"])
        calls = usage_of(events, "fake-gpt")
        received = {"service": "completion", "model": "fake-gpt", "status": "received"}
        assert grew(before, after, "llmbus_requests_total", **received) == 2
        fail_401 = {"service": "completion", "model": "fail-401", "status": "failed"}
        assert grew(before, after, "llmbus_requests_total", **fail_401) == 1
        # a model outside the catalog is never a label of its own
        other = {"service": "completion", "model": "other", "status": "failed"}
        assert grew(before, after, "llmbus_requests_total", **other) == 1
        assert not [key for key in after if ("model", "no-such-model") in key[1]]
        for error in (failed.value.failed.error_type, unknown.value.failed.error_type):
            labels = {"service": "completion", "error_type": error.value}
            assert grew(before, after, "llmbus_errors_total", **labels) == 1

        assert grew(before, after, "llmbus_request_latency_seconds_count", model="fake-gpt") == 2
        streamed = [c for c in calls if c["ttft_ms"] is not None]
        assert len(streamed) == 1
        ttft = grew(before, after, "llmbus_time_to_first_token_seconds_count", model="fake-gpt")
        assert ttft == 1
        for kind in ("prompt", "completion", "cached"):
            tokens = grew(before, after, "llmbus_tokens_total", model="fake-gpt", kind=kind)
            assert tokens == sum(c[f"{kind}_tokens"] for c in calls)
        assert value(after, "llmbus_tokens_total", model="fake-gpt", kind="completion") > 0
        cost = grew(before, after, "llmbus_cost_usd_total", model="fake-gpt")
        assert cost == pytest.approx(sum(c["cost_usd"] for c in calls)) and cost > 0

        await wait_for(
            lambda: in_flight(ports["completion"], "completion", 0), 30, "no request in flight"
        )
        queue = {"stream": subjects.REQUESTS_STREAM, "consumer": subjects.COMPLETION_CONSUMER}
        assert ("llmbus_queue_depth", frozenset(queue.items())) in after
        assert ("llmbus_consumer_lag", frozenset(queue.items())) in after

        await usage_metrics_show_the_budget(ports["usage"], cost)
        await usage_metrics_count_its_errors(nc, ports["usage"])
        await conversation_metrics_count_its_errors(nc, ports["conversation"])


async def in_flight(port: int, service: str, count: int) -> bool:
    return value(await scrape(port), "llmbus_requests_in_flight", service=service) == count


async def usage_metrics_show_the_budget(port: int, spent: float) -> None:
    budget = {"budget": BUDGET["name"], "scope": f"team={TEAM}"}

    async def settled() -> bool:
        samples = await scrape(port)
        return value(samples, "llmbus_budget_spent_usd", **budget) == pytest.approx(spent)

    await wait_for(settled, 30, "the budget's spend on the usage service's port")
    samples = await scrape(port)
    assert value(samples, "llmbus_budget_limit_usd", **budget) == BUDGET["limit_usd"]
    consumer = {"stream": subjects.EVENTS_STREAM, "consumer": subjects.USAGE_CONSUMER}
    assert ("llmbus_queue_depth", frozenset(consumer.items())) in samples
    assert ("llmbus_projection_lag_events", frozenset()) in samples


async def usage_metrics_count_its_errors(nc: Any, port: int) -> None:
    """On a hot subject (its lean path) as on any other."""
    before = await scrape(port)
    for subject in (subjects.BUDGET_RESERVE, subjects.USAGE_QUERY):
        reply = json.loads((await nc.request(subject, b"not json", timeout=10)).data)
        assert reply["error_type"] == "invalid_request", subject
    after = await scrape(port)
    labels = {"service": "usage", "error_type": "invalid_request"}
    assert grew(before, after, "llmbus_errors_total", **labels) == 2
    assert ("llmbus_requests_in_flight", frozenset({("service", "usage")})) in after
    assert value(after, "llmbus_requests_in_flight", service="usage") == 0


async def conversation_metrics_count_its_errors(nc: Any, port: int) -> None:
    before = await scrape(port)
    request = json.dumps({"key": "no-such-prompt"}).encode()
    reply = json.loads((await nc.request(subjects.PROMPT_GET, request, timeout=10)).data)
    assert reply["error_type"] == "not_found"
    after = await scrape(port)
    labels = {"service": "conversation", "error_type": "not_found"}
    assert grew(before, after, "llmbus_errors_total", **labels) == 1
    assert value(after, "llmbus_requests_in_flight", service="conversation") == 0
    consumer = {"stream": subjects.EVENTS_STREAM, "consumer": subjects.CONVERSATION_CONSUMER}
    assert ("llmbus_queue_depth", frozenset(consumer.items())) in after


@pytest.fixture
def up_config(tmp_path: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's configuration for `llmbus up`: its own server, and a metrics base port."""
    config = yaml.safe_load(config_file.read_text())
    config.pop("nats_url")
    config |= {"state_dir": str(tmp_path / "up"), "metrics_base_port": free_ports(4)}
    path = tmp_path / "up.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("LLMBUS_CONFIG", str(path))
    monkeypatch.delenv("NATS_URL", raising=False)
    return path


@pytest.mark.skipif(bool(os.environ.get("NATS_URL")), reason="runs the embedded server of up")
async def test_llmbus_up_gives_each_service_process_a_port_from_the_base(up_config: Path) -> None:
    settings = load_settings()
    assert settings.metrics_base_port is not None
    base = settings.metrics_base_port
    # usage, conversation, then each completion worker; each port shows its process's own
    # consumer, so no two processes share one
    expected = {
        base: subjects.USAGE_CONSUMER,
        base + 1: subjects.CONVERSATION_CONSUMER,
        base + 2: subjects.COMPLETION_CONSUMER,
        base + 3: subjects.COMPLETION_CONSUMER,
    }
    async with Stack(settings, workers=2, quiet=True, config=up_config):
        for port, consumer in expected.items():
            await wait_for(
                lambda port=port, consumer=consumer: polled(port, consumer),
                30,
                f"the {consumer} gauges on port {port}",
            )


async def polled(port: int, consumer: str) -> bool:
    samples = await scrape(port)
    found = {dict(labels)["consumer"] for name, labels in samples if name == "llmbus_queue_depth"}
    return found == {consumer}


def test_a_metrics_port_in_use_stops_the_start_with_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            metrics.serve_http("127.0.0.1", port)


async def test_a_gauge_that_cannot_be_read_is_logged_once_and_the_service_goes_on(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = metrics.MetricsExporter(
        "test", None, "127.0.0.1", [(subjects.REQUESTS_STREAM, "no-such-consumer")]
    )
    async with connected(settings) as nc:
        for _ in range(3):
            await exporter.poll_once(nc.jetstream())  # raises nothing
    warned = [r for r in caplog.records if "no-such-consumer" in r.getMessage()]
    assert len(warned) == 1, warned
