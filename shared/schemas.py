"""Generates schemas/: a JSON Schema per contract and an AsyncAPI 3 document of the subjects.

Run `make schemas` after changing a contract; a test fails while schemas/ is stale.
"""

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llmbus.shared import contracts, subjects
from llmbus.shared.contracts import budget

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
]


def json_schemas() -> dict[str, dict[str, Any]]:
    return {f"{model.__name__}.json": model.model_json_schema() for model in MODELS}


def asyncapi() -> dict[str, Any]:
    channels = {}
    operations = {}
    for subject, (kind, model) in CHANNELS.items():
        key = subject.replace(".", "_")
        channels[key] = {
            "address": subject,
            "description": kind,
            "messages": {model.__name__: {"$ref": f"#/components/messages/{model.__name__}"}},
        }
        operations[key] = {
            "action": "receive" if kind == "JetStream event" else "send",
            "channel": {"$ref": f"#/channels/{key}"},
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
