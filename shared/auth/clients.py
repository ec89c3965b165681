"""Issuing and revoking client credentials: the registry, the client's seed file, the server's
configuration, and (once the server runs) the directory services read and a reload."""

import json
from datetime import UTC, datetime
from pathlib import Path

from nats.aio.client import Client as NatsClient

from llmbus.shared import bus
from llmbus.shared.auth.config import write_server_config
from llmbus.shared.auth.directory import publish_clients
from llmbus.shared.auth.files import AuthFiles
from llmbus.shared.auth.keys import new_seed, public_key, write_seed
from llmbus.shared.auth.registry import load_clients, save_clients
from llmbus.shared.contracts.clients import ClientIdentity
from llmbus.shared.errors import InvalidRequestError, LlmbusError, NotFoundError
from llmbus.shared.settings import Settings

RELOAD_TIMEOUT_S = 5.0


def issue_client(
    files: AuthFiles,
    name: str,
    user_id: str,
    team_id: str | None = None,
    project_id: str | None = None,
    admin: bool = False,
) -> tuple[ClientIdentity, Path]:
    """A new client's identity and the path of its credentials (a user nkey seed, 0600)."""
    clients = load_clients(files.registry)
    if any(client.name == name for client in clients):
        raise InvalidRequestError(
            f"a client named {name!r} exists (or existed): choose another name"
        )
    seed = new_seed()
    identity = ClientIdentity(
        name=name, public_key=public_key(seed), user_id=user_id, team_id=team_id,
        project_id=project_id, admin=admin, created_at=datetime.now(UTC),
    )  # fmt: skip
    path = files.client(name)
    path.unlink(missing_ok=True)  # a seed left by an issue that never reached the registry
    write_seed(path, seed)
    save_clients(files.registry, [*clients, identity])
    write_server_config(files)
    return identity, path


def revoke_client(files: AuthFiles, name: str) -> ClientIdentity:
    """The client can no longer connect once the server reloads; its name stays taken."""
    clients = load_clients(files.registry)
    found = next((client for client in clients if client.name == name), None)
    if found is None:
        raise NotFoundError(f"no client named {name!r}")
    revoked = found.model_copy(update={"revoked_at": found.revoked_at or datetime.now(UTC)})
    save_clients(files.registry, [revoked if c.name == name else c for c in clients])
    write_server_config(files)
    files.client(name).unlink(missing_ok=True)
    return revoked


async def apply_clients(settings: Settings) -> None:
    """Publish the registry to the services' directory, then have the running server reload
    its configuration: a new client can connect, a revoked one is disconnected."""
    files = AuthFiles.of(settings.state_dir)
    operator = await bus.connect(settings, "llmbus-clients", creds=files.operator)
    try:
        await publish_clients(operator.jetstream(), load_clients(files.registry))
    finally:
        await operator.close()
    system = await bus.connect(settings, "llmbus-clients", creds=files.system)
    try:
        # nats-server 2.15 wires a new account's imports only on the reload after the one that
        # added it: reloading twice makes a new client usable at once (tests/security)
        await reload_server(system)
        await reload_server(system)
    finally:
        await system.close()


async def reload_server(system: NatsClient) -> None:
    """Through the system account: the server that answers names itself, then reloads."""
    ping = await system.request("$SYS.REQ.SERVER.PING.IDZ", b"", timeout=RELOAD_TIMEOUT_S)
    server_id = json.loads(ping.data)["id"]
    answer = await system.request(
        f"$SYS.REQ.SERVER.{server_id}.RELOAD", b"", timeout=RELOAD_TIMEOUT_S
    )
    error = json.loads(answer.data).get("error")
    if error:
        raise LlmbusError(f"nats-server did not reload its configuration: {error}")
