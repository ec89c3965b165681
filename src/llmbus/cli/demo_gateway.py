"""`make demo`, part 8: the same pipeline through the OpenAI-compatible gateway, with a key."""

from typing import Any

import aiohttp
from rich.console import Console

from llmbus.client import Client

QUESTION = "In one sentence, what does an OpenAI-compatible gateway give an application?"
USER, TEAM = "frank", "team-a"


async def show_gateway(console: Console, client: Client, url: str, model: str) -> int:
    """A key for a user, a call with it as the openai client would make it, and the refusal of
    a call without one; 1: the request it completed."""
    console.rule(f"8 · the OpenAI-compatible gateway ({url}/v1), with an API key")
    created = await client.keys.create(user_id=USER, team_id=TEAM, name="demo")
    console.print(f"[dim]llmbus keys create --user {USER} --team {TEAM} → key "
                  f"{created.info.prefix}… (shown once; stored as its SHA-256)[/]")  # fmt: skip
    body = {"model": model, "messages": [{"role": "user", "content": QUESTION}]}
    async with aiohttp.ClientSession() as session:
        reply = await post(session, f"{url}/v1/chat/completions", body, created.key)
        refused = await post(session, f"{url}/v1/chat/completions", body, None)
    answer = reply["body"]["choices"][0]["message"]["content"]
    usage = reply["body"]["usage"]
    console.print(f"[dim]> {QUESTION}[/]")
    console.print(answer, markup=False, highlight=False)
    console.print(
        f"[dim]POST /v1/chat/completions → {reply['status']}, {usage['prompt_tokens']} in / "
        f"{usage['completion_tokens']} out, ${reply['cost']}, booked to {USER} of {TEAM} by the "
        f"key · without a key → {refused['status']} {refused['body']['error']['code']}[/]"
    )
    return 1


async def post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], key: str | None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with session.post(url, json=body, headers=headers) as response:
        return {"status": response.status, "body": await response.json(),
                "cost": response.headers.get("X-Llmbus-Cost-Usd")}  # fmt: skip
