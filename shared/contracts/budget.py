"""Budgets: their definition (config file and llmbus.budget.set), admission, and events."""

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from llmbus.shared.contracts.base import Contract, RequestId, utcnow

# the grid budgets count money on: reservations round up to it, settlements round to it
COST_QUANTUM = Decimal("1e-10")

ScopeKey = Literal["team", "user", "project", "model", "role"]
Window = Literal["daily", "weekly", "monthly", "lifetime"]
Mode = Literal["hard", "soft"]
BudgetName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
]


class BudgetDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: BudgetName
    scope: dict[ScopeKey, Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=dict
    )
    window: Window
    limit_usd: Decimal = Field(gt=0)
    mode: Mode
    thresholds: list[float] = Field(default_factory=lambda: [0.5, 0.8, 1.0])
    timezone: str = "UTC"

    @field_validator("thresholds")
    @classmethod
    def check_thresholds(cls, thresholds: list[float]) -> list[float]:
        for threshold in thresholds:
            if not 0 < threshold <= 1:
                raise ValueError(f"threshold {threshold} is not in (0, 1]")
        if len(set(thresholds)) != len(thresholds):
            raise ValueError(f"thresholds {thresholds} repeat a value")
        return sorted(thresholds)

    @field_validator("timezone")
    @classmethod
    def check_timezone(cls, timezone: str) -> str:
        zone(timezone)
        return timezone

    def matches(self, attrs: Mapping[str, str | None]) -> bool:
        return all(attrs.get(key) == value for key, value in self.scope.items())


def zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown timezone {timezone!r}: use an IANA name") from error


class BudgetThresholdReached(Contract):
    """Published to llmbus.budget.threshold_reached: at most once per threshold and window."""

    budget: str
    scope: dict[str, str]
    window_start: datetime
    threshold: float
    spent_usd: float
    limit_usd: float
    mode: Mode
    request_id: str | None = Field(description="The request whose settlement crossed it.")
    occurred_at: datetime = Field(default_factory=utcnow)


class BudgetExceeded(Contract):
    """Published to llmbus.budget.exceeded when a hard budget refuses a request."""

    budget: str
    scope: dict[str, str]
    window_start: datetime
    spent_usd: float
    reserved_usd: float
    limit_usd: float
    requested_usd: float
    mode: Mode
    request_id: str
    occurred_at: datetime = Field(default_factory=utcnow)


class BudgetReservation(Contract):
    """The request on llmbus.budget.reserve, sent by a completion worker before a model call."""

    request_id: RequestId
    amount_usd: Decimal = Field(ge=0, description="The request's worst-case cost.")
    lease_s: float = Field(gt=0, description="Released after this long if never settled.")
    wait_s: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="When only open reservations stand in the way, hold the request up to this "
        "long for them to settle before refusing it.",
    )
    user: str | None = None
    team: str | None = None
    project: str | None = None
    model: str | None = None
    role: str | None = None

    def attributes(self) -> dict[str, str | None]:
        return {"user": self.user, "team": self.team, "project": self.project,
                "model": self.model, "role": self.role}  # fmt: skip


class BudgetRemaining(Contract):
    budget: str
    mode: Mode
    remaining_usd: float
    limit_usd: float


class BudgetAdmission(Contract):
    """The reply on llmbus.budget.reserve."""

    admitted: bool
    remaining: list[BudgetRemaining] = Field(default_factory=list)
    refused_by: str | None = None
    message: str | None = None
