"""Generates schemas/: a JSON Schema per contract and an AsyncAPI 3 document of the subjects.

Run `make schemas` after changing a contract; a test fails while schemas/ is stale.
"""

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llmbus.shared import contracts, subjects
from llmbus.shared.contracts import budget, conversation, prompt

# subject -> (kind, message); the public contract of SPEC.md
CHANNELS: dict[str, tuple[str, type[BaseModel]]] = {
    subjects.COMPLETION_REQUESTED: ("JetStream work queue", contracts.CompletionRequested),
    subjects.COMPLETION_RECEIVED: ("JetStream event", contracts.CompletionReceived),
    subjects.COMPLETION_FAILED: ("JetStream event", contracts.CompletionFailed),
    subjects.USAGE_RECORDED: ("JetStream event", contracts.UsageRecorded),
    subjects.USAGE_QUERY: ("request/reply", contracts.UsageQuery),
    subjects.BUDGET_THRESHOLD_REACHED: ("JetStream event", budget.BudgetThresholdReached),
    subjects.BUDGET_EXCEEDED: ("JetStream event", budget.BudgetExceeded),
    subjects.BUDGET_RESERVE: ("request/reply", budget.BudgetReservation),
    subjects.BUDGET_SET: ("request/reply", budget.BudgetDefinition),
    subjects.BUDGET_REMAINING: ("request/reply", budget.RequestAttributes),
    subjects.BUDGET_GRANT: ("request/reply", budget.BudgetGrantRequest),
    subjects.BUDGET_GRANT_RETURN: ("request/reply", budget.BudgetGrantReturn),
    subjects.BUDGET_HOLDERS: ("core NATS broadcast", budget.GrantHolder),
    subjects.CONVERSATION_CREATE: ("request/reply", conversation.CreateConversation),
    subjects.CONVERSATION_GET: ("request/reply", conversation.GetConversation),
    subjects.CONVERSATION_LIST: ("request/reply", conversation.ListConversations),
    subjects.CONVERSATION_RENAME: ("request/reply", conversation.RenameConversation),
    subjects.CONVERSATION_DELETE: ("request/reply", conversation.DeleteConversation),
    subjects.CONVERSATION_SEND: ("request/reply", conversation.SendMessage),
    subjects.PROMPT_CREATE: ("request/reply", prompt.CreatePrompt),
    subjects.PROMPT_UPDATE: ("request/reply", prompt.UpdatePrompt),
    subjects.PROMPT_GET: ("request/reply", prompt.GetPrompt),
    subjects.PROMPT_LIST: ("request/reply", prompt.ListPrompts),
    subjects.PROMPT_HISTORY: ("request/reply", prompt.PromptHistoryQuery),
    subjects.PROMPT_LABEL: ("request/reply", prompt.MoveLabel),
    subjects.PROMPT_ROLLBACK: ("request/reply", prompt.MoveLabel),
    subjects.PROMPT_ACTIVATE: ("request/reply", prompt.SetPromptActive),
    subjects.PROMPT_DEACTIVATE: ("request/reply", prompt.SetPromptActive),
    subjects.PROMPT_RENDER: ("request/reply", prompt.RenderPrompt),
    subjects.PROMPT_PREVIEW: ("request/reply", prompt.PreviewPrompt),
    subjects.PROMPT_RESOLVE: ("request/reply", prompt.ResolvePrompt),
    subjects.PROMPT_EVENTS: ("JetStream event", prompt.PromptChanged),
}
# what each request/reply subject answers with (besides ErrorReply)
REPLIES: dict[str, type[BaseModel]] = {
    subjects.USAGE_QUERY: contracts.UsageQueryResult,
    subjects.BUDGET_RESERVE: budget.BudgetAdmission,
    subjects.BUDGET_REMAINING: budget.BudgetRemainingList,
    subjects.BUDGET_GRANT: budget.BudgetGrant,
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
MODELS: list[type[BaseModel]] = [
    contracts.CompletionRequested,
    contracts.CompletionReceived,
    contracts.CompletionFailed,
    contracts.UsageRecorded,
    contracts.UsageQuery,
    contracts.UsageQueryResult,
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
        key = subject.replace(".", "_").replace("{", "").replace("}", "")
        channels[key] = {
            "address": subject,
            "description": kind,
            "messages": {model.__name__: {"$ref": f"#/components/messages/{model.__name__}"}},
        }
        if "{key}" in subject:
            channels[key]["parameters"] = {"key": {"description": "The prompt's key."}}
        operations[key] = {
            "action": "receive" if kind == "JetStream event" else "send",
            "channel": {"$ref": f"#/channels/{key}"},
        }
        if subject in REPLIES:
            reply = REPLIES[subject].__name__
            channels[key]["messages"][reply] = {"$ref": f"#/components/messages/{reply}"}
            operations[key]["reply"] = {
                "channel": {"$ref": f"#/channels/{key}"},
                "messages": [{"$ref": f"#/channels/{key}/messages/{reply}"}],
            }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "llmbus", "version": "1", "description": "llmbus NATS contract"},
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": {m.__name__: {"payload": {"$ref": f"./{m.__name__}.json"}} for m in MODELS}
        },
    }


def rendered() -> dict[str, str]:
    files = json_schemas() | {"asyncapi.json": asyncapi()}
    return {name: json.dumps(doc, indent=2, sort_keys=True) + "\n" for name, doc in files.items()}


def write(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (target / name).write_text(text)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("schemas"))
