"""The checks a managed prompt command's input passes before any event is made."""

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from llmbus.services.conversation.domain.errors import PromptError
from llmbus.shared.prompts.template import (
    Template,
    TemplateError,
    Variable,
    as_template,
    declare,
    load_variables,
    placeholders,
)

LABELS = ("production", "staging", "development", "latest")
KEY_PATTERN = r"^[a-z0-9](?:[a-z0-9_-]{0,99})$"
ANONYMOUS = "anonymous"
MAX_NAME = 200
MAX_DESCRIPTION = 1000
MAX_NOTE = 1000
MAX_AUTHOR = 200


def check_key(key: str) -> None:
    if not isinstance(key, str) or not re.fullmatch(KEY_PATTERN, key):
        raise PromptError(
            f"prompt key {key!r} must be 1-100 characters of a-z, 0-9, '-' and '_',"
            " starting with a letter or digit"
        )


def check_name(name: str) -> str:
    stripped = name.strip()
    if not 1 <= len(stripped) <= MAX_NAME:
        raise PromptError(f"prompt name must be 1-{MAX_NAME} characters, got {len(stripped)}")
    return stripped


def check_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION:
        raise PromptError(
            f"prompt description must be at most {MAX_DESCRIPTION} characters,"
            f" got {len(description)}"
        )
    return description


def check_note(note: str) -> str:
    if len(note) > MAX_NOTE:
        raise PromptError(f"note must be at most {MAX_NOTE} characters, got {len(note)}")
    return note


def check_author(author: str | None) -> str:
    stripped = (author or "").strip()
    if len(stripped) > MAX_AUTHOR:
        raise PromptError(f"author must be at most {MAX_AUTHOR} characters")
    return stripped or ANONYMOUS


def check_label(label: str) -> None:
    if label not in LABELS:
        raise PromptError(f"unknown label {label!r}; labels are {', '.join(LABELS)}")


def check_movable(label: str) -> None:
    check_label(label)
    if label == "latest":
        raise PromptError("label 'latest' always points at the newest version; it cannot be moved")


def moved_labels(labels: Iterable[str]) -> list[str]:
    asked = set(labels)
    for label in asked:
        check_label(label)
    return [label for label in LABELS if label in asked or label == "latest"]


def checked_variables(variables: Iterable[Variable | Mapping[str, Any]]) -> list[Variable]:
    try:
        return list(load_variables(variables))
    except ValidationError as e:
        raise TemplateError(f"invalid variable declaration: {e}") from None


def declared(template: Template, variables: list[Variable]) -> list[Variable]:
    return declare(as_template(template), variables)


def template_placeholders(template: Template) -> list[str]:
    return placeholders(as_template(template))
