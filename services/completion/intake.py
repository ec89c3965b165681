"""The start of the worker's line: a message becomes a job for a model, or is refused here."""

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from llmbus.services.completion.claim import Claim
from llmbus.services.completion.job import Job
from llmbus.services.completion.parse import Rejected, parse_request
from llmbus.services.completion.reply import Reply
from llmbus.shared import subjects
from llmbus.shared.auth.directory import ClientDirectory
from llmbus.shared.contracts import CompletionRequested, ErrorType
from llmbus.shared.errors import ForbiddenError
from llmbus.shared.identity import book
from llmbus.shared.limits import Limits
from llmbus.shared.routing.router import Plan, Router, RoutingError
from llmbus.shared.sections import CompletionSettings


class Intake:
    def __init__(
        self, config: CompletionSettings, nc: NatsClient, router: Router, claim: Claim,
        reply: Reply, clients: ClientDirectory,
    ) -> None:  # fmt: skip
        self.clients = clients
        self.config = config
        self.nc = nc
        self.router = router
        self.claim = claim
        self.reply = reply

    async def take(self, msg: Msg, reply_to: str | None) -> None:
        owner = subjects.client_of(msg.subject)
        try:
            limits = Limits(self.config.max_request_bytes, self.nc.max_payload)
            request = parse_request(msg.data, limits)
            if owner is not None:
                request = await self.booked(request, owner)
            plan = self.route(request)
        except Rejected as rejected:
            if owner is None:
                await self.reply.reject(msg, rejected, reply_to)
            else:
                await self.reply.refuse(msg, rejected, reply_to)
            return
        await self.claim.take(Job(msg, reply_to, request, plan.models[0], owner, plan=plan))

    async def booked(self, request: CompletionRequested, client: str) -> CompletionRequested:
        """The request as its client's credentials book it (shared.identity.book). Only the
        conversation service, on llmbus's own account, sends a chat turn's conversation_id."""
        try:
            identity = await self.clients.identity(client)
            if request.conversation_id is not None or request.sent_by is not None:
                raise ForbiddenError(
                    "conversation_id and sent_by are set by the conversation service: send a "
                    "chat turn with llmbus.conversation.send"
                )
            user_id, team_id, project_id = book(
                identity, request.user_id, request.team_id, request.project_id
            )
        except ForbiddenError as exc:
            raise Rejected(ErrorType.forbidden, str(exc), request.request_id) from None
        ids = {"user_id": user_id, "team_id": team_id, "project_id": project_id}
        return request.model_copy(update=ids)

    def route(self, request: CompletionRequested) -> Plan:
        """The models that may answer: the one the request names, or its role's."""
        try:
            return self.router.plan(request.model, request.role)
        except RoutingError as unroutable:
            raise Rejected(unroutable.error_type, unroutable.message, request.request_id) from None
