"""What a new user meets first: help that lists every choice and prints without loading the
heavy libraries, and budget amounts that show their digits."""

import re
import subprocess
import sys

import pytest

from llmbus.shared.contracts import GROUP_FIELDS

# run the CLI's entry point as `llmbus` does, then report what got imported
PROBE = """
import sys
sys.argv = ["llmbus", *sys.argv[1:]]
from llmbus.cli.app import main
try:
    main()
except SystemExit:
    pass
heavy = {m.split(".")[0] for m in sys.modules} & {"pydantic", "nats", "litellm", "duckdb"}
print("HEAVY", sorted(heavy))
"""


def cli_help(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True
    )
    return result.stdout


def test_usage_help_lists_every_group_by_field_of_the_contract() -> None:
    words = set(re.findall(r"[a-z_]+", cli_help("usage", "--help")))
    assert set(GROUP_FIELDS) <= words
    assert {"prompt", "prompt_version"} <= words


@pytest.mark.parametrize("args", [["--help"], ["usage", "--help"], ["budgets", "--help"]])
def test_help_imports_neither_pydantic_nor_nats(args: list[str]) -> None:
    out = cli_help(*args)
    assert "Usage:" in out
    assert "HEAVY []" in out
