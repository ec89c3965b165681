"""One request on its way down the worker's line: intake -> claim -> admit -> call -> record ->
reply. Each step fills in what it found out and hands the job to the next."""

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from nats.aio.msg import Msg

from llmbus.services.completion.chunks import Chunks
from llmbus.services.completion.domain import CallClaim
from llmbus.services.completion.prompts import RenderedPrompt
from llmbus.services.completion.streaming import Streamed
from llmbus.shared.contracts import CompletionRequested
from llmbus.shared.contracts.completion import Attempt
from llmbus.shared.routing.router import Plan

# When a request was sent is not what it asks for: a re-send may differ there.
NOT_COMPARED = frozenset({"requested_at"})


@dataclass(eq=False)
class Job:
    msg: Msg
    reply_to: str | None
    request: CompletionRequested
    # the model being tried: the plan's first until admit picks one, then each fallback in turn
    model: str
    # the client whose credentials sent it (None: llmbus's own account, such as a chat turn)
    owner: str | None = None
    # set by claim: this worker's claim to call the model
    claim: CallClaim | None = None
    # set by admit: the messages sent to the model, and the prompt they came from
    messages: list[dict[str, str]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    prompt: RenderedPrompt | None = None
    # set by intake: the models that may answer (routing); by admit, as it goes through them
    plan: Plan | None = None
    base_params: dict[str, Any] = field(default_factory=dict)  # the configuration's, per model
    reservation_id: str | None = None  # None: the request_id; a fallback's reserves anew
    attempts: list[Attempt] = field(default_factory=list)
    # the reply, for copies of this request delivered while it runs (see claim.py)
    replied: "asyncio.Future[bytes] | None" = None
    # set by call: the model call under way (a cancel stops it), since when (perf_counter), and
    # a stream's chunks and what it delivered so far
    calling: "asyncio.Future[Any] | None" = None
    call_started: float = 0.0
    chunks: Chunks | None = None
    streamed: Streamed | None = None
    taken_at: float = field(default_factory=time.time)  # when this worker took it
    # set by a cancel (control.py): the request ends cancelled at the next step it takes
    cancel_requested: bool = False

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @cached_property
    def dumped(self) -> dict[str, Any]:
        return self.request.model_dump(mode="json", exclude_none=True)

    @property
    def client(self) -> str | None:
        """The client the request is for: its sender, or the client a chat turn came from. It
        hears the chunks and may ask the status or cancel."""
        return self.owner or self.request.sent_by

    @cached_property
    def digest(self) -> str:
        """What the request asks for, as a hash: two sends of one request_id compare by it."""
        asked = {k: v for k, v in self.dumped.items() if k not in NOT_COMPARED}
        if self.owner is not None:
            asked["owner"] = self.owner  # another client's request_id is never the same request
        canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def role(self) -> str | None:
        """The role the request was routed by: its own, or the default role."""
        return self.plan.role if self.plan is not None else self.request.role

    def ids(self) -> dict[str, Any]:
        """The request's ids, prompt version and routing, carried by every event it causes."""
        request = self.request
        return {
            "role": self.role,
            "attempts": list(self.attempts),
            "user_id": request.user_id,
            "team_id": request.team_id,
            "project_id": request.project_id,
            "conversation_id": request.conversation_id,
            "workflow_id": request.workflow_id,
            "prompt_key": request.prompt.key if request.prompt else None,
            "prompt_version": self.prompt.version if self.prompt else None,
        }

    def stored_request(self, metadata_only: bool) -> dict[str, Any]:
        """The request as the store keeps it: with its digest, and in metadata-only mode
        without its contents (the digest stands in for them when a re-send is compared)."""
        if not metadata_only:
            return self.dumped | self.provenance()
        exclude: Any = {"messages": True, "prompt": {"variables"}}
        stored = self.request.model_dump(mode="json", exclude_none=True, exclude=exclude)
        if self.request.messages is not None:
            stored["message_count"] = len(self.request.messages)
        return stored | self.provenance()

    def provenance(self) -> dict[str, Any]:
        return {"digest": self.digest} | ({"owner": self.owner} if self.owner else {})
