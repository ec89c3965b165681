"""Turns raw request bytes into a CompletionRequested, or a Rejected with a clear reason."""

import json
import re
from dataclasses import dataclass

from pydantic import ValidationError

from llmbus.shared.contracts import CompletionRequested, ErrorType

REQUEST_ID = re.compile(rb'"request_id"\s*:\s*"([A-Za-z0-9_\-:]{1,128})"')


@dataclass
class Rejected(Exception):
    error_type: ErrorType
    message: str
    request_id: str | None


def salvage_request_id(data: bytes) -> str | None:
    """Find a request_id even in a message that does not parse, so its sender hears back."""
    match = REQUEST_ID.search(data[:100_000])
    return match.group(1).decode() if match else None


def describe(exc: ValidationError) -> str:
    # built from locations and messages only: pydantic's str() would echo the input values
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or 'request'}: {err['msg']}"
        for err in exc.errors(include_input=False, include_url=False)
    ]
    return "schema-invalid request: " + "; ".join(problems[:10])


def parse_request(data: bytes, max_bytes: int) -> CompletionRequested:
    if len(data) > max_bytes:
        raise Rejected(
            ErrorType.invalid_request,
            f"request is {len(data)} bytes; the limit is {max_bytes}",
            salvage_request_id(data),
        )
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Rejected(
            ErrorType.malformed_json, f"request is not valid JSON: {exc}", salvage_request_id(data)
        ) from None
    if not isinstance(body, dict):
        raise Rejected(ErrorType.invalid_request, "request must be a JSON object", None)
    try:
        return CompletionRequested.model_validate(body)
    except ValidationError as exc:
        raise Rejected(ErrorType.invalid_request, describe(exc), salvage_request_id(data)) from None
