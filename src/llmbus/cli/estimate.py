"""`llmbus estimate`: the worst case of a request, before sending it."""

from llmbus.cli.commands import Ask, console, query_client_settings, run
from llmbus.shared.money import usd


def run_estimate(ask: Ask, as_json: bool) -> None:
    settings = query_client_settings()
    fields = ask.fields(settings.default_role)
    from llmbus.client import Client

    async def go() -> None:
        async with Client(settings=settings) as client:
            estimate = await client.estimate(**fields)
        if as_json:
            print(estimate.model_dump_json(indent=2))
            return
        then = estimate.candidates[1:]
        routed = f" (role {estimate.role})" if estimate.role else ""
        routed += f", then {', '.join(then)}" if then else ""
        worst = usd(estimate.worst_case_usd) if estimate.priced else "unknown (no list price)"
        console.print(f"{estimate.model}{routed}", markup=False)
        console.print(
            f"{estimate.prompt_tokens} prompt tokens + up to {estimate.max_tokens} reply tokens:"
            f" at most {worst}",
            markup=False,
        )
        for budget in estimate.budgets:
            console.print(
                f"  budget {budget.budget} ({budget.mode}): {usd(budget.remaining_usd)} left of "
                f"{usd(budget.limit_usd)}",
                markup=False,
            )
        if not estimate.budgets_known:
            console.print("[dim]budgets unknown: the usage service did not answer[/]")

    run(go())
