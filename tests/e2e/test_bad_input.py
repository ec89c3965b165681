"""Input built to break the completion worker, sent from a raw NATS client.

Each bad message is refused at its first delivery: one CompletionFailed (when it has a top-level
request_id) and one dead letter, no model call, no traceback in the worker's log, and the
request behind it still completes. The worker runs as its own process, so its log is its stderr.
"""

import asyncio
import contextlib
import json
import logging
import subprocess
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from llmbus.services.completion.parse import Rejected, parse_request, salvage_request_id
from llmbus.services.conversation.service import serve as serve_conversation
from llmbus.shared import subjects
from llmbus.shared.bus import answers
from llmbus.shared.contracts import (
    CompletionFailed,
    CompletionRequested,
    ErrorType,
    UsageRecorded,
)
from llmbus.shared.limits import Limits, encoded_size
from llmbus.shared.settings import Settings
from llmbus.testing.fake_openai import FakeProvider
from support import (
    EventLog,
    completion_service_ready,
    connected,
    pipeline,
    running,
    spawn_service,
    stop_process,
    wait_for,
    watching_events,
)

MODEL = "fake-gpt"
MESSAGES = [{"role": "user", "content": "hi"}]
DEAD_LETTERS = subjects.DEAD_LETTER.format(service="completion")
EMOJI = "\U0001f600"  # 4 bytes in UTF-8, 12 once JSON escapes it


def request(request_id: str, **fields: Any) -> bytes:
    body = {"request_id": request_id, "model": MODEL, "messages": MESSAGES} | fields
    return json.dumps(body, ensure_ascii=False).encode()


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b'{"a":' * (depth - 1) + b'{"a":' + leaf + b"}" * depth


def with_raw(request_id: str, field_name: str, raw: bytes) -> bytes:
    """A valid request with one field's JSON spliced in as bytes (too deep for json.dumps)."""
    return request(request_id)[:-1] + b',"' + field_name.encode() + b'":' + raw + b"}"


def configure(config_file: Path, **completion: Any) -> None:
    config = yaml.safe_load(config_file.read_text())
    config["completion"] |= completion
    config_file.write_text(yaml.safe_dump(config))


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "".join(self.lines)


@contextlib.asynccontextmanager
async def worker_process(
    settings: Settings, config_file: Path
) -> AsyncIterator[tuple[NatsClient, EventLog, Worker]]:
    """`llmbus serve completion` as a process, with its stderr read as it comes."""
    worker = Worker(spawn_service("completion", config_file))
    assert worker.process.stderr is not None
    stderr = worker.process.stderr
    reader = threading.Thread(
        target=lambda: worker.lines.extend(line.decode(errors="replace") for line in stderr),
        daemon=True,
    )
    reader.start()
    try:
        async with connected(settings) as nc, watching_events(nc) as events:
            await wait_for(lambda: completion_service_ready(nc), 60, "the completion worker")
            yield nc, events, worker
    finally:
        # a graceful stop drains the relay: everything the worker stored is published by now
        await asyncio.to_thread(stop_process, worker.process)
        reader.join(10)


async def all_handled(nc: NatsClient) -> bool:
    info = await nc.jetstream().stream_info(subjects.REQUESTS_STREAM)
    return info.state.messages == 0  # a work queue: acked requests are gone


async def dead_letters(nc: NatsClient) -> list[Msg]:
    js = nc.jetstream()
    count = (await js.stream_info(subjects.DEAD_LETTER_STREAM)).state.messages
    sub = await js.subscribe(
        DEAD_LETTERS, stream=subjects.DEAD_LETTER_STREAM, ordered_consumer=True
    )
    letters = [await sub.next_msg(timeout=10) for _ in range(count)]
    await sub.unsubscribe()
    return letters


async def event_counts(nc: NatsClient) -> dict[str, int]:
    info = await nc.jetstream().stream_info(subjects.EVENTS_STREAM, subjects_filter="llmbus.>")
    return dict(info.state.subjects or {})


async def refused_then_served(
    settings: Settings, config_file: Path, fake_provider: FakeProvider, bad: dict[str, bytes]
) -> dict[str, dict[str, Any]]:
    """Publish each bad message (keyed by its top-level request_id), then a good request; check
    that each was refused at once with one CompletionFailed and one dead letter, that no model
    was called for any of them, that the good one completed, and that the worker's log has no
    traceback. Returns the CompletionFailed of each bad message."""
    fake_provider.reset()
    async with worker_process(settings, config_file) as (nc, events, worker):
        js = nc.jetstream()
        for data in bad.values():
            await js.publish(subjects.COMPLETION_REQUESTED, data)
        await js.publish(subjects.COMPLETION_REQUESTED, request("good-1"))
        await events.wait_terminal(len(bad) + 1)
        await wait_for(lambda: all_handled(nc), what="every message acked")
        consumer = await js.consumer_info(subjects.REQUESTS_STREAM, subjects.COMPLETION_CONSUMER)
        letters = await dead_letters(nc)
        assert worker.process.poll() is None, worker.log
    assert consumer.num_redelivered == 0  # each refused at its first delivery
    assert fake_provider.stats()["calls"] == {MODEL: 1}  # the good request's call, only
    assert [e["request_id"] for e in events.on(subjects.COMPLETION_RECEIVED)] == ["good-1"]
    failed = {e["request_id"]: e for e in events.on(subjects.COMPLETION_FAILED)}
    assert sorted(failed) == sorted(bad)
    assert sorted(m.data for m in letters) == sorted(bad.values())
    assert {m.headers[subjects.ERROR_TYPE_HEADER] for m in letters} == {  # type: ignore[index]
        e["error_type"] for e in failed.values()
    }
    async with connected(settings) as nc:
        counts = await event_counts(nc)
    assert counts.get(subjects.COMPLETION_FAILED) == len(bad)  # one each, nothing repeated
    assert counts.get(subjects.USAGE_RECORDED) == 1
    assert "Traceback" not in worker.log and worker.process.returncode == 0, worker.log
    return failed


async def test_deep_nesting_and_long_numbers_are_refused_at_once_not_retried(
    settings: Settings, config_file: Path, fake_provider: FakeProvider
) -> None:
    bad = {
        "deep-900": with_raw("deep-900", "metadata", nested(900)),
        "deep-100k": with_raw("deep-100k", "metadata", b"[" * 100_000 + b"]" * 100_000),
        # parses, but could not be stored: refused before the model is called
        "deep-40": with_raw("deep-40", "metadata", nested(40)),
        "params-40": with_raw("params-40", "params", nested(40)),
        "digits-5000": with_raw("digits-5000", "metadata", b'{"n":' + b"9" * 5000 + b"}"),
        "digits-30": with_raw("digits-30", "metadata", b'{"n":' + b"9" * 30 + b"}"),
        "not-finite": with_raw("not-finite", "metadata", b'{"n":NaN}'),
    }
    failed = await refused_then_served(settings, config_file, fake_provider, bad)
    assert {e["error_type"] for e in failed.values()} == {"invalid_request"}
    for request_id in ("deep-900", "deep-100k"):
        assert "nested too deeply" in failed[request_id]["message"]
    assert "nested more than 32 levels" in failed["deep-40"]["message"]
    assert "params: nested more than 32 levels" in failed["params-40"]["message"]
    for request_id in ("digits-5000", "digits-30"):
        assert "64 bits" in failed[request_id]["message"]
    assert "finite" in failed["not-finite"]["message"]


async def test_coerced_types_and_empty_model_names_are_refused_before_any_call(
    settings: Settings, config_file: Path, fake_provider: FakeProvider
) -> None:
    bad = {
        "bool-tokens": request("bool-tokens", params={"max_tokens": True}),
        "text-tokens": request("text-tokens", params={"max_tokens": "100"}),
        "float-tokens": request("float-tokens", params={"max_tokens": 100.0}),
        "text-stream": request("text-stream", stream="yes"),
        "text-temperature": request("text-temperature", params={"temperature": "0.5"}),
        "no-model-part": request("no-model-part", model="openai/"),
        "spaced-model": request("spaced-model", model="fake gpt"),
        "control-id": request("control-id", user_id="ann\r\nX-Injected: 1"),
    }
    failed = await refused_then_served(settings, config_file, fake_provider, bad)
    assert {e["error_type"] for e in failed.values()} == {"invalid_request"}
    assert "params.max_tokens" in failed["bool-tokens"]["message"]
    assert "stream" in failed["text-stream"]["message"]
    assert "model: a model is a name or provider/name" in failed["no-model-part"]["message"]


async def test_fields_that_would_make_oversized_events_are_refused_as_too_large(
    settings: Settings, config_file: Path, fake_provider: FakeProvider
) -> None:
    emoji_tags = [EMOJI * 100] * 1000  # 400 KB as sent; 1.2 MB in each UsageRecorded
    bad = {
        "emoji-tags": request("emoji-tags", tags=emoji_tags),
        "long-tag": request("long-tag", tags=["x" * 129]),
        "growing-ids": request("growing-ids", user_id=EMOJI * 165_000),  # 660 KB
        "long-model": request("long-model", model="openai/" + "m" * 300),
    }
    assert len(bad["emoji-tags"]) > 400_000 and len(bad["growing-ids"]) > 660_000
    failed = await refused_then_served(settings, config_file, fake_provider, bad)
    assert {e["error_type"] for e in failed.values()} == {"too_large"}
    assert "tags: List should have at most 64 items" in failed["emoji-tags"]["message"]
    assert "at most 128 characters" in failed["long-tag"]["message"]
    assert "user_id: String should have at most 200 characters" in failed["growing-ids"]["message"]
    assert "model: String should have at most 256 characters" in failed["long-model"]["message"]


async def test_a_message_of_exactly_max_payload_is_dead_lettered_as_a_stub_and_the_worker_lives(
    settings: Settings, config_file: Path
) -> None:
    # above the server's max_payload: the server's limit is the one that applies
    configure(config_file, max_request_bytes=8_000_000)
    async with worker_process(settings, config_file) as (nc, events, worker):
        js = nc.jetstream()
        head = b'{"request_id":"huge-1","model":"fake-gpt","messages":[{"role":"user","content":"'
        tail = b'"}]}'
        huge = head + b"x" * (nc.max_payload - len(head) - len(tail)) + tail
        garbage = b"x" * nc.max_payload
        assert len(huge) == len(garbage) == nc.max_payload
        for data in (huge, garbage):
            await js.publish(subjects.COMPLETION_REQUESTED, data)
        await js.publish(subjects.COMPLETION_REQUESTED, request("after-huge"))
        await events.wait_terminal(2)
        await wait_for(lambda: all_handled(nc), what="every message acked")
        letters = await dead_letters(nc)
        assert worker.process.poll() is None, worker.log

    [failed] = events.on(subjects.COMPLETION_FAILED)
    assert failed["request_id"] == "huge-1" and failed["error_type"] == "too_large"
    limit = nc.max_payload - 4096
    assert f"request is {nc.max_payload} bytes; the limit is {limit}" in failed["message"]
    assert "max_payload" in failed["message"]
    assert [e["request_id"] for e in events.on(subjects.COMPLETION_RECEIVED)] == ["after-huge"]
    stubs = sorted((json.loads(m.data) for m in letters), key=lambda s: s["stream_seq"])
    # parked as stubs that say what each was and why (shared.deadletter.park), never its bytes
    subject = subjects.COMPLETION_REQUESTED
    assert [{k: v for k, v in stub.items() if k != "reason"} for stub in stubs] == [
        {"subject": subject, "bytes": nc.max_payload, "request_id": "huge-1", "stream_seq": 1},
        {"subject": subject, "bytes": nc.max_payload, "request_id": None, "stream_seq": 2},
    ]
    assert f"request is {nc.max_payload} bytes" in stubs[0]["reason"]
    for letter in letters:
        assert letter.headers[subjects.ERROR_TYPE_HEADER] in ("too_large", "malformed_json")  # type: ignore[index]
    assert "Traceback" not in worker.log and "maximum payload" not in worker.log.lower()


async def test_a_reply_to_that_is_not_a_subject_gets_no_reply_and_the_request_is_served(
    settings: Settings, config_file: Path
) -> None:
    bad_inboxes = {"reply-space": "fz reply", "reply-wildcard": "_INBOX.*",
                   "reply-empty-token": "_INBOX..x", "reply-long": "a." * 300 + "b"}  # fmt: skip
    async with worker_process(settings, config_file) as (nc, events, worker):
        js = nc.jetstream()
        for request_id, inbox in bad_inboxes.items():
            headers = {subjects.REPLY_TO_HEADER: inbox}
            await js.publish(subjects.COMPLETION_REQUESTED, request(request_id), headers=headers)
        refused = json.dumps({"request_id": "reply-refused", "model": MODEL}).encode()
        await js.publish(
            subjects.COMPLETION_REQUESTED, refused, headers={subjects.REPLY_TO_HEADER: "fz reply"}
        )
        inbox = nc.new_inbox()
        replies = await nc.subscribe(inbox)
        await js.publish(
            subjects.COMPLETION_REQUESTED,
            request("reply-ok"),
            headers={subjects.REPLY_TO_HEADER: inbox},
        )
        reply = await replies.next_msg(timeout=30)
        await events.wait_terminal(len(bad_inboxes) + 2)
        await wait_for(lambda: all_handled(nc), what="every message acked")
        consumer = await js.consumer_info(subjects.REQUESTS_STREAM, subjects.COMPLETION_CONSUMER)
        letters = await dead_letters(nc)

    assert json.loads(reply.data)["request_id"] == "reply-ok"  # a valid inbox still hears back
    received = sorted(e["request_id"] for e in events.on(subjects.COMPLETION_RECEIVED))
    assert received == sorted([*bad_inboxes, "reply-ok"])
    [failed] = events.on(subjects.COMPLETION_FAILED)
    assert failed["request_id"] == "reply-refused" and len(letters) == 1
    assert consumer.num_redelivered == 0
    assert worker.log.count("Llmbus-Reply-To is not a subject a reply can go to") == 5
    assert "Traceback" not in worker.log, worker.log


async def test_a_reply_to_naming_a_system_or_llmbus_subject_gets_no_reply(
    settings: Settings, config_file: Path
) -> None:
    """A reply there would be a JetStream API command run with the worker's rights (deleting
    the events stream), or a forged llmbus message."""
    targets = {
        "reply-js-api": f"$JS.API.STREAM.DELETE.{subjects.EVENTS_STREAM}",
        "reply-sys": "$SYS.REQ.SERVER.PING",
        "reply-usage": subjects.USAGE_RECORDED,
        "reply-requested": subjects.COMPLETION_REQUESTED,
    }
    async with worker_process(settings, config_file) as (nc, events, worker):
        js = nc.jetstream()
        for request_id, target in targets.items():
            headers = {subjects.REPLY_TO_HEADER: target}
            await js.publish(subjects.COMPLETION_REQUESTED, request(request_id), headers=headers)
        await events.wait_terminal(len(targets))
        await wait_for(lambda: all_handled(nc), what="every message acked")
        stream = await js.stream_info(subjects.EVENTS_STREAM)  # not deleted
        requests = await js.stream_info(subjects.REQUESTS_STREAM)

    assert stream.config.name == subjects.EVENTS_STREAM
    assert requests.state.messages == 0  # no reply was queued as a request
    assert sorted(e["request_id"] for e in events.on(subjects.COMPLETION_RECEIVED)) == sorted(
        targets
    )
    # one real UsageRecorded per request; no reply landed on the subject as a forged one
    assert len(events.on(subjects.USAGE_RECORDED)) == len(targets)
    assert worker.log.count("Llmbus-Reply-To is not a subject a reply can go to") == 4


async def test_an_id_nested_in_another_message_is_never_taken_for_its_own(
    settings: Settings, config_file: Path
) -> None:
    """Ids are salvaged from the top level only, so a bad message cannot end another's request."""
    no_id = {"model": MODEL, "messages": MESSAGES, "metadata": {"request_id": "victim-1"}}
    bad = [
        json.dumps(no_id).encode(),  # parses, but has no request_id of its own
        b'{"x": {"request_id": "victim-2"}, "model": ',  # cut short
        b'[{"request_id": "victim-3"}]',
        b'{"a": {"b": ], "request_id": "victim-4"}',  # a bracket out of place before it
        b'{"metadata": {"request_id": "victim-5"}, "request_id": "attacker-5", "model": ',
    ]
    victims = [f"victim-{n}" for n in range(1, 6)]
    async with worker_process(settings, config_file) as (nc, events, worker):
        js = nc.jetstream()
        for data in bad:
            await js.publish(subjects.COMPLETION_REQUESTED, data)
        await wait_for(lambda: all_handled(nc), what="the bad messages refused")
        for victim in victims:
            await js.publish(subjects.COMPLETION_REQUESTED, request(victim))
        await events.wait_terminal(len(victims) + 1)
        await wait_for(lambda: all_handled(nc), what="the victims' requests handled")
        letters = await dead_letters(nc)

    received = sorted(e["request_id"] for e in events.on(subjects.COMPLETION_RECEIVED))
    assert received == victims
    [failed] = events.on(subjects.COMPLETION_FAILED)
    assert failed["request_id"] == "attacker-5"  # its own top-level id, not the nested one
    assert len(letters) == len(bad)
    assert "Traceback" not in worker.log, worker.log


async def test_a_chat_turn_too_large_to_publish_is_refused_and_others_are_still_served(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with (
        pipeline(settings, with_usage=False) as (nc, _, client),
        running(serve_conversation, settings),
    ):
        await wait_for(lambda: answers(nc, subjects.PROMPT_LIST), 60, "the conversation service")
        big = await client.conversations.create("zed", "Big", model=MODEL)
        other = await client.conversations.create("amy", "Small", model=MODEL)
        # 400 KB as sent (UTF-8); the CompletionRequested the outbox would publish is 1.2 MB
        turn = {"user_id": "zed", "conversation_id": big.conversation_id,
                "content": EMOJI * 100_000}  # fmt: skip
        data = json.dumps(turn, ensure_ascii=False).encode()
        reply = json.loads((await nc.request(subjects.CONVERSATION_SEND, data, timeout=10)).data)
        served = await client.chat("amy", other.conversation_id, "Still there?")
        stored = await client.conversations.get("zed", big.conversation_id)

    assert 400_000 < len(data) < nc.max_payload
    assert reply["error_type"] == "too_large", reply
    assert "encodes to 1200" in reply["message"] and "the limit is 1000000" in reply["message"]
    assert served.status == "completed"
    assert stored.messages == [] and stored.pending == []  # nothing half-written
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


# The intake itself, no NATS: where the limits come from and what they guarantee


def test_an_accepted_request_makes_events_that_fit_and_a_smaller_server_lowers_the_bounds() -> None:
    widest = {"request_id": "r" * 128, "model": "p/" + "m" * 254, "role": None,
              "tags": [EMOJI * 128] * 64,
              **{f"{who}_id": EMOJI * 200 for who in ("user", "team", "project", "conversation")},
              "messages": MESSAGES}  # fmt: skip
    # sent as UTF-8: 40 KB, within any limit; what events copy of it is 110 KB once escaped
    data = json.dumps({k: v for k, v in widest.items() if v is not None}, ensure_ascii=False)
    data = data.encode()
    default = Limits(1_000_000, 1_048_576)
    request = parse_request(data, default)
    usage = UsageRecorded(
        usage_id=f"{request.request_id}:1", request_id=request.request_id, provider="openai",
        model=request.model or "", prompt_tokens=1, completion_tokens=1, total_tokens=2,
        cost_usd=0.0, latency_ms=1.0, status="error", error_type="provider_error",
        tags=request.tags, user_id=request.user_id, team_id=request.team_id,
        project_id=request.project_id, conversation_id=request.conversation_id,
    )  # fmt: skip
    failed = CompletionFailed(
        request_id=request.request_id, error_type=ErrorType.provider_error, message="x" * 2000,
        retryable=False, model=request.model, user_id=request.user_id, team_id=request.team_id,
        project_id=request.project_id, conversation_id=request.conversation_id,
    )  # fmt: skip
    for event in (usage, failed):
        size = encoded_size(event.model_dump(mode="json"))
        assert size + default.max_payload // 2 < default.max_payload, size  # with room to spare

    small = Limits(1_000_000, 64 * 1024)
    with pytest.raises(Rejected) as refused:
        parse_request(data, small)
    assert refused.value.error_type == "too_large"
    assert "must fit the NATS server's max_payload of 65536 bytes" in refused.value.message
    assert refused.value.request_id == "r" * 128
    assert small.request_bytes == 64 * 1024 - 4096


@pytest.mark.parametrize(
    ("data", "request_id"),
    [
        (b'{"request_id": "cut-1", "model": "fake-gpt", "messages": [', "cut-1"),
        (
            b'{"model": "m", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b', "request_id": "r-2"',
            "r-2",
        ),
        (b'{"a": 1.5e3, "b": [1, {"c": "}\\""}], "request_id": "r-3", ', "r-3"),
        (b'{"metadata": {"request_id": "nested"}, "model": "m"}', None),
        (b'{"metadata": {"request_id": "nested"}, ', None),
        (b'{"a": ["x, "request_id": "nested"}', None),
        (b'{"a": "\\"request_id\\": \\"nested\\"", ', None),
        (b'[{"request_id": "nested"}]', None),
        (b'{"request_id": "a.b"}', None),  # not a valid request id
        (b'{"request_id": "cut', None),
        (b"\xff\xfe", None),
    ],
)
def test_only_a_top_level_request_id_is_salvaged(data: bytes, request_id: str | None) -> None:
    assert salvage_request_id(data) == request_id


def test_strict_types_still_read_json_numbers_and_timestamps() -> None:
    data = request(
        "ok-1", params={"temperature": 1, "max_tokens": 5, "seed": -3},
        requested_at="2025-01-01T00:00:00Z", stream=True,
    )  # fmt: skip
    parsed = parse_request(data, Limits(1_000_000, 1_048_576))
    assert parsed.params.temperature == 1.0 and parsed.params.max_tokens == 5
    assert parsed.requested_at is not None and parsed.stream is True
    assert CompletionRequested.model_validate(json.loads(data)) == parsed
