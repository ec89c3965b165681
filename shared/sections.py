"""The sections of the settings object: each service's own, the model catalog's entries, and
PostgreSQL's. llmbus.shared.settings puts them together and loads them."""

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator


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
