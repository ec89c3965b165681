"""The one settings object: llmbus.yaml or llmbus.toml (or $LLMBUS_CONFIG), then environment
overrides."""

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    field_validator,
    model_validator,
)

from llmbus.shared.contracts.budget import BudgetDefinition
from llmbus.shared.errors import ConfigError
from llmbus.shared.routing.config import Defaults, RoleEntry, RoleName


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelEntry(Section):
    """One entry of the model catalog. Requests name a model by `name`."""

    name: str = Field(min_length=1)
    litellm_model: str | None = Field(
        default=None, description="The litellm model string; defaults to `name`."
    )
    api_base: str | None = None
    api_key_env: str | None = Field(
        default=None,
        description="Env var holding the key; defaults to the provider's standard variable.",
    )
    input_cost_per_token: float | None = Field(default=None, ge=0)
    output_cost_per_token: float | None = Field(default=None, ge=0)
    max_input_tokens: int | None = Field(default=None, ge=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    # None: as litellm's model map says (false where it does not know the model)
    supports_tools: bool | None = None
    supports_vision: bool | None = None
    supports_json_mode: bool | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def target(self) -> str:
        return self.litellm_model or self.name


class Metered(Section):
    """A service process's Prometheus metrics (docs/metrics.md)."""

    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Serve /metrics on this port; null: off."
    )
    metrics_host: str = Field(
        default="127.0.0.1", min_length=1, description="The address /metrics listens on."
    )


class CompletionSettings(Metered):
    concurrency: int = Field(default=64, ge=1, description="Requests in flight per worker.")
    ack_wait_s: float = Field(default=30.0, gt=0, description="Redelivery after a silent worker.")
    max_deliver: int = Field(default=20, ge=1)
    num_retries: int = Field(default=2, ge=0, description="litellm retries of 429/5xx.")
    timeout_s: float = Field(default=120.0, gt=0, description="Per provider call.")
    privacy: Literal["full", "metadata_only"] = "full"
    lease_margin_s: float = Field(
        default=60.0, gt=0, description="Added to the longest call when leasing a reservation."
    )
    admission: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Reserve against budgets before each call; auto: when budgets are configured.",
    )
    admission_wait_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="How long a request may wait for in-flight reservations to settle before a "
        "hard budget refuses it; 0 refuses at once.",
    )
    grant_requests: int = Field(
        default=64,
        ge=0,
        le=10_000,
        description="A worker asks to hold budget for as many worst-case requests as it runs at "
        "once plus this many, and admits against it without a round trip; 0 reserves every "
        "request at the usage service.",
    )
    max_request_bytes: int = Field(default=1_000_000, ge=1024)
    claim_lease_s: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="A worker claims a request before calling the model and renews the claim "
        "while the call runs; another worker calls again only after it has lapsed this long.",
    )
    cooldown_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="How long a model that answered 429 is passed over by this worker, when the "
        "provider sends no Retry-After.",
    )
    credential_check_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="The start's credential check waits no longer."
    )
    credential_recheck_s: float = Field(
        default=300.0, gt=0, description="Models whose credentials failed are checked this often."
    )


class UsageSettings(Metered):
    duckdb_path: Path | None = Field(default=None, description="Defaults to <state>/usage.duckdb")


class ConversationSettings(Metered):
    default_model: str | None = Field(
        default=None,
        min_length=1,
        description="The model of a chat turn that names none, in a conversation that has none.",
    )


class GatewaySettings(Section):
    """The OpenAI-compatible HTTP gateway (`llmbus serve gateway`)."""

    host: str = Field(default="127.0.0.1", min_length=1, description="Address to listen on.")
    port: int = Field(
        default=4000, ge=0, le=65535, description="Port to listen on; 0: a free one, written "
        "to <state_dir>/gateway.url.",
    )  # fmt: skip
    key_cache_s: float = Field(
        default=30.0, ge=0, le=3600, description="How long a verified key is trusted before it "
        "is asked about again (a revocation reaches every gateway at once).",
    )  # fmt: skip
    # below the NATS default max_payload (1 MiB), less the headers a request gets on its way
    max_body_bytes: int = Field(default=1_000_000, ge=1024, le=64_000_000)
    request_timeout_s: float = Field(
        default=300.0, gt=0, description="A request with no answer (or a stream silent) this "
        "long is cancelled and answered 504.",
    )  # fmt: skip
    public_url: HttpUrl | None = Field(
        default=None, description="The URL browsers open the gateway by, where a proxy in front "
        "of it terminates TLS or changes the host (https://llm.example.com): the console takes "
        "forms from that origin too.",
    )  # fmt: skip

    @field_validator("public_url")
    @classmethod
    def _an_origin(cls, url: HttpUrl | None) -> HttpUrl | None:
        # the console's pages, links and cookie live at /ui of the host: no path prefix
        if url is not None and (url.path not in (None, "/") or url.query or url.fragment):
            raise ValueError("must be an origin such as https://llm.example.com, with no path")
        return url

    @property
    def public_origin(self) -> str | None:
        """public_url as a browser's Origin header gives it (a default port left out)."""
        url = self.public_url
        if url is None:
            return None
        default = {"http": 80, "https": 443}[url.scheme]
        return f"{url.scheme}://{url.host}" + ("" if url.port == default else f":{url.port}")


# the gateway writes the URL it listens on here, under the state folder (port 0 included)
GATEWAY_URL_FILE = "gateway.url"


class PostgresSettings(Section):
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = ""
    dbname: str = "llmbus"
    schema_name: str = Field(default="", description="Schema for the event tables; empty: public.")


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
