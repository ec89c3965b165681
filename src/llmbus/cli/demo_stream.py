"""`make demo`, part 5: a reply streamed as it is generated, then what it cost."""

from rich.console import Console

from llmbus.client import Client
from llmbus.shared import subjects

QUESTION = "In two sentences, why stream a reply instead of waiting for all of it?"


async def show_stream(console: Console, client: Client, model: str, max_tokens: int) -> int:
    """Print the chunks as they arrive; 1: the request it completed."""
    chunks = subjects.COMPLETION_CHUNK.format(request_id="<request_id>")
    console.rule(f"5 · a streamed reply, chunk by chunk ({chunks})")
    console.print(f"[dim]> {QUESTION}[/]")
    stream = client.stream(QUESTION, model=model, user_id="erin", project_id="demo",
                           params={"max_tokens": max_tokens})  # fmt: skip
    deltas = 0
    async for chunk in stream:
        if not chunk.final:
            deltas += 1
            console.print(chunk.delta, end="", markup=False, highlight=False)
    console.print()
    final = stream.final
    assert final is not None and final.usage is not None
    console.print(
        f"[dim]{deltas} chunks · final chunk: {final.usage.prompt_tokens} in / "
        f"{final.usage.completion_tokens} out · ${final.cost_usd:.6f}, settled when the stream "
        "ended · then one CompletionReceived[/]"
    )
    return 1
