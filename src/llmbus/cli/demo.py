"""`make demo`: the main job end to end on the embedded stack."""

import asyncio
import json
import shutil

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmbus.cli.commands import fail, rows_table, settings_or_fail
from llmbus.client import Client, CompletionError
from llmbus.shared import subjects
from llmbus.shared.contracts import CompletionReceived
from llmbus.shared.errors import LlmbusError
from llmbus.stack import Stack

console = Console()

QUESTIONS = [
    "What is an event store?",
    "Why do budgets overshoot under concurrency?",
    "Explain JetStream work queues in one paragraph.",
    "How does DuckDB answer group-bys so fast?",
    "What is an outbox relay?",
    "Summarise exactly-once processing.",
]
USERS = [("alice", "team-a"), ("bob", "team-a"), ("carol", "team-b"), ("dave", "team-b")]
MODELS = ["llmbus-sim/small", "llmbus-sim/large"]
SHOWN = 8


async def demo(requests: int) -> None:
    settings = settings_or_fail()
    settings = settings.model_copy(update={"state_dir": settings.state_dir / "demo"})
    shutil.rmtree(settings.state_dir, ignore_errors=True)
    with console.status("starting nats-server, the completion service and the usage service…"):
        stack = Stack(settings, quiet=True)
        await stack.start()
    try:
        console.print(f"[green]✓[/] stack up — NATS at {stack.url}, state in {stack.state_dir}")
        async with Client(stack.url, settings=settings) as client:
            await publish_batch(client, requests)
            await show_bad_request(client)
            await show_costs(client, requests)
    finally:
        with console.status("stopping: draining in-flight work…"):
            await asyncio.to_thread(stack.stop)
    console.print(
        "[green]✓[/] stopped cleanly. Try it yourself: `llmbus up`, then `llmbus complete`."
    )


async def publish_batch(client: Client, requests: int) -> None:
    console.rule(f"1 · publishing {requests} requests to {subjects.COMPLETION_REQUESTED}")
    calls = []
    for i in range(requests):
        user, team = USERS[i % len(USERS)]
        calls.append(
            client.complete(
                QUESTIONS[i % len(QUESTIONS)],
                model=MODELS[i % len(MODELS)],
                request_id=f"demo-{i:03d}",
                user_id=user,
                team_id=team,
                project_id="demo",
            )
        )
    results: list[CompletionReceived] = await asyncio.gather(*calls)
    console.rule("2 · completions (CompletionReceived)")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("request", "model", "user", "in/out", "cost", "reply"):
        table.add_column(column, no_wrap=True)
    for r in results[:SHOWN]:
        tokens = f"{r.usage.prompt_tokens}/{r.usage.completion_tokens}"
        # sim replies start with "[model] ", which rich would read as markup
        reply = escape((r.content or "").strip().split("] ", 1)[-1][:16] + "…")
        table.add_row(r.request_id, r.model, r.user_id or "", tokens, f"${r.cost_usd:.6f}", reply)
    console.print(table)
    if len(results) > SHOWN:
        console.print(f"[dim]… and {len(results) - SHOWN} more[/]")


async def show_bad_request(client: Client) -> None:
    console.rule("3 · a bad request gets a clear CompletionFailed")
    try:
        await client.complete("hello", model="no-such-model", request_id="demo-bad")
    except CompletionError as exc:
        console.print(json.dumps(exc.failed.model_dump(mode="json", exclude_none=True), indent=2))


async def show_costs(client: Client, requests: int) -> None:
    console.rule("4 · cost tables from the DuckDB projection (llmbus.usage.query)")
    with console.status("waiting for the usage service to project every UsageRecorded…"):
        await wait_until_projected(client, requests)
    for by in (["model"], ["team", "user"]):
        result = await client.usage(by)
        wanted = {*by, "requests", "prompt_tokens", "completion_tokens", "cost_usd"}
        columns = [c for c in result.columns if c in wanted]
        console.print(rows_table(columns, result.rows, title=f"cost by {', '.join(by)}"))
    total = (await client.usage()).rows[0]
    console.print(f"total: {total['requests']} requests, ${total['cost_usd']:.6f}")


async def wait_until_projected(client: Client, requests: int, timeout_s: float = 30.0) -> None:
    """UsageRecorded travels relay → JetStream → usage service; the answer lags a little."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (await client.usage()).rows[0]["requests"] < requests:
        if asyncio.get_running_loop().time() > deadline:
            raise LlmbusError(f"usage service did not project {requests} events in {timeout_s}s")
        await asyncio.sleep(0.1)


def run_demo(requests: int) -> None:
    try:
        asyncio.run(demo(requests))
    except LlmbusError as exc:
        fail(str(exc))
