"""The checks a conversation command's input passes before any event is made."""

import json
import math
from collections.abc import Mapping
from typing import Any, Literal

from llmbus.services.conversation.domain.errors import ConversationError

Role = Literal["user", "assistant", "system"]
ROLES: tuple[Role, ...] = ("user", "assistant", "system")
MAX_TITLE = 200
MAX_USER_ID = 200
# what a turn's MessageAdded stores of the request it starts; the messages are read back
REQUEST_FIELDS = ("model", "params", "dropped")
# and, for a turn whose reply streams only, stream: true; for a turn a client sent, sent_by
STREAMED = "stream"
SENT_BY = "sent_by"


def check_user_id(user_id: str) -> None:
    if not isinstance(user_id, str) or not user_id.strip():
        raise ConversationError("user_id must not be empty")
    if len(user_id) > MAX_USER_ID:
        raise ConversationError(f"user_id must be at most {MAX_USER_ID} characters")


def check_title(title: str) -> str:
    stripped = title.strip() if isinstance(title, str) else ""
    if not 1 <= len(stripped) <= MAX_TITLE:
        raise ConversationError(f"title must be 1-{MAX_TITLE} characters, got {len(stripped)}")
    return stripped


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ConversationError(f"metadata must be a JSON object, got {type(metadata).__name__}")
    if not all(isinstance(key, str) for key in metadata):
        raise ConversationError("metadata keys must be strings")
    try:
        # a round trip through JSON stores exactly what a reader will get back
        normal: dict[str, Any] = json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ConversationError(f"metadata must be JSON-serialisable: {e}") from None
    return normal


def check_model(model: str | None) -> str | None:
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ConversationError("model must be a non-empty model name")
    return model


def check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise ConversationError(f"role must be one of {', '.join(ROLES)}, got {role!r}")


def check_content(content: str) -> None:
    if not isinstance(content, str) or not content.strip():
        raise ConversationError("message content must not be empty")


def check_request_id(request_id: str) -> None:
    if not isinstance(request_id, str) or not request_id.strip():
        raise ConversationError("request_id must not be empty")


def check_request(request: Mapping[str, Any], droppable: int) -> dict[str, Any]:
    """A turn's request: its model, its params and how many of the oldest turns it leaves out,
    at most `droppable`. Nothing else: in particular not the messages, which are derived."""
    if not isinstance(request, Mapping) or set(request) - {STREAMED, SENT_BY} != set(
        REQUEST_FIELDS
    ):
        raise ConversationError(
            f"request must hold exactly {', '.join(REQUEST_FIELDS)} (and {STREAMED}: true, and "
            f"{SENT_BY} if a client sent it)"
        )
    if request.get(STREAMED, True) is not True:
        raise ConversationError(f"request {STREAMED} is true or left out")
    if SENT_BY in request and not _a_name(request[SENT_BY]):
        raise ConversationError(f"request {SENT_BY} is a client's name")
    model, params, dropped = (request[field] for field in REQUEST_FIELDS)
    if not isinstance(model, str) or not model.strip():
        raise ConversationError("request model must be a non-empty model name")
    if not isinstance(params, Mapping):
        raise ConversationError("request params must be a JSON object")
    check_count("dropped", dropped)
    if dropped > droppable:
        raise ConversationError(
            f"request drops {dropped} turns, but the history has only {droppable} to drop"
        )
    try:
        normal: dict[str, Any] = json.loads(json.dumps(dict(request), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ConversationError(f"request must be JSON-serialisable: {e}") from None
    return normal


def _a_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConversationError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def check_cost(cost_usd: float) -> float:
    try:
        cost = float(cost_usd)
    except (TypeError, ValueError):
        raise ConversationError(f"cost_usd must be a number, got {cost_usd!r}") from None
    if not (math.isfinite(cost) and cost >= 0):
        raise ConversationError(f"cost_usd must be a finite, non-negative number, got {cost_usd!r}")
    return cost
