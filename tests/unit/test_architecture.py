"""The layout holds: no service imports another, and domain modules import no infrastructure.

Read from the source with `ast`, so a violation is found without running (or importing) it.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest


def repository_root() -> Path:
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file() and (folder / "services").is_dir():
            return folder
    raise AssertionError("no repository root with services/ above this test")


SERVICES = repository_root() / "services"
# What a domain module must not know about: the message bus, the projection store, the models.
INFRASTRUCTURE = frozenset({"nats", "faststream", "duckdb", "litellm"})


def service_names() -> list[str]:
    return sorted(p.name for p in SERVICES.iterdir() if (p / "__init__.py").is_file())


def modules(service: str) -> list[Path]:
    return sorted((SERVICES / service).rglob("*.py"))


def dotted(path: Path) -> list[str]:
    """A module's package path as llmbus imports it: services/x/a.py -> services, x, a."""
    parts = list(path.relative_to(SERVICES.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imports(source: str, package: list[str]) -> Iterator[tuple[int, str]]:
    """Every module `source` imports (with line numbers), absolute and without the llmbus.
    prefix, read as though it stood in `package` (for relative imports)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.removeprefix("llmbus.")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . or .. of the module's package
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = (node.module or "").removeprefix("llmbus.")
            yield node.lineno, module
            # `from llmbus.services import usage` names a service package as the imported name
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def imported(path: Path) -> Iterator[tuple[int, str]]:
    package = dotted(path) if path.name == "__init__.py" else dotted(path)[:-1]
    return imports(path.read_text(), package)


def service_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "services" else None


def is_domain(path: Path, service: str) -> bool:
    inside = path.relative_to(SERVICES / service).parts
    return inside[0] in ("domain.py", "domain")


@pytest.mark.parametrize("service", service_names())
def test_a_service_imports_nothing_from_another_service(service: str) -> None:
    crossings = [
        f"{path.relative_to(SERVICES.parent)}:{line} imports {module}"
        for path in modules(service)
        for line, module in imported(path)
        if service_of(module) not in (None, service)
    ]
    assert crossings == [], "what two services share belongs in shared/:\n" + "\n".join(crossings)


@pytest.mark.parametrize("service", service_names())
def test_domain_modules_import_no_infrastructure(service: str) -> None:
    domain = [path for path in modules(service) if is_domain(path, service)]
    leaks = [
        f"{path.relative_to(SERVICES.parent)}:{line} imports {module}"
        for path in domain
        for line, module in imported(path)
        if module.split(".")[0] in INFRASTRUCTURE
    ]
    assert leaks == [], "domain modules stay free of NATS, DuckDB and litellm:\n" + "\n".join(leaks)


def test_every_service_keeps_its_domain_where_the_check_looks() -> None:
    names = service_names()
    assert names, f"no services found under {SERVICES}"
    # a domain kept under another name would pass the domain test above unchecked
    without = {s for s in names if not any(is_domain(p, s) for p in modules(s))}
    assert without == set(), sorted(without)


def test_the_check_sees_every_form_of_import() -> None:
    source = (
        "import llmbus.services.usage.domain\n"
        "from llmbus.services.conversation import service\n"
        "from llmbus.services import usage\n"
        "from ..usage import domain\n"
        "from . import domain as own\n"
        "from llmbus.shared import bus\n"
    )
    found = imports(source, ["services", "completion"])
    crossing = [
        (line, service_of(m)) for line, m in found if service_of(m) not in (None, "completion")
    ]
    assert crossing == [(1, "usage"), (2, "conversation"), (2, "conversation"), (3, "usage"),
                        (4, "usage"), (4, "usage")]  # fmt: skip
