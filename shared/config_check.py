"""`llmbus config validate`: every problem of a configuration file, without NATS.

The file is read as the settings loader reads it (TOML for a .toml file, else YAML), without the
environment's overrides. Then:

- its schema: one problem per pydantic error, at its dotted key path (`roles.coder.strategy`,
  `budgets[0].limit_usd`);
- what the schema cannot see, checked on every part that parsed even when others did not: roles
  and budgets naming models no provider serves (`ModelCatalog.resolve`), fallbacks that name
  both a role and a catalog model, fallback cycles and models named twice in one chain
  (`routing.chains`), budgets scoped to a role that is not defined, a `default_role` that is not
  a role, and catalog names given twice.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from llmbus.shared.catalog import SIM_MODELS, ModelCatalog, UnknownModelError
from llmbus.shared.contracts.budget import BudgetDefinition
from llmbus.shared.errors import ConfigError
from llmbus.shared.routing.chains import FallbackCycleError, expand
from llmbus.shared.routing.config import RoleEntry
from llmbus.shared.sections import ModelEntry
from llmbus.shared.settings import Settings, read_config_file

Item = TypeVar("Item", bound=BaseModel)


@dataclass(frozen=True)
class Summary:
    """What a valid configuration defines."""

    models: list[str]
    roles: dict[str, list[str]]  # each role's chain (or its candidates)
    budgets: list[BudgetDefinition]
    default_role: str | None

    def describe(self, path: Path) -> str:
        """One paragraph."""
        parts = [f"{path} is valid:", plural(len(self.models), "model") + " in the catalog"]
        if self.models:
            parts[-1] += f" ({', '.join(self.models)})"
        roles = [f"{name}: {' -> '.join(chain)}" for name, chain in self.roles.items()]
        parts.append(plural(len(roles), "role") + (f" ({'; '.join(roles)})" if roles else ""))
        budgets = [f"{b.name}: {b.window} {b.mode} ${b.limit_usd}" for b in self.budgets]
        parts.append(
            plural(len(budgets), "budget") + (f" ({'; '.join(budgets)})" if budgets else "")
        )
        parts.append(f"default role: {self.default_role or 'none'}")
        return f"{parts[0]} {', '.join(parts[1:-1])}; {parts[-1]}."


@dataclass
class Report:
    path: Path
    problems: list[str] = field(default_factory=list)
    summary: Summary | None = None
    settings: Settings | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def check_config(path: Path | str) -> Report:
    """Every problem of the configuration file at `path`; none, and a summary, when it is valid."""
    path = Path(path)
    if not path.is_file():
        return Report(path, [f"{path}: no such file"])
    try:
        raw = read_config_file(path)
    except ConfigError as exc:
        return Report(path, [str(exc)])
    except (OSError, UnicodeDecodeError) as exc:
        return Report(path, [f"{path} cannot be read: {exc}"])
    return check_mapping(raw, path)


def check_mapping(raw: Mapping[str, Any], path: Path) -> Report:
    """Every problem of a configuration's mapping, as read from `path`."""
    raw = dict(raw)
    # checked below on its own, so that the rest is validated (and cross-checked) without it
    default_role = raw.pop("default_role", None)
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems += [schema_problem(error) for error in exc.errors()]
    problems += Checker(raw, default_role).problems()
    report = Report(path, list(dict.fromkeys(problems)))
    if settings is not None and report.ok:
        settings = settings.model_copy(update={"default_role": default_role})
        report.settings = settings
        report.summary = Summary(
            models=[m.name for m in settings.models],
            roles={name: expand(settings.roles, name) for name in settings.roles},
            budgets=list(settings.budgets),
            default_role=settings.default_role,
        )
    return report


def schema_problem(error: Mapping[str, Any]) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    got = error.get("input")
    if error["type"] not in ("missing", "extra_forbidden") and isinstance(got, str | int | float):
        shown = repr(got)
        message += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    return f"{key_path(error['loc'])}: {message}"


def key_path(loc: Sequence[Any]) -> str:
    """('roles', 'coder', 'fallbacks', 1) -> roles.coder.fallbacks[1]"""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            path += " (the name)"
        elif "." in str(part) or " " in str(part) or not str(part):
            path += f"[{str(part)!r}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


class Checker:
    """The checks the schema cannot make, on each entry that parsed."""

    def __init__(self, raw: Mapping[str, Any], default_role: Any) -> None:
        self.default_role = default_role
        self.models = parsed(raw.get("models"), ModelEntry)
        raw_roles = raw.get("roles")
        self.role_names: set[str] = set(raw_roles) if isinstance(raw_roles, dict) else set()
        self.roles: dict[str, RoleEntry] = {}
        if isinstance(raw_roles, dict):
            for name, entry in raw_roles.items():
                if isinstance(name, str) and (role := parse(entry, RoleEntry)) is not None:
                    self.roles[name] = role
        self.budgets = parsed(raw.get("budgets"), BudgetDefinition)
        conversation = raw.get("conversation")
        self.conversation_model = (
            conversation.get("default_model") if isinstance(conversation, dict) else None
        )
        # the first entry of a name given twice (reported as such), so no error cascades from it
        first = {entry.name: entry for _, entry in reversed(self.models)}
        self.catalog = ModelCatalog(Settings(models=list(first.values())))
        self.model_names = {entry.name for _, entry in self.models} | set(SIM_MODELS)

    def problems(self) -> list[str]:
        return [
            *self.catalog_problems(),
            *self.role_problems(),
            *self.cycle_problems(),
            *self.budget_problems(),
            *self.default_role_problems(),
        ]

    def unknown(self, model: str) -> str | None:
        """Why no provider serves `model`; None when one does."""
        try:
            self.catalog.resolve(model)
        except UnknownModelError as exc:
            return exc.message
        return None

    def catalog_problems(self) -> Iterable[str]:
        first: dict[str, int] = {}
        for i, entry in self.models:
            if entry.name in first:
                yield (
                    f"models[{i}].name: {entry.name!r} is already the name of "
                    f"models[{first[entry.name]}]"
                )
                continue
            first[entry.name] = i
            if (why := self.unknown(entry.name)) is not None:
                if entry.litellm_model:
                    why = why.replace(repr(entry.name), repr(entry.target), 1)
                    yield f"models[{i}].litellm_model: {why}"
                else:
                    yield f"models[{i}].name: {why}"
        model = self.conversation_model
        if isinstance(model, str) and model and (why := self.unknown(model)) is not None:
            yield f"conversation.default_model: {why}"

    def role_problems(self) -> Iterable[str]:
        for name, role in self.roles.items():
            where = f"roles.{name}" if key_path([name]) == name else f"roles{key_path([name])}"
            if role.model is not None:
                yield from self.model_problem(f"{where}.model", role.model, "fallbacks")
            for i, model in enumerate(role.candidates):
                yield from self.model_problem(f"{where}.candidates[{i}]", model, "fallbacks")
            for i, fallback in enumerate(role.fallbacks):
                if fallback not in self.role_names:
                    yield from self.model_problem(f"{where}.fallbacks[{i}]", fallback, None)
                elif fallback in self.model_names:
                    yield (
                        f"{where}.fallbacks[{i}]: {fallback!r} is both a role and a model of "
                        "the catalog, and a fallback naming it means the role: rename one"
                    )

    def model_problem(self, where: str, model: str, roles_go_in: str | None) -> Iterable[str]:
        why = self.unknown(model)
        if why is None:
            return
        if roles_go_in and model in self.role_names:
            why += f" ({model!r} is a role: only {roles_go_in} may name roles)"
        yield f"{where}: {why}"

    def cycle_problems(self) -> Iterable[str]:
        loops: set[tuple[str, ...]] = set()
        for name in self.roles:
            try:
                expand(self.roles, name)
            except FallbackCycleError as cycle:
                text = str(cycle)
                loop = loop_of(text)
                if loop is not None:
                    if loop in loops:
                        continue
                    loops.add(loop)
                yield f"roles.{name}: {text}"

    def budget_problems(self) -> Iterable[str]:
        roles = ", ".join(sorted(self.role_names)) or "none are defined"
        for i, budget in self.budgets:
            role = budget.scope.get("role")
            if role is not None and role not in self.role_names:
                yield f"budgets[{i}].scope.role: {role!r} is not one of the roles ({roles})"
            model = budget.scope.get("model")
            if model is not None and (why := self.unknown(model)) is not None:
                yield f"budgets[{i}].scope.model: {why}"

    def default_role_problems(self) -> Iterable[str]:
        role = self.default_role
        if role is None:
            return
        if not isinstance(role, str):
            yield f"default_role: Input should be a valid string (got {role!r})"
        elif role not in self.role_names:
            roles = ", ".join(sorted(self.role_names)) or "none are defined"
            yield f"default_role: {role!r} is not one of the roles ({roles})"


def parse(entry: Any, model: type[Item]) -> Item | None:
    try:
        return model.model_validate(entry)
    except ValidationError:
        return None  # its errors are reported by the whole file's validation


def parsed(entries: Any, model: type[Item]) -> list[tuple[int, Item]]:
    """The entries of a list that parse, with their positions."""
    if not isinstance(entries, list):
        return []
    found = [(i, parse(entry, model)) for i, entry in enumerate(entries)]
    return [(i, item) for i, item in found if item is not None]


def loop_of(message: str) -> tuple[str, ...] | None:
    """The roles of a loop `fallback cycle: a -> b -> c -> b`, from where it starts over, in a
    canonical rotation; None for a model named twice in one chain."""
    text = message.removeprefix("fallback cycle: ")
    if " names " in text:
        return None
    path = text.split(" -> ")
    loop = path[path.index(path[-1]) : -1]
    if not loop:
        return None
    start = loop.index(min(loop))
    return tuple(loop[start:] + loop[:start])
