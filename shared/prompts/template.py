"""The prompt template language: `{{ name }}` placeholders in a text or a list of chat turns.

Pure: no I/O. Values are checked against declared variable types and substituted in one pass,
so a value that itself contains `{{ x }}` is never expanded again.
"""

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmbus.shared.errors import InvalidRequestError, ReplyErrorType

VariableType = Literal["string", "number", "integer", "boolean", "json"]
Role = Literal["system", "user", "assistant"]

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAX_TEMPLATE_CHARS = 200_000
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_NAME = re.compile(NAME_PATTERN)


class Variable(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, max_length=64)
    type: VariableType = "string"
    required: bool = True
    default: Any = None
    description: str = Field(default="", max_length=500)


class ChatTurn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str = Field(min_length=1)


Template = str | list[ChatTurn]


class TemplateError(InvalidRequestError):
    """A template or its variable declarations cannot be used."""


class RenderError(InvalidRequestError):
    """The values given cannot fill the template; `variable` names the culprit.

    `redacted` says the same without anything the caller sent: it names only the template's own
    variables, for where request contents may not go (metadata-only privacy).
    """

    error_type = ReplyErrorType.invalid_variables

    def __init__(self, variable: str, message: str, redacted: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable
        self.redacted = message if redacted is None else redacted


def placeholders(template: Template) -> list[str]:
    names: list[str] = []
    for text in _texts(template):
        for name in _names_in(text):
            if name not in names:
                names.append(name)
    return names


def declare(template: Template, variables: list[Variable] | tuple[Variable, ...]) -> list[Variable]:
    check_template(template)
    used = placeholders(template)
    declared: dict[str, Variable] = {}
    for variable in variables:
        if variable.name in declared:
            raise TemplateError(f"variable {variable.name!r} is declared twice")
        if variable.name not in used:
            raise TemplateError(
                f"variable {variable.name!r} is declared but the template never uses it"
            )
        if variable.default is not None and type_error(variable, variable.default):
            raise TemplateError(
                f"default of variable {variable.name!r} must be {variable.type},"
                f" got {type(variable.default).__name__}"
            )
        declared[variable.name] = variable
    return [declared.get(name) or Variable(name=name) for name in used]


def render(
    template: Template,
    variables: list[Variable] | tuple[Variable, ...],
    values: Mapping[str, Any],
) -> list[dict[str, str]]:
    declared = declare(template, variables)
    names = [v.name for v in declared]
    unknown = [name for name in values if name not in names]
    if unknown:
        known = ", ".join(names) or "(none)"
        raise RenderError(
            unknown[0],
            f"unknown variable {unknown[0]!r}; declared: {known}",
            f"the request's variables do not match the prompt ({len(unknown)} unknown); "
            f"declared: {known}",
        )
    rendered = {v.name: _render_value(v, values.get(v.name)) for v in declared}
    if isinstance(template, str):
        return [{"role": "user", "content": _fill(template, rendered, "the prompt")}]
    return [
        {"role": turn.role, "content": _fill(turn.content, rendered, f"{turn.role} turn {i}")}
        for i, turn in enumerate(_turns(template), start=1)
    ]


def check_template(template: Template) -> None:
    if isinstance(template, str):
        if not template.strip():
            raise TemplateError("template is empty")
    else:
        turns = _turns(template)
        if not turns:
            raise TemplateError("chat template has no turns")
        for i, turn in enumerate(turns, start=1):
            if not turn.content.strip():
                raise TemplateError(f"chat turn {i} ({turn.role}) is blank")
    size = sum(len(text) for text in _texts(template))
    if size > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"template has {size} characters, more than {MAX_TEMPLATE_CHARS}")
    placeholders(template)


def type_error(variable: Variable, value: Any) -> str | None:
    """Why `value` does not fit the variable's type, or None if it does."""
    ok = {
        "string": isinstance(value, str),
        "number": _is_number(value),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "json": _is_json(value),
    }[variable.type]
    if ok:
        return None
    return f"variable {variable.name!r} must be {variable.type}, got {type(value).__name__}"


def as_template(value: Any) -> Template:
    """A template from its stored form: a string, or turns as ChatTurn objects or dicts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return _turns(list(value))
    raise TemplateError(
        f"a template is a string or a list of chat turns, got {type(value).__name__}"
    )


def dump_template(template: Template) -> str | list[dict[str, str]]:
    """A template as plain JSON data (for events and wire messages)."""
    if isinstance(template, str):
        return template
    return [turn.model_dump() for turn in _turns(template)]


def dump_variables(variables: list[Variable] | tuple[Variable, ...]) -> list[dict[str, Any]]:
    return [v.model_dump() for v in variables]


def load_variables(data: Iterable[Variable | Mapping[str, Any]]) -> tuple[Variable, ...]:
    return tuple(Variable.model_validate(v) for v in data)


def _texts(template: Template) -> list[str]:
    if isinstance(template, str):
        return [template]
    return [turn.content for turn in _turns(template)]


def _turns(template: list[ChatTurn]) -> list[ChatTurn]:
    return [ChatTurn.model_validate(turn) for turn in template]


def _names_in(text: str) -> list[str]:
    names = []
    for match in _PLACEHOLDER.finditer(text):
        name = match.group(1).strip()
        if not _NAME.match(name):
            raise TemplateError(
                f"placeholder {match.group(0)!r} is not a variable name"
                " (letters, digits and _, not starting with a digit)"
            )
        if len(name) > 64:
            raise TemplateError(f"placeholder name {name[:20]!r}... is longer than 64 characters")
        names.append(name)
    return names


def _render_value(variable: Variable, value: Any) -> str:
    if value is None:
        value = variable.default
    if value is None:
        if variable.required:
            raise RenderError(variable.name, f"missing required variable {variable.name!r}")
        return ""
    problem = type_error(variable, value)
    if problem:
        raise RenderError(variable.name, problem)
    if variable.type == "boolean":
        return "true" if value else "false"
    if variable.type == "json":
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _fill(text: str, rendered: Mapping[str, str], where: str) -> str:
    content = _PLACEHOLDER.sub(lambda m: rendered[m.group(1).strip()], text)
    if not content.strip():
        names = _names_in(text)
        culprit = names[0] if names else ""
        raise RenderError(
            culprit,
            f"{where} renders empty: variable {culprit!r} gave it no content",
        )
    return content


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not (isinstance(value, float) and not math.isfinite(value))


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
