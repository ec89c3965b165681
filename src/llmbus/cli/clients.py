"""The work behind `llmbus clients`: on the operator's files in the state folder."""

import asyncio
from typing import Any

from pydantic import ValidationError
from rich.table import Table

from llmbus.cli.commands import console, fail, settings_or_fail
from llmbus.shared.auth.clients import apply_clients, issue_client, revoke_client
from llmbus.shared.auth.config import ensure_auth
from llmbus.shared.auth.files import AuthFiles
from llmbus.shared.auth.registry import load_clients
from llmbus.shared.auth.tls import make_certificates
from llmbus.shared.contracts.base import describe
from llmbus.shared.errors import LlmbusError, NotReachableError
from llmbus.shared.settings import Settings


def operator_files(settings: Settings) -> AuthFiles:
    files = AuthFiles.of(settings.state_dir)
    if not files.operator.is_file():
        fail(
            f"no operator credentials in {files.root}: run `llmbus up` once (it makes them), "
            "or set LLMBUS_STATE_DIR to the folder of the stack you manage"
        )
    return files


def run_create(name: str, user: str, team: str | None, project: str | None, admin: bool) -> None:
    settings = settings_or_fail()
    files = operator_files(settings)
    try:
        identity, path = issue_client(files, name, user, team, project, admin)
    except ValidationError as exc:
        fail(describe(exc))
    except LlmbusError as exc:
        fail(str(exc))
    applied = apply_or_later(settings)
    role = "admin" if identity.admin else f"user {identity.user_id}"
    console.print(f"client {identity.name} ({role}){applied}; credentials in", style="green")
    print(path)


def run_list() -> None:
    files = operator_files(settings_or_fail())
    table = Table("name", "user", "team", "project", "admin", "created", "revoked")
    for client in load_clients(files.registry):
        table.add_row(
            client.name, client.user_id, client.team_id or "", client.project_id or "",
            "yes" if client.admin else "", f"{client.created_at:%Y-%m-%d %H:%M}",
            f"{client.revoked_at:%Y-%m-%d %H:%M}" if client.revoked_at else "",
        )  # fmt: skip
    console.print(table)


def run_revoke(name: str) -> None:
    settings = settings_or_fail()
    files = operator_files(settings)
    try:
        revoked = revoke_client(files, name)
    except LlmbusError as exc:
        fail(str(exc))
    applied = apply_or_later(settings)
    console.print(f"client {revoked.name} revoked{applied}", style="green")


def apply_or_later(settings: Settings) -> str:
    """Tell the running stack; a stopped one reads the change when `llmbus up` starts."""
    try:
        run_quietly(apply_clients(settings))
    except NotReachableError:
        return " (the stack is not running: this applies when `llmbus up` starts)"
    return ""


def run_quietly(coro: Any) -> None:
    try:
        asyncio.run(coro)
    except NotReachableError:
        raise
    except LlmbusError as exc:
        fail(str(exc))


def run_init(tls_hosts: list[str]) -> None:
    files = AuthFiles.of(settings_or_fail().state_dir)
    if tls_hosts:
        make_certificates(files.tls_dir, tls_hosts)
    ensure_auth(files)
    console.print(f"credentials and {files.server_config.name} in", style="green")
    print(files.root)
