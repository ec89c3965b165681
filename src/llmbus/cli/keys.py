"""The bodies of `llmbus keys create`, `list` and `revoke`."""

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from rich import box
from rich.table import Table

from llmbus.cli.commands import console, fail, query_client_settings, run

IN = re.compile(r"(\d+)([dh])")
UNITS = {"d": "days", "h": "hours"}


def run_create(
    user: str,
    team: str | None,
    project: str | None,
    name: str | None,
    admin: bool,
    expires: str | None,
) -> None:
    expires_at = expiry(expires, datetime.now(UTC)) if expires else None
    settings = query_client_settings()
    from pydantic import ValidationError

    from llmbus.client import Client
    from llmbus.shared.contracts.base import describe

    async def go() -> Any:
        async with Client(settings=settings) as client:
            return await client.keys.create(
                user, team_id=team, project_id=project, name=name, admin=admin,
                expires_at=expires_at,
            )  # fmt: skip

    try:
        created = run(go())
    except ValidationError as exc:
        fail(describe(exc, "invalid key"))
    info = created.info
    until = f", until {info.expires_at:%Y-%m-%d %H:%M} UTC" if info.expires_at else ""
    console.print(
        f"API key {info.key_id} for {whom(info)}{until}. Copy it now: it will not be shown again.",
        style="green", markup=False, soft_wrap=True,
    )  # fmt: skip
    print(created.key)


def run_list(user: str | None, everything: bool) -> None:
    settings = query_client_settings()
    from llmbus.client import Client

    async def go() -> Any:
        async with Client(settings=settings) as client:
            return await client.keys.list(user, include_revoked=everything)

    console.print(keys_table(run(go()), datetime.now(UTC)))


def run_revoke(key_id: str) -> None:
    settings = query_client_settings()
    from pydantic import ValidationError

    from llmbus.client import Client

    async def go() -> Any:
        async with Client(settings=settings) as client:
            return await client.keys.revoke(key_id)

    try:
        info = run(go())
    except ValidationError:
        fail(f"no API key has the id {key_id!r}: ids are lowercase letters and digits")
    console.print(f"API key {info.key_id} of {whom(info)} revoked", style="green", markup=False)


def expiry(value: str, now: datetime) -> datetime:
    """--expires as a moment: 30d and 12h from now, or a date or date-time (UTC without zone)."""
    relative = IN.fullmatch(value.strip())
    if relative:
        return now + timedelta(**{UNITS[relative[2]]: int(relative[1])})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--expires takes 30d, 12h, a date (2027-01-31) or a date-time; not {value!r}")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def whom(info: Any) -> str:
    ids = [f"user {info.user_id}"]
    ids += [
        f"{what} {value}"
        for what, value in (("team", info.team_id), ("project", info.project_id))
        if value
    ]
    return ", ".join(ids) + (" (admin)" if info.admin else "")


def keys_table(keys: list[Any], now: datetime) -> Table:
    """Narrow enough for 80 columns, where output that is not a terminal is laid out."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    for column in ("id", "user", "team", "project", "name", "expires", "state"):
        table.add_column(column, no_wrap=column in ("id", "expires"))
    for k in keys:
        table.add_row(
            k.key_id, k.user_id + (" (admin)" if k.admin else ""), k.team_id or "—",
            k.project_id or "—", k.name or "—",
            f"{k.expires_at:%Y-%m-%d %H:%M}" if k.expires_at else "never", state(k, now),
        )  # fmt: skip
    return table


def state(key: Any, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"
