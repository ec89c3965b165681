"""`llmbus complete --stream`, `llmbus status` and `llmbus cancel` as a user runs them; Ctrl-C
during a streamed reply cancels the request."""

import asyncio
import json
import signal
import sys

from llmbus.shared import subjects
from llmbus.shared.settings import Settings
from support import llmbus_cli, pipeline


async def test_complete_stream_prints_the_reply_then_status_and_cancel_tell_how_it_ended(
    settings: Settings,
) -> None:
    async with pipeline(settings, with_usage=False) as (_nc, events, _client):
        done = await asyncio.to_thread(llmbus_cli, "complete", "--stream", "-m", "fake-gpt",
                                       "hello streams")  # fmt: skip
        assert done.returncode == 0, done.stderr
        [received] = await events.wait_terminal(1)
        assert done.stdout.startswith(received["content"] + "\n")
        assert "fake-gpt" in done.stdout and "$" in done.stdout

        rid = received["request_id"]
        status = await asyncio.to_thread(llmbus_cli, "status", rid)
        assert status.returncode == 0 and f"{rid}: received" in status.stdout, status.stderr
        as_json = await asyncio.to_thread(llmbus_cli, "status", rid, "--json")
        assert json.loads(as_json.stdout)["outcome"]["content"] == received["content"]
        cancel = await asyncio.to_thread(llmbus_cli, "cancel", rid)
        assert cancel.returncode == 0 and "already_finished" in cancel.stdout
        unknown = await asyncio.to_thread(llmbus_cli, "cancel", "no-such-request")
        assert unknown.returncode == 1 and "unknown" in unknown.stdout


async def test_ctrl_c_during_a_streamed_reply_cancels_the_request(settings: Settings) -> None:
    async with pipeline(settings, with_usage=False) as (_nc, events, _client):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmbus", "complete", "--stream", "-m", "drip-40-60", "count",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.readexactly(5), 60)
        assert first.startswith(b"w1 w2"), first
        process.send_signal(signal.SIGINT)
        out, errors = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 130, errors
        assert b"cancelled:" in out, out
        [failed] = await events.wait_terminal(1)
        assert failed["error_type"] == "cancelled"
        assert failed["usage"]["completion_tokens"] < 60
        assert events.on(subjects.COMPLETION_RECEIVED) == []
