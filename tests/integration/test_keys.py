"""Gateway API keys, as an administrator issues and revokes them and the gateway checks them:
the usage service keeps only each key's SHA-256, as events, and answers from those after a
restart; an unknown, revoked or expired key is refused in the same words."""

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from llmbus.client import Client
from llmbus.services.usage.service import serve as serve_usage
from llmbus.shared import subjects
from llmbus.shared.bus import answers
from llmbus.shared.contracts.keys import key_hash
from llmbus.shared.errors import LlmbusError, RequestError
from llmbus.shared.settings import Settings
from support import (
    connected,
    llmbus_cli,
    new_client,
    running,
    spawn_service,
    stop_process,
    wait_for,
)

NEEDS_AUTH = pytest.mark.skipif(
    bool(os.environ.get("NATS_URL")), reason="needs the embedded server's authentication"
)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@contextlib.asynccontextmanager
async def usage_service(
    settings: Settings, clock: Clock | None = None
) -> AsyncIterator[tuple[NatsClient, Client]]:
    """The usage service in this event loop, the operator's connection and an admin client."""
    serve = partial(serve_usage, clock=clock) if clock is not None else serve_usage
    async with (
        connected(settings) as nc,
        running(serve, settings),
        Client(settings=settings) as admin,
    ):
        await wait_for(lambda: answers(nc, subjects.KEYS_LIST), 30, "the usage service")
        yield nc, admin


async def refusal(client: Client, key: str) -> RequestError:
    with pytest.raises(RequestError) as refused:
        await client.keys.verify(key)
    return refused.value


def invalid(refused: RequestError) -> bool:
    """Refused as an unknown, revoked and expired key all are: in the same words."""
    return (refused.error_type, refused.message) == ("unauthorized", "invalid API key")


async def test_an_issued_key_verifies_to_its_identity_until_it_is_revoked(
    settings: Settings,
) -> None:
    async with usage_service(settings) as (nc, admin):
        revocations: list[dict[str, Any]] = []

        async def heard(msg: Msg) -> None:
            revocations.append(json.loads(msg.data))

        await nc.subscribe(subjects.KEYS_REVOKED, cb=heard)
        created = await admin.keys.create(
            "ann", team_id="research", project_id="atlas", name="laptop"
        )
        ann = created.info
        assert created.key.startswith(f"{ann.prefix}-") and ann.prefix == f"sk-llmbus-{ann.key_id}"
        found = await admin.keys.verify(created.key)
        assert (found.user_id, found.team_id, found.project_id, found.name) == (
            "ann", "research", "atlas", "laptop",
        )  # fmt: skip
        assert (found.created_by, found.revoked_at, found.admin) == ("operator", None, False)
        other = await admin.keys.create("bob", admin=True)
        assert [k.key_id for k in await admin.keys.list()] == [ann.key_id, other.info.key_id]
        assert [k.key_id for k in await admin.keys.list(user_id="bob")] == [other.info.key_id]

        revoked = await admin.keys.revoke(ann.key_id)
        assert revoked.revoked_at is not None
        await wait_for(lambda: len(revocations) == 1, 10, "the KeyRevoked broadcast")
        assert revocations == [{"key_id": ann.key_id, "key_hash": key_hash(created.key)}]
        assert invalid(await refusal(admin, created.key))
        assert invalid(await refusal(admin, created.key[:-1]))  # never issued
        assert (await admin.keys.verify(other.key)).admin

        again = await admin.keys.revoke(ann.key_id)  # changes nothing
        assert again.revoked_at == revoked.revoked_at
        assert [k.key_id for k in await admin.keys.list()] == [other.info.key_id]
        everyone = await admin.keys.list(include_revoked=True)
        assert [k.key_id for k in everyone] == [ann.key_id, other.info.key_id]
        with pytest.raises(RequestError) as unknown:
            await admin.keys.revoke("0123456789ab")
        assert unknown.value.error_type == "not_found"


async def test_an_expired_key_is_refused_like_an_unknown_one(settings: Settings) -> None:
    clock = Clock(datetime.now(UTC))
    async with usage_service(settings, clock) as (_, admin):
        created = await admin.keys.create("ann", expires_at=clock.now + timedelta(hours=1))
        assert (await admin.keys.verify(created.key)).expires_at == created.info.expires_at
        clock.now += timedelta(hours=2)
        assert invalid(await refusal(admin, created.key))
        [listed] = await admin.keys.list()  # expired, not revoked: still listed
        assert listed.revoked_at is None
        with pytest.raises(RequestError) as past:
            await admin.keys.create("ann", expires_at=clock.now - timedelta(minutes=1))
        assert past.value.error_type == "invalid_request" and "passed" in past.value.message


@NEEDS_AUTH
async def test_only_admin_credentials_create_list_or_revoke_keys(settings: Settings) -> None:
    bob = await new_client(settings, "bob", "bob", team_id="blue")
    root = await new_client(settings, "root", "ops", admin=True)
    async with usage_service(settings):
        async with Client(creds=root, settings=settings) as admin:
            created = await admin.keys.create("bob", team_id="blue")
            assert created.info.created_by == "root"
        async with Client(creds=bob, settings=settings) as client:
            for ask in (
                lambda: client.keys.create("bob", team_id="blue"),
                lambda: client.keys.list(user_id="bob"),
                lambda: client.keys.revoke(created.info.key_id),
            ):
                with pytest.raises(RequestError) as refused:
                    await ask()
                assert refused.value.error_type == "forbidden" and "admin" in refused.value.message
        async with Client(settings=settings) as operator:
            assert (await operator.keys.verify(created.key)).user_id == "bob"


@NEEDS_AUTH
@pytest.mark.refusals
async def test_a_client_cannot_even_ask_whether_a_key_is_valid(settings: Settings) -> None:
    bob = await new_client(settings, "bob", "bob")
    async with usage_service(settings) as (_, admin):
        created = await admin.keys.create("bob")
        async with Client(creds=bob, settings=settings) as client:
            # the gateway's subject: the server refuses it to any client's account
            with pytest.raises(LlmbusError, match=r"no answer on llmbus\.keys\.verify"):
                await client.keys.verify(created.key, timeout_s=1)


async def test_a_restarted_usage_service_answers_from_the_events(settings: Settings) -> None:
    async with usage_service(settings) as (_, admin):
        kept = await admin.keys.create("ann")
        dropped = await admin.keys.create("bob")
        await admin.keys.revoke(dropped.info.key_id)
    async with usage_service(settings) as (_, admin):
        assert (await admin.keys.verify(kept.key)).user_id == "ann"
        assert invalid(await refusal(admin, dropped.key))
        listed = await admin.keys.list(include_revoked=True)
        assert [(k.key_id, k.revoked_at is None) for k in listed] == [
            (kept.info.key_id, True), (dropped.info.key_id, False),
        ]  # fmt: skip


async def test_the_store_holds_the_hash_and_neither_it_nor_the_log_the_key(
    settings: Settings, config_file: Path, tmp_path: Path
) -> None:
    log = tmp_path / "usage.log"
    process = spawn_service("usage", config_file, log, LLMBUS_LOG_LEVEL="DEBUG")
    try:
        async with connected(settings) as nc, Client(settings=settings) as admin:
            await wait_for(lambda: answers(nc, subjects.KEYS_LIST), 60, "the usage service")
            created = await admin.keys.create("ann", name="ci")
            await admin.keys.verify(created.key)
            await admin.keys.revoke(created.info.key_id)
            assert invalid(await refusal(admin, created.key))
    finally:
        await asyncio.to_thread(stop_process, process)
    secret = created.key.removeprefix(f"{created.info.prefix}-")
    stored = b"".join(path.read_bytes() for path in settings.state_dir.glob("usage.sqlite*"))
    logged = log.read_text()
    assert key_hash(created.key).encode() in stored
    assert f"API key {created.info.key_id} revoked" in logged
    for text in (created.key, secret, secret[:8]):
        assert text.encode() not in stored and text not in logged


async def test_the_cli_creates_lists_and_revokes_a_key(settings: Settings) -> None:
    async with usage_service(settings) as (_, admin):
        made = await asyncio.to_thread(
            llmbus_cli, "keys", "create", "--user", "ann", "--team", "research",
            "--name", "ci runner", "--expires", "30d",
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert "will not be shown again" in made.stdout
        key = made.stdout.strip().splitlines()[-1]
        info = await admin.keys.verify(key)
        assert (info.user_id, info.team_id, info.name) == ("ann", "research", "ci runner")
        assert info.expires_at is not None
        assert abs(info.expires_at - info.created_at - timedelta(days=30)) < timedelta(minutes=1)

        listed = await asyncio.to_thread(llmbus_cli, "keys", "list")
        assert listed.returncode == 0, listed.stderr
        assert info.key_id in listed.stdout and "research" in listed.stdout
        assert key not in listed.stdout
        revoked = await asyncio.to_thread(llmbus_cli, "keys", "revoke", info.key_id)
        assert revoked.returncode == 0 and f"API key {info.key_id}" in revoked.stdout
        assert invalid(await refusal(admin, key))
        after = await asyncio.to_thread(llmbus_cli, "keys", "list")
        assert info.key_id not in after.stdout
        everything = await asyncio.to_thread(llmbus_cli, "keys", "list", "--all")
        assert info.key_id in everything.stdout and "revoked" in everything.stdout

        never = await asyncio.to_thread(
            llmbus_cli, "keys", "create", "--user", "a", "--expires", "soon"
        )
        assert never.returncode == 1 and "--expires takes" in never.stderr
        unknown = await asyncio.to_thread(llmbus_cli, "keys", "revoke", "0123456789ab")
        assert unknown.returncode == 1 and "no API key has the id" in unknown.stderr
