"""Generates schemas/: a JSON Schema per contract and an AsyncAPI 3 document of the subjects.

Run `make schemas` after changing a contract; a test fails while schemas/ is stale.
"""

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llmbus.shared import contracts, subjects
from llmbus.shared.contracts import budget, conversation, estimate, keys, prices, prompt, requests

REQUEST_REPLY = "request/reply"
EVENT = "JetStream event"
BROADCAST = "core NATS, fire-and-forget"
# subject -> (kind, message); the public contract of SPEC.md and every subject llmbus answers
CHANNELS: dict[str, tuple[str, type[BaseModel]]] = {
    subjects.COMPLETION_REQUESTED: ("JetStream work queue", contracts.CompletionRequested),
    subjects.COMPLETION_RECEIVED: (EVENT, contracts.CompletionReceived),
    subjects.COMPLETION_FAILED: (EVENT, contracts.CompletionFailed),
    subjects.COMPLETION_CHUNK: ("core NATS, in order", requests.CompletionChunk),
    subjects.COMPLETION_ESTIMATE: (REQUEST_REPLY, estimate.EstimateRequest),
    subjects.COMPLETION_STATUS: (REQUEST_REPLY, requests.RequestRef),
    subjects.COMPLETION_CANCEL: (REQUEST_REPLY, requests.RequestRef),
    subjects.COMPLETION_CONTROL: (
        "core NATS request/reply, between completion services",
        requests.WorkerAsk,
    ),
    subjects.USAGE_RECORDED: (EVENT, contracts.UsageRecorded),
    subjects.USAGE_QUERY: (REQUEST_REPLY, contracts.UsageQuery),
    subjects.USAGE_ROWS: (REQUEST_REPLY, contracts.UsageRowsQuery),
    subjects.USAGE_REPRICE: (REQUEST_REPLY, prices.RepriceRequest),
    subjects.PRICES_SET: (REQUEST_REPLY, prices.PriceSet),
    subjects.PRICES_LIST: (REQUEST_REPLY, prices.PriceListQuery),
    subjects.PRICES_SYNC: (REQUEST_REPLY, prices.PriceSync),
    subjects.PRICES_CHANGED: (BROADCAST, prices.PricesChanged),
    subjects.KEYS_CREATE: (REQUEST_REPLY, keys.KeyCreate),
    subjects.KEYS_LIST: (REQUEST_REPLY, keys.KeyListQuery),
    subjects.KEYS_REVOKE: (REQUEST_REPLY, keys.KeyRevoke),
    subjects.KEYS_VERIFY: (REQUEST_REPLY, keys.KeyVerify),
    subjects.KEYS_REVOKED: (BROADCAST, keys.KeyRevoked),
    subjects.BUDGET_THRESHOLD_REACHED: (EVENT, budget.BudgetThresholdReached),
    subjects.BUDGET_EXCEEDED: (EVENT, budget.BudgetExceeded),
    subjects.BUDGET_RESERVE: (REQUEST_REPLY, budget.BudgetReservation),
    subjects.BUDGET_SETTLE: (BROADCAST, contracts.UsageRecorded),
    subjects.BUDGET_STATUS: (REQUEST_REPLY, budget.BudgetStatusQuery),
    subjects.BUDGET_SET: (REQUEST_REPLY, budget.BudgetDefinition),
    subjects.BUDGET_REMAINING: (REQUEST_REPLY, budget.RequestAttributes),
    subjects.BUDGET_GRANT: (REQUEST_REPLY, budget.BudgetGrantRequest),
    subjects.BUDGET_GRANT_RETURN: (REQUEST_REPLY, budget.BudgetGrantReturn),
    subjects.BUDGET_CHANGED: ("core NATS, answered by every worker", budget.BudgetsChanged),
    subjects.BUDGET_HOLDERS: (BROADCAST, budget.GrantHolder),
    subjects.CONVERSATION_CREATE: (REQUEST_REPLY, conversation.CreateConversation),
    subjects.CONVERSATION_GET: (REQUEST_REPLY, conversation.GetConversation),
    subjects.CONVERSATION_LIST: (REQUEST_REPLY, conversation.ListConversations),
    subjects.CONVERSATION_RENAME: (REQUEST_REPLY, conversation.RenameConversation),
    subjects.CONVERSATION_DELETE: (REQUEST_REPLY, conversation.DeleteConversation),
    subjects.CONVERSATION_SEND: (REQUEST_REPLY, conversation.SendMessage),
    subjects.CONVERSATION_TURN_CONFLICT: (BROADCAST, contracts.CompletionFailed),
    subjects.PROMPT_CREATE: (REQUEST_REPLY, prompt.CreatePrompt),
    subjects.PROMPT_UPDATE: (REQUEST_REPLY, prompt.UpdatePrompt),
    subjects.PROMPT_GET: (REQUEST_REPLY, prompt.GetPrompt),
    subjects.PROMPT_LIST: (REQUEST_REPLY, prompt.ListPrompts),
    subjects.PROMPT_HISTORY: (REQUEST_REPLY, prompt.PromptHistoryQuery),
    subjects.PROMPT_LABEL: (REQUEST_REPLY, prompt.MoveLabel),
    subjects.PROMPT_ROLLBACK: (REQUEST_REPLY, prompt.MoveLabel),
    subjects.PROMPT_ACTIVATE: (REQUEST_REPLY, prompt.SetPromptActive),
    subjects.PROMPT_DEACTIVATE: (REQUEST_REPLY, prompt.SetPromptActive),
    subjects.PROMPT_RENDER: (REQUEST_REPLY, prompt.RenderPrompt),
    subjects.PROMPT_PREVIEW: (REQUEST_REPLY, prompt.PreviewPrompt),
    subjects.PROMPT_RESOLVE: (REQUEST_REPLY, prompt.ResolvePrompt),
    subjects.PROMPT_EVENTS: (EVENT, prompt.PromptChanged),
}
# what each subject is answered with; a request/reply subject may also answer an ErrorReply
REPLIES: dict[str, type[BaseModel]] = {
    subjects.COMPLETION_ESTIMATE: estimate.Estimate,
    subjects.COMPLETION_STATUS: requests.CompletionStatus,
    subjects.COMPLETION_CANCEL: requests.CancelReply,
    subjects.COMPLETION_CONTROL: requests.WorkerAnswer,
    subjects.USAGE_QUERY: contracts.UsageQueryResult,
    subjects.USAGE_ROWS: contracts.UsageRows,
    subjects.USAGE_REPRICE: prices.RepriceResult,
    subjects.PRICES_SET: prices.PriceEntry,
    subjects.PRICES_LIST: prices.PriceList,
    subjects.PRICES_SYNC: prices.PriceList,
    subjects.KEYS_CREATE: keys.KeyCreated,
    subjects.KEYS_LIST: keys.KeyList,
    subjects.KEYS_REVOKE: keys.KeyInfo,
    subjects.KEYS_VERIFY: keys.KeyVerified,
    subjects.BUDGET_RESERVE: budget.BudgetAdmission,
    subjects.BUDGET_STATUS: budget.BudgetStatusList,
    subjects.BUDGET_SET: budget.BudgetStatus,
    subjects.BUDGET_REMAINING: budget.BudgetRemainingList,
    subjects.BUDGET_GRANT: budget.BudgetGrant,
    subjects.BUDGET_GRANT_RETURN: budget.BudgetGrantReturned,
    subjects.BUDGET_CHANGED: budget.GrantHolder,
    subjects.CONVERSATION_CREATE: conversation.ConversationView,
    subjects.CONVERSATION_GET: conversation.ConversationView,
    subjects.CONVERSATION_LIST: conversation.ConversationPage,
    subjects.CONVERSATION_RENAME: conversation.ConversationView,
    subjects.CONVERSATION_DELETE: conversation.ConversationSummary,
    subjects.CONVERSATION_SEND: conversation.ChatReply,
    subjects.PROMPT_CREATE: prompt.PromptView,
    subjects.PROMPT_UPDATE: prompt.PromptView,
    subjects.PROMPT_GET: prompt.PromptView,
    subjects.PROMPT_LIST: prompt.PromptList,
    subjects.PROMPT_HISTORY: prompt.PromptHistory,
    subjects.PROMPT_LABEL: prompt.PromptView,
    subjects.PROMPT_ROLLBACK: prompt.PromptView,
    subjects.PROMPT_ACTIVATE: prompt.PromptView,
    subjects.PROMPT_DEACTIVATE: prompt.PromptView,
    subjects.PROMPT_RENDER: prompt.RenderedPrompt,
    subjects.PROMPT_PREVIEW: prompt.PromptPreview,
    subjects.PROMPT_RESOLVE: prompt.ResolvedPrompt,
}
# llmbus.deadletter.<service>: what a service could not publish or apply, as it was (or a stub
# saying what it was, when it is too large), with headers that say why (see shared/deadletter.py)
DEAD_LETTER_MESSAGE: dict[str, Any] = {
    "name": "DeadLetter",
    "payload": {"description": "The parked message's own bytes, or a JSON stub if too large."},
    "headers": {
        "type": "object",
        "properties": {
            subjects.ERROR_TYPE_HEADER: {
                "type": "string",
                "description": "too_large, unpublishable, unroutable, invalid_event or "
                "unrecordable",
            },
            subjects.ERROR_HEADER: {"type": "string", "description": "Why, in one line."},
            subjects.ORIGINAL_SUBJECT_HEADER: {"type": "string"},
            subjects.MSG_ID_HEADER: {"type": "string", "description": "Stable: parked once."},
        },
    },
}
MODELS: list[type[BaseModel]] = [
    contracts.CompletionRequested,
    contracts.CompletionReceived,
    contracts.CompletionFailed,
    estimate.EstimateRequest,
    estimate.Estimate,
    requests.CompletionChunk,
    requests.RequestRef,
    requests.CompletionStatus,
    requests.CancelReply,
    requests.WorkerAsk,
    requests.WorkerAnswer,
    contracts.UsageRecorded,
    contracts.UsageQuery,
    contracts.UsageQueryResult,
    contracts.UsageRowsQuery,
    contracts.UsageRows,
    prices.RepriceRequest,
    prices.RepriceResult,
    prices.PriceSet,
    prices.PriceEntry,
    prices.PriceListQuery,
    prices.PriceList,
    prices.PriceSync,
    prices.PricesChanged,
    keys.KeyCreate,
    keys.KeyInfo,
    keys.KeyCreated,
    keys.KeyListQuery,
    keys.KeyList,
    keys.KeyRevoke,
    keys.KeyVerify,
    keys.KeyVerified,
    keys.KeyRevoked,
    contracts.ErrorReply,
    budget.BudgetThresholdReached,
    budget.BudgetExceeded,
    budget.BudgetReservation,
    budget.BudgetAdmission,
    budget.BudgetDefinition,
    budget.RequestAttributes,
    budget.BudgetRemainingList,
    budget.BudgetGrantRequest,
    budget.BudgetGrant,
    budget.BudgetGrantReturn,
    budget.BudgetGrantReturned,
    budget.BudgetStatusQuery,
    budget.BudgetStatus,
    budget.BudgetStatusList,
    budget.BudgetsChanged,
    budget.GrantHolder,
    conversation.CreateConversation,
    conversation.GetConversation,
    conversation.ListConversations,
    conversation.RenameConversation,
    conversation.DeleteConversation,
    conversation.SendMessage,
    conversation.ConversationView,
    conversation.ConversationSummary,
    conversation.ConversationPage,
    conversation.ChatReply,
    prompt.CreatePrompt,
    prompt.UpdatePrompt,
    prompt.GetPrompt,
    prompt.ListPrompts,
    prompt.PromptHistoryQuery,
    prompt.MoveLabel,
    prompt.SetPromptActive,
    prompt.RenderPrompt,
    prompt.PreviewPrompt,
    prompt.ResolvePrompt,
    prompt.PromptView,
    prompt.PromptList,
    prompt.PromptHistory,
    prompt.RenderedPrompt,
    prompt.PromptPreview,
    prompt.ResolvedPrompt,
    prompt.PromptChanged,
]


def json_schemas() -> dict[str, dict[str, Any]]:
    return {f"{model.__name__}.json": model.model_json_schema() for model in MODELS}


def asyncapi() -> dict[str, Any]:
    channels: dict[str, dict[str, Any]] = {}
    operations: dict[str, dict[str, Any]] = {}
    for subject, (kind, model) in CHANNELS.items():
        key = channel_key(subject)
        channels[key] = channel(subject, kind, [model.__name__])
        operations[key] = {
            "action": "receive" if kind == EVENT else "send",
            "channel": {"$ref": f"#/channels/{key}"},
        }
        if subject in REPLIES:
            replies = [REPLIES[subject].__name__]
            if kind == REQUEST_REPLY:
                replies.append(contracts.ErrorReply.__name__)
            channels[key]["messages"] |= message_refs(replies)
            operations[key]["reply"] = {
                "channel": {"$ref": f"#/channels/{key}"},
                "messages": [{"$ref": f"#/channels/{key}/messages/{name}"} for name in replies],
            }
    key = channel_key(subjects.DEAD_LETTER)
    channels[key] = channel(subjects.DEAD_LETTER, "JetStream, dead letters", ["DeadLetter"])
    operations[key] = {"action": "receive", "channel": {"$ref": f"#/channels/{key}"}}
    messages = {m.__name__: {"payload": {"$ref": f"./{m.__name__}.json"}} for m in MODELS}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "llmbus", "version": "1", "description": "llmbus NATS contract"},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages | {"DeadLetter": DEAD_LETTER_MESSAGE}},
    }


PARAMETERS = {
    "key": "The prompt's key.",
    "service": "The service that parked it: completion, conversation or usage.",
    "request_id": "The request's id.",
}


def channel_key(subject: str) -> str:
    return subject.replace(".", "_").replace("{", "").replace("}", "")


def channel(subject: str, kind: str, messages: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {
        "address": subject,
        "description": kind,
        "messages": message_refs(messages),
    }
    parameters = {name: {"description": text} for name, text in PARAMETERS.items()}
    used = {name: p for name, p in parameters.items() if f"{{{name}}}" in subject}
    if used:
        found["parameters"] = used
    return found


def message_refs(names: list[str]) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/messages/{name}"} for name in names}


def rendered() -> dict[str, str]:
    files = json_schemas() | {"asyncapi.json": asyncapi()}
    return {name: json.dumps(doc, indent=2, sort_keys=True) + "\n" for name, doc in files.items()}


def write(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (target / name).write_text(text)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("schemas"))
