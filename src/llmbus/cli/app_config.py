"""`llmbus config`: check a configuration file, or write a starter one.

Neither command needs NATS. The bodies import their dependencies lazily, so `llmbus --help`
stays fast.
"""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

config = typer.Typer(
    help="Check a configuration file, or write a starter one.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

FileArgument = Annotated[
    Path | None,
    typer.Argument(
        help="The configuration file (.toml: TOML, else YAML). Default: $LLMBUS_CONFIG, else "
        "./llmbus.yaml, else ./llmbus.toml.",
        metavar="FILE",
        show_default=False,
    ),
]


@config.command("validate")
def validate(file: FileArgument = None) -> None:
    """Check a configuration file without starting anything, and list every problem found.

    Besides the schema, it checks that each model named by a role or a budget is one a provider
    serves, that fallbacks neither loop nor name a model twice in one chain, and that budgets
    and default_role name roles that exist. Environment overrides are not applied. Exits with 1
    when there is a problem, else prints a summary.
    """
    run_validate(file)


@config.command("init")
def init(
    file: FileArgument = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter configuration that passes `llmbus config validate`.

    It lists a model for each provider whose key is set in the environment (OPENAI_API_KEY,
    ANTHROPIC_API_KEY, GEMINI_API_KEY or GOOGLE_API_KEY, MISTRAL_API_KEY, GROQ_API_KEY,
    DEEPSEEK_API_KEY), or else the built-in llmbus-sim models; a role `assistant` that falls
    back over them, as default_role; and a soft monthly budget. Keys are never written, only the
    names of their variables. TOML when FILE ends in .toml, else YAML.
    """
    run_init(file, force)


def default_file(env: Mapping[str, str]) -> Path | None:
    """The file the settings loader would read."""
    from llmbus.shared.errors import ConfigError
    from llmbus.shared.settings import config_path

    try:
        return config_path(env)
    except ConfigError:
        return Path(env["LLMBUS_CONFIG"])  # not a file: validate says so, init writes it


def run_validate(file: Path | None) -> None:
    from rich.markup import escape

    from llmbus.cli.commands import console, err, fail
    from llmbus.shared.config_check import check_config, plural

    path = file or default_file(os.environ)
    if path is None:
        fail(
            "no configuration file: name one, or set LLMBUS_CONFIG; there is no ./llmbus.yaml "
            "or ./llmbus.toml here (`llmbus config init` writes one)"
        )
    report = check_config(path)
    if not report.ok:
        count = plural(len(report.problems), "problem")
        err.print(f"[bold red]error:[/] {escape(str(path))}: {count}", soft_wrap=True)
        for problem in report.problems:
            err.print(f"  - {escape(problem)}", soft_wrap=True, highlight=False)
        raise SystemExit(1)
    assert report.summary is not None
    console.print(escape(report.summary.describe(path)), highlight=False)


@dataclass(frozen=True)
class Provider:
    """A model to start with when one of `keys` is set; its target is in litellm's price map."""

    keys: tuple[str, ...]
    name: str
    litellm_model: str


# litellm reads each provider's key from the first of `keys`; a later one is named as api_key_env
PROVIDERS = (
    Provider(("OPENAI_API_KEY",), "gpt-4o-mini", "openai/gpt-4o-mini"),
    Provider(("ANTHROPIC_API_KEY",), "claude-haiku-4-5", "anthropic/claude-haiku-4-5"),
    Provider(("GEMINI_API_KEY", "GOOGLE_API_KEY"), "gemini-2.5-flash", "gemini/gemini-2.5-flash"),
    Provider(("MISTRAL_API_KEY",), "mistral-small", "mistral/mistral-small-latest"),
    Provider(("GROQ_API_KEY",), "gpt-oss-20b", "groq/openai/gpt-oss-20b"),
    Provider(("DEEPSEEK_API_KEY",), "deepseek-chat", "deepseek/deepseek-chat"),
)
SIM_MODELS = ("llmbus-sim/small", "llmbus-sim/large")


@dataclass(frozen=True)
class StarterModel:
    name: str
    litellm_model: str | None = None
    api_key_env: str | None = None
    comment: str = ""


def starter_models(env: Mapping[str, str]) -> list[StarterModel]:
    """A model per provider with a key in `env`; else the built-in ones."""
    found = []
    for provider in PROVIDERS:
        key = next((k for k in provider.keys if env.get(k)), None)
        if key is None:
            continue
        api_key_env = key if key != provider.keys[0] else None
        comment = f"key from {key}"
        found.append(StarterModel(provider.name, provider.litellm_model, api_key_env, comment))
    return found or [
        StarterModel(name, comment="built in: runs offline, needs no key") for name in SIM_MODELS
    ]


HEADER = """\
llmbus configuration, written by `llmbus config init`. Check it with:
    llmbus config validate {path}
Every key is described in docs/configuration.md; llmbus.example.yaml lists them all.
Provider keys never go in this file: llmbus reads each from its provider's standard variable
(OPENAI_API_KEY, ANTHROPIC_API_KEY, ...) or from the variable an entry names in api_key_env.
"""
MODELS = """\
The model catalog: requests and roles name a model by `name`; litellm_model says what to
call. A name that is not here goes to litellm as it is (e.g. openai/gpt-4o), and the built-in
llmbus-sim/small and llmbus-sim/large need no entry."""
DEFAULTS = "Parameters of every call; a model's, a role's and a request's params win over them."
ROLES = """\
Names a request may ask for instead of a model. `assistant` calls its model, and when that
fails (rate limit, outage, missing key), each of its fallbacks in turn. A role may also be
{strategy: cheapest-capable, candidates: [...], requires: {tools: true}}."""
DEFAULT_ROLE = "The role of a request that names neither a model nor a role."
BUDGETS = """\
Budgets, applied at each start of the usage service. A soft budget never refuses a request;
llmbus.budget.threshold_reached is published at 50%, 80% and 100% of its limit (watch with
`llmbus budgets watch`). mode: hard refuses what the budget cannot cover. scope: {} counts every
request; {team: research}, {user: ann}, {role: assistant} or {model: ...} count fewer."""


def comment(text: str, indent: str = "") -> str:
    return "".join(f"{indent}# {line}".rstrip() + "\n" for line in text.splitlines())


def yaml_text(path: Path, models: list[StarterModel]) -> str:
    q = json.dumps  # a JSON string is a YAML (and TOML) string
    out = comment(HEADER.format(path=path)) + "\n" + comment(MODELS) + "models:\n"
    for model in models:
        out += f"  - name: {q(model.name)}"
        out += f"  # {model.comment}\n" if model.comment else "\n"
        if model.litellm_model:
            out += f"    litellm_model: {q(model.litellm_model)}\n"
        if model.api_key_env:
            out += f"    api_key_env: {model.api_key_env}\n"
    first, *rest = [m.name for m in models]
    out += "\n" + comment(DEFAULTS) + "defaults:\n  params: {}  # e.g. {temperature: 0.7}\n"
    out += "\n" + comment(ROLES) + "roles:\n  assistant:\n    strategy: fallback\n"
    out += f"    model: {q(first)}\n    fallbacks: [{', '.join(q(name) for name in rest)}]\n"
    out += "\n" + comment(DEFAULT_ROLE) + "default_role: assistant\n"
    out += "\n" + comment(BUDGETS) + "budgets:\n  - name: monthly\n    scope: {}\n"
    out += "    window: monthly  # daily, weekly, monthly or lifetime\n"
    out += "    limit_usd: 50\n    mode: soft\n    thresholds: [0.5, 0.8, 1.0]\n"
    out += "    timezone: UTC  # the calendar the windows follow\n"
    return out


def toml_text(path: Path, models: list[StarterModel]) -> str:
    q = json.dumps
    first, *rest = [m.name for m in models]
    out = comment(HEADER.format(path=path)) + "\n"
    # top-level keys come before the first table in TOML
    out += comment(DEFAULT_ROLE) + 'default_role = "assistant"\n'
    out += "\n" + comment(MODELS)
    for model in models:
        out += "[[models]]\n" + f"name = {q(model.name)}"
        out += f"  # {model.comment}\n" if model.comment else "\n"
        if model.litellm_model:
            out += f"litellm_model = {q(model.litellm_model)}\n"
        if model.api_key_env:
            out += f"api_key_env = {q(model.api_key_env)}\n"
        out += "\n"
    out += comment(DEFAULTS) + "[defaults.params]\n# temperature = 0.7\n"
    out += "\n" + comment(ROLES) + '[roles.assistant]\nstrategy = "fallback"\n'
    out += f"model = {q(first)}\nfallbacks = [{', '.join(q(name) for name in rest)}]\n"
    out += "\n" + comment(BUDGETS) + '[[budgets]]\nname = "monthly"\nscope = {}\n'
    out += 'window = "monthly"  # daily, weekly, monthly or lifetime\n'
    out += 'limit_usd = 50\nmode = "soft"\nthresholds = [0.5, 0.8, 1.0]\n'
    out += 'timezone = "UTC"  # the calendar the windows follow\n'
    return out


def starter_text(path: Path, env: Mapping[str, str]) -> str:
    models = starter_models(env)
    if path.suffix.lower() == ".toml":
        return toml_text(path, models)
    return yaml_text(path, models)


def run_init(file: Path | None, force: bool) -> None:
    from rich.markup import escape

    from llmbus.cli.commands import console, fail

    path = file or default_file(os.environ) or Path("llmbus.yaml")
    if path.exists() and not force:
        fail(f"{path} exists: pass --force to overwrite it")
    if path.is_dir():
        fail(f"{path} is a folder")
    models = starter_models(os.environ)
    try:
        path.write_text(starter_text(path, os.environ))
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")
    names = ", ".join(m.name for m in models)
    console.print(f"wrote {escape(str(path))}", style="green", highlight=False)
    console.print(f"models: {escape(names)}; default role: assistant", highlight=False)
    console.print(f"next: llmbus config validate {escape(str(path))}", highlight=False)
