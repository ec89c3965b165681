"""Each metric and dimension of a usage query, against answers worked out by hand on seven calls.

The expected figures below are literals, computed from the table in CALLS, not by the code
under test. Every query is also answered without the hourly rollup, and must agree.
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llmbus.services.usage.projection import UsageProjection, rebuild
from llmbus.shared.contracts import UsageQuery, UsageRecorded

# n: (UTC time, model, user, team, workflow, tags, error, prompt, cost, latency, ttft)
CALLS = {
    1: ("2026-03-01T10:15", "a", "u1", "t1", "w1", ["x"], None, ("k", 1), 0.001, 100, None),
    2: ("2026-03-01T10:45", "a", "u2", "t1", "w1", ["x", "y"], None, None, 0.002, 200, 50),
    3: ("2026-03-01T23:30", "b", "u1", "t2", "w2", ["y"], "rate_limited", None, 0.0, 300, None),
    4: ("2026-03-02T09:00", "b", "u3", "t2", None, [], None, None, 0.004, 400, 80),
    5: ("2026-03-09T12:00", "a", "u1", "t1", "w1", ["x"], None, ("k", 2), 0.005, 500, 20),
    6: ("2026-04-01T00:30", "a", "u2", "t1", None, [], "timeout", None, 0.0, 600, None),
    7: ("2026-03-31T22:30", "b", "u3", "t2", None, [], None, None, 0.007, 700, None),
}


def call(n: int) -> UsageRecorded:
    at, model, user, team, workflow, tags, error, prompt, cost, latency, ttft = CALLS[n]
    return UsageRecorded(
        usage_id=f"u-{n}", request_id=f"r-{n}", provider=f"p-{model}", model=model,
        user_id=user, team_id=team, project_id=f"j-{team}", workflow_id=workflow,
        conversation_id="c1" if n <= 2 else None, role="r1" if n <= 2 else None,
        prompt_key=prompt[0] if prompt else None, prompt_version=prompt[1] if prompt else None,
        tags=tags, status="error" if error else "ok", error_type=error,
        prompt_tokens=100 * n, completion_tokens=0 if error else 10 * n,
        cached_tokens=50 if n == 2 else 0, total_tokens=100 * n + (0 if error else 10 * n),
        cost_usd=cost, latency_ms=latency, ttft_ms=ttft,
        occurred_at=datetime.fromisoformat(at).replace(tzinfo=UTC),
    )  # fmt: skip


@pytest.fixture
def projection(tmp_path: Path) -> Iterator[UsageProjection]:
    with UsageProjection(tmp_path / "usage.duckdb") as opened:
        # in arrival order, two batches, one of them out of time order (7 before 6 in time)
        opened.apply([(n, call(n)) for n in range(1, 5)])
        opened.apply([(n, call(n)) for n in range(5, 8)])
        yield opened


def ask(projection: UsageProjection, **query: Any) -> list[dict[str, Any]]:
    q = UsageQuery.model_validate(query)
    rows = projection.query(q).rows
    assert projection.query(q, allow_rollup=False).rows == rows  # both paths, one answer
    return rows


def pick(rows: list[dict[str, Any]], *columns: str) -> list[tuple[Any, ...]]:
    return [tuple(row[c] for c in columns) for row in rows]


def test_every_metric_of_the_totals(projection: UsageProjection) -> None:
    every = ["requests", "errors", "error_rate", "prompt_tokens", "completion_tokens",
             "cached_tokens", "total_tokens", "cost_usd", "original_cost_usd", "latency_ms_mean",
             "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "ttft_ms_mean", "ttft_ms_p50",
             "ttft_ms_p95", "ttft_ms_p99"]  # fmt: skip

    (row,) = ask(projection, metrics=every)

    assert row == {
        "requests": 7, "errors": 2, "error_rate": 0.285714, "prompt_tokens": 2800,
        "completion_tokens": 190, "cached_tokens": 50, "total_tokens": 2990,
        "cost_usd": pytest.approx(0.019, abs=1e-12),
        "original_cost_usd": pytest.approx(0.019, abs=1e-12), "latency_ms_mean": 400.0,
        # nearest rank: the ceil(n * q)-th smallest of 100, 200, ... 700
        "latency_ms_p50": 400.0, "latency_ms_p95": 700.0, "latency_ms_p99": 700.0,
        # only streamed calls have a time to first token: 20, 50, 80
        "ttft_ms_mean": 50.0, "ttft_ms_p50": 50.0, "ttft_ms_p95": 80.0, "ttft_ms_p99": 80.0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ("model", [("b", 3, 0.011), ("a", 4, 0.008)]),
        ("provider", [("p-b", 3, 0.011), ("p-a", 4, 0.008)]),
        ("user", [("u3", 2, 0.011), ("u1", 3, 0.006), ("u2", 2, 0.002)]),
        ("team", [("t2", 3, 0.011), ("t1", 4, 0.008)]),
        ("project", [("j-t2", 3, 0.011), ("j-t1", 4, 0.008)]),
        ("workflow", [(None, 3, 0.011), ("w1", 3, 0.008), ("w2", 1, 0.0)]),
        ("conversation", [(None, 5, 0.016), ("c1", 2, 0.003)]),
        ("role", [(None, 5, 0.016), ("r1", 2, 0.003)]),
        # a request counts under each of its tags; one without tags, under none
        ("tag", [(None, 3, 0.011), ("x", 3, 0.008), ("y", 2, 0.002)]),
        ("prompt", [(None, 5, 0.013), ("k", 2, 0.006)]),
        ("prompt_version", [(None, 5, 0.013), ("k@2", 1, 0.005), ("k@1", 1, 0.001)]),
        ("status", [("ok", 5, 0.019), ("error", 2, 0.0)]),
        ("error_type", [(None, 5, 0.019), ("rate_limited", 1, 0.0), ("timeout", 1, 0.0)]),
    ],
)
def test_each_dimension(
    projection: UsageProjection, group: str, expected: list[tuple[Any, ...]]
) -> None:
    rows = ask(projection, group_by=[group], metrics=["requests", "cost_usd"])

    assert pick(rows, group, "requests", "cost_usd") == [
        (key, n, pytest.approx(cost, abs=1e-12)) for key, n, cost in expected
    ]


@pytest.mark.parametrize(
    ("group", "zone", "expected"),
    [
        ("day", "UTC", [("2026-03-01", 3), ("2026-03-02", 1), ("2026-03-09", 1),
                        ("2026-03-31", 1), ("2026-04-01", 1)]),
        # call 3 is past midnight in Paris (UTC+1); call 7 too, after the switch to UTC+2
        ("day", "Europe/Paris", [("2026-03-01", 2), ("2026-03-02", 2), ("2026-03-09", 1),
                                 ("2026-04-01", 2)]),
        ("week", "UTC", [("2026-02-23", 3), ("2026-03-02", 1), ("2026-03-09", 1),
                         ("2026-03-30", 2)]),
        ("week", "Europe/Paris", [("2026-02-23", 2), ("2026-03-02", 2), ("2026-03-09", 1),
                                  ("2026-03-30", 2)]),
        ("month", "UTC", [("2026-03", 6), ("2026-04", 1)]),
        ("month", "Europe/Paris", [("2026-03", 5), ("2026-04", 2)]),
        # UTC+5:30: calls 1 and 2 fall in two local hours, though in one UTC hour
        ("hour", "Asia/Kolkata", [("2026-03-01T15:00", 1), ("2026-03-01T16:00", 1),
                                  ("2026-03-02T05:00", 1), ("2026-03-02T14:00", 1),
                                  ("2026-03-09T17:00", 1), ("2026-04-01T04:00", 1),
                                  ("2026-04-01T06:00", 1)]),
        ("hour", "UTC", [("2026-03-01T10:00", 2), ("2026-03-01T23:00", 1),
                         ("2026-03-02T09:00", 1), ("2026-03-09T12:00", 1),
                         ("2026-03-31T22:00", 1), ("2026-04-01T00:00", 1)]),
    ],
)  # fmt: skip
def test_time_buckets_in_a_timezone(
    projection: UsageProjection, group: str, zone: str, expected: list[tuple[str, int]]
) -> None:
    rows = ask(projection, group_by=[group], timezone=zone, metrics=["requests"])

    assert pick(rows, group, "requests") == expected


def test_naive_bounds_are_read_in_the_query_timezone(projection: UsageProjection) -> None:
    since = datetime(2026, 3, 2)

    (utc,) = ask(projection, since=since, metrics=["requests"])
    (paris,) = ask(projection, since=since, timezone="Europe/Paris", metrics=["requests"])
    (bounded,) = ask(projection, since=since, until=datetime(2026, 3, 10), metrics=["requests"])

    assert (utc["requests"], paris["requests"], bounded["requests"]) == (4, 5, 2)


def test_filters_on_any_dimension_combine(projection: UsageProjection) -> None:
    (tagged,) = ask(projection, filters={"tag": "y"}, metrics=["requests", "cost_usd"])
    (run,) = ask(projection, filters={"workflow": "w1", "team": "t1"}, metrics=["requests"])
    (failed,) = ask(projection, filters={"error_type": "timeout"}, metrics=["requests"])
    (version,) = ask(projection, filters={"prompt_version": "k@2"}, metrics=["cost_usd"])

    assert (tagged["requests"], tagged["cost_usd"]) == (2, pytest.approx(0.002, abs=1e-12))
    assert (run["requests"], failed["requests"]) == (3, 1)
    assert version["cost_usd"] == pytest.approx(0.005, abs=1e-12)


def test_order_by_any_metric_and_top_n(projection: UsageProjection) -> None:
    top = ask(projection, group_by=["user"], order_by="cost_usd", limit=2, metrics=["requests"])
    fastest = ask(projection, group_by=["user"], order_by="latency_ms_mean", ascending=True)
    slowest = ask(projection, group_by=["model"], order_by="latency_ms_p95", metrics=["requests"])

    # the metric ordered by is measured, though not asked for
    assert pick(top, "user", "requests") == [("u3", 2), ("u1", 3)]
    assert top[0]["cost_usd"] == pytest.approx(0.011, abs=1e-12)
    assert pick(fastest, "user", "latency_ms_mean") == [("u1", 300.0), ("u2", 400.0),
                                                        ("u3", 550.0)]  # fmt: skip
    assert pick(slowest, "model", "latency_ms_p95") == [("b", 700.0), ("a", 600.0)]


def test_cost_by_team_and_month(projection: UsageProjection) -> None:
    rows = ask(projection, group_by=["team", "month"], metrics=["requests", "error_rate"])

    assert pick(rows, "month", "team", "requests", "error_rate") == [
        ("2026-03", "t2", 3, 0.333333),
        ("2026-03", "t1", 3, 0.0),
        ("2026-04", "t1", 1, 1.0),
    ]


def test_a_rebuild_in_other_batches_gives_the_same_answers(projection: UsageProjection) -> None:
    queries = [
        UsageQuery(),
        UsageQuery(group_by=["model", "day"], timezone="Europe/Paris"),
        UsageQuery(group_by=["tag", "hour"], timezone="Asia/Kolkata", metrics=["ttft_ms_p95"]),
        UsageQuery(group_by=["user"], order_by="error_rate", limit=2),
    ]
    before = [projection.query(q).model_dump(exclude={"generated_at"}) for q in queries]

    rebuild(projection, ((n, call(n)) for n in CALLS), batch_size=3)

    assert [projection.query(q).model_dump(exclude={"generated_at"}) for q in queries] == before


def test_an_unknown_timezone_or_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown timezone 'Mars/Olympus'"):
        UsageQuery(timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="metrics"):
        UsageQuery.model_validate({"metrics": ["latency_ms_p42"]})
