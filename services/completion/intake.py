"""The start of the worker's line: a message becomes a job for a model, or is refused here."""

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from llmbus.services.completion.claim import Claim
from llmbus.services.completion.job import Job
from llmbus.services.completion.parse import Rejected, parse_request
from llmbus.services.completion.reply import Reply
from llmbus.shared.catalog import ModelCatalog, UnknownModelError
from llmbus.shared.contracts import CompletionRequested, ErrorType
from llmbus.shared.limits import Limits
from llmbus.shared.settings import CompletionSettings


class Intake:
    def __init__(
        self, config: CompletionSettings, nc: NatsClient, catalog: ModelCatalog, claim: Claim,
        reply: Reply,
    ) -> None:  # fmt: skip
        self.config = config
        self.nc = nc
        self.catalog = catalog
        self.claim = claim
        self.reply = reply

    async def take(self, msg: Msg, reply_to: str | None) -> None:
        try:
            limits = Limits(self.config.max_request_bytes, self.nc.max_payload)
            request = parse_request(msg.data, limits)
            model = self.target_model(request)
        except Rejected as rejected:
            await self.reply.reject(msg, rejected, reply_to)
            return
        await self.claim.take(Job(msg, reply_to, request, model))

    def target_model(self, request: CompletionRequested) -> str:
        if request.role is not None:
            raise Rejected(
                ErrorType.invalid_request,
                f"no role named {request.role!r} is configured; name a model instead",
                request.request_id,
            )
        assert request.model is not None
        try:
            self.catalog.resolve(request.model)
        except UnknownModelError as unknown:
            raise Rejected(unknown.error_type, unknown.message, request.request_id) from None
        return request.model
