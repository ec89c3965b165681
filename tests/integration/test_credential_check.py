"""The credential check at a completion worker's start, against the fake provider: a rejected,
a good, a missing key, a closed port and a server that never answers, each reported as such and
the failing ones passed over by routing until a recheck passes. No key reaches the log."""

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from llmbus.services.completion.credentials import CredentialCheck
from llmbus.shared.catalog import ModelCatalog
from llmbus.shared.routing.health import Health
from llmbus.shared.settings import Settings
from llmbus.testing.fake_openai import FakeProvider
from support import pipeline

REJECTED_KEY = "rejected-sk-SECRET123456"
GOOD_KEY = "sk-good-SECRET654321"
LOGGER = "llmbus.completion.credentials"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """An HTTP base URL whose server accepts connections and never answers."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(4096):  # until the client gives up
            pass
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


def model(name: str, api_base: str, key_env: str) -> dict[str, Any]:
    return {
        "name": name,
        "litellm_model": "openai/fake-gpt",
        "api_base": api_base,
        "api_key_env": key_env,
    }


def credential_check(models: list[dict[str, Any]], **extra: Any) -> tuple[CredentialCheck, Health]:
    settings = Settings.model_validate(
        {"models": models, "completion": {"credential_check_timeout_s": 1.0}, **extra}
    )
    health = Health()
    return CredentialCheck(settings, ModelCatalog(settings), health), health


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMBUS_TEST_CRED_REJECTED", REJECTED_KEY)
    monkeypatch.setenv("LLMBUS_TEST_CRED_GOOD", GOOD_KEY)
    monkeypatch.delenv("LLMBUS_TEST_CRED_UNSET", raising=False)


@pytest.mark.usefixtures("keys")
async def test_each_model_is_reported_and_the_failing_ones_marked_unhealthy(
    fake_provider: FakeProvider, silent_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    base = fake_provider.base_url
    check, health = credential_check(
        [
            model("bad-key", base, "LLMBUS_TEST_CRED_REJECTED"),
            model("good-key", base, "LLMBUS_TEST_CRED_GOOD"),
            model("no-key", base, "LLMBUS_TEST_CRED_UNSET"),
            model("closed-port", f"http://127.0.0.1:{closed_port()}/v1", "LLMBUS_TEST_CRED_GOOD"),
            model("never-answers", silent_server, "LLMBUS_TEST_CRED_GOOD"),
        ],
        # a role's models are checked too, each once; the built-in sim needs no call
        roles={"coder": {"model": "good-key", "fallbacks": ["llmbus-sim/small"]}},
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        results = await check.check()

    by_model = {result.model: result for result in results}
    assert list(by_model) == [
        "bad-key", "good-key", "no-key", "closed-port", "never-answers", "llmbus-sim/small",
    ]  # fmt: skip
    assert {name: result.status for name, result in by_model.items()} == {
        "bad-key": "rejected",
        "good-key": "ok",
        "no-key": "missing key",
        "closed-port": "unreachable",
        "never-answers": "unreachable",
        "llmbus-sim/small": "ok",
    }
    assert by_model["never-answers"].detail == "timeout"
    assert by_model["no-key"].detail == "$LLMBUS_TEST_CRED_UNSET not set"
    assert set(health.unhealthy()) == {"bad-key", "no-key", "closed-port", "never-answers"}
    assert health.excluded("good-key") is None
    assert health.excluded("llmbus-sim/small") is None
    assert "rejected" in (health.excluded("bad-key") or "")

    tables = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(tables) == 1, "the table is logged as one block"
    logged = tables[0]
    for name, result in by_model.items():
        line = next(line for line in logged.splitlines() if line.strip().startswith(name))
        assert (result.text in line and "openai" in line) or name == "llmbus-sim/small"
    assert "model" in logged and "provider" in logged and "result" in logged and "ms" in logged
    assert "SECRET" not in caplog.text
    for key in (REJECTED_KEY, GOOD_KEY):
        assert key[-6:] not in caplog.text and key[:12] not in caplog.text


async def test_a_recheck_marks_a_fixed_model_healthy(
    fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LLMBUS_TEST_CRED_FIXED", REJECTED_KEY)
    check, health = credential_check(
        [model("fixed-later", fake_provider.base_url, "LLMBUS_TEST_CRED_FIXED")]
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        [first] = await check.check()
        assert first.status == "rejected"
        assert "fixed-later" in health.unhealthy()

        monkeypatch.setenv("LLMBUS_TEST_CRED_FIXED", GOOD_KEY)
        [again] = await check.recheck()

    assert again.status == "ok"
    assert health.unhealthy() == {}
    assert await check.recheck() == [], "nothing is left to recheck"
    assert "SECRET" not in caplog.text


@pytest.mark.usefixtures("keys")
async def test_a_model_a_call_found_rejected_is_checked_again_and_healthy_once_it_passes(
    fake_provider: FakeProvider,
) -> None:
    check, health = credential_check(
        [model("good", fake_provider.base_url, "LLMBUS_TEST_CRED_GOOD")]
    )
    health.mark_unhealthy("good", "credentials rejected")  # as a call's 401 marks it
    [again] = await check.recheck()
    assert again.status == "ok" and health.unhealthy() == {}


async def test_watch_stops_when_told(fake_provider: FakeProvider) -> None:
    check, _ = credential_check([])
    stop = asyncio.Event()
    watching = asyncio.create_task(check.watch(stop))
    stop.set()
    await asyncio.wait_for(watching, 5)


async def test_the_worker_checks_at_start_and_a_crashed_check_does_not_stop_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        async with pipeline(settings, with_usage=False) as (_, _, client):
            reply = await client.complete("hi", model="fake-gpt")
            assert reply.content
    [logged] = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert "fake-gpt" in logged and "unreachable" not in logged and "rejected" not in logged

    async def crash(self: CredentialCheck, models: Any = None) -> list[Any]:
        raise RuntimeError("the check fell over")

    monkeypatch.setattr(CredentialCheck, "check", crash)
    caplog.clear()
    async with pipeline(settings, with_usage=False) as (_, _, client):
        reply = await client.complete("hi again", model="fake-gpt")
        assert reply.content
    assert "the credential check failed" in caplog.text
