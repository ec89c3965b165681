"""`llmbus config validate` lists every problem of a configuration file, each at its key path;
`llmbus config init` writes one that passes it, in YAML or TOML, and never a key's value."""

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import litellm
import pytest
import yaml
from typer.testing import CliRunner, Result

from llmbus.cli.app import app
from llmbus.cli.app_config import PROVIDERS
from llmbus.shared.catalog import ModelCatalog
from llmbus.shared.config_check import check_config
from llmbus.shared.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_KEYS = sorted({key for provider in PROVIDERS for key in provider.keys})


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No provider key and no configuration from the machine running the tests."""
    for key in [*PROVIDER_KEYS, "LLMBUS_CONFIG"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    yield


def llmbus(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def flat(text: str) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(text.split())


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def validate(tmp_path: Path, text: str, name: str = "llmbus.yaml") -> Result:
    return llmbus("config", "validate", str(write(tmp_path / name, text)))


BROKEN = {
    "schema errors at their key paths": (
        """
        roles:
          coder: {strategy: fastest, model: llmbus-sim/small}
        budgets:
          - {name: monthly, window: monthly, limit_usd: -5, mode: soft}
        """,
        [
            "roles.coder.strategy: Input should be 'fallback' or 'cheapest-capable' (got "
            "'fastest')",
            "budgets[0].limit_usd: Input should be greater than 0",
        ],
    ),
    "an unknown model in a role": (
        """
        roles:
          coder: {model: llmbus-sim/small, fallbacks: [llmbus-sim/large, gpt-9]}
        """,
        ["roles.coder.fallbacks[1]: unknown model 'gpt-9'"],
    ),
    "a fallback cycle between two roles": (
        """
        roles:
          writer: {model: llmbus-sim/small, fallbacks: [editor]}
          editor: {model: llmbus-sim/large, fallbacks: [writer]}
        """,
        ["roles.writer: fallback cycle: writer -> editor -> writer"],
    ),
    "a model twice in one chain": (
        """
        roles:
          coder: {model: llmbus-sim/small, fallbacks: [llmbus-sim/large, llmbus-sim/small]}
        """,
        ["roles.coder: fallback cycle: coder names 'llmbus-sim/small' twice"],
    ),
    "a budget naming an unknown role": (
        """
        roles:
          coder: {model: llmbus-sim/small}
        budgets:
          - {name: b, scope: {role: ghost}, window: daily, limit_usd: 1, mode: hard}
        """,
        ["budgets[0].scope.role: 'ghost' is not one of the roles (coder)"],
    ),
    "a budget naming an unknown model": (
        """
        budgets:
          - {name: a, window: daily, limit_usd: 1, mode: hard}
          - {name: b, scope: {model: gpt-9}, window: daily, limit_usd: 1, mode: hard}
        """,
        ["budgets[1].scope.model: unknown model 'gpt-9'"],
    ),
    "a default_role that is not a role": (
        """
        roles:
          coder: {model: llmbus-sim/small}
        default_role: writer
        """,
        ["default_role: 'writer' is not one of the roles (coder)"],
    ),
    "a fallback that names both a role and a catalog model": (
        """
        models:
          - {name: fast, litellm_model: openai/gpt-4o-mini}
        roles:
          fast: {model: llmbus-sim/small}
          coder: {model: llmbus-sim/large, fallbacks: [fast]}
        """,
        ["roles.coder.fallbacks[0]: 'fast' is both a role and a model of the catalog"],
    ),
    "a catalog entry litellm cannot map": (
        """
        models:
          - {name: mine, litellm_model: gpt-9}
        """,
        ["models[0].litellm_model: unknown model 'gpt-9'"],
    ),
    "a gateway public_url with a path": (
        """
        gateway: {public_url: "https://example.com/llmbus"}
        """,
        [
            "gateway.public_url: must be an origin such as https://llm.example.com, with no path "
            "(got 'https://example.com/llmbus')"
        ],
    ),
    "invalid YAML": (
        """
        roles:
          coder: {model: llmbus-sim/small
        """,
        ["is not valid YAML"],
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_validate_names_each_problem_and_exits_1(tmp_path: Path, case: str) -> None:
    text, messages = BROKEN[case]

    result = validate(tmp_path, text)

    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    for message in messages:
        assert message in result.stderr
    assert re.search(rf"error: .*llmbus.yaml: {len(messages)} problems?\n", result.stderr)


def test_validate_reports_every_problem_not_only_the_first(tmp_path: Path) -> None:
    result = validate(
        tmp_path,
        """
        completion: {concurrency: 0}
        roles:
          a: {model: llmbus-sim/small, fallbacks: [b]}
          b: {model: llmbus-sim/large, fallbacks: [a]}
          c: {model: gpt-9}
          d: {strategy: cheapest-capable}
        budgets:
          - {name: x, scope: {role: ghost}, window: daily, limit_usd: 1, mode: soft}
        default_role: nobody
        """,
    )

    assert result.exit_code == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert [line.split(":")[0] for line in problems] == [
        "  - completion.concurrency",  # the schema's, first
        "  - roles.d",
        "  - roles.c.model",  # then what parsed is cross-checked
        "  - roles.a",  # one loop, reported once
        "  - budgets[0].scope.role",
        "  - default_role",
    ]
    assert "strategy cheapest-capable needs candidates" in result.stderr


def test_validate_reports_invalid_toml(tmp_path: Path) -> None:
    result = validate(tmp_path, 'default_role = "coder\n', name="llmbus.toml")

    assert result.exit_code == 1
    assert "llmbus.toml is not valid TOML" in result.stderr


def test_validate_without_a_file_says_how_to_make_one() -> None:
    result = llmbus("config", "validate")

    assert result.exit_code == 1
    assert "llmbus config init" in flat(result.stderr)


def test_validate_reads_llmbus_config_by_default(tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere.yaml", "default_role: nobody\n")

    result = llmbus("config", "validate", env={"LLMBUS_CONFIG": str(path)})

    assert result.exit_code == 1
    assert "default_role: 'nobody' is not one of the roles (none are defined)" in result.stderr


def test_the_example_configuration_is_valid() -> None:
    result = llmbus("config", "validate", str(ROOT / "llmbus.example.yaml"))

    assert result.exit_code == 0, result.output
    assert "2 models in the catalog (gpt-4o-mini, local-llama)" in flat(result.stdout)


@pytest.mark.parametrize("name", ["llmbus.yaml", "llmbus.toml"])
def test_init_writes_a_configuration_that_validates(tmp_path: Path, name: str) -> None:
    written = llmbus("config", "init", name)

    assert written.exit_code == 0, written.output
    assert f"next: llmbus config validate {name}" in written.stdout
    text = (tmp_path / name).read_text()
    assert text.startswith("# llmbus configuration")
    checked = llmbus("config", "validate", name)
    assert checked.exit_code == 0, checked.output
    assert flat(checked.stdout) == (
        f"{name} is valid: 2 models in the catalog (llmbus-sim/small, llmbus-sim/large), 1 "
        "role (assistant: llmbus-sim/small -> llmbus-sim/large), 1 budget (monthly: monthly "
        "soft $50); default role: assistant."
    )
    settings = load_settings({"LLMBUS_CONFIG": str(tmp_path / name)})
    assert settings.default_role == "assistant"
    assert [(b.window, b.mode, b.scope) for b in settings.budgets] == [("monthly", "soft", {})]


def test_init_writes_the_default_file_and_refuses_to_overwrite_it(tmp_path: Path) -> None:
    assert llmbus("config", "init").exit_code == 0
    (tmp_path / "llmbus.yaml").write_text("# mine\n")

    refused = llmbus("config", "init")

    assert refused.exit_code == 1
    assert "llmbus.yaml exists: pass --force to overwrite it" in refused.stderr
    assert (tmp_path / "llmbus.yaml").read_text() == "# mine\n"
    assert llmbus("config", "init", "--force").exit_code == 0
    assert check_config(tmp_path / "llmbus.yaml").ok


def test_init_lists_a_model_for_each_key_in_the_environment_but_never_the_key(
    tmp_path: Path,
) -> None:
    secret = "sk-test-do-not-write-me-0123456789"
    env = {"OPENAI_API_KEY": secret, "GOOGLE_API_KEY": secret + "-g"}

    for name in ("llmbus.yaml", "llmbus.toml"):
        result = llmbus("config", "init", name, env=env)

        assert result.exit_code == 0, result.output
        text = (tmp_path / name).read_text()
        assert secret not in text and secret not in result.output
        assert "OPENAI_API_KEY" in text
        report = check_config(tmp_path / name)
        assert report.ok, report.problems
        assert report.settings is not None
        models = {m.name: m for m in report.settings.models}
        assert list(models) == ["gpt-4o-mini", "gemini-2.5-flash"]
        assert models["gpt-4o-mini"].target == "openai/gpt-4o-mini"
        assert models["gpt-4o-mini"].api_key_env is None  # litellm's standard variable
        assert models["gemini-2.5-flash"].api_key_env == "GOOGLE_API_KEY"
        assert report.settings.roles["assistant"].names == ["gpt-4o-mini", "gemini-2.5-flash"]


def test_every_starter_model_is_in_litellms_price_map() -> None:
    catalog = ModelCatalog(Settings())
    for provider in PROVIDERS:
        target = provider.litellm_model
        assert target in litellm.model_cost or target.split("/", 1)[1] in litellm.model_cost
        assert catalog.list_price(target).priced, target


VALID_YAML = """
models:
  - name: fast
    litellm_model: openai/gpt-4o-mini
    supports_json_mode: true
    params: {temperature: 0.2}
defaults:
  params: {temperature: 0.7}
roles:
  coder: {model: fast, fallbacks: [llmbus-sim/large], params: {max_tokens: 500}}
  clarifier:
    strategy: cheapest-capable
    candidates: [llmbus-sim/small, fast]
    requires: {json_mode: true}
default_role: clarifier
budgets:
  - {name: coder-daily, scope: {role: coder}, window: daily, limit_usd: 2.5, mode: hard,
     thresholds: [0.8, 1.0], timezone: Europe/Berlin}
"""
VALID_TOML = """
default_role = "clarifier"

[[models]]
name = "fast"
litellm_model = "openai/gpt-4o-mini"
supports_json_mode = true
params = {temperature = 0.2}

[defaults.params]
temperature = 0.7

[roles.coder]
model = "fast"
fallbacks = ["llmbus-sim/large"]
params = {max_tokens = 500}

[roles.clarifier]
strategy = "cheapest-capable"
candidates = ["llmbus-sim/small", "fast"]
requires = {json_mode = true}

[[budgets]]
name = "coder-daily"
scope = {role = "coder"}
window = "daily"
limit_usd = 2.5
mode = "hard"
thresholds = [0.8, 1.0]
timezone = "Europe/Berlin"
"""


def test_the_same_configuration_in_yaml_and_in_toml_gives_the_same_settings(
    tmp_path: Path,
) -> None:
    as_yaml = check_config(write(tmp_path / "a.yaml", VALID_YAML))
    as_toml = check_config(write(tmp_path / "a.toml", VALID_TOML))

    assert as_yaml.ok and as_toml.ok, (as_yaml.problems, as_toml.problems)
    assert as_yaml.settings == as_toml.settings
    loaded = load_settings({"LLMBUS_CONFIG": str(tmp_path / "a.toml")})
    assert loaded == load_settings({"LLMBUS_CONFIG": str(tmp_path / "a.yaml")})
    assert loaded == as_yaml.settings
    assert as_yaml.summary is not None
    assert as_yaml.summary.roles == {
        "coder": ["fast", "llmbus-sim/large"],
        "clarifier": ["llmbus-sim/small", "fast"],
    }
    assert yaml.safe_load(VALID_YAML)["default_role"] == loaded.default_role == "clarifier"
