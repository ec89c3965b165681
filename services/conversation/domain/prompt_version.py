"""A managed prompt's versions and the entries of its history, as its events rebuild them."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from llmbus.services.conversation.domain.prompt_checks import (
    check_description,
    check_name,
    checked_variables,
    declared,
    template_placeholders,
)
from llmbus.shared.prompts.template import (
    Template,
    Variable,
    as_template,
    dump_template,
    dump_variables,
    load_variables,
)

FIELDS = ("name", "description", "template", "variables")  # what a new version may change


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


def stored_fields(version: PromptVersion) -> dict[str, Any]:
    """A version's FIELDS as its event stores them."""
    return {
        "name": version.name, "description": version.description,
        "template": dump_template(version.template),
        "variables": dump_variables(version.variables),
    }  # fmt: skip


def next_fields(
    latest: PromptVersion,
    template: Template | None,
    variables: Iterable[Variable | Mapping[str, Any]] | None,
    name: str | None,
    description: str | None,
) -> dict[str, Any]:
    """The FIELDS of the version an update makes, as stored: what the update gives, checked,
    and the rest carried over from `latest`."""
    new_template = latest.template if template is None else template
    if variables is not None:
        wanted = checked_variables(variables)
    elif template is not None:
        # Declarations carry over for the placeholders the new template still uses.
        used = set(template_placeholders(new_template))
        wanted = [v for v in latest.variables if v.name in used]
    else:
        wanted = list(latest.variables)
    return {
        "name": latest.name if name is None else check_name(name),
        "description": latest.description
        if description is None
        else check_description(description),
        "template": dump_template(new_template),
        "variables": dump_variables(declared(new_template, wanted)),
    }
