"""What the console's forms and links send, read into what the SDK takes; no I/O.

Every value a browser sends is text. These functions turn it into dates, filters, prompt
variables and templates, and refuse what does not fit with a message that names the field.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from llmbus.shared.contracts.base import describe
from llmbus.shared.errors import InvalidRequestError, RequestError
from llmbus.shared.prompts.template import ChatTurn, Template, Variable

# the dashboard's period when the link names none: the last seven days (UTC)
DEFAULT_DAYS = 7
TRUE = frozenset({"true", "on", "yes", "1"})
FALSE = frozenset({"false", "off", "no", "0", ""})


class FormError(InvalidRequestError):
    """A field the console cannot read; the message names it."""


def moment(name: str, text: str | None) -> datetime | None:
    """A date (midnight UTC) or an ISO time (UTC unless it names a zone); empty: none."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise FormError(f"{name} must be a date (2026-01-31) or an ISO time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def chosen(query: Mapping[str, str], fields: Sequence[str]) -> dict[str, str]:
    """The fields given a value, stripped: a usage query's filters."""
    values = ((name, query.get(name, "").strip()) for name in fields)
    return {name: value for name, value in values if value}


@dataclass(frozen=True)
class Period:
    """The dashboard's filters: a period and the usage query filters (model, team)."""

    since: datetime | None
    until: datetime | None
    filters: dict[str, str] = field(default_factory=dict)

    def shown(self, name: str) -> str:
        """A bound as its form field shows it."""
        value = self.since if name == "since" else self.until
        if value is None:
            return ""
        if value.time() == time() and value.tzinfo == UTC:
            return value.date().isoformat()
        return value.isoformat()


def period(query: Mapping[str, str], today: date) -> Period:
    """A link without `since` shows the last DEFAULT_DAYS days; an empty `since`: all time."""
    if "since" in query:
        since = moment("since", query["since"])
    else:
        since = datetime.combine(today - timedelta(days=DEFAULT_DAYS - 1), time(), UTC)
    until = moment("until", query.get("until"))
    if since is not None and until is not None and until <= since:
        raise FormError("until must come after since")
    return Period(since, until, chosen(query, ("model", "team")))


def cursor(query: Mapping[str, str], name: str) -> int | None:
    """A page cursor from a link: a position, or none."""
    text = query.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise FormError(f"{name} must be a whole number")
    return int(text)


def safe_next(target: str | None) -> str:
    """Where a login may send the browser back: a console path of this site, never elsewhere
    (//evil.example, https://..., /ui\\..)."""
    target = (target or "").strip()
    parts = urlsplit(target)
    local = not parts.scheme and not parts.netloc and "\\" not in target
    inside = parts.path == "/ui" or parts.path.startswith("/ui/")
    if local and inside and not target.startswith("//"):
        return target
    return "/ui"


def same_origin(origin: str | None, scheme: str, host: str, public: str | None = None) -> bool:
    """Whether a POST comes from the console's own pages: browsers send Origin with every
    POST, and another site's page cannot forge it (the cookie is SameSite=Strict as well).
    `public`: the origin browsers use where a proxy in front rewrites the scheme or host."""
    return origin is not None and origin in (f"{scheme}://{host}", public)


def variables(declared: Sequence[Variable], form: Mapping[str, str]) -> dict[str, Any]:
    """The playground's variables, typed as declared (`var.<name>` fields). An empty field
    is left out, so that a default applies, or the render names what is missing."""
    values: dict[str, Any] = {}
    for variable in declared:
        text = form.get(f"var.{variable.name}", "")
        if variable.type != "boolean" and not text.strip():
            continue
        values[variable.name] = typed(variable, text)
    return values


def typed(variable: Variable, text: str) -> Any:
    try:
        match variable.type:
            case "number":
                return float(text)
            case "integer":
                return int(text)
            case "boolean":
                if text.strip().lower() not in TRUE | FALSE:
                    raise ValueError(text)
                return text.strip().lower() in TRUE
            case "json":
                return json.loads(text)
    except ValueError:
        raise FormError(f"variable {variable.name!r} must be {variable.type}") from None
    return text


def template_text(template: Template) -> str:
    """A template as its edit box shows it: the text, or chat turns as JSON."""
    if isinstance(template, str):
        return template
    turns = [turn.model_dump() for turn in template]
    return json.dumps(turns, indent=2, ensure_ascii=False)


def template_of(text: str, chat: bool) -> Template:
    """The edit box read back: a chat template is a JSON list of {role, content} turns."""
    text = text.replace("\r\n", "\n")
    if not chat:
        if not text.strip():
            raise FormError("the template must not be empty")
        return text
    try:
        return [ChatTurn.model_validate(turn) for turn in json.loads(text)]
    except (ValueError, TypeError):
        raise FormError(
            'a chat template is a JSON list of turns: [{"role": "system", "content": "..."}]'
        ) from None


def version(form: Mapping[str, str], name: str = "version") -> int:
    text = form.get(name, "").strip()
    if not text.isdigit() or int(text) < 1:
        raise FormError(f"{name} must be a version number")
    return int(text)


def reason(exc: Exception) -> str:
    """Why a form was refused, in one line: a service's message, or the fields at fault
    (never the values sent)."""
    if isinstance(exc, ValidationError):
        return describe(exc)
    if isinstance(exc, RequestError):
        return exc.message
    return str(exc)
