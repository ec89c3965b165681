import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from llmbus.shared.errors import ReplyErrorType

# request ids become a NATS subject token (llmbus.completion.chunk.<request_id>), so no dots.
RequestId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-:]+$")
]

# Free-form JSON in a request (metadata, params, prompt variables) is stored and forwarded: it
# must come back out as the JSON it went in as. The store's serializer stops near 255 levels and
# Python's parser near 1000, so nesting is bounded far below both; integers beyond 64 bits and
# NaN/Infinity have no portable JSON form.
MAX_JSON_DEPTH = 32
MIN_JSON_INT = -(2**63)
MAX_JSON_INT = 2**64 - 1
# an error of one of these types means a value is larger than llmbus accepts: too_large
SIZE_ERRORS = frozenset({"string_too_long", "too_long", "too_large"})
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_json(value: Any) -> Any:
    """Refuse JSON that nests deeper than MAX_JSON_DEPTH, or has numbers with no portable form;
    iterative, so no input can exhaust the stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth > MAX_JSON_DEPTH:
                raise PydanticCustomError(
                    "json_too_deep",
                    "nested more than {limit} levels deep",
                    {"limit": MAX_JSON_DEPTH},
                )
            if isinstance(item, dict):
                if not all(isinstance(key, str) for key in item):
                    raise PydanticCustomError("json_key", "object keys must be strings")
                item = item.values()
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int) and not MIN_JSON_INT <= item <= MAX_JSON_INT:
            raise PydanticCustomError("json_number", "integers must fit in 64 bits")
        elif isinstance(item, float) and not math.isfinite(item):
            raise PydanticCustomError("json_number", "numbers must be finite (no NaN or Infinity)")
    return value


def printable(text: str) -> str:
    if CONTROL.search(text):
        raise PydanticCustomError("control_character", "must not contain control characters")
    return text


JsonObject = Annotated[dict[str, Any], AfterValidator(check_json)]


def known_zone(zone: str) -> str:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {zone!r}: use an IANA name such as Europe/Paris or UTC"
        ) from None
    return zone


TimezoneName = Annotated[str, StringConstraints(max_length=64), AfterValidator(known_zone)]
# an id a request is booked to: carried by every event the request causes, so it is bounded
# (as long as a conversation's user_id may be)
IdText = Annotated[str, StringConstraints(max_length=200), AfterValidator(printable)]


def too_large(exc: ValidationError) -> bool:
    """Whether a value in it is larger than llmbus accepts (then: error_type too_large)."""
    return any(err["type"] in SIZE_ERRORS for err in exc.errors(include_input=False))


def describe(exc: ValidationError, what: str = "invalid request") -> str:
    """A pydantic error in one line: where, and what is wrong. Built from locations and
    messages only: pydantic's own text would echo the input."""
    problems = [
        f"{'.'.join(str(part) for part in err['loc']) or 'request'}: {err['msg']}"
        for err in exc.errors(include_input=False, include_url=False)
    ]
    return f"{what}: " + "; ".join(problems[:10])


def utcnow() -> datetime:
    return datetime.now(UTC)


class Contract(BaseModel):
    """Base of every wire message: unknown fields are ignored so producers may add fields."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Identity(Contract):
    """Who a request is for; carried through to every event it causes."""

    user_id: str | None = None
    team_id: str | None = None
    project_id: str | None = None
    conversation_id: str | None = None
    workflow_id: str | None = Field(
        default=None, description="The run of an agent or workflow this request belongs to."
    )


class ErrorReply(Contract):
    """The reply to a request/reply subject when the request could not be served."""

    error_type: ReplyErrorType
    message: str
    occurred_at: datetime = Field(default_factory=utcnow)
