"""The gateway's pure parts: an OpenAI body read as a CompletionRequested booked to the key, the
answers written as OpenAI's objects, llmbus's errors as OpenAI's, and the key cache."""

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from llmbus.services.gateway.application.keys import KeyCheck
from llmbus.services.gateway.domain import errors
from llmbus.services.gateway.domain.openai import (
    BUILTIN_MODELS,
    BodyError,
    ChunkObjects,
    Extras,
    completion_object,
    completion_request,
    model_list,
    read_body,
)
from llmbus.shared.contracts.completion import (
    CompletionFailed,
    CompletionReceived,
    ErrorType,
    TokenUsage,
)
from llmbus.shared.contracts.keys import KeyInfo, key_hash
from llmbus.shared.contracts.requests import CompletionChunk
from llmbus.shared.errors import ReplyErrorType, RequestError, UnauthorizedError
from llmbus.shared.settings import Settings

KEY = KeyInfo(
    key_id="k1", prefix="sk-llmbus-k1", user_id="ann", team_id="red", project_id="apollo",
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
)  # fmt: skip


def body(**fields: object) -> bytes:
    return json.dumps({"model": "fake-gpt", "messages": [{"role": "user", "content": "Hi"}]}
                      | fields).encode()  # fmt: skip


def test_a_body_is_booked_to_the_key_whatever_it_says_about_the_user() -> None:
    sent = body(user="mallory", user_id="mallory", team_id="blue", temperature=1, stop="END",
                max_completion_tokens=50, seed=7)  # fmt: skip
    request = completion_request(read_body(sent), KEY, Extras("conv-1", "run-9", ("a", "b")),
                                 roles=(), request_id="r1")  # fmt: skip
    assert (request.user_id, request.team_id, request.project_id) == ("ann", "red", "apollo")
    assert request.metadata == {"key_id": "k1", "openai_user": "mallory"}
    assert (request.conversation_id, request.workflow_id) == ("conv-1", "run-9")
    assert request.tags == ["a", "b"]
    params = request.params
    assert (params.temperature, params.stop, params.max_tokens, params.seed) == (
        1.0,
        ["END"],
        50,
        7,
    )
    assert request.model == "fake-gpt" and request.role is None


def test_a_model_that_names_a_role_asks_for_the_role() -> None:
    request = completion_request(read_body(body(model="coder")), KEY, Extras(), {"coder"}, "r2")
    assert (request.model, request.role) == (None, "coder")


def test_text_parts_are_joined_and_a_developer_message_is_a_system_one() -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": t} for t in ("Hel", "lo")]},
    ]  # fmt: skip
    request = completion_request(read_body(body(messages=messages)), KEY, Extras(), (), "r3")
    assert [(m.role, m.content) for m in request.messages or []] == [
        ("system", "Be brief."), ("user", "Hello"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
         "messages.0"),
        ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "c"}]}, "messages.0"),
        ({"temperature": 3}, "temperature"),
        ({"messages": []}, "messages"),
    ],
)  # fmt: skip
def test_what_llmbus_cannot_serve_is_refused_naming_the_field(
    fields: dict[str, object], param: str
) -> None:
    with pytest.raises(BodyError) as refused:
        completion_request(read_body(body(**fields)), KEY, Extras(), (), "r4")
    assert refused.value.param == param


def test_a_malformed_body_is_described_without_echoing_it() -> None:
    with pytest.raises(BodyError) as refused:
        read_body(b'{"model": "secret-looking-value", "messages": "sk-not-a-list"}')
    assert "messages" in str(refused.value) and "sk-not-a-list" not in str(refused.value)
    with pytest.raises(BodyError, match="Invalid JSON"):
        read_body(b"{not json")


def test_a_completion_reads_as_openai_s_with_its_cached_tokens() -> None:
    usage = TokenUsage(prompt_tokens=10, completion_tokens=5, cached_tokens=4, total_tokens=15)
    received = CompletionReceived(request_id="r5", model="fake-gpt", provider="openai",
                                  content="Hello", finish_reason="stop", usage=usage,
                                  cost_usd=0.00002, latency_ms=3.0)  # fmt: skip
    answer = completion_object(received, 1700000000)
    assert answer["id"] == "chatcmpl-r5" and answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "Hello",
                                               "refusal": None}  # fmt: skip
    assert answer["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                               "prompt_tokens_details": {"cached_tokens": 4}}  # fmt: skip


def test_a_stream_opens_with_the_role_and_closes_with_the_finish_and_the_usage() -> None:
    objects = ChunkObjects("r6", "coder", 1700000000, include_usage=True)
    usage = TokenUsage(prompt_tokens=3, completion_tokens=2)
    final = CompletionChunk(request_id="r6", index=2, final=True, finish_reason="length",
                            model="fake-gpt", usage=usage)  # fmt: skip
    chunks = [objects.opening(), objects.content("Hi"), *objects.closing(final)]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hi"} and chunks[1]["usage"] is None
    assert chunks[2]["choices"][0]["finish_reason"] == "length"
    assert chunks[2]["model"] == "fake-gpt" and chunks[1]["model"] == "coder"
    assert chunks[3]["choices"] == [] and chunks[3]["usage"]["total_tokens"] == 5


def test_the_model_list_has_the_catalog_and_the_roles() -> None:
    settings = Settings.model_validate({
        "models": [{"name": "fast", "litellm_model": "openai/gpt-4o-mini"}],
        "roles": {"coder": {"model": "fast"}},
    })  # fmt: skip
    listed = {m["id"]: m["owned_by"] for m in model_list(settings, 0)["data"]}
    assert listed == {"fast": "openai", "llmbus-sim/small": "llmbus-sim",
                      "llmbus-sim/large": "llmbus-sim", "coder": "llmbus-role"}  # fmt: skip


def test_the_built_in_models_are_the_catalog_s() -> None:
    from llmbus.shared.catalog import SIM_MODELS

    assert set(BUILTIN_MODELS) == set(SIM_MODELS)


def test_every_error_type_has_a_status() -> None:
    assert set(errors.FAILURE_STATUS) == set(ErrorType)
    assert set(errors.REPLY_STATUS) == set(ReplyErrorType)


@pytest.mark.parametrize(
    ("error_type", "status", "retry_after"),
    [
        (ErrorType.rate_limited, 429, 30),
        (ErrorType.budget_exceeded, 402, None),
        (ErrorType.unknown_model, 404, None),
        (ErrorType.authentication, 502, None),
        (ErrorType.timeout, 504, 1),
    ],
)
def test_a_failure_gets_its_status_and_openai_s_error_body(
    error_type: ErrorType, status: int, retry_after: int | None
) -> None:
    retryable = error_type in (ErrorType.rate_limited, ErrorType.timeout)
    failed = CompletionFailed(request_id="r7", error_type=error_type, message="said",
                              retryable=retryable)  # fmt: skip
    failure = errors.failure(failed, rate_limit_pause_s=30)
    assert (failure.status, failure.retry_after_s) == (status, retry_after)
    assert failure.body() == {"error": {"message": "said", "type": failure.kind, "param": None,
                                        "code": error_type.value}}  # fmt: skip


def test_a_reply_error_from_the_sdk_keeps_its_type() -> None:
    failure = errors.error(RequestError("unauthorized", "invalid API key"))
    assert (failure.status, failure.code, failure.kind) == (401, "unauthorized",
                                                            "authentication_error")  # fmt: skip


class Verifier:
    def __init__(self, info: KeyInfo | None) -> None:
        self.info = info
        self.asked = 0

    async def __call__(self, digest: str) -> KeyInfo:
        self.asked += 1
        await asyncio.sleep(0)
        if self.info is None:
            raise UnauthorizedError("no")
        return self.info


async def test_a_verified_key_is_asked_about_once_while_cached() -> None:
    verify, clock = Verifier(KEY), [0.0]
    keys = KeyCheck(verify, ttl_s=30, clock=lambda: clock[0])
    found = await asyncio.gather(*(keys.identify("Bearer sk-llmbus-k1-x") for _ in range(5)))
    assert found == [KEY] * 5 and verify.asked == 1
    clock[0] = 31.0
    await keys.identify("Bearer sk-llmbus-k1-x")
    assert verify.asked == 2


async def test_a_revoked_key_is_refused_at_once_and_a_missing_one_without_asking() -> None:
    verify = Verifier(KEY)
    keys = KeyCheck(verify, ttl_s=30)
    await keys.identify("Bearer sk-llmbus-k1-x")
    keys.forget(key_hash("sk-llmbus-k1-x"))
    with pytest.raises(UnauthorizedError):
        await keys.identify("Bearer sk-llmbus-k1-x")
    for header in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(UnauthorizedError, match="no API key"):
            await keys.identify(header)
    assert verify.asked == 1


async def test_an_expired_key_is_refused_though_cached() -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    expiring = KEY.model_copy(update={"expires_at": now[0] + timedelta(seconds=5)})
    keys = KeyCheck(Verifier(expiring), ttl_s=30, now=lambda: now[0])
    await keys.identify("Bearer k")
    now[0] += timedelta(seconds=6)
    with pytest.raises(UnauthorizedError):
        await keys.identify("Bearer k")


async def test_an_unknown_key_is_refused_and_not_asked_about_again_while_cached() -> None:
    verify = Verifier(None)
    keys = KeyCheck(verify, ttl_s=30)
    for _ in range(3):
        with pytest.raises(UnauthorizedError, match="invalid API key"):
            await keys.identify("Bearer nope")
    assert verify.asked == 1
