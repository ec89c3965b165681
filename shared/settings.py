"""The one settings object: llmbus.yaml or llmbus.toml (or $LLMBUS_CONFIG), then environment
overrides."""

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import Field, ValidationError, model_validator

from llmbus.shared.contracts.budget import BudgetDefinition
from llmbus.shared.errors import ConfigError
from llmbus.shared.routing.config import Defaults, RoleEntry, RoleName
from llmbus.shared.sections import (
    CompletionSettings,
    ConversationSettings,
    GatewaySettings,
    ModelEntry,
    PostgresSettings,
    Section,
    UsageSettings,
)


class Settings(Section):
    state_dir: Path = Path(".llmbus")
    nats_url: str | None = Field(
        default=None, description="One URL or a comma-separated list of cluster nodes."
    )
    nats_creds: Path | None = Field(
        default=None,
        description="NATS credentials: a user nkey seed (`llmbus clients create`) or a .creds "
        "file. Default: the operator's, from the state folder of `llmbus up`.",
    )
    nats_tls_ca: Path | None = Field(
        default=None, description="CA certificate that signed the NATS server's (tls:// URLs)."
    )
    stream_replicas: int = Field(
        default=1, ge=1, le=5, description="JetStream replicas per stream; 3 on a 3-node cluster."
    )
    event_store: Literal["sqlite", "postgres"] = "sqlite"
    sqlite_synchronous: Literal["normal", "full"] = Field(
        default="normal",
        description="normal: commits survive a process crash; full: also power loss (slower).",
    )
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    log_level: str = "INFO"
    metrics_base_port: int | None = Field(
        default=None, ge=1, le=65535, description="`llmbus up` gives each service process a "
        "metrics port from here: usage, conversation, then each completion worker.",
    )  # fmt: skip
    completion: CompletionSettings = Field(default_factory=CompletionSettings)
    usage: UsageSettings = Field(default_factory=UsageSettings)
    conversation: ConversationSettings = Field(default_factory=ConversationSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    models: list[ModelEntry] = Field(default_factory=list)
    defaults: Defaults = Field(default_factory=Defaults)
    roles: dict[RoleName, RoleEntry] = Field(default_factory=dict)
    default_role: str | None = Field(
        default=None, description="The role of a request that names neither a model nor a role."
    )
    budgets: list[BudgetDefinition] = Field(default_factory=list)

    @model_validator(mode="after")
    def _default_role_is_a_role(self) -> Self:
        if self.default_role is not None and self.default_role not in self.roles:
            raise ValueError(f"default_role {self.default_role!r} is not one of the roles")
        return self

    @property
    def admission_on(self) -> bool:
        admission = self.completion.admission
        return admission == "on" or (admission == "auto" and bool(self.budgets))

    @property
    def budget_lease_s(self) -> float:
        """Long enough for every attempt of a call: a shorter lease could free budget early."""
        attempts = self.completion.num_retries + 1
        return attempts * self.completion.timeout_s + self.completion.lease_margin_s

    @property
    def duckdb_path(self) -> Path:
        return self.usage.duckdb_path or self.state_dir / "usage.duckdb"

    def model(self, name: str) -> ModelEntry | None:
        return next((m for m in self.models if m.name == name), None)


# env var -> dotted settings path. Provider keys are never read here: litellm reads them.
ENV_KEYS: dict[str, str] = {
    "LLMBUS_STATE_DIR": "state_dir",
    "NATS_URL": "nats_url",
    "NATS_CREDS": "nats_creds",
    "NATS_TLS_CA": "nats_tls_ca",
    "LLMBUS_STREAM_REPLICAS": "stream_replicas",
    "LLMBUS_EVENT_STORE": "event_store",
    "LLMBUS_SQLITE_SYNCHRONOUS": "sqlite_synchronous",
    "LLMBUS_LOG_LEVEL": "log_level",
    "LLMBUS_CONCURRENCY": "completion.concurrency",
    "LLMBUS_ACK_WAIT_S": "completion.ack_wait_s",
    "LLMBUS_MAX_DELIVER": "completion.max_deliver",
    "LLMBUS_NUM_RETRIES": "completion.num_retries",
    "LLMBUS_TIMEOUT_S": "completion.timeout_s",
    "LLMBUS_PRIVACY": "completion.privacy",
    "LLMBUS_ADMISSION": "completion.admission",
    "LLMBUS_LEASE_MARGIN_S": "completion.lease_margin_s",
    "LLMBUS_ADMISSION_WAIT_S": "completion.admission_wait_s",
    "LLMBUS_GRANT_REQUESTS": "completion.grant_requests",
    "LLMBUS_CLAIM_LEASE_S": "completion.claim_lease_s",
    "LLMBUS_COOLDOWN_S": "completion.cooldown_s",
    "LLMBUS_DUCKDB_PATH": "usage.duckdb_path",
    "LLMBUS_CONVERSATION_MODEL": "conversation.default_model",
    "LLMBUS_METRICS_BASE_PORT": "metrics_base_port",
    "LLMBUS_COMPLETION_METRICS_PORT": "completion.metrics_port",
    "LLMBUS_COMPLETION_METRICS_HOST": "completion.metrics_host",
    "LLMBUS_USAGE_METRICS_PORT": "usage.metrics_port",
    "LLMBUS_USAGE_METRICS_HOST": "usage.metrics_host",
    "LLMBUS_CONVERSATION_METRICS_PORT": "conversation.metrics_port",
    "LLMBUS_CONVERSATION_METRICS_HOST": "conversation.metrics_host",
    "LLMBUS_GATEWAY_HOST": "gateway.host",
    "LLMBUS_GATEWAY_PORT": "gateway.port",
    "LLMBUS_GATEWAY_PUBLIC_URL": "gateway.public_url",
    "POSTGRES_HOST": "postgres.host",
    "POSTGRES_PORT": "postgres.port",
    "POSTGRES_USER": "postgres.user",
    "POSTGRES_PASSWORD": "postgres.password",
    "POSTGRES_DBNAME": "postgres.dbname",
    "POSTGRES_SCHEMA": "postgres.schema_name",
}


def config_path(env: Mapping[str, str]) -> Path | None:
    if env.get("LLMBUS_CONFIG"):
        path = Path(env["LLMBUS_CONFIG"])
        if not path.is_file():
            raise ConfigError(f"LLMBUS_CONFIG points at {path}, which is not a file")
        return path
    for default in (Path("llmbus.yaml"), Path("llmbus.toml")):
        if default.is_file():
            return default
    return None


def read_config_file(path: Path) -> dict[str, Any]:
    """A configuration file's mapping: TOML for a .toml file, else YAML."""
    try:
        if path.suffix.lower() == ".toml":
            return tomllib.loads(path.read_text())
        raw = yaml.safe_load(path.read_text()) or {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return raw


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    path = config_path(env)
    if path is not None:
        raw = read_config_file(path)
    for var, dotted in ENV_KEYS.items():
        if env.get(var):
            *parents, leaf = dotted.split(".")
            node = raw
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = env[var]
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        where = path or "environment"
        raise ConfigError(f"invalid configuration ({where}):\n{exc}") from None
