"""/ui/chat: a user's conversations (client.conversations), a conversation's turns, and a
message sent to it. With script, the reply streams in (/ui/chat/stream, as OpenAI chunks) and
Stop closes the stream, which cancels the turn; a failed or stopped turn can be sent again
(Retry: the same message, as a new turn). Without script, a send waits for the reply."""

import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from llmbus.client import new_request_id
from llmbus.services.gateway.console.forms import FormError, reason
from llmbus.services.gateway.console.parts import client, gateway
from llmbus.services.gateway.console.render import PREFIX, page
from llmbus.services.gateway.console.streams import CostedChunks, Turn, TurnCompletions
from llmbus.services.gateway.domain.openai import model_list
from llmbus.services.gateway.handlers import CONVERSATION_HEADER, REQUEST_ID_HEADER
from llmbus.services.gateway.streaming import relay_stream
from llmbus.shared.contracts.conversation import ConversationView
from llmbus.shared.errors import RequestError

USERS = 100  # suggested in the user field


def chat_url(user: str, conversation_id: str | None = None) -> str:
    query = {"user": user} | ({"c": conversation_id} if conversation_id else {})
    return f"{PREFIX}/chat?{urlencode(query)}"


def models(request: web.Request) -> list[str]:
    """What a turn may name: models (a conversation's turns name no role)."""
    settings = gateway(request).settings
    return [m["id"] for m in model_list(settings, 0)["data"] if m["id"] not in settings.roles]


async def chat_page(request: web.Request) -> web.StreamResponse:
    user = request.query.get("user", "").strip()
    chosen = request.query.get("c", "").strip() or None
    conversations = conversation = None
    if user:
        conversations = (await client(request).conversations.list(user, limit=50)).items
    if user and chosen:
        conversation = await client(request).conversations.get(user, chosen)
    context: dict[str, Any] = {
        "user": user, "conversations": conversations, "conversation": conversation,
        "models": models(request), "retry": retries(conversation),
    }  # fmt: skip
    if request.query.get("partial"):  # the conversation, redrawn once a streamed turn is in
        return page(request, "_conversation.html", **context)
    return page(request, "chat.html", users=await users(request), **context)


async def users(request: web.Request) -> list[str]:
    """Who has made requests, the busiest first: the user field's suggestions."""
    known = await client(request).usage.query(
        by=["user"], metrics=["requests"], order_by="requests", limit=USERS
    )
    return [str(row["user"]) for row in known.rows if row.get("user")]


def retries(conversation: ConversationView | None) -> dict[str, Any]:
    """The failed turns, by request id, with the message to send again."""
    if conversation is None:
        return {}
    sent = {m.request_id: m.content for m in conversation.messages if m.role == "user"}
    return {f.request_id: {"failure": f, "content": sent.get(f.request_id)}
            for f in conversation.failures}  # fmt: skip


async def new_conversation(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    user, title = str(form.get("user", "")).strip(), str(form.get("title", "")).strip()
    model = str(form.get("model", "")).strip() or None
    if not user:
        raise FormError("name the user the conversation is for")
    created = await client(request).conversations.create(
        user, title or "New conversation", model=model
    )
    raise web.HTTPSeeOther(chat_url(user, created.conversation_id))


async def turn_of(request: web.Request) -> Turn:
    form = await request.post()
    fields = {name: str(form.get(name, "")).strip() for name in ("user", "c", "content", "model")}
    if not (fields["user"] and fields["c"]):
        raise FormError("choose a user and a conversation first")
    if not fields["content"]:
        raise FormError("the message is empty")
    return Turn(fields["user"], fields["c"], fields["content"], fields["model"] or None)


async def send(request: web.Request) -> web.StreamResponse:
    """Without script: the turn, waited for; then back to the conversation."""
    turn = await turn_of(request)
    try:
        await client(request).chat(
            turn.user_id, turn.conversation_id, turn.content, model=turn.model
        )
    except RequestError as exc:
        raise FormError(reason(exc)) from None
    raise web.HTTPSeeOther(chat_url(turn.user_id, turn.conversation_id))


async def stream(request: web.Request) -> web.StreamResponse:
    """The turn's reply as OpenAI chunks; the final usage carries its cost."""
    turn, request_id, door = await turn_of(request), new_request_id(), gateway(request)
    completions = TurnCompletions(door.completions, turn)
    chunks = CostedChunks(request_id, turn.model or "", int(time.time()), include_usage=True)
    headers = {REQUEST_ID_HEADER: request_id, CONVERSATION_HEADER: turn.conversation_id}
    return await relay_stream(request, completions, turn.request(request_id), chunks, headers,
                              door.rate_limit_pause_s)  # fmt: skip


def routes(router: web.UrlDispatcher) -> None:
    router.add_get("/chat", chat_page, name="chat")
    router.add_post("/chat/new", new_conversation, name="chat-new")
    router.add_post("/chat/send", send, name="chat-send")
    router.add_post("/chat/stream", stream, name="chat-stream")
