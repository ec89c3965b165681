"""A fake OpenAI-compatible provider for tests and benchmarks; the model name picks its behaviour."""

import argparse
import asyncio
import contextlib
import json
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SLOW = re.compile(r"^slow-(\d+)$")
FLAKY = re.compile(r"^flaky-429-(\d+)$")
# ctx-N: a model whose context holds N words; a longer prompt gets OpenAI's context error
CONTEXT = re.compile(r"^ctx-(\d+)$")
ECHO_KEY = re.compile(r"^echo-key-(masked|split|header|zwsp)$")
# drip-MS-N: a reply of N words, streamed one word every MS ms (a slow stream to cancel)
DRIP = re.compile(r"^drip-(\d+)-(\d+)$")
# cut-N: a stream that breaks off after N words, as a provider that fails mid-way
CUT = re.compile(r"^cut-(\d+)$")
LISTENING = "LISTENING "
STARTUP_TIMEOUT_S = 30.0


@dataclass
class ProviderState:
    latency_s: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)
    # flaky-429-N counts failures per (model, last user message) so parallel tests don't interfere.
    flaky_seen: Counter[tuple[str, str]] = field(default_factory=Counter)

    def reset(self) -> None:
        self.calls.clear()
        self.flaky_seen.clear()


STATE_KEY = web.AppKey("state", ProviderState)


def error_response(
    status: int, message: str, kind: str, code: str | None, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def rate_limited() -> web.Response:
    # retry-after-ms as well: the openai SDK treats "retry-after: 0" as absent and backs off 0.5 s.
    return error_response(
        429,
        "Rate limit reached for requests (fake provider).",
        "requests",
        "rate_limit_exceeded",
        headers={"retry-after": "0", "retry-after-ms": "1"},
    )


def presented_key(request: web.Request) -> str:
    return request.headers.get("Authorization", "").removeprefix("Bearer ")


def unauthorized(message: str, headers: dict[str, str] | None = None) -> web.Response:
    return error_response(401, message, "invalid_request_error", "invalid_api_key", headers)


def echo_key(kind: str, key: str) -> web.Response:
    """A 401 that gives the presented key back, in one of the ways providers do."""
    if kind == "masked":  # as OpenAI does, in its old and its current form
        stars = f"{key[:8]}{'*' * 20}{key[-4:]}"
        return unauthorized(f"Incorrect API key provided: {key[:3]}...{key[-4:]} ({stars}).")
    if kind == "split":  # the middle of the key in pieces, with spaces and punctuation between
        middle = key[len(key) // 4 : -len(key) // 4]
        pieces = [middle[i : i + 6] for i in range(0, len(middle), 6)]
        return unauthorized(
            f"Incorrect API key provided: it reads {' / '.join(pieces)}, ends in '{key[-4:]}'."
        )
    if kind == "header":
        return unauthorized(
            "Incorrect API key provided: the key presented is in the x-fake-presented-key header.",
            {"x-fake-presented-key": key, "x-fake-key-hint": f"...{key[-6:]}"},
        )
    # zero-width spaces every 3 characters: the key's text, invisibly interleaved
    hidden = "\u200b".join(key[i : i + 3] for i in range(0, len(key), 3))
    return unauthorized(f"Incorrect API key provided: {hidden}.")


def last_user_message(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def word_count(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in messages) or 1


def reply_text(model: str, prompt: str, max_tokens: int | None) -> tuple[str, str]:
    drip = DRIP.match(model)
    if drip:
        words = [f"w{n}" for n in range(1, int(drip.group(2)) + 1)]
    else:
        words = f"fake reply to: {prompt[:40]}".split()
    if max_tokens is not None and len(words) > max_tokens:
        return " ".join(words[:max_tokens]), "length"
    return " ".join(words), "stop"


def usage_block(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def failure_for(request: web.Request, model: str, prompt: str) -> web.Response | None:
    if model == "fail-429":
        return rate_limited()
    if model == "fail-500":
        return error_response(500, "The server had an error (fake provider).", "server_error", None)
    if model == "fail-401":
        # The presented key in full, unlike OpenAI's masked echo, so tests prove llmbus scrubs it.
        return unauthorized(f"Incorrect API key provided: {presented_key(request)}.")
    echo = ECHO_KEY.match(model)
    if echo:
        return echo_key(echo.group(1), presented_key(request))
    if model == "missing-model":
        message = f"The model `{model}` does not exist or you do not have access to it."
        return error_response(404, message, "invalid_request_error", "model_not_found")
    context = CONTEXT.match(model)
    if context and len(prompt.split()) > int(context.group(1)):
        message = f"This model's maximum context length is {context.group(1)} tokens."
        return error_response(400, message, "invalid_request_error", "context_length_exceeded")
    flaky = FLAKY.match(model)
    if flaky:
        state = request.app[STATE_KEY]
        key = (model, prompt)
        if state.flaky_seen[key] < int(flaky.group(1)):
            state.flaky_seen[key] += 1
            return rate_limited()
    return None


def delay_for(state: ProviderState, model: str) -> float:
    slow = SLOW.match(model)
    return state.latency_s + (int(slow.group(1)) / 1000 if slow else 0.0)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return error_response(400, "The body is not valid JSON.", "invalid_request_error", None)
    model = str(body.get("model", ""))
    messages: list[dict[str, Any]] = body.get("messages") or []
    state = request.app[STATE_KEY]
    state.calls[model] += 1
    prompt = last_user_message(messages)
    failure = failure_for(request, model, prompt)
    if failure is not None:
        return failure
    delay = delay_for(state, model)
    if delay > 0:
        await asyncio.sleep(delay)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    content, finish_reason = reply_text(model, prompt, limit)
    usage = usage_block(word_count(messages), len(content.split()))
    completion_id = f"chatcmpl-fake-{state.calls.total()}"
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await stream_reply(
            request, completion_id, model, content, finish_reason, usage if include_usage else None
        )
    return web.json_response(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
        }
    )


def chunk(
    completion_id: str,
    model: str,
    delta: dict[str, str],
    finish_reason: str | None,
    usage: dict[str, Any] | None = None,
) -> bytes:
    payload: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if usage is not None:
        payload["choices"] = []
        payload["usage"] = usage
    return f"data: {json.dumps(payload)}\n\n".encode()


async def stream_reply(
    request: web.Request,
    completion_id: str,
    model: str,
    content: str,
    finish_reason: str,
    usage: dict[str, Any] | None,
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    words = content.split(" ")
    drip, cut = DRIP.match(model), CUT.match(model)
    gap_s = int(drip.group(1)) / 1000 if drip else 0.0
    await response.write(chunk(completion_id, model, {"role": "assistant", "content": ""}, None))
    for index, word in enumerate(words):
        if cut and index == int(cut.group(1)):
            assert request.transport is not None
            request.transport.abort()  # mid-way: no finish_reason, no usage, no [DONE]
            return response
        if gap_s and index:
            await asyncio.sleep(gap_s)
        piece = word if index == 0 else f" {word}"
        await response.write(chunk(completion_id, model, {"content": piece}, None))
    await response.write(chunk(completion_id, model, {}, finish_reason))
    if usage is not None:
        await response.write(chunk(completion_id, model, {}, None, usage))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def list_models(request: web.Request) -> web.Response:
    """OpenAI's model list, for a credential check: a key starting "rejected" gets a 401."""
    if presented_key(request).startswith("rejected"):
        return unauthorized("Incorrect API key provided (fake provider).")
    models = ["fake-gpt", "fail-429", "fail-500", "fail-401"]
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in models]
    return web.json_response({"object": "list", "data": data})


async def stats(request: web.Request) -> web.Response:
    calls = request.app[STATE_KEY].calls
    return web.json_response({"calls": dict(calls), "total": calls.total()})


async def reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return web.json_response({"reset": True})


def build_app(latency_ms: float = 0.0) -> web.Application:
    app = web.Application()
    app[STATE_KEY] = ProviderState(latency_s=latency_ms / 1000)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/models", list_models)
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_reset", reset)
    return app


async def serve(host: str, port: int, latency_ms: float) -> None:
    # No access log: it would cost more per request than the fake's own work. Handlers stop
    # when their client gives up (a slow-N call after a client timeout), so exit is prompt.
    runner = web.AppRunner(
        build_app(latency_ms), access_log=None, handler_cancellation=True, shutdown_timeout=1.0
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    print(f"{LISTENING}http://{bound_host}:{bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every success")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.latency_ms))


@dataclass(frozen=True)
class FakeProvider:
    root_url: str

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.root_url}/_stats", timeout=5) as response:
            result: dict[str, Any] = json.load(response)
            return result

    def calls(self, model: str) -> int:
        return int(self.stats()["calls"].get(model, 0))

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.root_url}/_reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=5):
            pass


def read_listening_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([process.stdout], [], [], remaining)
        if not ready:
            break
        line = process.stdout.readline()
        if line.startswith(LISTENING):
            return line.removeprefix(LISTENING).strip()
        if not line and process.poll() is not None:
            raise RuntimeError(
                f"the fake provider exited with code {process.returncode} before listening"
            )
    raise RuntimeError(f"the fake provider did not report LISTENING within {timeout_s:.0f} s")


@contextlib.contextmanager
def running_fake_provider(latency_ms: float = 0) -> Iterator[FakeProvider]:
    """Run the fake in its own process, so it never shares the GIL with what is measured."""
    command = [sys.executable, "-m", "llmbus.testing.fake_openai", "--port", "0"]
    command += ["--latency-ms", str(latency_ms)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        yield FakeProvider(read_listening_line(process, STARTUP_TIMEOUT_S))
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


if __name__ == "__main__":
    main()
