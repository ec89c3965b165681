"""The public NATS contract: every message llmbus publishes or accepts, as pydantic v2 models.

Fields may be added over time; none is removed or renamed. Consumers ignore unknown fields.
"""

from llmbus.shared.contracts.base import ErrorReply, ReplyErrorType
from llmbus.shared.contracts.completion import (
    CompletionFailed,
    CompletionParams,
    CompletionReceived,
    CompletionRequested,
    ErrorType,
    Message,
    PromptRef,
    TokenUsage,
)
from llmbus.shared.contracts.usage import (
    GROUP_FIELDS,
    UsageQuery,
    UsageQueryResult,
    UsageRecorded,
)
from llmbus.shared.contracts.usage_rows import UsageRows, UsageRowsQuery

__all__ = [
    "GROUP_FIELDS",
    "CompletionFailed",
    "CompletionParams",
    "CompletionReceived",
    "CompletionRequested",
    "ErrorReply",
    "ErrorType",
    "Message",
    "PromptRef",
    "ReplyErrorType",
    "TokenUsage",
    "UsageQuery",
    "UsageQueryResult",
    "UsageRecorded",
    "UsageRows",
    "UsageRowsQuery",
]
