"""The bodies of `llmbus prompts …`: managed prompts, the domain prompts, and the playground."""

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from pydantic import ValidationError
from rich import box
from rich.markup import escape
from rich.table import Table

from llmbus.cli.commands import console, fail
from llmbus.cli.conversations import ask, invalid, local_time
from llmbus.shared.prompts.template import ChatTurn, Template, Variable, VariableType

if TYPE_CHECKING:
    from llmbus.client import Client
    from llmbus.shared.contracts.prompt import PromptView

TYPES: tuple[str, ...] = get_args(VariableType)


def run_create(
    key: str, name: str | None, template: str | None, template_file: Path | None,
    variables: list[str], description: str, labels: list[str], author: str | None, note: str,
) -> None:  # fmt: skip
    body = read_template(template, template_file)
    if body is None:
        fail("a new prompt needs --template TEXT or --template-file PATH")
    declared = [parse_var(spec) for spec in variables]

    async def create(client: "Client") -> "PromptView":
        return await client.prompts.create(
            key, name or key, body, variables=declared, description=description,
            labels=labels, author=author, note=note,
        )  # fmt: skip

    view = ask(create)
    console.print(
        f"created prompt {view.key} version {view.version} ({labels_text(view)})", soft_wrap=True
    )


def run_update(
    key: str, name: str | None, template: str | None, template_file: Path | None,
    variables: list[str], description: str | None, labels: list[str], author: str | None,
    note: str,
) -> None:  # fmt: skip
    body = read_template(template, template_file)
    declared = [parse_var(spec) for spec in variables] if variables else None

    async def update(client: "Client") -> "PromptView":
        return await client.prompts.update(
            key, template=body, variables=declared, name=name, description=description,
            labels=labels, author=author, note=note,
        )  # fmt: skip

    view = ask(update)
    console.print(
        f"prompt {view.key}: version {view.version} created ({labels_text(view)})", soft_wrap=True
    )


def run_list(include_domain: bool, fmt: str) -> None:
    items = ask(lambda client: client.prompts.list(include_domain=include_domain))
    if fmt == "json":
        print(json.dumps([i.model_dump(mode="json") for i in items], indent=2))
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in ("key", "source", "active", "latest", "production", "name"):
        table.add_column(column, justify="right" if column in ("latest", "production") else "left")
    for item in items:
        production = item.labels.get("production")
        table.add_row(
            item.key, item.source, "yes" if item.active else "no", f"v{item.latest_version}",
            f"v{production}" if production else "—", escape(item.name),
        )  # fmt: skip
    console.print(table if items else "no prompts yet")


def run_show(key: str, label: str | None, version: int | None, fmt: str) -> None:
    view = ask(lambda client: client.prompts.get(key, label=label, version=version))
    if fmt == "json":
        print(view.model_dump_json(indent=2))
        return
    state = "active" if view.active else "deactivated"
    name = f" · {escape(view.name)}" if view.name != view.key else ""
    console.print(f"[bold]{view.key}[/]{name} ({view.source}, {state})", soft_wrap=True)
    made = f" · by {escape(view.author)}" if view.author else ""
    made += f" at {local_time(view.created_at)}" if view.created_at else ""
    console.print(
        f"version {view.version} of {view.latest_version} · {labels_text(view)}{made}",
        soft_wrap=True,
    )
    if view.note:
        console.print(f"note: {escape(view.note)}", soft_wrap=True)
    if view.description:
        console.print(escape(view.description), soft_wrap=True)
    if view.variables:
        table = Table(title="variables", box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
        for column in ("name", "type", "required", "default", "description"):
            table.add_column(column)
        for v in view.variables:
            default = "—" if v.default is None else json.dumps(v.default, ensure_ascii=False)
            table.add_row(v.name, v.type, "yes" if v.required else "no", escape(default),
                          escape(v.description))  # fmt: skip
        console.print(table)
    console.print("[bold]template[/]")
    print_template(view.template)


def run_history(key: str, fmt: str) -> None:
    entries = ask(lambda client: client.prompts.history(key))
    if fmt == "json":
        print(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in ("v", "event", "label", "author", "time", "note"):
        table.add_column(column, justify="right" if column == "v" else "left",
                         no_wrap=column in ("event", "time"),
                         min_width=10 if column == "label" else None)  # fmt: skip
    for e in entries:
        label = e.label or "\n".join(e.labels)
        version = "" if e.version is None else str(e.version)
        table.add_row(version, e.event, label, escape(e.author), local_time(e.at),
                      escape(e.note))  # fmt: skip
    console.print(table)


def run_move(action: str, key: str, label: str, version: int, author: str | None) -> None:
    async def move(client: "Client") -> "PromptView":
        if action == "rollback":
            return await client.prompts.rollback(key, label, version, author=author)
        return await client.prompts.label(key, label, version, author=author)

    view = ask(move)
    verb = "rolled back" if action == "rollback" else "moved"
    console.print(
        f"prompt {view.key}: {label} {verb} to version {version} ({labels_text(view)})",
        soft_wrap=True,
    )


def run_activation(key: str, active: bool, author: str | None) -> None:
    view = ask(
        lambda client: (client.prompts.activate if active else client.prompts.deactivate)(
            key, author=author
        )
    )
    console.print(f"prompt {view.key} is {'active' if view.active else 'deactivated'}")


def run_render(
    key: str, label: str | None, version: int | None, sets: list[str], vars_json: str | None,
    fmt: str,
) -> None:  # fmt: skip
    async def render(client: "Client") -> Any:
        values = await variable_values(client, key, label, version, sets, vars_json)
        return await client.prompts.render(key, values, label=label, version=version)

    rendered = ask(render)
    if fmt == "json":
        print(rendered.model_dump_json(indent=2))
        return
    console.print(f"[dim]prompt {rendered.key} version {rendered.version}[/]")
    for message in rendered.messages:
        console.print(f"[bold]── {message.role}[/]")
        console.print(message.content, markup=False, soft_wrap=True)


def run_test(
    key: str, label: str | None, version: int | None, sets: list[str], vars_json: str | None,
    model: str, max_tokens: int | None, user: str | None,
) -> None:  # fmt: skip
    from llmbus.client import CompletionError, new_request_id
    from llmbus.shared.contracts import CompletionRequested

    params = {"max_tokens": max_tokens} if max_tokens else {}

    async def playground(client: "Client") -> Any:
        values = await variable_values(client, key, label, version, sets, vars_json)
        preview = await client.prompts.preview(
            key, values, model, label=label, version=version, params=params
        )
        console.print(
            f"[bold]cost preview[/] (before the call, no model called): prompt {preview.key} "
            f"version {preview.version} on {preview.model}\n"
            f"  {preview.prompt_tokens} prompt tokens at list price = "
            f"${preview.input_cost_usd:.6f}\n"
            f"  worst case, with {preview.max_output_tokens} output tokens: "
            f"${preview.worst_case_cost_usd:.6f}",
            soft_wrap=True,
        )
        # the version the preview priced, so a label moved meanwhile cannot change what runs
        request = CompletionRequested.model_validate({
            "request_id": new_request_id(), "model": model, "user_id": user, "params": params,
            "prompt": {"key": key, "version": preview.version, "variables": values},
        })  # fmt: skip
        with console.status(f"calling {model}…"):
            try:
                return preview, await client.complete(request)
            except CompletionError as exc:
                fail(str(exc))

    preview, reply = ask(playground)
    console.print("[bold]output[/]")
    console.print(reply.content or "", markup=False, soft_wrap=True)
    console.print(
        f"[bold]true cost[/]: ${reply.cost_usd:.6f} · {reply.usage.prompt_tokens} in / "
        f"{reply.usage.completion_tokens} out · {reply.latency_ms:.0f} ms · {reply.model} "
        f"(the worst case was ${preview.worst_case_cost_usd:.6f})",
        soft_wrap=True,
    )


def read_template(text: str | None, path: Path | None) -> Template | None:
    """--template TEXT, or --template-file: .json/.yaml/.yml holding a list of {role, content}
    is a chat template, anything else (or `-`, stdin) is a text template."""
    if text is not None and path is not None:
        fail("give --template or --template-file, not both")
    if path is None:
        return text
    if str(path) == "-":
        return sys.stdin.read().rstrip("\n")
    try:
        raw = path.read_text()
    except OSError as exc:
        fail(f"cannot read --template-file {path}: {exc.strerror or exc}")
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        return raw.rstrip("\n")
    import yaml

    try:
        data = json.loads(raw) if suffix == ".json" else yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as exc:
        fail(f"--template-file {path} is not valid {suffix[1:].upper()}: {exc}")
    if isinstance(data, str):
        return data
    if not isinstance(data, list):
        fail(f"--template-file {path}: a chat template is a list of {{role, content}} objects")
    try:
        return [ChatTurn.model_validate(turn) for turn in data]
    except ValidationError as exc:
        fail(invalid(f"--template-file {path}", exc))


def parse_var(spec: str) -> Variable:
    """NAME[:TYPE][?][=DEFAULT], e.g. `topic`, `n:integer=3`, `style:string?=plain`."""
    head, has_default, default_text = spec.partition("=")
    name, _, type_ = head.strip().partition(":")
    optional = name.endswith("?") or type_.endswith("?")
    name, type_ = name.removesuffix("?").strip(), type_.removesuffix("?").strip() or "string"
    if type_ not in TYPES:
        fail(f"--var {spec!r}: the type must be one of {', '.join(TYPES)}")
    default: Any = None
    if has_default:
        default = default_text
        if type_ != "string":
            try:
                default = json.loads(default_text)
            except ValueError:
                fail(f"--var {spec!r}: the default must be JSON for type {type_}")
    try:
        return Variable.model_validate(
            {"name": name, "type": type_, "required": not optional, "default": default}
        )
    except ValidationError as exc:
        fail(invalid(f"--var {spec!r}", exc))


async def variable_values(
    client: "Client", key: str, label: str | None, version: int | None, sets: list[str],
    vars_json: str | None,
) -> dict[str, Any]:  # fmt: skip
    """--vars-json, then each --set NAME=VALUE over it. A value is read as JSON when it parses,
    except for a variable the prompt declares as a string, which takes the text as it is."""
    values: dict[str, Any] = {}
    if vars_json is not None:
        values = parse_vars_json(vars_json)
    if not sets:
        return values
    view = await client.prompts.get(key, label=label, version=version)
    strings = {v.name for v in view.variables if v.type == "string"}
    for item in sets:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            fail(f"--set expects NAME=VALUE, got {item!r}")
        values[name] = text if name in strings else json_or_text(text)
    return values


def parse_vars_json(text: str) -> dict[str, Any]:
    """A JSON object, or @PATH of a file holding one."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            fail(f"cannot read --vars-json file {text[1:]}: {exc.strerror or exc}")
    try:
        values = json.loads(text)
    except ValueError as exc:
        fail(f"--vars-json is not valid JSON: {exc}")
    if not isinstance(values, dict):
        fail("--vars-json must be a JSON object of variable names to values")
    return values


def json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def labels_text(prompt: Any) -> str:
    labels = sorted(prompt.labels.items(), key=lambda item: (item[1], item[0]))
    return "labels: " + (", ".join(f"{name}→v{v}" for name, v in labels) or "none")


def print_template(template: Template) -> None:
    if isinstance(template, str):
        console.print(template, markup=False, soft_wrap=True)
        return
    for turn in template:
        console.print(f"[bold]── {turn.role}[/]")
        console.print(turn.content, markup=False, soft_wrap=True)
