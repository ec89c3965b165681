"""Prices with a history, and repricing: the dry run, then --apply; the original cost stays
visible, and a rebuild from the events gives the same answers."""

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest

from llmbus.client import Client
from llmbus.services.usage.application import UsageApplication
from llmbus.services.usage.projection import UsageProjection, rebuild
from llmbus.shared import subjects
from llmbus.shared.contracts import UsageQuery
from llmbus.shared.eventstore import open_store
from llmbus.shared.pricing import Price
from llmbus.shared.settings import Settings
from support import EventLog, llmbus_cli, pipeline, projected_requests, wait_for

# the catalog's fake-gpt (tests/conftest.py): $1 in, $2 out per million; cached at the input
CATALOG = Price.per_million(1, 2)
CHEAPER = {
    "fake-gpt": {"input_per_million": 0.5, "output_per_million": 1, "cached_per_million": 0.1}
}


async def synced(client: Client) -> None:
    """Until the worker's catalog is in the price book (it retries while the usage service
    starts)."""

    async def listed() -> bool:
        return {"fake-gpt", "llmbus-sim/large"} <= {e.model for e in await client.prices.list()}

    await wait_for(listed, 30, "the worker's catalog in the price book")


async def recorded(client: Client, calls: int) -> None:
    """Until the usage service has recorded `calls` calls: a reprice applies to those only."""

    async def counted() -> bool:
        return await projected_requests(client) == calls

    await wait_for(counted, 30, f"the usage service to record {calls} calls")


def usage_events(events: EventLog) -> list[dict[str, object]]:
    return events.on(subjects.USAGE_RECORDED)


def expected_cost(usage: dict[str, object], price: Price) -> Decimal:
    tokens = [int(usage[k]) for k in ("prompt_tokens", "completion_tokens", "cached_tokens")]  # type: ignore[call-overload]
    return price.cost(*tokens).quantize(Decimal("1e-10"))


async def test_a_worker_charges_the_catalog_price_then_a_price_set_by_hand(
    settings: Settings,
) -> None:
    async with pipeline(settings) as (_nc, events, client):
        await synced(client)
        [catalog] = await client.prices.list("fake-gpt")
        assert (catalog.source, catalog.version) == ("catalog", CATALOG.version)
        first = await client.complete("price me", model="fake-gpt")
        set_by_hand = await asyncio.to_thread(
            llmbus_cli, "prices", "set", "fake-gpt", "--input", "4", "--output", "8",
            "--reason", "the provider raised its prices",
        )  # fmt: skip
        assert set_by_hand.returncode == 0, set_by_hand.stderr
        raised = Price.per_million(4, 8)

        async def charged_anew() -> bool:
            done = await client.complete("price me again", model="fake-gpt")
            return done.cost_usd > 3 * first.cost_usd

        await wait_for(charged_anew, 30, "the worker to charge the new price")
        await wait_for(lambda: len(usage_events(events)) >= 2, 30, "the usage events")
        by_request = {u["request_id"]: u for u in usage_events(events)}
        assert by_request[first.request_id]["price_version"] == CATALOG.version
        assert usage_events(events)[-1]["price_version"] == raised.version
        history = await client.prices.list("fake-gpt", history=True)
        assert [(h.source, h.version, h.reason) for h in history] == [
            ("catalog", CATALOG.version, None),
            ("manual", raised.version, "the provider raised its prices"),
        ]


async def test_a_dry_run_changes_nothing_and_apply_keeps_the_original_cost(
    settings: Settings, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(CHEAPER))
    async with pipeline(settings) as (_nc, events, client):
        for text in ("one", "two", "three"):
            await client.complete(text, model="fake-gpt")
        await client.complete("other", model="llmbus-sim/small")
        await wait_for(lambda: len(usage_events(events)) == 4, 30, "the usage events")
        await recorded(client, 4)
        await synced(client)
        calls = [u for u in usage_events(events) if u["model"] == "fake-gpt"]
        cost = sum(Decimal(repr(u["cost_usd"])) for u in calls)
        new = sum(expected_cost(u, Price.per_million(0.5, 1, 0.1)) for u in calls)

        dry = await client.usage.reprice(prices=CHEAPER)
        assert (dry.calls, dry.changed, dry.applied) == (3, 3, False)
        assert (dry.cost_usd, dry.new_cost_usd) == (cost, new)
        assert [(r.model, r.calls) for r in dry.rows] == [("fake-gpt", 3)]
        before = await client.usage.query(metrics=["cost_usd", "original_cost_usd"])
        applied = await asyncio.to_thread(
            llmbus_cli, "usage", "reprice", "--prices", str(prices), "--apply",
            "--reason", "negotiated discount",
        )  # fmt: skip
        assert applied.returncode == 0, applied.stderr
        assert "applied: 3 calls repriced" in applied.stdout

        after = await client.usage.query(["model"], metrics=["cost_usd", "original_cost_usd"])
        rows = {r["model"]: r for r in after.rows}
        assert rows["fake-gpt"]["cost_usd"] == pytest.approx(float(new), abs=1e-12)
        assert rows["fake-gpt"]["original_cost_usd"] == pytest.approx(float(cost), abs=1e-12)
        assert rows["llmbus-sim/small"]["cost_usd"] == rows["llmbus-sim/small"]["original_cost_usd"]
        total = sum(r["original_cost_usd"] for r in after.rows)
        assert total == pytest.approx(before.rows[0]["original_cost_usd"], abs=1e-12)
        again = await client.usage.reprice(prices=CHEAPER)
        assert (again.changed, again.difference_usd) == (0, 0)

        what_if = await client.usage.reprice(model="llmbus-sim/large")
        assert what_if.calls == 4 and what_if.new_cost_usd > what_if.cost_usd
        assert not what_if.applied


async def test_a_rebuild_from_the_events_gives_the_repriced_answers(
    settings: Settings, tmp_path: Path
) -> None:
    async with pipeline(settings) as (_nc, _events, client):
        for text in ("one", "two"):
            await client.complete(text, model="fake-gpt")
        await recorded(client, 2)
        await client.usage.reprice(prices=CHEAPER, apply=True, reason="discount")
        queries = [
            UsageQuery(metrics=["cost_usd", "original_cost_usd"]),
            UsageQuery(group_by=["model", "hour"], metrics=["cost_usd", "original_cost_usd"]),
        ]
        live = [(await client.usage.ask(q)).rows for q in queries]

    with (
        UsageProjection(tmp_path / "rebuilt.duckdb") as projection,
        open_store(UsageApplication, settings, "usage") as app,
    ):
        rebuild(projection, app.all_recorded())
        assert [projection.query(q).rows for q in queries] == live
        assert [projection.query(q, allow_rollup=False).rows for q in queries] == live


async def test_refusals_name_what_is_wrong(settings: Settings) -> None:
    async with pipeline(settings) as (_nc, _events, _client):
        unknown = await asyncio.to_thread(
            llmbus_cli, "usage", "reprice", "--model", "no-such-model"
        )
        assert (
            unknown.returncode == 1 and "no price is recorded for 'no-such-model'" in unknown.stderr
        )
        what_if = await asyncio.to_thread(
            llmbus_cli, "usage", "reprice", "--model", "fake-gpt", "--apply", "--reason", "x"
        )
        assert what_if.returncode == 1 and "only new 'prices' can be applied" in what_if.stderr
        both = await asyncio.to_thread(llmbus_cli, "usage", "reprice")
        assert both.returncode == 1 and "--model" in both.stderr
        negative = await asyncio.to_thread(
            llmbus_cli, "prices", "set", "fake-gpt", "--input", "-1", "--output", "1",
            "--reason", "oops",
        )  # fmt: skip
        assert negative.returncode == 1 and "greater than or equal to 0" in negative.stderr
