"""The one request/reply layer: FastStream NATS subscribers that take a typed request model and
return a typed reply model, and one middleware that turns any exception into the ErrorReply."""

from llmbus.shared.rpc.broker import SharedConnectionBroker
from llmbus.shared.rpc.replies import ReplyMiddleware, error_reply
from llmbus.shared.rpc.router import RpcRouter

__all__ = ["ReplyMiddleware", "RpcRouter", "SharedConnectionBroker", "error_reply"]
