"""Attacks on the completion path, tried as a second tenant would: with credentials from
`llmbus clients create` and only the documented subjects, on a real nats-server with
authentication on. Each is refused, and what it tried to reach is unchanged."""

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg
from nats.errors import NoServersError

from llmbus.client import Client, CompletionError
from llmbus.shared import bus, subjects
from llmbus.shared.errors import ForbiddenError
from llmbus.shared.settings import Settings
from support import as_client, new_client, pipeline, wait_for

pytestmark = [
    pytest.mark.refusals,
    pytest.mark.skipif(
        bool(os.environ.get("NATS_URL")), reason="needs the embedded server's authentication"
    ),
]
MODEL = "fake-gpt"


@pytest.fixture
async def tenants(settings: Settings) -> AsyncIterator[tuple[Path, Path]]:
    alice = await new_client(settings, "alice", "alice", team_id="red")
    bob = await new_client(settings, "bob", "bob", team_id="blue")
    yield alice, bob


async def test_a_connection_without_credentials_is_refused(settings: Settings) -> None:
    assert settings.nats_url
    with pytest.raises((nats.errors.Error, NoServersError)):
        await nats.connect(settings.nats_url, allow_reconnect=False, connect_timeout=2)
    bare = settings.model_copy(update={"state_dir": settings.state_dir / "elsewhere"})
    with pytest.raises(ForbiddenError, match="needs credentials"):
        await bus.connect(bare, "anonymous")


async def test_a_client_hears_nothing_on_every_subject_nor_the_events(
    settings: Settings, tenants: tuple[Path, Path]
) -> None:
    alice, bob = tenants
    errors: list[Exception] = []
    heard: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    async def on_message(msg: Msg) -> None:
        heard.append(msg.subject)

    assert settings.nats_url
    spy = await nats.connect(settings.nats_url, error_cb=on_error, **bus.credential_options(bob))
    try:
        async with pipeline(settings) as (_, events, _operator):
            await spy.subscribe(">", cb=on_message)
            await spy.flush()
            async with Client(creds=alice, settings=settings) as client:
                await client.complete("secret plans", model=MODEL)
            await events.wait_terminal(1)
            await wait_for(lambda: bool(errors), 10, "the server refusing the subscription")
    finally:
        await spy.close()
    assert heard == []
    assert "permissions violation" in str(errors[0]).lower()


async def test_a_client_cannot_publish_an_event(
    settings: Settings, tenants: tuple[Path, Path]
) -> None:
    _, bob = tenants
    async with pipeline(settings) as (_, events, _operator), as_client(settings, bob) as spy:
        forged = {"request_id": "alice-turn", "model": MODEL, "content": "INJECTED-BY-BOB"}
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await spy.jetstream().publish(
                subjects.COMPLETION_RECEIVED, json.dumps(forged).encode(), timeout=2
            )
        for subject in (subjects.USAGE_RECORDED, subjects.BUDGET_EXCEEDED):
            await spy.publish(subject, b"{}")
        await spy.flush()
        assert events.on(subjects.COMPLETION_RECEIVED) == []


async def test_a_request_is_booked_to_its_credentials_and_a_claim_to_another_user_is_refused(
    settings: Settings, tenants: tuple[Path, Path]
) -> None:
    alice, _ = tenants
    async with pipeline(settings) as (_, events, _operator):
        async with Client(creds=alice, settings=settings) as client:
            done = await client.complete("hello", model=MODEL, request_id="alice-1")
            with pytest.raises(CompletionError) as refused:
                await client.complete("hi", model=MODEL, user_id="bob", request_id="as-bob")
        assert done.user_id == "alice" and done.team_id == "red"
        assert refused.value.failed.error_type == "forbidden"
        await wait_for(lambda: len(events.on(subjects.USAGE_RECORDED)) == 1, 30, "usage")
        [usage] = events.on(subjects.USAGE_RECORDED)
        assert (usage["request_id"], usage["user_id"]) == ("alice-1", "alice")
        assert [e["request_id"] for e in events.terminal()] == ["alice-1"]


async def test_another_clients_request_id_is_a_conflict_never_its_outcome(
    settings: Settings, tenants: tuple[Path, Path]
) -> None:
    alice, bob = tenants
    async with pipeline(settings) as (_, events, _operator):
        async with Client(creds=alice, settings=settings) as client:
            first = await client.complete("alice's secret", model=MODEL, request_id="shared-id")
        async with Client(creds=bob, settings=settings) as client:
            with pytest.raises(CompletionError) as refused:
                await client.complete("alice's secret", model=MODEL, request_id="shared-id")
        assert refused.value.failed.error_type == "request_conflict"
        assert first.content not in refused.value.failed.model_dump_json()
        assert len(events.terminal()) == 1


async def test_a_reply_to_outside_the_clients_inbox_gets_no_reply(
    settings: Settings, tenants: tuple[Path, Path]
) -> None:
    _, bob = tenants
    async with pipeline(settings) as (nc, events, _operator), as_client(settings, bob) as spy:
        streams_before = [s.config.name async for s in _streams(nc)]
        for i, target in enumerate(
            ("$JS.API.STREAM.DELETE.LLMBUS_EVENTS", "llmbus.usage.recorded", "_INBOX.x.y")
        ):
            request = {"request_id": f"bob-{i}", "model": MODEL,
                       "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
            await spy.jetstream().publish(
                subjects.COMPLETION_REQUESTED, json.dumps(request).encode(),
                headers={subjects.REPLY_TO_HEADER: target},
            )  # fmt: skip
        await events.wait_terminal(3)
        assert [s.config.name async for s in _streams(nc)] == streams_before
        assert len(events.on(subjects.USAGE_RECORDED)) == 3  # none forged by a reply


async def _streams(nc: nats.NATS) -> AsyncIterator[object]:
    for info in await nc.jetstream().streams_info():
        yield info
