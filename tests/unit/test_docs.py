"""The README is a short front door and docs/ holds the reference: complete, linked, current."""

import re
from pathlib import Path

import typer
from pydantic import BaseModel

from llmbus.cli import reference
from llmbus.cli.app import app
from llmbus.shared import subjects
from llmbus.shared.contracts import ErrorType
from llmbus.shared.contracts.budget import BudgetDefinition
from llmbus.shared.sections import ModelEntry
from llmbus.shared.settings import ENV_KEYS, Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").rglob("*.md"))
PAGES = [README, *DOCS]

# [text](target): the target up to a space or the closing parenthesis
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.MULTILINE)


def prose(page: Path) -> str:
    """The page without its code blocks, where a # is a comment and [x](y) no link."""
    return FENCE.sub("", page.read_text())


def everything() -> str:
    return "\n".join(page.read_text() for page in PAGES)


def anchor(heading: str) -> str:
    return reference.anchor(heading)


def anchors(page: Path) -> set[str]:
    """The ids GitHub gives the page's headings; a repeated heading gets -1, -2, ..."""
    seen: dict[str, int] = {}
    ids = set()
    for heading in HEADING.findall(prose(page)):
        base = anchor(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        ids.add(base if count == 0 else f"{base}-{count}")
    return ids


def test_the_readme_stays_a_short_front_door() -> None:
    lines = README.read_text().count("\n")
    assert lines <= 350, f"README.md has {lines} lines: move the detail into docs/"


def test_every_relative_link_points_at_a_file_and_heading_that_exist() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(prose(page)):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, fragment = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif fragment and file.suffix == ".md" and fragment not in anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_subject_stream_consumer_and_header_is_documented() -> None:
    text = everything()
    names = {
        name: re.sub(r"\{(\w+)\}", r"<\1>", value)
        for name, value in vars(subjects).items()
        if name.isupper() and isinstance(value, str) and re.fullmatch(r"[\w.$<>{}-]+", value)
    }
    assert "COMPLETION_REQUESTED" in names and "DEAD_LETTER" in names
    missing = sorted(f"{name} = {value}" for name, value in names.items() if value not in text)
    assert not missing, f"not in README.md or docs/: {missing}"


def test_every_cli_command_is_documented() -> None:
    root = typer.main.get_command(app)
    ctx = reference.Context(root, info_name="llmbus")
    assert isinstance(root, reference.Group)
    paths = [sub_ctx.command_path for _, sub_ctx in reference.commands(root, ctx)]
    assert "llmbus budgets set" in paths
    text = everything()
    assert not [path for path in paths if f"`{path}" not in text]


def setting_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted keys of the settings file; a section's fields are listed, not the section."""
    keys = []
    for name, field in model.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            keys += setting_keys(section, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def test_every_setting_and_environment_variable_is_in_the_configuration_reference() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    names = [*setting_keys(Settings), *ENV_KEYS, *ModelEntry.model_fields]
    names += BudgetDefinition.model_fields
    assert "completion.claim_lease_s" in names and "LLMBUS_CLAIM_LEASE_S" in names
    assert not [name for name in names if f"`{name}`" not in text]


def test_every_error_type_is_in_the_nats_reference() -> None:
    text = (ROOT / "docs" / "nats.md").read_text()
    assert not [kind.value for kind in ErrorType if f"`{kind.value}`" not in text]


def test_the_cli_reference_is_current() -> None:
    on_disk = (ROOT / "docs" / "cli.md").read_text()
    assert on_disk == reference.render(), "docs/cli.md is stale: run make docs"
