"""`llmbus prompts …`: the typer commands; their bodies are in cli/prompts.py."""

from pathlib import Path
from typing import Annotated

import typer

from llmbus.cli.options import ViewFormat

prompts = typer.Typer(
    help="Managed prompts: versions, labels, rendering and the playground.",
    no_args_is_help=True, rich_markup_mode=None,
)  # fmt: skip

KeyArgument = Annotated[str, typer.Argument(help="The prompt's key.")]
LabelOption = Annotated[
    str | None, typer.Option("--label", help="production, staging, development or latest.")
]
VersionOption = Annotated[int | None, typer.Option("--version", help="A version number.", min=1)]
AuthorOption = Annotated[str | None, typer.Option(help="Who makes the change.")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="NAME=VALUE; VALUE is read as JSON when it parses. Repeatable."),
]
VarsJsonOption = Annotated[
    str | None, typer.Option("--vars-json", help="The variables as a JSON object, or @FILE.")
]
TemplateOption = Annotated[
    str | None, typer.Option("--template", help="The template text, with {{name}} placeholders.")
]
TemplateFileOption = Annotated[
    Path | None,
    typer.Option(
        "--template-file",
        help=".txt: a text template; .json/.yaml: a list of {role, content} (a chat template); "
        "-: stdin.",
    ),
]
VarOption = Annotated[
    list[str] | None,
    typer.Option(
        "--var",
        help='A variable: NAME[:TYPE][?][=DEFAULT], e.g. "style:string?=plain"; TYPE is string, '
        "number, integer, boolean or json; ? makes it optional. Repeatable.",
    ),
]
LabelsOption = Annotated[
    list[str] | None, typer.Option("--label", help="A label to put on the new version. Repeatable.")
]


@prompts.command("create")
def prompts_create(
    key: KeyArgument,
    name: Annotated[str | None, typer.Option(help="Display name (default: the key).")] = None,
    template: TemplateOption = None,
    template_file: TemplateFileOption = None,
    var: VarOption = None,
    description: Annotated[str, typer.Option(help="What the prompt is for.")] = "",
    label: LabelsOption = None,
    author: AuthorOption = None,
    note: Annotated[str, typer.Option(help="A note on this version.")] = "",
) -> None:
    """Create a managed prompt (version 1; latest points at it)."""
    from llmbus.cli.prompts import run_create

    run_create(key, name, template, template_file, var or [], description, label or [], author,
               note)  # fmt: skip


@prompts.command("update")
def prompts_update(
    key: KeyArgument,
    name: Annotated[str | None, typer.Option(help="A new display name.")] = None,
    template: TemplateOption = None,
    template_file: TemplateFileOption = None,
    var: VarOption = None,
    description: Annotated[str | None, typer.Option(help="A new description.")] = None,
    label: LabelsOption = None,
    author: AuthorOption = None,
    note: Annotated[str, typer.Option(help="A note on this version.")] = "",
) -> None:
    """Make a new immutable version of a prompt; latest moves to it."""
    from llmbus.cli.prompts import run_update

    run_update(key, name, template, template_file, var or [], description, label or [], author,
               note)  # fmt: skip


@prompts.command("list")
def prompts_list(
    domain: Annotated[
        bool, typer.Option("--domain/--no-domain", help="Include the domain prompts.")
    ] = True,
    fmt: Annotated[ViewFormat, typer.Option("--format", help="Output format.")] = ViewFormat.table,
) -> None:
    """Every prompt: the managed ones and those shipped in code."""
    from llmbus.cli.prompts import run_list

    run_list(domain, fmt.value)


@prompts.command("show")
def prompts_show(
    key: KeyArgument,
    label: LabelOption = None,
    version: VersionOption = None,
    fmt: Annotated[ViewFormat, typer.Option("--format", help="Output format.")] = ViewFormat.table,
) -> None:
    """One version of a prompt: template, variables and labels."""
    from llmbus.cli.prompts import run_show

    run_show(key, label, version, fmt.value)


@prompts.command("history")
def prompts_history(
    key: KeyArgument,
    fmt: Annotated[ViewFormat, typer.Option("--format", help="Output format.")] = ViewFormat.table,
) -> None:
    """Who changed what and when: versions, label moves, rollbacks, (de)activations."""
    from llmbus.cli.prompts import run_history

    run_history(key, fmt.value)


@prompts.command("label")
def prompts_label(
    key: KeyArgument,
    label: Annotated[str, typer.Argument(help="production, staging, development or latest.")],
    version: Annotated[int, typer.Argument(help="The version it should point at.", min=1)],
    author: AuthorOption = None,
) -> None:
    """Point a label at a version."""
    from llmbus.cli.prompts import run_move

    run_move("label", key, label, version, author)


@prompts.command("rollback")
def prompts_rollback(
    key: KeyArgument,
    label: Annotated[str, typer.Argument(help="production, staging, development or latest.")],
    version: Annotated[int, typer.Argument(help="An earlier version.", min=1)],
    author: AuthorOption = None,
) -> None:
    """Move a label back to an earlier version."""
    from llmbus.cli.prompts import run_move

    run_move("rollback", key, label, version, author)


@prompts.command("activate")
def prompts_activate(key: KeyArgument, author: AuthorOption = None) -> None:
    """Let requests use the prompt again."""
    from llmbus.cli.prompts import run_activation

    run_activation(key, True, author)


@prompts.command("deactivate")
def prompts_deactivate(key: KeyArgument, author: AuthorOption = None) -> None:
    """Refuse requests that name the prompt, until it is activated."""
    from llmbus.cli.prompts import run_activation

    run_activation(key, False, author)


@prompts.command("render")
def prompts_render(
    key: KeyArgument,
    set_: SetOption = None,
    vars_json: VarsJsonOption = None,
    label: LabelOption = None,
    version: VersionOption = None,
    fmt: Annotated[ViewFormat, typer.Option("--format", help="Output format.")] = ViewFormat.table,
) -> None:
    """Fill in a prompt's variables and print the messages a model would get."""
    from llmbus.cli.prompts import run_render

    run_render(key, label, version, set_ or [], vars_json, fmt.value)


@prompts.command("test")
def prompts_test(
    key: KeyArgument,
    set_: SetOption = None,
    vars_json: VarsJsonOption = None,
    label: LabelOption = None,
    version: VersionOption = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Model name.")] = "llmbus-sim/small",
    max_tokens: Annotated[int | None, typer.Option(help="Cap on output tokens.", min=1)] = None,
    user: Annotated[str | None, typer.Option(help="user_id to account the call to.")] = None,
) -> None:
    """The playground: a cost preview before the call, then the output and its true cost."""
    from llmbus.cli.prompts import run_test

    run_test(key, label, version, set_ or [], vars_json, model, max_tokens, user)
