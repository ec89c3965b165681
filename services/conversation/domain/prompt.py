"""The ManagedPrompt aggregate: a prompt template under a key, with immutable versions and labels.

Labels point at versions; "latest" always points at the newest. Rendering picks "production"
when set, otherwise "latest". A deactivated prompt keeps its history but does not render.
"""

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from llmbus.services.conversation.domain.errors import (
    DuplicatePromptKey,
    PromptError,
    PromptInactive,
)
from llmbus.services.conversation.domain.prompt_checks import (
    check_author,
    check_description,
    check_key,
    check_label,
    check_movable,
    check_name,
    check_note,
    checked_variables,
    declared,
    moved_labels,
)
from llmbus.services.conversation.domain.prompt_version import (
    FIELDS,
    PromptVersion,
    history_entry,
    load_version,
    next_fields,
    stored_fields,
)
from llmbus.shared.prompts.library import domain_prompt
from llmbus.shared.prompts.template import (
    Template,
    Variable,
    dump_template,
    dump_variables,
    render,
)

PROMPT_NAMESPACE = uuid5(NAMESPACE_URL, "llmbus:prompt")
# Stored events name their class by these topics, fixed where the module first lived: a store
# written before the module moved reads back, and the next move needs no migration.
STORED_TOPIC = "llmbus.services.conversation.prompt:ManagedPrompt"


class ManagedPrompt(Aggregate):
    TOPIC = STORED_TOPIC

    class PromptCreated(Aggregate.Created):
        """Version 1, with its labels; the outbox publishes it as PromptChanged."""

        TOPIC = f"{STORED_TOPIC}.PromptCreated"
        key: str
        name: str
        description: str
        template: str | list[dict[str, str]]
        variables: list[dict[str, Any]]
        author: str
        note: str
        labels: list[str]
        # the team whose credentials may change it (None: admins only; so are older prompts)
        team_id: str | None = None

    class Created(Aggregate.Created):
        """Never stored: with explicit topics, eventsourcing wants Aggregate's Created declared."""

        TOPIC = f"{STORED_TOPIC}.Created"

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
        team_id: str | None = None,
    ) -> "ManagedPrompt":
        check_key(key)
        if domain_prompt(key) is not None:
            raise DuplicatePromptKey(f"prompt key {key!r} is reserved for a domain prompt")
        variables_declared = declared(template, checked_variables(variables))
        return cls(
            key=key,
            name=check_name(name),
            description=check_description(description),
            template=dump_template(template),
            variables=dump_variables(variables_declared),
            author=check_author(author),
            note=check_note(note),
            labels=moved_labels(labels),
            team_id=team_id,
        )

    @event(PromptCreated)
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
        team_id: str | None = None,
    ) -> None:
        self.key = key
        self.team_id = team_id
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
        new = next_fields(latest, template, variables, name, description)
        old = stored_fields(latest)
        changes = [field for field in FIELDS if new[field] != old[field]]
        if not changes:
            raise PromptError(f"update of prompt {self.key!r} changes nothing")
        self._create_version(
            number=latest.number + 1,
            author=check_author(author),
            note=check_note(note),
            changes=changes,
            labels=moved_labels(labels),
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

    @event("PromptVersionCreated", topic=f"{STORED_TOPIC}.PromptVersionCreated")
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

    @event("LabelMoved", topic=f"{STORED_TOPIC}.LabelMoved")
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

    @event("RolledBack", topic=f"{STORED_TOPIC}.RolledBack")
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

    @event("PromptActivated", topic=f"{STORED_TOPIC}.PromptActivated")
    def _activate(self, author: str, timestamp: datetime | None = None) -> None:
        self.active = True
        self._record("PromptActivated", None, None, [], author, _at(timestamp), "", ["active"])

    @event("PromptDeactivated", topic=f"{STORED_TOPIC}.PromptDeactivated")
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
        number = len(self.versions) + 1
        self.versions.append(
            load_version(number, name, description, template, variables, author, note, at)
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
        self._history.append(history_entry(name, version, label, labels, author, at, note, changes))

    def _labelled(self, label: str) -> int:
        check_label(label)
        if label not in self.labels:
            raise PromptError(f"label {label!r} of prompt {self.key!r} is not set")
        return self.labels[label]


def _at(timestamp: datetime | None) -> datetime:
    assert timestamp is not None, "eventsourcing passes the event's timestamp"
    return timestamp
