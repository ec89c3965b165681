"""Prompt references in requests: resolved, cached per worker, rendered into messages.

Domain prompts ship in code and resolve here. Managed prompts live in the conversation service:
asked for over llmbus.prompt.resolve, kept until a change to that key is announced on
llmbus.prompt.events.<key>.
"""

import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import get_args

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import ValidationError

from llmbus.shared import subjects
from llmbus.shared.contracts import ErrorReply, ErrorType, PromptRef
from llmbus.shared.contracts.prompt import Label, ResolvedPrompt, ResolvePrompt
from llmbus.shared.errors import LlmbusError
from llmbus.shared.prompts.library import DomainPrompt, domain_prompt
from llmbus.shared.prompts.template import (
    RenderError,
    Template,
    TemplateError,
    Variable,
    as_template,
    render,
)

log = logging.getLogger("llmbus.completion")

PROMPT_EVENTS_PREFIX = subjects.PROMPT_EVENTS.removesuffix("{key}")
LABELS: tuple[str, ...] = get_args(Label)  # a domain prompt's one version carries them all
RESOLVE_TIMEOUT_S = 5.0
# Change events are core NATS: one sent while this worker was reconnecting never arrives. Entries
# are refreshed after this long anyway, so a missed event leaves a stale prompt for minutes at most.
MAX_AGE_S = 300.0

# how the conversation service's ErrorReply types read as a completion's failure
REPLY_ERRORS = {
    "not_found": ErrorType.prompt_not_found,
    "prompt_inactive": ErrorType.prompt_inactive,
    "invalid_variables": ErrorType.invalid_variables,
    "invalid_request": ErrorType.invalid_request,
}


class PromptFailed(LlmbusError):
    """The request's prompt cannot be turned into messages; no model is called."""

    error_type: ErrorType  # a completion's error type, not an ErrorReply's

    def __init__(self, error_type: ErrorType, message: str, version: int | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.version = version

    @property
    def retryable(self) -> bool:
        return self.error_type == ErrorType.prompt_unavailable

    @property
    def bad_request(self) -> bool:
        """The request itself is at fault (kept as a dead letter), not llmbus."""
        return self.error_type not in (ErrorType.prompt_unavailable, ErrorType.internal)


@dataclass(frozen=True)
class ResolvedTemplate:
    key: str
    version: int
    template: Template
    variables: tuple[Variable, ...]
    active: bool = True


@dataclass(frozen=True)
class RenderedPrompt:
    key: str
    version: int
    messages: list[dict[str, str]]


class PromptResolver:
    def __init__(
        self,
        nc: NatsClient,
        timeout_s: float = RESOLVE_TIMEOUT_S,
        max_age_s: float = MAX_AGE_S,
        *,
        redact: bool = False,
    ) -> None:
        self.nc = nc
        # metadata-only privacy: failures name no variable the request sent, only declared ones
        self.redact = redact
        self.timeout_s = timeout_s
        self.max_age_s = max_age_s
        # key -> (label, version) asked for -> (when fetched, what it resolved to)
        self.cache: dict[str, dict[tuple[str | None, int | None], tuple[float, ResolvedTemplate]]]
        self.cache = {}
        # bumped by each change event, so an answer that raced the event is not cached
        self.changes: Counter[str] = Counter()
        self.sub: Subscription | None = None

    async def watch(self) -> None:
        self.sub = await self.nc.subscribe(subjects.PROMPT_EVENTS_ALL, cb=self._on_change)

    async def close(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()

    def forget(self, key: str) -> None:
        self.changes[key] += 1
        if self.cache.pop(key, None) is not None:
            log.debug("prompt %r changed; its cached versions dropped", key)

    async def _on_change(self, msg: Msg) -> None:
        self.forget(msg.subject.removeprefix(PROMPT_EVENTS_PREFIX))

    async def render(self, ref: PromptRef) -> RenderedPrompt:
        prompt = await self.resolve(ref)
        where = f"prompt {ref.key!r} version {prompt.version}"
        if not prompt.active:
            raise PromptFailed(
                ErrorType.prompt_inactive, f"prompt {ref.key!r} is deactivated", prompt.version
            )
        try:
            messages = render(prompt.template, prompt.variables, ref.variables)
        except RenderError as exc:
            detail = exc.redacted if self.redact else str(exc)
            raise PromptFailed(
                ErrorType.invalid_variables, f"{where}: {detail}", prompt.version
            ) from None
        except TemplateError as exc:
            raise PromptFailed(
                ErrorType.internal, f"{where} cannot render: {exc}", prompt.version
            ) from None
        return RenderedPrompt(ref.key, prompt.version, messages)

    async def resolve(self, ref: PromptRef) -> ResolvedTemplate:
        if ref.label is not None and ref.version is not None:
            raise PromptFailed(
                ErrorType.invalid_request,
                f"prompt {ref.key!r}: give a label or a version, not both",
            )
        domain = domain_prompt(ref.key)
        if domain is not None:
            return resolve_domain(domain, ref)
        asked = (ref.label, ref.version)
        cached = self.cache.get(ref.key, {}).get(asked)
        if cached is not None and time.monotonic() - cached[0] < self.max_age_s:
            return cached[1]
        changes = self.changes[ref.key]
        resolved = await self._ask(ref)
        if self.changes[ref.key] == changes:
            self.cache.setdefault(ref.key, {})[asked] = (time.monotonic(), resolved)
        return resolved

    async def _ask(self, ref: PromptRef) -> ResolvedTemplate:
        query = ResolvePrompt(key=ref.key, label=ref.label, version=ref.version)
        try:
            reply = await self.nc.request(
                subjects.PROMPT_RESOLVE, query.model_dump_json().encode(), timeout=self.timeout_s
            )
        except (NoRespondersError, NatsTimeoutError, TimeoutError):
            raise PromptFailed(
                ErrorType.prompt_unavailable,
                f"cannot resolve prompt {ref.key!r}: no answer on {subjects.PROMPT_RESOLVE} within "
                f"{self.timeout_s:g}s; is the conversation service running?",
            ) from None
        return parse_resolved(ref.key, reply.data)


def resolve_domain(prompt: DomainPrompt, ref: PromptRef) -> ResolvedTemplate:
    if ref.label is not None and ref.label not in LABELS:
        raise PromptFailed(
            ErrorType.invalid_request,
            f"prompt {ref.key!r} has no label {ref.label!r}; labels: {', '.join(LABELS)}",
        )
    if ref.version is not None and ref.version != prompt.version:
        raise PromptFailed(  # as for a managed prompt: an unknown version is a bad request
            ErrorType.invalid_request,
            f"domain prompt {ref.key!r} has no version {ref.version}; it has version "
            f"{prompt.version} only",
        )
    return ResolvedTemplate(prompt.key, prompt.version, prompt.template, prompt.variables)


def parse_resolved(key: str, data: bytes) -> ResolvedTemplate:
    """The ResolvedPrompt answered on llmbus.prompt.resolve, or its ErrorReply as a failure."""
    try:
        resolved = ResolvedPrompt.model_validate_json(data)
    except ValidationError:
        try:
            error = ErrorReply.model_validate_json(data)
        except ValidationError:
            raise PromptFailed(
                ErrorType.prompt_unavailable,
                f"cannot resolve prompt {key!r}: {subjects.PROMPT_RESOLVE} answered with neither a "
                "ResolvedPrompt nor an ErrorReply",
            ) from None
        error_type = REPLY_ERRORS.get(error.error_type)
        if error_type is None:
            raise PromptFailed(
                ErrorType.prompt_unavailable,
                f"cannot resolve prompt {key!r}: {subjects.PROMPT_RESOLVE} failed: {error.message}",
            ) from None
        raise PromptFailed(error_type, error.message) from None
    return ResolvedTemplate(
        key=resolved.key,
        version=resolved.version,
        template=as_template(resolved.template),
        variables=tuple(resolved.variables),
        active=resolved.active,
    )
