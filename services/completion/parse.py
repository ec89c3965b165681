"""Turns raw request bytes into a CompletionRequested, or a Rejected with a clear reason.

Everything a request will be stored or published as is checked here, before any model call:
its size, its nesting, its types, and what it carries into every event made from it.
"""

import json
import re
from typing import Any

from pydantic import ValidationError
from pydantic_core import from_json

from llmbus.shared.contracts import CompletionRequested, ErrorType
from llmbus.shared.contracts.base import MAX_JSON_DEPTH, describe, too_large
from llmbus.shared.errors import LlmbusError
from llmbus.shared.limits import Limits, encoded_size

REQUEST_ID = re.compile(r"[A-Za-z0-9_\-:]{1,128}")
# a message that does not parse is read member by member for its request_id, this far at most
SALVAGE_CHARS = 100_000
WHITESPACE = re.compile(r"[ \t\n\r]*")
STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*+"')
SCALAR = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")
# inside a nested value only strings and brackets decide where it ends
NESTING = re.compile(r'"(?:[^"\\]|\\.)*+"|[\[\]{}]')
CLOSER = {"[": "]", "{": "}"}


class Rejected(LlmbusError):
    """A message that cannot be served as a request; the sender hears why."""

    error_type: ErrorType  # a completion's error type, not an ErrorReply's

    def __init__(self, error_type: ErrorType, message: str, request_id: str | None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.request_id = request_id


def salvage_request_id(data: bytes) -> str | None:
    """The request_id of a message that cannot be served, so that its sender hears back. Only
    a top-level member counts: an id nested in some object is another request's, not this one's.
    """
    try:
        body = from_json(data)
    except ValueError:  # cut short, too deep, or not JSON: read what comes before the id
        found = top_level_string(data[:SALVAGE_CHARS].decode(errors="replace"), "request_id")
    else:
        found = body.get("request_id") if isinstance(body, dict) else None
    return found if isinstance(found, str) and REQUEST_ID.fullmatch(found) else None


def top_level_string(text: str, key: str) -> str | None:
    """The string value of `key` among the members of the JSON object `text` starts with, read
    member by member up to that one. What follows it may be cut short or nest too deep; what
    comes before must be well-formed strings and brackets, so a nested key never matches."""
    pos = skip_space(text, 0)
    if not text.startswith("{", pos):
        return None
    pos += 1
    while True:
        name = STRING.match(text, skip_space(text, pos))
        if name is None:
            return None
        pos = skip_space(text, name.end())
        if not text.startswith(":", pos):
            return None
        start = skip_space(text, pos + 1)
        end = value_end(text, start)
        if end is None:
            return None
        if json.loads(name.group()) == key:
            value = json.loads(text[start:end]) if text.startswith('"', start) else None
            return value if isinstance(value, str) else None
        pos = skip_space(text, end)
        if not text.startswith(",", pos):
            return None
        pos += 1


def skip_space(text: str, pos: int) -> int:
    space = WHITESPACE.match(text, pos)
    assert space is not None  # it matches the empty string too
    return space.end()


def value_end(text: str, start: int) -> int | None:
    """Where the JSON value at `start` ends; None if it does not end well-formed."""
    if text.startswith('"', start):
        string = STRING.match(text, start)
        return string.end() if string else None
    if text[start : start + 1] not in CLOSER:
        scalar = SCALAR.match(text, start)
        return scalar.end() if scalar else None
    open_brackets: list[str] = []
    for token in NESTING.finditer(text, start):
        mark = token.group()
        if mark in CLOSER:
            open_brackets.append(CLOSER[mark])
        elif mark in "]}":
            if not open_brackets or open_brackets.pop() != mark:
                return None
            if not open_brackets:
                return token.end()
    return None


def parse_request(data: bytes, limits: Limits) -> CompletionRequested:
    if len(data) > limits.request_bytes:
        raise Rejected(
            ErrorType.too_large,
            f"request is {len(data)} bytes; {limits.request_limit_text()}",
            salvage_request_id(data),
        )
    try:
        request = CompletionRequested.model_validate_json(data)
    except ValidationError as exc:
        raise rejection(exc, data) from None
    check_carried(request, limits)
    return request


def rejection(exc: ValidationError, data: bytes) -> Rejected:
    errors = exc.errors(include_input=False, include_url=False)
    if errors[0]["type"] == "json_invalid":
        return Rejected(*unreadable(str(errors[0]["ctx"]["error"])), salvage_request_id(data))
    if errors[0]["type"] == "model_type":
        return Rejected(ErrorType.invalid_request, "request must be a JSON object", None)
    error_type = ErrorType.too_large if too_large(exc) else ErrorType.invalid_request
    return Rejected(error_type, describe(exc, "schema-invalid request"), salvage_request_id(data))


def unreadable(detail: str) -> tuple[ErrorType, str]:
    """Why JSON did not parse: past the parser's limits (valid JSON, refused), or malformed."""
    # pydantic's parser stops at ~200 levels of nesting and at numbers of ~4300 digits
    if detail.startswith("recursion limit exceeded"):
        limit = f"JSON in a request may nest at most {MAX_JSON_DEPTH} levels"
        return ErrorType.invalid_request, f"request is nested too deeply ({detail}); {limit}"
    if detail.startswith("number out of range"):
        limit = "integers must fit in 64 bits"
        return ErrorType.invalid_request, f"request has a number too long ({detail}); {limit}"
    return ErrorType.malformed_json, f"request is not valid JSON: {detail}"


def check_carried(request: CompletionRequested, limits: Limits) -> None:
    """Every event made from a request copies these fields: they must leave room in each."""
    carried: dict[str, Any] = {
        "request_id": request.request_id, "user_id": request.user_id,
        "team_id": request.team_id, "project_id": request.project_id,
        "conversation_id": request.conversation_id, "model": request.model,
        "role": request.role, "tags": request.tags,
        "prompt_key": request.prompt.key if request.prompt else None,
    }  # fmt: skip
    size = encoded_size(carried)
    if size > limits.carried_bytes:
        raise Rejected(
            ErrorType.too_large,
            f"the request's ids, model, role, tags and prompt key encode to {size} bytes; every "
            f"event made from a request copies them and must fit the NATS server's max_payload "
            f"of {limits.max_payload} bytes, so they may take at most {limits.carried_bytes}",
            request.request_id,
        )
