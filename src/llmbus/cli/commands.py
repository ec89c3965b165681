"""The bodies of the CLI commands."""

import asyncio
import contextlib
import csv
import io
import json
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmbus.shared.contracts import GROUP_FIELDS
from llmbus.shared.errors import LlmbusError
from llmbus.shared.settings import Settings, load_settings

DEFAULT_MODEL = "llmbus-sim/small"  # what `llmbus complete` asks for when nothing is configured

console = Console()
err = Console(stderr=True)


def fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise SystemExit(1)


def settings_or_fail() -> Settings:
    try:
        return load_settings()
    except LlmbusError as exc:
        fail(str(exc))


def query_client_settings() -> Settings:
    """Settings for a command that only publishes or queries, tuned to start fast.

    nats-py imports aiohttp (~0.15 s) for its websocket transport alone; unless the server is a
    ws:// one, such a command never needs it. Service processes never come through here.
    """
    settings = settings_or_fail()
    if not (settings.nats_url or "").startswith("ws"):
        sys.modules.setdefault("aiohttp", None)  # type: ignore[arg-type]
    return settings


def run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except LlmbusError as exc:
        fail(str(exc))


def run_up(workers: int) -> None:
    from llmbus.stack import Stack, run_until_stopped

    run(run_until_stopped(Stack(settings_or_fail(), workers=workers)))


def run_serve(service: str) -> None:
    from llmbus.shared.runtime import run_service

    settings = settings_or_fail()
    if service == "completion":
        from llmbus.services.completion.service import serve
    elif service == "usage":
        from llmbus.services.usage.service import serve
    elif service == "gateway":
        from llmbus.services.gateway.service import serve
    else:
        from llmbus.services.conversation.service import serve
    try:
        run_service(serve, settings)
    except LlmbusError as exc:
        fail(str(exc))


@dataclass(frozen=True)
class Ask:
    """One request as `llmbus complete` and `llmbus estimate` take it from their options: a
    model, a role, or neither (the default role, else DEFAULT_MODEL)."""

    text: str
    model: str | None = None
    role: str | None = None
    system: str | None = None
    user: str | None = None
    team: str | None = None
    project: str | None = None
    max_tokens: int | None = None

    def fields(self, default_role: str | None) -> dict[str, Any]:
        """The keyword arguments of Client.complete() and Client.estimate()."""
        if self.model and self.role:
            fail("name a --model or a --role, not both")
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": self.text})
        fields: dict[str, Any] = {
            "prompt": messages, "user_id": self.user, "team_id": self.team,
            "project_id": self.project,
            "params": {"max_tokens": self.max_tokens} if self.max_tokens else {},
        }  # fmt: skip
        if self.role:
            return fields | {"role": self.role}
        if self.model or default_role is None:
            return fields | {"model": self.model or DEFAULT_MODEL}
        return fields  # the service routes it by default_role


def run_complete(ask: Ask, as_json: bool) -> None:
    from llmbus.cli.requests import summary

    settings = query_client_settings()
    fields = ask.fields(settings.default_role)
    from llmbus.client import Client, CompletionError

    async def go() -> None:
        async with Client(settings=settings) as client:
            try:
                received = await client.complete(**fields)
            except CompletionError as exc:
                if as_json:
                    print(exc.failed.model_dump_json(indent=2))
                fail(str(exc))
        if as_json:
            print(received.model_dump_json(indent=2))
            return
        console.print(received.content, markup=False)
        console.print(summary(received))

    run(go())


def parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} must be an ISO date or date-time, e.g. 2026-11-01 or 2026-11-01T12:00")


def parse_filters(where: list[str], option: str = "--where") -> dict[str, str]:
    filters = {}
    for item in where:
        field, sep, value = item.partition("=")
        if not sep:
            fail(f"{option} expects KEY=VALUE, got {item!r}")
        filters[field.strip()] = value.strip()
    return filters


@dataclass(frozen=True)
class UsageAsk:
    """A usage query as `llmbus usage` takes it from its options."""

    by: list[str]
    metrics: list[str]
    since: str | None
    until: str | None
    where: list[str]
    timezone: str = "UTC"
    order_by: str | None = None
    ascending: bool = False
    limit: int | None = None

    def query(self) -> Any:
        """The UsageQuery, or a clear error for an option it cannot take."""
        from pydantic import ValidationError

        from llmbus.shared.contracts import UsageQuery

        fields = {
            "group_by": self.by, "since": parse_time(self.since, "--since"),
            "until": parse_time(self.until, "--until"), "filters": parse_filters(self.where),
            "timezone": self.timezone, "order_by": self.order_by, "ascending": self.ascending,
            "limit": self.limit,
        }  # fmt: skip
        if self.metrics:
            fields["metrics"] = self.metrics
        try:
            return UsageQuery.model_validate(fields)
        except ValidationError as exc:
            fail("invalid usage query: " + "; ".join(problem(e) for e in exc.errors()))


OPTION_OF = {"group_by": "--by", "metrics": "--metric", "filters": "--where", "timezone": "--tz",
             "order_by": "--order-by", "limit": "--top"}  # fmt: skip


def problem(error: Any) -> str:
    """A validation error of a contract, as the option it came from and what is wrong."""
    if not error["loc"]:
        return str(error["msg"])  # about the whole request, not one option
    field = str(error["loc"][0])
    value = error.get("input")
    shown = f" {value!r}" if isinstance(value, str | int) else ""
    return f"{OPTION_OF.get(field, field)}{shown}: {error['msg']}"


def run_usage(ask: UsageAsk, fmt: str) -> None:
    settings = query_client_settings()
    query = ask.query()
    from llmbus.client import Client

    async def go() -> Any:
        async with Client(settings=settings) as client:
            return await client.usage.ask(query)

    result = run(go())
    print_rows(result.columns, result.rows, fmt, every=bool(ask.metrics))


def print_rows(
    columns: list[str], rows: list[dict[str, Any]], fmt: str, every: bool = False
) -> None:
    if fmt == "json":
        print(json.dumps(rows, indent=2))
    elif fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        sys.stdout.write(out.getvalue())
    else:
        console.print(rows_table(columns, rows, every=every))


GROUP_COLUMNS = set(GROUP_FIELDS)
# the table shows what fits a terminal; json and csv carry every column
TABLE_LABELS = {"requests": "requests", "prompt_tokens": "tokens in",
                "completion_tokens": "tokens out", "cost_usd": "cost_usd",
                "error_rate": "errors", "latency_ms_mean": "mean ms"}  # fmt: skip


def rows_table(
    columns: list[str], rows: list[dict[str, Any]], title: str | None = None, every: bool = False
) -> Table:
    """The rows as a table; of the metrics, those that fit a terminal unless `every`."""
    shown = [c for c in columns if c in GROUP_COLUMNS or every or c in TABLE_LABELS]
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in shown:
        numeric = column not in GROUP_COLUMNS
        table.add_column(TABLE_LABELS.get(column, column), justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(format_cell(column, row.get(column)) for column in shown))
    return table


def format_cell(column: str, value: Any) -> str:
    if value is None:
        return "—"
    if column.endswith("cost_usd"):
        return f"${value:,.6f}"
    if column == "error_rate":
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def run_rebuild() -> None:
    from rich.progress import Progress

    from llmbus.services.usage.application import UsageApplication
    from llmbus.services.usage.projection import UsageProjection, rebuild
    from llmbus.shared.eventstore import open_store

    settings = settings_or_fail()
    try:
        projection = UsageProjection(settings.duckdb_path)
    except LlmbusError as exc:
        fail(str(exc))
    skipped: list[str] = []
    # closed however the rebuild ends: an open DuckDB connection at exit prints nanobind leaks
    with projection, contextlib.closing(open_store(UsageApplication, settings, "usage")) as app:
        total = app.recorded_count()
        with Progress(console=err) as progress:
            task = progress.add_task("rebuilding usage projection", total=total)
            applied = rebuild(
                projection, app.all_recorded(), lambda n: progress.update(task, completed=n),
                on_skip=lambda position, event: skipped.append(f"{event.usage_id}: {event.reason}"),
            )  # fmt: skip
            # the total counted every event of the store, budgets' too: end the bar where it ended
            progress.update(task, total=applied, completed=applied)
    console.print(f"rebuilt {settings.duckdb_path} from {applied} usage events")
    if skipped:
        # stored before their bounds were checked; the usage service parked them when it met them
        err.print(f"skipped {len(skipped)} usage events the projection cannot hold:")
        for line in skipped:
            err.print(f"  {line}", markup=False, highlight=False)
