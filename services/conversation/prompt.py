"""The ManagedPrompt aggregate: a prompt template under a key, with immutable versions and labels.

Labels point at versions; "latest" always points at the newest. Rendering picks "production"
when set, otherwise "latest". A deactivated prompt keeps its history but does not render.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event
from pydantic import ValidationError

from llmbus.shared.errors import InvalidRequestError, NotFoundError, ReplyErrorType
from llmbus.shared.prompts.library import domain_prompt
from llmbus.shared.prompts.template import (
    Template,
    TemplateError,
    Variable,
    as_template,
    declare,
    dump_template,
    dump_variables,
    load_variables,
    placeholders,
    render,
)

PROMPT_NAMESPACE = uuid5(NAMESPACE_URL, "llmbus:prompt")
LABELS = ("production", "staging", "development", "latest")
KEY_PATTERN = r"^[a-z0-9](?:[a-z0-9_-]{0,99})$"
ANONYMOUS = "anonymous"
MAX_NAME = 200
MAX_DESCRIPTION = 1000
MAX_NOTE = 1000
MAX_AUTHOR = 200
FIELDS = ("name", "description", "template", "variables")


class PromptError(InvalidRequestError):
    """A prompt command that cannot be carried out; the message says why."""


class DuplicatePromptKey(PromptError):
    """The key is taken, by another managed prompt or by a domain prompt."""

    error_type = ReplyErrorType.duplicate_key


class PromptNotFound(NotFoundError):
    """No prompt has this key. Takes the key, or a whole message."""

    def __init__(self, key: str) -> None:
        super().__init__(key if " " in key else f"prompt {key!r} not found")


class PromptInactive(PromptError):
    """The prompt is deactivated: it cannot be rendered until activated again."""

    error_type = ReplyErrorType.prompt_inactive


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


class ManagedPrompt(Aggregate):
    @staticmethod
    def create_id(key: str) -> UUID:
        return uuid5(PROMPT_NAMESPACE, key)

    @classmethod
    def create(
        cls,
        key: str,
        name: str,
        template: Template,
        variables: Iterable[Variable | Mapping[str, Any]] = (),
        description: str = "",
        author: str = "",
        labels: Iterable[str] = (),
        note: str = "",
    ) -> "ManagedPrompt":
        check_key(key)
        if domain_prompt(key) is not None:
            raise DuplicatePromptKey(f"prompt key {key!r} is reserved for a domain prompt")
        declared = _declare(template, _variables(variables))
        return cls(
            key=key,
            name=check_name(name),
            description=check_description(description),
            template=dump_template(template),
            variables=dump_variables(declared),
            author=check_author(author),
            note=check_note(note),
            labels=_moved_labels(labels),
        )

    @event("PromptCreated")
    def __init__(
        self,
        key: str,
        name: str,
        description: str,
        template: str | list[dict[str, str]],
        variables: list[dict[str, Any]],
        author: str,
        note: str,
        labels: list[str],
    ) -> None:
        self.key = key
        self.active = True
        self.versions: list[PromptVersion] = []
        self.labels: dict[str, int] = {}
        self._history: list[dict[str, Any]] = []
        self._add_version(
            name, description, template, variables, author, note, self.created_on
        )  # fmt: skip
        self._move(labels, 1)
        self._record("PromptCreated", 1, None, labels, author, self.created_on, note, FIELDS)

    @property
    def name(self) -> str:
        return self.latest.name

    @property
    def description(self) -> str:
        return self.latest.description

    @property
    def latest(self) -> PromptVersion:
        return self.versions[-1]

    # Commands

    def update(
        self,
        author: str,
        template: Template | None = None,
        variables: Iterable[Variable | Mapping[str, Any]] | None = None,
        name: str | None = None,
        description: str | None = None,
        note: str = "",
        labels: Iterable[str] = (),
    ) -> PromptVersion:
        latest = self.latest
        new_template = latest.template if template is None else template
        if variables is not None:
            wanted = _variables(variables)
        elif template is not None:
            # Declarations carry over for the placeholders the new template still uses.
            used = set(_placeholders(new_template))
            wanted = [v for v in latest.variables if v.name in used]
        else:
            wanted = list(latest.variables)
        new: dict[str, Any] = {
            "name": latest.name if name is None else check_name(name),
            "description": latest.description
            if description is None
            else check_description(description),
            "template": dump_template(new_template),
            "variables": dump_variables(_declare(new_template, wanted)),
        }
        old = {
            "name": latest.name,
            "description": latest.description,
            "template": dump_template(latest.template),
            "variables": dump_variables(latest.variables),
        }
        changes = [field for field in FIELDS if new[field] != old[field]]
        if not changes:
            raise PromptError(f"update of prompt {self.key!r} changes nothing")
        self._create_version(
            number=latest.number + 1,
            author=check_author(author),
            note=check_note(note),
            changes=changes,
            labels=_moved_labels(labels),
            **new,
        )
        return self.latest

    def label(self, label: str, version: int, author: str, note: str = "") -> None:
        check_movable(label)
        self.get_version(version)
        if self.labels.get(label) == version:
            return
        from_version = self.labels.get(label)
        self._move_label(label, version, from_version, check_author(author), check_note(note))

    def rollback(self, label: str, version: int, author: str, note: str = "") -> None:
        check_movable(label)
        current = self._labelled(label)
        self.get_version(version)
        if version >= current:
            raise PromptError(
                f"rollback of label {label!r} must go to a version earlier than {current},"
                f" got {version}"
            )
        self._roll_back(label, version, current, check_author(author), check_note(note))

    def activate(self, author: str) -> None:
        if not self.active:
            self._activate(check_author(author))

    def deactivate(self, author: str) -> None:
        if self.active:
            self._deactivate(check_author(author))

    # Queries

    def get_version(self, number: int) -> PromptVersion:
        if isinstance(number, bool) or not 1 <= number <= len(self.versions):
            raise PromptError(f"prompt {self.key!r} has no version {number}")
        return self.versions[number - 1]

    def resolve(self, label: str | None = None, version: int | None = None) -> PromptVersion:
        if label is not None and version is not None:
            raise PromptError("give a label or a version, not both")
        if version is not None:
            return self.get_version(version)
        if label is not None:
            return self.get_version(self._labelled(label))
        return self.get_version(self.labels.get("production", self.labels["latest"]))

    def render(
        self,
        values: Mapping[str, Any],
        label: str | None = None,
        version: int | None = None,
    ) -> tuple[PromptVersion, list[dict[str, str]]]:
        if not self.active:
            raise PromptInactive(f"prompt {self.key!r} is deactivated")
        chosen = self.resolve(label, version)
        return chosen, render(chosen.template, chosen.variables, values)

    def history(self) -> list[dict[str, Any]]:
        return [{**entry, "changes": list(entry["changes"])} for entry in self._history]

    # Events

    @event("PromptVersionCreated")
    def _create_version(
        self,
        number: int,
        name: str,
        description: str,
        template: str | list[dict[str, str]],
        variables: list[dict[str, Any]],
        author: str,
        note: str,
        changes: list[str],
        labels: list[str],
        timestamp: datetime | None = None,
    ) -> None:
        at = _at(timestamp)
        self._add_version(name, description, template, variables, author, note, at)
        self._move(labels, number)
        self._record("PromptVersionCreated", number, None, labels, author, at, note, changes)

    @event("LabelMoved")
    def _move_label(
        self,
        label: str,
        version: int,
        from_version: int | None,
        author: str,
        note: str,
        timestamp: datetime | None = None,
    ) -> None:
        self.labels[label] = version
        self._record("LabelMoved", version, label, [label], author, _at(timestamp), note, ())

    @event("RolledBack")
    def _roll_back(
        self,
        label: str,
        version: int,
        from_version: int,
        author: str,
        note: str,
        timestamp: datetime | None = None,
    ) -> None:
        self.labels[label] = version
        self._record("RolledBack", version, label, [label], author, _at(timestamp), note, ())

    @event("PromptActivated")
    def _activate(self, author: str, timestamp: datetime | None = None) -> None:
        self.active = True
        self._record("PromptActivated", None, None, [], author, _at(timestamp), "", ["active"])

    @event("PromptDeactivated")
    def _deactivate(self, author: str, timestamp: datetime | None = None) -> None:
        self.active = False
        self._record("PromptDeactivated", None, None, [], author, _at(timestamp), "", ["active"])

    def _add_version(
        self,
        name: str,
        description: str,
        template: str | list[dict[str, str]],
        variables: list[dict[str, Any]],
        author: str,
        note: str,
        at: datetime,
    ) -> None:
        self.versions.append(
            PromptVersion(
                number=len(self.versions) + 1,
                template=as_template(template),
                variables=load_variables(variables),
                name=name,
                description=description,
                author=author,
                note=note,
                created_at=at,
            )
        )

    def _move(self, labels: list[str], version: int) -> None:
        for label in labels:
            self.labels[label] = version

    def _record(
        self,
        name: str,
        version: int | None,
        label: str | None,
        labels: Sequence[str],
        author: str,
        at: datetime,
        note: str,
        changes: Sequence[str],
    ) -> None:
        self._history.append(
            {
                "event": name,
                "version": version,
                "label": label,
                "labels": list(labels),
                "author": author,
                "at": at,
                "note": note,
                "changes": list(changes),
            }
        )

    def _labelled(self, label: str) -> int:
        check_label(label)
        if label not in self.labels:
            raise PromptError(f"label {label!r} of prompt {self.key!r} is not set")
        return self.labels[label]


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


def _moved_labels(labels: Iterable[str]) -> list[str]:
    asked = set(labels)
    for label in asked:
        check_label(label)
    return [label for label in LABELS if label in asked or label == "latest"]


def _variables(variables: Iterable[Variable | Mapping[str, Any]]) -> list[Variable]:
    try:
        return list(load_variables(variables))
    except ValidationError as e:
        raise TemplateError(f"invalid variable declaration: {e}") from None


def _declare(template: Template, variables: list[Variable]) -> list[Variable]:
    return declare(as_template(template), variables)


def _placeholders(template: Template) -> list[str]:
    return placeholders(as_template(template))


def _at(timestamp: datetime | None) -> datetime:
    assert timestamp is not None, "eventsourcing passes the event's timestamp"
    return timestamp
