"""What the web console asks of the services, through the SDK: the usage rows newest first, a page
at a time down to the oldest, and one request's own rows; a chat turn whose reply streams as it
is generated and is then recorded on the conversation like any other."""

from pathlib import Path

from nats.aio.msg import Msg
from test_usage_projection import history

from llmbus.client import Client, new_request_id
from llmbus.services.conversation.service import serve as serve_conversation
from llmbus.services.usage.projection import UsageProjection
from llmbus.shared import subjects
from llmbus.shared.bus import answers
from llmbus.shared.contracts import UsageRowsQuery
from llmbus.shared.contracts.requests import CompletionChunk
from llmbus.shared.settings import Settings
from support import pipeline, projected_requests, running, wait_for


def test_rows_newest_first_page_down_to_the_oldest(tmp_path: Path) -> None:
    events = history(40)
    with UsageProjection(tmp_path / "usage.duckdb") as projection:
        projection.apply(events)
        oldest_first = [row["usage_id"] for row in projection.rows(UsageRowsQuery(), 1 << 20).rows]
        first = projection.rows(UsageRowsQuery(order="desc", limit=15), 1 << 20)
        pages = [first]
        while pages[-1].next_after is not None:
            cursor = {"after": pages[-1].next_after, "through": pages[-1].through}
            query = UsageRowsQuery(order="desc", limit=15).model_copy(update=cursor)
            pages.append(projection.rows(query, 1 << 20))
        one = oldest_first[7]
        request_id = next(e.request_id for _, e in events if e.usage_id == one)
        alone = projection.rows(UsageRowsQuery(request_id=request_id, order="desc"), 1 << 20)

    assert first.total == 40 and [len(page.rows) for page in pages] == [15, 15, 10]
    newest_first = [row["usage_id"] for page in pages for row in page.rows]
    assert newest_first == oldest_first[::-1]
    assert [row["usage_id"] for row in alone.rows] == [one] and alone.total == 1


async def test_the_sdk_reads_the_latest_requests_and_one_request(settings: Settings) -> None:
    async with pipeline(settings) as (_, _, client):
        done = [
            await client.complete(f"hello {n}", model="fake-gpt", user_id="ann") for n in range(3)
        ]
        await wait_for(lambda: projected(client, 3), 30, "the usage projected")
        latest = await client.usage.row_page(UsageRowsQuery(order="desc", limit=2))
        pages = [page async for page in client.usage.rows(order="desc", page_rows=2)]
        [mine] = [page async for page in client.usage.rows(request_id=done[1].request_id)]

    assert [row["request_id"] for row in latest.rows] == [done[2].request_id, done[1].request_id]
    assert [row["request_id"] for page in pages for row in page.rows] == [
        received.request_id for received in reversed(done)
    ]
    assert [row["request_id"] for row in mine.rows] == [done[1].request_id]


async def projected(client: Client, count: int) -> bool:
    return await projected_requests(client) == count


async def test_a_streamed_chat_turn_sends_its_chunks_and_is_recorded(settings: Settings) -> None:
    async with (
        pipeline(settings, with_usage=False) as (nc, _, client),
        running(serve_conversation, settings),
    ):
        await wait_for(lambda: answers(nc, subjects.PROMPT_LIST), 60, "the conversation service")
        started = await client.conversations.create("ann", "streamed", model="drip-40-60")
        request_id = new_request_id()
        chunks: list[CompletionChunk] = []

        async def heard(msg: Msg) -> None:
            chunks.append(CompletionChunk.model_validate_json(msg.data))

        await nc.subscribe(subjects.COMPLETION_CHUNK.format(request_id=request_id), cb=heard)
        reply = await client.chat(
            "ann", started.conversation_id, "Tell me a story.", request_id=request_id, stream=True
        )
        plain = await client.chat("ann", started.conversation_id, "And again, in one go.")
        await wait_for(lambda: any(chunk.final for chunk in chunks), 10, "the final chunk")
        conversation = await client.conversations.get("ann", started.conversation_id)

    assert reply.status == "completed" and reply.message is not None
    deltas = [chunk.delta for chunk in chunks if not chunk.final]
    assert len(deltas) > 10 and "".join(deltas) == reply.message.content
    assert chunks[-1].final and chunks[-1].cost_usd == reply.cost_usd
    assert plain.status == "completed"
    assert [turn.role for turn in conversation.messages] == ["user", "assistant"] * 2
