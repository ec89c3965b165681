"""`make demo`: the main job end to end on the embedded stack."""

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmbus.cli.commands import fail, rows_table, settings_or_fail
from llmbus.cli.demo_gateway import show_gateway
from llmbus.cli.demo_stream import show_stream
from llmbus.client import Client, CompletionError
from llmbus.report.data import collect
from llmbus.report.page import write
from llmbus.shared import subjects
from llmbus.shared.contracts import (
    CompletionParams,
    CompletionReceived,
    CompletionRequested,
    PromptRef,
)
from llmbus.shared.contracts.budget import BudgetExceeded, BudgetThresholdReached
from llmbus.shared.errors import LlmbusError
from llmbus.shared.money import usd
from llmbus.shared.prompts.template import Variable
from llmbus.shared.settings import Settings, config_path
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


# team-a's budget only warns; team-b's refuses what it cannot cover
BUDGETS: list[dict[str, Any]] = [
    {"name": "team-a-daily", "scope": {"team": "team-a"}, "window": "daily", "limit_usd": "0.006",
     "mode": "soft", "thresholds": [0.5, 0.8, 1.0]},
    {"name": "team-b-daily", "scope": {"team": "team-b"}, "window": "daily", "limit_usd": "0.006",
     "mode": "hard", "thresholds": [0.5, 0.8, 1.0]},
]  # fmt: skip
MAX_TOKENS = 120
CHAT_USER = "erin"
CHAT_TURNS = [
    "Our new project is called Kestrel: it routes LLM calls over NATS.",
    "What did I say the project is called?",
    "Suggest a tagline for it.",
]
PROMPT_KEY = "support-reply"
ARTICLE = (
    "Event sourcing stores every change to an application's state as an immutable event. The "
    "current state is derived by replaying the events, so the full history can be audited, "
    "and new read models can be built from it at any time."
)


def demo_config(settings: Settings) -> Path:
    """The user's configuration plus the demo's budgets, for the stack's processes."""
    path = config_path(os.environ)
    config = yaml.safe_load(path.read_text()) if path else {}
    config = (config or {}) | {"budgets": BUDGETS, "state_dir": str(settings.state_dir)}
    # a free port: the demo never collides with an `llmbus up` on 4000
    config["gateway"] = (config.get("gateway") or {}) | {"port": 0}
    target = settings.state_dir / "demo.yaml"
    target.write_text(yaml.safe_dump(config))
    return target


async def demo(requests: int) -> None:
    settings = settings_or_fail()
    settings = settings.model_copy(update={"state_dir": settings.state_dir / "demo"})
    shutil.rmtree(settings.state_dir, ignore_errors=True)
    settings.state_dir.mkdir(parents=True)
    with console.status(
        "starting nats-server and the completion, usage, conversation and gateway services…"
    ):
        stack = Stack(settings, quiet=True, config=demo_config(settings))
        await stack.start()
    try:
        console.print(f"[green]✓[/] stack up — NATS at {stack.url}, state in {stack.state_dir}")
        async with Client(stack.url, settings=settings) as client:
            seen: list[Any] = []
            # replay: this stack is new, so every budget event it ever published is seen
            watching = asyncio.create_task(watch_budgets(client, seen))
            received = await publish_batch(client, requests)
            await show_budgets(client, seen)
            watching.cancel()
            await show_bad_request(client)
            received += await show_stream(console, client, MODELS[1], MAX_TOKENS)
            received += await show_conversation(client)
            received += await show_prompts(client)
            received += await show_gateway(console, client, stack.gateway_url, MODELS[0])
            await show_costs(client, received)
            report = await write_report(client, settings.state_dir / "report.html")
    finally:
        with console.status("stopping: draining in-flight work…"):
            await asyncio.to_thread(stack.stop)
    console.print(
        "[green]✓[/] stopped cleanly. Try it yourself: `llmbus up`, then `llmbus complete "
        "--stream` or `llmbus chat`."
    )
    console.print(f"report: {report} — open it in a browser", markup=False, soft_wrap=True)
    console.print(
        "web console: run `llmbus up`; in another terminal `llmbus keys create --user you "
        "--admin` prints an admin key; open http://127.0.0.1:4000/ui and log in with it.",
        markup=False, soft_wrap=True,
    )  # fmt: skip


async def publish_batch(client: Client, requests: int) -> int:
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
                params={"max_tokens": MAX_TOKENS},
            )
        )
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    results = [o for o in outcomes if isinstance(o, CompletionReceived)]
    refused = [o.failed for o in outcomes if isinstance(o, CompletionError)]
    console.rule("2 · completions (CompletionReceived), and refusals (CompletionFailed)")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("request", "model", "user", "in/out", "cost", "reply"):
        table.add_column(column, no_wrap=True)
    for r in results[:SHOWN]:
        tokens = f"{r.usage.prompt_tokens}/{r.usage.completion_tokens}"
        reply = short(r.content, 16)
        table.add_row(r.request_id, r.model, r.user_id or "", tokens, f"${r.cost_usd:.6f}", reply)
    for f in refused[:3]:
        table.add_row(f.request_id, f.model or "", f.user_id or "", "—", "refused",
                      f.error_type.value)  # fmt: skip
    console.print(table)
    console.print(f"[dim]{len(results)} completed, {len(refused)} refused by a hard budget[/]")
    return len(results)


async def watch_budgets(client: Client, seen: list[Any]) -> None:
    async for event in client.budgets.events(replay=True):
        seen.append(event)


async def crossings(client: Client) -> int | None:
    """How many thresholds the budgets' settled spend has crossed, by the demo's definitions;
    None while reservations are still open."""
    thresholds: dict[str, list[float]] = {b["name"]: b["thresholds"] for b in BUDGETS}
    rows = await client.budgets.status()
    if any(row.reserved_usd for row in rows):
        return None
    return sum(
        1 for row in rows for t in thresholds[row.name] if row.spent_usd >= t * row.limit_usd
    )


async def all_crossings_seen(client: Client, seen: list[Any]) -> bool:
    expected = await crossings(client)
    fired = [e for e in seen if isinstance(e, BudgetThresholdReached)]
    return expected is not None and len(fired) >= expected


async def show_budgets(client: Client, seen: list[Any]) -> None:
    console.rule("3 · budget events (llmbus.budget.threshold_reached, llmbus.budget.exceeded)")
    deadline = asyncio.get_running_loop().time() + 10
    # thresholds fire as usage settles, a moment after the replies: wait for every crossing
    # the budgets' spend calls for
    while not await all_crossings_seen(client, seen):
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    exceeded = [e for e in seen if isinstance(e, BudgetExceeded)]
    for event in seen:
        if isinstance(event, BudgetThresholdReached):
            console.print(
                f"BudgetThresholdReached  {event.budget:13} {event.threshold:>4.0%}  "
                f"spent ${event.spent_usd:.6f} of ${event.limit_usd:.4f} ({event.mode})"
            )
    if exceeded:
        first = exceeded[0]
        left = first.limit_usd - first.spent_usd - first.reserved_usd
        console.print(
            f"BudgetExceeded          {first.budget:13} {first.request_id} needs "
            f"${first.requested_usd:.6f}, ${left:.6f} left"
        )
        if len(exceeded) > 1:
            console.print(f"{'':24}… and {len(exceeded) - 1} more refusals")
    table = Table(title="llmbus budgets status", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("budget", "mode", "spent", "reserved", "limit", "%"):
        table.add_column(column, justify="left" if column in {"budget", "mode"} else "right")
    for row in await client.budgets.status():
        table.add_row(row.name, row.mode, usd(row.spent_usd), usd(row.reserved_usd),
                      usd(row.limit_usd), f"{row.percent:.0f}")  # fmt: skip
    console.print(table)


async def show_bad_request(client: Client) -> None:
    console.rule("4 · a bad request gets a clear CompletionFailed")
    try:
        await client.complete("hello", model="no-such-model", request_id="demo-bad")
    except CompletionError as exc:
        console.print(json.dumps(exc.failed.model_dump(mode="json", exclude_none=True), indent=2))


async def show_conversation(client: Client) -> int:
    """Three chat turns; each request carries the conversation so far. Returns the calls made."""
    console.rule("6 · a conversation (llmbus.conversation.*): every turn carries the history")
    view = await client.conversations.create(
        CHAT_USER, "Naming the project", model=MODELS[0], system="You are a concise assistant."
    )
    console.print(f"conversation {view.conversation_id} of user {CHAT_USER}: “{view.title}”")
    stored = view.message_count  # the system message
    prompt_tokens = []
    for turn, text in enumerate(CHAT_TURNS, start=1):
        reply = await client.chat(CHAT_USER, view.conversation_id, text)
        if reply.status != "completed" or reply.message is None:
            raise LlmbusError(f"chat turn {turn} {reply.status}: {reply.error_type}: {reply.error}")
        sent = stored + 1 - reply.trimmed  # the history so far and this message
        stored += 2
        prompt_tokens.append(reply.prompt_tokens)
        console.print(f"[bold cyan]{CHAT_USER}>[/]      {escape(text)}")
        console.print(f"[bold green]assistant>[/] {short(reply.message.content, 62)}")
        console.print(
            f"[dim]{'':11}turn {turn}: {sent} messages sent · {reply.prompt_tokens} in / "
            f"{reply.completion_tokens} out · ${reply.cost_usd:.6f}[/]"
        )
    view = await client.conversations.get(CHAT_USER, view.conversation_id)
    console.print(
        f"turn 2 asked about turn 1, and its request carried turn 1: {prompt_tokens[1]} prompt "
        f"tokens against {prompt_tokens[0]}. Stored: {view.message_count} messages, "
        f"{view.total_tokens} tokens, ${view.total_cost_usd:.6f} "
        f"(llmbus conversations show {view.conversation_id} --user {CHAT_USER})"
    )
    return len(CHAT_TURNS)


async def show_prompts(client: Client) -> int:
    """A managed prompt with two versions, used by key, and a domain prompt. Returns the
    requests made."""
    console.rule("7 · prompts by key (llmbus.prompt.*): a managed prompt and a domain prompt")
    variables = [Variable(name="customer"), Variable(name="issue"),
                 Variable(name="tone", required=False, default="friendly")]  # fmt: skip
    await client.prompts.create(
        PROMPT_KEY, "Support reply", "Reply to {{customer}}, who reports: {{issue}}. Tone: "
        "{{tone}}.", variables=variables, labels=["production"], author="alice",
        note="first draft",
    )  # fmt: skip
    await client.prompts.update(
        PROMPT_KEY, template="You answer for the Kestrel support desk. Reply to {{customer}}, "
        "who reports: {{issue}}. Tone: {{tone}}. End with one concrete next step.",
        variables=variables, author="bob", note="adds a next step",
    )  # fmt: skip
    for entry in await client.prompts.history(PROMPT_KEY):
        labels = entry.label or ", ".join(entry.labels)
        console.print(f"{entry.event:22} v{entry.version}  {labels:20} {entry.author:6} "
                      f"{entry.note}")  # fmt: skip
    values = {"customer": "Dana", "issue": "my invoice shows the wrong amount"}
    params = {"max_tokens": MAX_TOKENS}
    preview = await client.prompts.preview(PROMPT_KEY, values, MODELS[0], params=params)
    console.print(
        f"cost preview of {PROMPT_KEY} (production → v{preview.version}) before any call: "
        f"{preview.prompt_tokens} prompt tokens, ${preview.input_cost_usd:.6f} in, at most "
        f"${preview.worst_case_cost_usd:.6f} with {preview.max_output_tokens} output tokens"
    )
    calls = [
        PromptRef(key=PROMPT_KEY, variables=values),
        PromptRef(key=PROMPT_KEY, variables=values | {"tone": "apologetic"}),
        PromptRef(key=PROMPT_KEY, label="latest", variables=values),
        PromptRef(key="summarizer", variables={"text": ARTICLE, "max_words": 25}),
    ]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("request", "prompt", "in/out", "cost", "reply"):
        table.add_column(column, no_wrap=True, max_width=22 if column == "reply" else None)
    replies = []
    for i, ref in enumerate(calls):
        request = CompletionRequested(
            request_id=f"demo-prompt-{i}", model=MODELS[0], prompt=ref, user_id=CHAT_USER,
            params=CompletionParams.model_validate(params),
        )  # fmt: skip
        r = await client.complete(request)
        replies.append(r)
        table.add_row(r.request_id, f"{r.prompt_key}@{r.prompt_version}",
                      f"{r.usage.prompt_tokens}/{r.usage.completion_tokens}",
                      f"${r.cost_usd:.6f}", short(r.content))  # fmt: skip
    console.print(table)
    console.print(
        f"{replies[0].request_id} cost ${replies[0].cost_usd:.6f}; the preview said at most "
        f"${preview.worst_case_cost_usd:.6f}. Rendered by the completion worker, accounted by "
        "prompt version."
    )
    return len(calls)


def short(text: str | None, width: int = 24) -> str:
    # sim replies start with "[model] ", which rich would read as markup
    return escape((text or "").strip().split("] ", 1)[-1][:width] + "…")


async def show_costs(client: Client, requests: int) -> None:
    console.rule("9 · cost tables from the DuckDB projection (llmbus.usage.query)")
    with console.status("waiting for the usage service to project every UsageRecorded…"):
        await wait_until_projected(client, requests)
    for by in (["model"], ["team", "user"], ["prompt_version"]):
        result = await client.usage.query(by)
        wanted = {*by, "requests", "prompt_tokens", "completion_tokens", "cost_usd"}
        columns = [c for c in result.columns if c in wanted]
        rows = [row for row in result.rows if by != ["prompt_version"] or row["prompt_version"]]
        console.print(rows_table(columns, rows, title=f"cost by {', '.join(by)}"))
    total = (await client.usage.query()).rows[0]
    console.print(f"total: {total['requests']} requests, ${total['cost_usd']:.6f}")


async def write_report(client: Client, path: Path) -> Path:
    """What `llmbus report` writes, from this stack while it still runs."""
    with console.status("writing the HTML report…"):
        return write(await collect(client), path)


async def wait_until_projected(client: Client, requests: int, timeout_s: float = 30.0) -> None:
    """UsageRecorded travels relay → JetStream → usage service; the answer lags a little."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (await client.usage.query()).rows[0]["requests"] < requests:
        if asyncio.get_running_loop().time() > deadline:
            raise LlmbusError(f"usage service did not project {requests} events in {timeout_s}s")
        await asyncio.sleep(0.1)


def run_demo(requests: int) -> None:
    try:
        asyncio.run(demo(requests))
    except LlmbusError as exc:
        fail(str(exc))
