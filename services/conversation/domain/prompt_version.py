"""A managed prompt's versions and the entries of its history, as its events rebuild them."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from llmbus.shared.prompts.template import Template, Variable, as_template, load_variables


@dataclass(frozen=True)
class PromptVersion:
    number: int
    template: Template
    variables: tuple[Variable, ...]
    name: str
    description: str
    author: str
    note: str
    created_at: datetime


def load_version(
    number: int,
    name: str,
    description: str,
    template: str | list[dict[str, str]],
    variables: list[dict[str, Any]],
    author: str,
    note: str,
    at: datetime,
) -> PromptVersion:
    """A version from the fields its event stores."""
    return PromptVersion(
        number=number, template=as_template(template), variables=load_variables(variables),
        name=name, description=description, author=author, note=note, created_at=at,
    )  # fmt: skip


def history_entry(
    name: str,
    version: int | None,
    label: str | None,
    labels: Sequence[str],
    author: str,
    at: datetime,
    note: str,
    changes: Sequence[str],
) -> dict[str, Any]:
    """One line of a prompt's history: which event, what it touched, who, when and why."""
    return {
        "event": name, "version": version, "label": label, "labels": list(labels),
        "author": author, "at": at, "note": note, "changes": list(changes),
    }  # fmt: skip
