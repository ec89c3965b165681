"""The completion service's request/reply edge: llmbus.completion.estimate, and the status and
cancel of a request (tracking.py).

An estimate routes and prices a request as the worker would, and calls no model: the prompt's
tokens counted offline, the worst case at list price (what a budget would reserve), and what is
left in each budget it would be admitted against. A client asks about its own requests only
(shared.identity.book).
"""

from collections.abc import Callable

from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from pydantic import ValidationError

from llmbus.services.completion.prompts import PromptFailed, PromptResolver
from llmbus.services.completion.tracking import Tracking
from llmbus.shared import subjects
from llmbus.shared.auth.directory import ClientDirectory
from llmbus.shared.contracts.budget import BudgetRemaining, BudgetRemainingList, RequestAttributes
from llmbus.shared.contracts.completion import ErrorType
from llmbus.shared.contracts.estimate import Estimate, EstimateRequest
from llmbus.shared.errors import InvalidRequestError, NotFoundError, UnavailableError
from llmbus.shared.identity import book, caller
from llmbus.shared.routing.router import Plan, Router, RoutingError
from llmbus.shared.rpc import RpcRouter

BUDGETS_TIMEOUT_S = 2.0


class CompletionHandlers:
    def __init__(self, router: Router, prompts: PromptResolver, nc: NatsClient) -> None:
        self.router = router
        self.prompts = prompts
        self.nc = nc

    async def estimate(self, req: EstimateRequest) -> Estimate:
        user_id, team_id, project_id = book(caller(), req.user_id, req.team_id, req.project_id)
        plan = self._plan(req)
        messages, version = await self._messages(req)
        params = req.params.model_dump(exclude_none=True)
        try:
            choice = self.router.choose(plan, messages, params)
        except RoutingError as unroutable:
            raise InvalidRequestError(unroutable.message) from None
        catalog, model = self.router.catalog, choice.models[0]  # each chosen model resolves
        reply = catalog.reply_cap(model, self.router.max_tokens(plan, model, params))
        tokens = catalog.count_tokens(model, messages)
        worst = catalog.worst_case_cost(model, messages, reply)
        attributes = RequestAttributes(
            user=user_id, team=team_id, project=project_id, model=model, role=plan.role
        )
        budgets = await self._remaining(attributes)
        return Estimate(
            model=model, role=plan.role, candidates=choice.models, excluded=choice.excluded,
            prompt_tokens=tokens, max_tokens=reply, worst_case_usd=float(worst),
            priced=catalog.list_price(model).priced,
            prompt_version=version, budgets=budgets or [], budgets_known=budgets is not None,
        )  # fmt: skip

    def _plan(self, req: EstimateRequest) -> Plan:
        try:
            return self.router.plan(req.model, req.role)
        except RoutingError as unroutable:
            raise InvalidRequestError(unroutable.message) from None

    async def _messages(self, req: EstimateRequest) -> tuple[list[dict[str, str]], int | None]:
        if req.prompt is None:
            assert req.messages is not None
            return [m.model_dump() for m in req.messages], None
        try:
            rendered = await self.prompts.render(req.prompt)
        except PromptFailed as failed:
            if failed.error_type is ErrorType.prompt_not_found:
                raise NotFoundError(failed.message) from None
            if failed.retryable:
                raise UnavailableError(failed.message) from None
            raise InvalidRequestError(failed.message) from None
        return rendered.messages, rendered.version

    async def _remaining(self, attributes: RequestAttributes) -> list[BudgetRemaining] | None:
        """What the usage service says is left; None when it does not answer."""
        try:
            reply = await self.nc.request(
                subjects.BUDGET_REMAINING, attributes.model_dump_json().encode(),
                timeout=BUDGETS_TIMEOUT_S,
            )  # fmt: skip
            return BudgetRemainingList.model_validate_json(reply.data).budgets
        except (TimeoutError, NoRespondersError, ValidationError):
            return None


def completion_router(
    handlers: CompletionHandlers,
    tracking: Tracking,
    max_payload: Callable[[], int],
    clients: ClientDirectory,
) -> RpcRouter:
    router = RpcRouter("completion", subjects.COMPLETION_QUEUE, max_payload, clients)
    router.answer(subjects.COMPLETION_ESTIMATE, handlers.estimate)
    router.answer(subjects.COMPLETION_STATUS, tracking.status)
    router.answer(subjects.COMPLETION_CANCEL, tracking.cancel)
    return router
