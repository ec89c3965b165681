"""The pure domain and intake rules: no NATS, no store, no model."""

import json

import pytest

from llmbus.services.completion.domain import AlreadyTerminalError, Completion
from llmbus.services.completion.parse import Rejected, parse_request, salvage_request_id
from llmbus.shared.contracts import ErrorType
from llmbus.shared.limits import Limits

LIMITS = Limits(max_request_bytes=10_000, max_payload=1_048_576)


def test_a_request_id_always_names_the_same_completion() -> None:
    assert Completion.create_id("r-1") == Completion.create_id("r-1")
    assert Completion.create_id("r-1") != Completion.create_id("r-2")
    assert Completion(request_id="r-1", request={}).id == Completion.create_id("r-1")


def test_a_completion_ends_once() -> None:
    completion = Completion(request_id="r-1", request={"request_id": "r-1"})
    assert not completion.is_terminal
    completion.receive({"request_id": "r-1", "content": "hi"}, {"usage_id": "r-1:1"})
    assert completion.status == "received" and completion.is_terminal
    with pytest.raises(AlreadyTerminalError):
        completion.fail({"request_id": "r-1"}, None)
    with pytest.raises(AlreadyTerminalError):
        completion.receive({"request_id": "r-1"}, {"usage_id": "r-1:1"})


def body(**fields: object) -> bytes:
    base = {"request_id": "r-1", "model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return json.dumps({**base, **fields}).encode()


def rejection(data: bytes) -> Rejected:
    with pytest.raises(Rejected) as caught:
        parse_request(data, LIMITS)
    return caught.value


def test_a_valid_request_parses() -> None:
    request = parse_request(body(user_id="ann", params={"max_tokens": 5}), LIMITS)
    assert request.request_id == "r-1" and request.user_id == "ann"
    assert request.params.max_tokens == 5


@pytest.mark.parametrize(
    ("data", "error_type", "says"),
    [
        (b'{"request_id": "r-1", "model": ', ErrorType.malformed_json, "not valid JSON"),
        (b"[1, 2]", ErrorType.invalid_request, "JSON object"),
        (body(messages=None), ErrorType.invalid_request, "'messages' or 'prompt'"),
        (body(role="coder"), ErrorType.invalid_request, "not both"),
        (
            body(messages=[{"role": "user", "content": ""}]),
            ErrorType.invalid_request,
            "messages.0.content",
        ),
        (
            body(messages=[{"role": "wizard", "content": "x"}]),
            ErrorType.invalid_request,
            "messages.0.role",
        ),
        (body(request_id="has.dots"), ErrorType.invalid_request, "request_id"),
        (body(params={"temperature": 9}), ErrorType.invalid_request, "params.temperature"),
    ],
)
def test_bad_requests_are_rejected_with_a_reason(
    data: bytes, error_type: ErrorType, says: str
) -> None:
    rejected = rejection(data)
    assert rejected.error_type == error_type
    assert says in rejected.message


def test_an_oversized_request_is_rejected_before_parsing() -> None:
    rejected = rejection(body(metadata={"blob": "x" * 20_000}))
    assert rejected.error_type == ErrorType.too_large
    assert "limit is 10000" in rejected.message and rejected.request_id == "r-1"


def test_rejections_never_echo_message_contents() -> None:
    secret = "my card number is 4111"
    rejected = rejection(body(messages=[{"role": "wizard", "content": secret}]))
    assert secret not in rejected.message


def test_the_request_id_is_found_even_in_broken_json() -> None:
    assert salvage_request_id(b'{"model": "m", "request_id": "abc-1", "messages": [') == "abc-1"
    assert salvage_request_id(b"nothing here") is None
