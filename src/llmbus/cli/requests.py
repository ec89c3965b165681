"""The bodies of `llmbus complete --stream`, `llmbus status` and `llmbus cancel`."""

import asyncio
import sys
from typing import Any

from llmbus.cli.commands import Ask, console, fail, query_client_settings, run
from llmbus.shared.contracts import CompletionReceived

INTERRUPTED = 130  # what a shell reports for a command stopped by Ctrl-C


def summary(received: CompletionReceived) -> str:
    routed = f" (role {received.role})" if received.role else ""
    failed = "".join(f" after {a.model}: {a.error_type}" for a in received.attempts)
    return (
        f"[dim]{received.model}{routed}{failed} · {received.usage.prompt_tokens} in / "
        f"{received.usage.completion_tokens} out · ${received.cost_usd:.6f} · "
        f"{received.latency_ms:.0f} ms[/]"
    )


def run_stream(ask: Ask, as_json: bool) -> None:
    """Print the reply as it arrives; Ctrl-C cancels the request (what arrived is charged)."""
    settings = query_client_settings()
    fields = ask.fields(settings.default_role)
    from llmbus.client import Client, CompletionError

    async def go() -> None:
        async with Client(settings=settings) as client:
            stream = client.stream(**fields)
            try:
                async for chunk in stream:
                    if as_json:
                        print(chunk.model_dump_json(exclude_none=True), flush=True)
                    elif not chunk.final:
                        sys.stdout.write(chunk.delta)
                        sys.stdout.flush()
            except CompletionError as exc:
                print(flush=True)
                fail(str(exc))
            except asyncio.CancelledError:  # Ctrl-C
                print(flush=True)
                answer = await client.cancel(stream.request_id)
                console.print(f"[yellow]{answer.result}:[/] {answer.message}")
                raise SystemExit(INTERRUPTED) from None
        assert stream.result is not None
        if as_json:
            print(stream.result.model_dump_json(indent=2))
        else:
            print()
            console.print(summary(stream.result))

    run(go())


def about(request_id: str, action: str) -> Any:
    """client.status(request_id) or client.cancel(request_id), on a connection of its own."""
    settings = query_client_settings()
    from llmbus.client import Client

    async def go() -> Any:
        async with Client(settings=settings) as client:
            return await getattr(client, action)(request_id)

    return run(go())


def run_status(request_id: str, as_json: bool) -> None:
    status = about(request_id, "status")
    if as_json:
        print(status.model_dump_json(indent=2))
        return
    line = f"{status.request_id}: [bold]{status.status}[/]"
    if status.status == "running":
        tried = "".join(f", after {a.model}: {a.error_type}" for a in status.attempts)
        line += f" on {status.model} since {status.since:%H:%M:%S}{tried}"
    if status.cancel_requested:
        line += " (cancel asked)"
    console.print(line)
    if status.outcome is not None:
        outcome = status.outcome
        if status.status == "failed":
            console.print(f"{outcome.get('error_type')}: {outcome.get('message')}", markup=False)
        else:
            console.print(summary(CompletionReceived.model_validate(outcome)))


def run_cancel(request_id: str, as_json: bool) -> None:
    answer = about(request_id, "cancel")
    if as_json:
        print(answer.model_dump_json(indent=2))
        return
    console.print(f"{answer.request_id}: [bold]{answer.result}[/] · {answer.message}")
    if answer.result == "unknown":
        raise SystemExit(1)
