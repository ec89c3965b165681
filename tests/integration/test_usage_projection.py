"""The usage projection answers cost questions from UsageRecorded events, and rebuilds the same."""

import json
import subprocess
import sys
import textwrap
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from llmbus.services.usage.projection import UsageProjection, rebuild
from llmbus.shared.contracts import UsageQuery, UsageRecorded

MODELS = ("llmbus-sim/small", "llmbus-sim/large", "gpt-4o-mini")
USERS = ("ada", "grace", "linus", None)
START = datetime(2024, 3, 1, tzinfo=UTC)


def recorded(i: int, **changes: object) -> UsageRecorded:
    failed = i % 11 == 0
    fields: dict[str, object] = {
        "usage_id": f"u-{i}",
        "request_id": f"r-{i}",
        "provider": "openai" if i % 3 == 2 else "llmbus-sim",
        "model": MODELS[i % 3],
        "user_id": USERS[i % 4],
        "team_id": "research" if i % 2 else "platform",
        "project_id": f"p{i % 5}",
        "prompt_tokens": 100 + i,
        "completion_tokens": 0 if failed else 20 + i % 7,
        "cached_tokens": i % 4,
        "total_tokens": 100 + i + (0 if failed else 20 + i % 7),
        # at most 10 decimal places, so the exact expected sum is the sum of the reprs
        "cost_usd": 0.0 if failed else round(0.0001 * (i % 13) + 0.0000000123 * i, 10),
        "latency_ms": 50.0 + (i * 37) % 400,
        "status": "error" if failed else "ok",
        "error_type": "rate_limited" if failed else None,
        "tags": ["demo"] if i % 2 else [],
        "occurred_at": START + timedelta(hours=7 * i),
    }
    return UsageRecorded.model_validate({**fields, **changes})


def history(n: int = 120) -> list[tuple[int, UsageRecorded]]:
    return [(i, recorded(i)) for i in range(1, n + 1)]


def exact_cost(events: list[UsageRecorded]) -> float:
    return float(sum((Decimal(repr(e.cost_usd)) for e in events), Decimal(0)))


def day_of(e: UsageRecorded) -> str:
    return e.occurred_at.astimezone(UTC).strftime("%Y-%m-%d")


@pytest.fixture
def projection(tmp_path: Path) -> Iterator[UsageProjection]:
    with UsageProjection(tmp_path / "usage.duckdb") as opened:
        yield opened


def test_totals_are_the_exact_sums_of_every_event(projection: UsageProjection) -> None:
    events = history()
    assert projection.apply(events) == len(events)

    result = projection.query(UsageQuery())

    calls = [e for _, e in events]
    (totals,) = result.rows
    assert totals["requests"] == len(calls)
    assert totals["errors"] == sum(e.status == "error" for e in calls) > 0
    assert totals["prompt_tokens"] == sum(e.prompt_tokens for e in calls)
    assert totals["completion_tokens"] == sum(e.completion_tokens for e in calls)
    assert totals["cached_tokens"] == sum(e.cached_tokens for e in calls)
    assert totals["total_tokens"] == sum(e.total_tokens for e in calls)
    assert totals["cost_usd"] == pytest.approx(exact_cost(calls), abs=1e-9)
    assert result.events_projected == len(calls) == projection.count()
    assert json.loads(result.model_dump_json())["rows"] == result.rows


def test_an_empty_projection_answers_one_row_of_zeros(projection: UsageProjection) -> None:
    result = projection.query(UsageQuery())

    assert result.rows == [
        {
            "requests": 0,
            "errors": 0,
            "error_rate": None,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cached_tokens": 0,
            "total_tokens": 0,
            "cost_usd": 0.0,
            "latency_ms_mean": None,
        }
    ]
    assert result.events_projected == 0
    assert projection.position == 0


def test_cost_by_model_comes_most_expensive_first(projection: UsageProjection) -> None:
    events = history()
    projection.apply(events)

    result = projection.query(UsageQuery(group_by=["model"]))

    by_model: dict[str, list[UsageRecorded]] = defaultdict(list)
    for _, e in events:
        by_model[e.model].append(e)
    assert result.columns[0] == "model"
    assert {row["model"]: row["requests"] for row in result.rows} == {
        model: len(calls) for model, calls in by_model.items()
    }
    for row in result.rows:
        assert row["cost_usd"] == pytest.approx(exact_cost(by_model[row["model"]]), abs=1e-9)
    costs = [row["cost_usd"] for row in result.rows]
    assert costs == sorted(costs, reverse=True)


def test_cost_by_day_uses_utc_dates_in_time_order(projection: UsageProjection) -> None:
    earlier = history(40)
    late_in_new_york = datetime(2024, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    events = [*earlier, (41, recorded(41, occurred_at=late_in_new_york))]
    projection.apply(events)

    result = projection.query(UsageQuery(group_by=["day"]))

    by_day: dict[str, list[UsageRecorded]] = defaultdict(list)
    for _, e in events:
        by_day[day_of(e)].append(e)
    assert [row["day"] for row in result.rows] == sorted(by_day)
    for row in result.rows:
        assert row["requests"] == len(by_day[row["day"]])
        assert row["cost_usd"] == pytest.approx(exact_cost(by_day[row["day"]]), abs=1e-9)
    second_of_march = next(r for r in result.rows if r["day"] == "2024-03-02")
    assert second_of_march["requests"] == 1 + sum(day_of(e) == "2024-03-02" for _, e in earlier)


def test_weeks_start_on_monday_and_months_read_year_month(projection: UsageProjection) -> None:
    projection.apply(
        [
            (1, recorded(1, occurred_at=datetime(2024, 3, 3, 23, tzinfo=UTC))),  # a Sunday
            (2, recorded(2, occurred_at=datetime(2024, 3, 4, 1, tzinfo=UTC))),  # a Monday
            (3, recorded(3, occurred_at=datetime(2024, 4, 1, 1, tzinfo=UTC))),
        ]
    )

    weeks = projection.query(UsageQuery(group_by=["week"])).rows
    months = projection.query(UsageQuery(group_by=["month"])).rows

    assert [(r["week"], r["requests"]) for r in weeks] == [
        ("2024-02-26", 1),
        ("2024-03-04", 1),
        ("2024-04-01", 1),
    ]
    assert [(r["month"], r["requests"]) for r in months] == [("2024-03", 2), ("2024-04", 1)]


def test_time_groups_order_by_time_then_cost(projection: UsageProjection) -> None:
    projection.apply(history())

    rows = projection.query(UsageQuery(group_by=["model", "day"])).rows

    keys = [(r["day"], -r["cost_usd"]) for r in rows]
    assert keys == sorted(keys)


def test_since_is_inclusive_and_until_exclusive(projection: UsageProjection) -> None:
    events = history()
    projection.apply(events)
    since, until = START + timedelta(hours=70), START + timedelta(hours=140)

    (row,) = projection.query(UsageQuery(since=since, until=until)).rows

    inside = [e for _, e in events if since <= e.occurred_at < until]
    assert inside[0].occurred_at == since
    assert row["requests"] == len(inside) == 10
    assert row["cost_usd"] == pytest.approx(exact_cost(inside), abs=1e-9)


def test_filters_keep_only_matching_events(projection: UsageProjection) -> None:
    events = history()
    projection.apply(events)

    result = projection.query(
        UsageQuery(group_by=["user"], filters={"team": "research", "status": "ok"})
    )

    matching = [e for _, e in events if e.team_id == "research" and e.status == "ok"]
    assert sum(r["requests"] for r in result.rows) == len(matching)
    assert {r["user"] for r in result.rows} == {e.user_id for e in matching}
    assert all(r["errors"] == 0 for r in result.rows)


def test_usage_groups_and_filters_by_role(projection: UsageProjection) -> None:
    roles = ("coder", "clarifier", None)  # None: a request that named a model
    events = [(i, recorded(i, role=roles[i // 3 % 3])) for i in range(1, 61)]
    projection.apply(events)

    result = projection.query(UsageQuery(group_by=["role"]))

    by_role: dict[str | None, list[UsageRecorded]] = defaultdict(list)
    for _, e in events:
        by_role[e.role].append(e)
    assert result.columns[0] == "role"
    assert {row["role"]: row["requests"] for row in result.rows} == {
        role: len(calls) for role, calls in by_role.items()
    }
    for row in result.rows:
        assert row["cost_usd"] == pytest.approx(exact_cost(by_role[row["role"]]), abs=1e-9)
    coder = projection.query(UsageQuery(group_by=["model"], filters={"role": "coder"})).rows
    assert {row["model"]: row["requests"] for row in coder} == Counter(
        e.model for e in by_role["coder"]
    )
    assert len(coder) == len(MODELS)


def test_filter_values_are_data_not_sql(projection: UsageProjection) -> None:
    projection.apply(history(10))

    (row,) = projection.query(UsageQuery(filters={"model": "x' OR '1'='1"})).rows

    assert row["requests"] == 0


def test_filtering_on_a_time_bucket_is_rejected(projection: UsageProjection) -> None:
    with pytest.raises(ValueError, match="since/until"):
        projection.query(UsageQuery(filters={"day": "2024-03-01"}))


def test_limit_keeps_the_most_expensive_groups(projection: UsageProjection) -> None:
    projection.apply(history())

    everything = projection.query(UsageQuery(group_by=["project"])).rows
    top = projection.query(UsageQuery(group_by=["project"], limit=2)).rows

    assert top == everything[:2]


def test_latency_percentiles_are_nearest_rank(projection: UsageProjection) -> None:
    projection.apply([(i, recorded(i, latency_ms=float(i))) for i in range(1, 21)])

    percentiles = ["latency_ms_p50", "latency_ms_p95", "latency_ms_p99"]
    (row,) = projection.query(UsageQuery(metrics=percentiles)).rows

    assert (row["latency_ms_p50"], row["latency_ms_p95"], row["latency_ms_p99"]) == (10, 19, 20)


def test_reapplying_applied_positions_appends_nothing(projection: UsageProjection) -> None:
    events = history(30)
    assert projection.apply(events[:20]) == 20

    assert projection.apply(events[:20]) == 0
    assert projection.apply(events[10:]) == 10
    assert projection.count() == 30
    assert projection.position == 30


def test_a_failed_batch_leaves_neither_rows_nor_position(projection: UsageProjection) -> None:
    projection.apply(history(5))
    out_of_order = [(7, recorded(7)), (6, recorded(6))]

    with pytest.raises(ValueError, match="increasing position"):
        projection.apply(out_of_order)

    assert (projection.count(), projection.position) == (5, 5)


def test_position_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "usage.duckdb"
    with UsageProjection(path) as first:
        first.apply(history(25))

    with UsageProjection(path) as reopened:
        assert reopened.position == 25
        assert reopened.count() == 25
        assert reopened.apply(history(30)) == 5


def test_a_rebuild_gives_identical_answers(projection: UsageProjection) -> None:
    events = history(300)
    for start in range(0, len(events), 7):
        projection.apply(events[start : start + 7])
    queries = [
        UsageQuery(),
        UsageQuery(group_by=["model"]),
        UsageQuery(group_by=["day", "user"]),
        UsageQuery(group_by=["team", "status"], since=START + timedelta(days=5)),
        UsageQuery(group_by=["week", "provider"], filters={"project": "p1"}, limit=3),
    ]
    before = [projection.query(q).model_dump(exclude={"generated_at"}) for q in queries]
    progress: list[int] = []

    applied = rebuild(projection, iter(events), on_progress=progress.append, batch_size=64)

    after = [projection.query(q).model_dump(exclude={"generated_at"}) for q in queries]
    assert applied == len(events) == projection.position
    assert progress == [64, 128, 192, 256, 300]
    assert after == before


def test_another_process_cannot_open_a_held_projection(tmp_path: Path) -> None:
    path = tmp_path / "usage.duckdb"
    opener = textwrap.dedent(
        f"""
        from llmbus.services.usage.projection import UsageProjection
        UsageProjection({str(path)!r}).close()
        """
    )
    with UsageProjection(path):
        held = subprocess.run(
            [sys.executable, "-c", opener], capture_output=True, text=True, timeout=60
        )
    released = subprocess.run(
        [sys.executable, "-c", opener], capture_output=True, text=True, timeout=60
    )

    assert held.returncode != 0
    assert "ProjectionLockedError" in held.stderr
    assert str(path) in held.stderr
    assert "usage service owns" in held.stderr
    assert released.returncode == 0, released.stderr
