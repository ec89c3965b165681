"""The router alone: plans, parameter order, chains and cycles, cheapest-capable, health."""

from typing import Any

import pytest

from llmbus.shared.catalog import ModelCatalog
from llmbus.shared.contracts.completion import ErrorType
from llmbus.shared.routing.chains import FallbackCycleError, chains
from llmbus.shared.routing.health import Health
from llmbus.shared.routing.router import Plan, Router, RoutingError
from llmbus.shared.settings import Settings

MESSAGES = [{"role": "user", "content": "hello there"}]


def router(health: Health | None = None, **config: Any) -> Router:
    settings = Settings.model_validate(
        {
            "models": [
                {
                    "name": "a",
                    "litellm_model": "openai/a",
                    "input_cost_per_token": 1e-6,
                    "output_cost_per_token": 1e-6,
                    "params": {"temperature": 0.1, "seed": 1},
                },
                {
                    "name": "b",
                    "litellm_model": "openai/b",
                    "input_cost_per_token": 1e-7,
                    "output_cost_per_token": 1e-7,
                    "supports_json_mode": True,
                },
                {
                    "name": "tiny",
                    "litellm_model": "openai/tiny",
                    "max_input_tokens": 3,
                    "input_cost_per_token": 1e-9,
                    "output_cost_per_token": 1e-9,
                },
            ],
        }
        | config
    )  # fmt: skip
    return Router(settings, ModelCatalog(settings), health or Health())


def test_parameters_merge_defaults_then_model_then_role() -> None:
    routed = router(
        defaults={"params": {"temperature": 0.7, "top_p": 0.5, "seed": 0}},
        roles={"coder": {"model": "a", "params": {"temperature": 0.2}}},
    )
    plan = routed.plan(None, "coder")
    assert routed.base_params(plan, "a") == {"temperature": 0.2, "top_p": 0.5, "seed": 1}
    assert routed.base_params(routed.plan("b", None), "b") == {
        "temperature": 0.7, "top_p": 0.5, "seed": 0,
    }  # fmt: skip


def test_a_request_without_model_or_role_takes_the_default_role_or_is_refused() -> None:
    assert router(roles={"r": {"model": "a"}}, default_role="r").plan(None, None).role == "r"
    with pytest.raises(RoutingError, match="no default_role"):
        router().plan(None, None)
    with pytest.raises(RoutingError, match="roles: r"):
        router(roles={"r": {"model": "a"}}).plan(None, "x")


def test_fallbacks_naming_a_role_expand_and_loops_are_refused() -> None:
    routed = router(roles={"x": {"model": "a", "fallbacks": ["y"]}, "y": {"model": "b"}})
    assert routed.plan(None, "x").models == ("a", "b")
    settings = Settings.model_validate(
        {
            "roles": {
                "x": {"model": "a", "fallbacks": ["y"]},
                "y": {"model": "b", "fallbacks": ["x"]},
            }
        }
    )
    with pytest.raises(FallbackCycleError, match="x -> y -> x"):
        chains(settings.roles)
    twice = Settings.model_validate({"roles": {"z": {"model": "a", "fallbacks": ["a"]}}})
    with pytest.raises(FallbackCycleError, match="'a' twice"):
        chains(twice.roles)


def test_cheapest_capable_orders_by_worst_case_and_leaves_out_what_cannot_serve() -> None:
    roles = {"c": {"strategy": "cheapest-capable", "candidates": ["a", "b", "tiny"]}}
    routed = router(roles=roles)
    choice = routed.choose(routed.plan(None, "c"), MESSAGES, {"max_tokens": 10})
    assert choice.models == ["b", "a"]
    assert "context window 3" in choice.excluded["tiny"]

    json_only = router(roles={"j": {**roles["c"], "requires": {"json_mode": True}}})
    choice = json_only.choose(json_only.plan(None, "j"), MESSAGES, {"max_tokens": 10})
    assert choice.models == ["b"] and choice.excluded["a"] == "lacks json_mode"


def test_a_model_cooling_down_is_passed_over_until_its_time_is_up() -> None:
    now = [100.0]
    health = Health(clock=lambda: now[0])
    routed = router(health, roles={"f": {"model": "a", "fallbacks": ["b"]}})
    plan = routed.plan(None, "f")
    health.cool_down("a", 30)
    assert routed.choose(plan, MESSAGES, {}).models == ["b"]
    health.cool_down("b", 10)
    with pytest.raises(RoutingError) as none_left:
        routed.choose(plan, MESSAGES, {})
    assert none_left.value.error_type is ErrorType.no_capable_model
    assert none_left.value.retryable and "a: cooling down" in none_left.value.message
    now[0] += 31
    assert routed.choose(plan, MESSAGES, {}).models == ["a", "b"]
    health.mark_unhealthy("a", "credentials rejected")
    assert routed.choose(plan, MESSAGES, {}).excluded == {"a": "credentials rejected"}


def test_a_model_named_directly_is_tried_alone_whatever_its_health() -> None:
    health = Health()
    health.mark_unhealthy("a", "credentials rejected")
    routed = router(health)
    assert routed.choose(Plan(None, None, ("a",)), MESSAGES, {}).models == ["a"]


def test_a_fallbacks_reservation_id_is_a_valid_request_id_even_for_the_longest() -> None:
    from pydantic import TypeAdapter

    from llmbus.services.completion.admit import fallback_reservation
    from llmbus.shared.contracts.base import RequestId

    valid = TypeAdapter(RequestId)
    assert fallback_reservation("order-1", 1) == "order-1:fallback-1"
    longest = fallback_reservation("x" * 128, 2)
    assert valid.validate_python(longest) == longest
    assert longest == fallback_reservation("x" * 128, 2) != fallback_reservation("y" * 128, 2)


def test_cheapest_capable_counts_the_prompt_when_its_size_decides_the_order() -> None:
    """in-heavy is cheaper below ~50 prompt tokens, out-heavy above: a 30-word prompt has more
    bytes than that but fewer tokens, so only the count gets the order right."""
    models = [
        {"name": "in-heavy", "litellm_model": "openai/in-heavy", "input_cost_per_token": 1e-5,
         "output_cost_per_token": 1e-7},
        {"name": "out-heavy", "litellm_model": "openai/out-heavy", "input_cost_per_token": 1e-7,
         "output_cost_per_token": 5e-6},
    ]  # fmt: skip
    roles = {"c": {"strategy": "cheapest-capable", "candidates": ["out-heavy", "in-heavy"]}}
    routed = Router(
        Settings.model_validate({"models": models, "roles": roles}),
        ModelCatalog(Settings.model_validate({"models": models})),
        Health(),
    )
    plan = routed.plan(None, "c")
    short = [{"role": "user", "content": "word " * 30}]
    assert routed.choose(plan, short, {"max_tokens": 100}).models == ["in-heavy", "out-heavy"]
    long = [{"role": "user", "content": "word " * 200}]
    assert routed.choose(plan, long, {"max_tokens": 100}).models == ["out-heavy", "in-heavy"]
