"""A provider that echoes the key (masked, split, in a header, with zero-width spaces) gets none of
it, not even 4 characters, into events, replies, stores, streams or logs; in metadata-only mode the
variable names a request sent stay out too. Checked from a raw NATS client on real services."""

import asyncio
import json
import logging
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from llmbus.shared import subjects
from llmbus.shared.runtime import HOLD
from llmbus.shared.settings import Settings, load_settings
from llmbus.testing.fake_openai import FakeProvider
from support import (
    completion_service_ready,
    connected,
    pipeline,
    spawn_service,
    stop_process,
    wait_for,
    watching_events,
)

# ~50 random characters, as real keys are. Every 4-character window has a capital, so none can
# turn up by chance in the lowercase hex and digits of ids and timestamps.
KEY = "sk-Qx7vLmRtZpWkHcNyBdFgJsTaEoUiMqXeVrYhGbKw4NaPzSd"
ECHOES = ["echo-key-masked", "echo-key-split", "echo-key-header", "echo-key-zwsp"]
SECRET = "my-card-4111-1111-1111-1111"
STRANGER = "var-Zq9Secret-Name"  # a variable name the request makes up: content, not metadata
# zero-width characters, raw or JSON-escaped: a leak hidden by them is still a leak
ZERO_WIDTH = re.compile(r"[\u200b-\u200d\u2060\ufeff\u00ad]|\\u(?:200[bcd]|2060|feff|00ad)", re.I)
STREAMS = (
    subjects.REQUESTS_STREAM,
    subjects.EVENTS_STREAM,
    subjects.DEAD_LETTER_STREAM,
    subjects.ADVISORIES_STREAM,
)


def leaked(blob: bytes | str) -> list[str]:
    """Every 4-character piece of KEY found in `blob`."""
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    text = ZERO_WIDTH.sub("", text)
    return [KEY[i : i + 4] for i in range(len(KEY) - 3) if KEY[i : i + 4] in text]


def test_the_key_is_shaped_so_that_no_piece_turns_up_by_chance() -> None:
    assert all(re.search("[A-Z]", KEY[i : i + 4]) for i in range(len(KEY) - 3))
    assert leaked(f"a{KEY[20:24]}b") == [KEY[20:24]]
    assert leaked(json.dumps("\u200b".join(KEY[10:16]))) == [KEY[10:14], KEY[11:15], KEY[12:16]]


@pytest.fixture
def echo_settings(
    settings: Settings,
    config_file: Path,
    fake_provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """The echoing models in the catalog (for in-process and spawned services), with KEY."""
    config = yaml.safe_load(config_file.read_text())
    template = config["models"][0]
    config["models"] += [template | {"name": m, "litellm_model": f"openai/{m}"} for m in ECHOES]
    config_file.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("LLMBUS_TEST_FAKE_KEY", KEY)
    return load_settings()


def request(request_id: str, model: str, **fields: Any) -> bytes:
    if "prompt" not in fields:
        fields["messages"] = [{"role": "user", "content": f"remember {SECRET}"}]
    return json.dumps({"request_id": request_id, "model": model, **fields}).encode()


def by_prompt(request_id: str) -> bytes:
    variables = {"text": f"summarise {SECRET}", STRANGER: "x"}
    return request(request_id, "fake-gpt", prompt={"key": "summarizer", "variables": variables})


async def send_all(nc: NatsClient, requests: list[bytes]) -> list[bytes]:
    """Publish each request with a reply inbox; the replies, as they come."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    for data in requests:
        await nc.jetstream().publish(
            subjects.COMPLETION_REQUESTED, data, headers={subjects.REPLY_TO_HEADER: inbox}
        )
    replies = [(await sub.next_msg(timeout=60)).data for _ in requests]
    await sub.unsubscribe()
    return replies


async def all_acked(js: JetStreamContext) -> bool:
    return (await js.stream_info(subjects.REQUESTS_STREAM)).state.messages == 0


async def stream_contents(js: JetStreamContext) -> bytes:
    """Every message still stored in llmbus's streams, headers included."""
    found: list[bytes] = []
    for stream in STREAMS:
        state = (await js.stream_info(stream)).state
        for seq in range(state.first_seq, state.last_seq + 1 if state.messages else 0):
            try:
                msg = await js.get_msg(stream, seq)
            except NotFoundError:
                continue
            found += [msg.data or b"", json.dumps(dict(msg.headers or {})).encode()]
    return b"\n".join(found)


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_echoed_keys_reach_no_event_reply_store_or_stream(
    echo_settings: Settings, tmp_path: Path
) -> None:
    models = [*ECHOES, "fail-401"]
    async with pipeline(echo_settings, with_usage=False) as (nc, events, _):
        replies = await send_all(nc, [request(model, model) for model in models])
        await events.wait_terminal(len(models))
        await wait_for(lambda: len(events.on(subjects.USAGE_RECORDED)) == len(models), what="usage")
        await wait_for(lambda: all_acked(nc.jetstream()), what="every request acked")
        streams = await stream_contents(nc.jetstream())

    failed = {e["request_id"]: e for e in events.on(subjects.COMPLETION_FAILED)}
    assert {e["error_type"] for e in failed.values()} == {"authentication"}
    # the provider's own words came through, its key did not
    assert "Incorrect API key provided: sk-*** (sk-***)" in failed["echo-key-masked"]["message"]
    assert "it reads *** / *** / ***" in failed["echo-key-split"]["message"]
    assert "x-fake-presented-key header" in failed["echo-key-header"]["message"]
    assert "Incorrect API key provided: ***." in failed["echo-key-zwsp"]["message"]
    files = files_under(tmp_path)  # the SQLite stores, and the JetStream store when embedded
    assert any(name.endswith("completion.sqlite") for name in files)
    for where, blob in [
        ("replies", b"\n".join(replies)),
        ("events", json.dumps(events.events).encode()),
        ("streams", streams),
        *files.items(),
    ]:
        assert leaked(blob) == [], where


async def test_metadata_only_failures_name_no_variable_the_request_sent(
    settings: Settings, tmp_path: Path
) -> None:
    private = settings.model_copy(
        update={"completion": settings.completion.model_copy(update={"privacy": "metadata_only"})}
    )
    async with pipeline(private, with_usage=False) as (nc, events, _):
        [reply] = await send_all(nc, [by_prompt("stranger-1")])
        await events.wait_terminal(1)
        dead = await nc.jetstream().subscribe(
            "llmbus.deadletter.completion",
            stream=subjects.DEAD_LETTER_STREAM,
            ordered_consumer=True,
        )
        letter = await dead.next_msg(timeout=10)
        await wait_for(lambda: all_acked(nc.jetstream()), what="every request acked")
        streams = await stream_contents(nc.jetstream())

    [failed] = events.on(subjects.COMPLETION_FAILED)
    assert failed["error_type"] == "invalid_variables"
    says = "the request's variables do not match the prompt (1 unknown); declared: max_words, style, text"
    assert says in failed["message"]
    assert letter.headers is not None and says in letter.headers[subjects.ERROR_HEADER]
    stores = files_under(tmp_path / "state")
    for blob in [reply, json.dumps(events.events).encode(), streams, *stores.values()]:
        assert STRANGER.encode() not in blob and SECRET.encode() not in blob


async def test_a_service_logging_at_debug_prints_no_key_content_or_variable_name(
    echo_settings: Settings, config_file: Path
) -> None:
    models = ["fake-gpt", *ECHOES, "fail-401"]
    process = spawn_service(
        "completion", config_file, stdout=subprocess.PIPE,  # litellm logs below WARNING to stdout
        LLMBUS_LOG_LEVEL="DEBUG", LLMBUS_PRIVACY="metadata_only",
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    # read as they are written: a full pipe would stall the service
    outputs = [
        asyncio.create_task(asyncio.to_thread(p.read)) for p in (process.stdout, process.stderr)
    ]
    try:
        async with connected(echo_settings) as nc, watching_events(nc) as events:
            await wait_for(lambda: completion_service_ready(nc), 60, "the completion worker")
            requests = [request(f"log-{m}", m) for m in models] + [by_prompt("log-prompt")]
            replies = await send_all(nc, requests)
            await events.wait_terminal(len(requests))
    finally:
        await asyncio.to_thread(stop_process, process)
    logged = b"\n".join(await asyncio.gather(*outputs)).decode()

    answered = {json.loads(reply)["request_id"]: json.loads(reply) for reply in replies}
    assert answered["log-fake-gpt"]["content"].startswith("fake reply to: remember")
    assert len(events.on(subjects.COMPLETION_FAILED)) == len(requests) - 1
    assert "DEBUG llmbus.runtime third-party loggers held at WARNING" in logged  # at DEBUG
    assert leaked(logged) == []
    assert SECRET not in logged and STRANGER not in logged and "remember" not in logged


@pytest.mark.parametrize(
    ("name", "level", "shown"),
    [
        ("openai._base_client", logging.DEBUG, False),
        ("httpcore.http11", logging.DEBUG, False),
        ("LiteLLM", logging.INFO, False),
        ("openai._base_client", logging.WARNING, True),
        ("llmbus.completion", logging.DEBUG, True),
        ("openai_compatible_app", logging.DEBUG, True),  # not the openai package's logger
    ],
)
def test_the_hold_passes_only_warnings_from_held_loggers(
    name: str, level: int, shown: bool
) -> None:
    record = logging.LogRecord(name, level, __file__, 1, "headers: %s", (KEY,), None)

    assert HOLD.filter(record) is shown
