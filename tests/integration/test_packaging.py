"""What a user installs: one llmbus distribution, current schemas, and a fast query CLI."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from llmbus.shared.schemas import rendered

ROOT = Path(__file__).resolve().parents[2]


def test_schemas_folder_matches_the_contracts() -> None:
    expected = rendered()
    on_disk = {p.name: p.read_text() for p in (ROOT / "schemas").glob("*.json")}
    stale = sorted(name for name in expected if on_disk.get(name) != expected[name])
    extra = sorted(set(on_disk) - set(expected))
    assert not stale and not extra, f"schemas/ is stale ({stale}, extra {extra}): run make schemas"


def test_every_contract_schema_is_valid_json_schema() -> None:
    for name, text in rendered().items():
        doc = json.loads(text)
        # budget.status has always answered a JSON array of rows: its contract says so
        assert doc.get("type") == "object" or name in ("asyncapi.json", "BudgetStatusList.json")


def test_the_wheel_installs_only_the_llmbus_package(tmp_path: Path) -> None:
    uv = Path(sys.executable).parent / "uv"
    subprocess.run([str(uv), "build", "--wheel", "-q", "-o", str(tmp_path), str(ROOT)], check=True)
    [wheel] = tmp_path.glob("llmbus-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.startswith("llmbus-")}
    assert top_level == {"llmbus"}
    assert "llmbus/shared/contracts/completion.py" in names
    assert "llmbus/services/completion/worker.py" in names


def test_every_package_folder_is_listed_for_packaging() -> None:
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    roots = {"llmbus": ROOT / "src/llmbus", "llmbus.shared": ROOT / "shared",
             "llmbus.services": ROOT / "services"}  # fmt: skip
    found = set()
    for name, folder in roots.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            found.add(".".join((name, *rel)))
    assert found == listed


def test_query_commands_do_not_import_litellm() -> None:
    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from llmbus.cli.app import app\n"
        "result = CliRunner().invoke(app, ['usage', '--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert '--by' in result.output\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('litellm', 'duckdb')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
