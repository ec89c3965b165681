"""The fields a usage query can group and filter by. The UsageQuery contract uses them; they
live outside `contracts` so that `llmbus usage --help` can list them without importing pydantic."""

from typing import Literal, get_args

GroupField = Literal[
    "model",
    "provider",
    "user",
    "team",
    "project",
    "conversation",
    "role",
    "status",
    "prompt",
    "prompt_version",
    "day",
    "week",
    "month",
]
GROUP_FIELDS: tuple[str, ...] = get_args(GroupField)
