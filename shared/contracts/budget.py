"""Budgets: their definition (config file and llmbus.budget.set), admission, and events."""

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints, field_validator

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


def settled_cost(cost_usd: float) -> Decimal:
    """litellm's float costs carry noise (5.1500000000000005e-05 for 0.0000515): settle on the
    same 1e-10 grid that reservations are made on, or exact fits would overshoot by 1e-19."""
    return Decimal(str(cost_usd)).quantize(COST_QUANTUM)


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


class RequestAttributes(Contract):
    """What budgets match on: a request's ids, its model and its role."""

    user: str | None = None
    team: str | None = None
    project: str | None = None
    model: str | None = None
    role: str | None = None

    def attributes(self) -> dict[str, str | None]:
        return {"user": self.user, "team": self.team, "project": self.project,
                "model": self.model, "role": self.role}  # fmt: skip


class BudgetReservation(RequestAttributes):
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


class BudgetRemaining(Contract):
    budget: str
    mode: Mode
    remaining_usd: float = Field(description="limit - spent - reserved, in the current window.")
    limit_usd: float


class BudgetRemainingList(Contract):
    """The reply on llmbus.budget.remaining: every budget matching the attributes asked about
    (a RequestAttributes), by name."""

    budgets: list[BudgetRemaining]


class BudgetAdmission(Contract):
    """The reply on llmbus.budget.reserve."""

    admitted: bool
    remaining: list[BudgetRemaining] = Field(default_factory=list)
    refused_by: str | None = None
    message: str | None = None


class BudgetGrantRequest(RequestAttributes):
    """The request on llmbus.budget.grant: a worker asks to hold budget for many requests.

    The usage service reserves one amount in every budget that matches the attributes; the
    worker then admits requests with those attributes on its own while their worst cases fit in
    it, and their UsageRecorded name the grant. Asking again with the same grant_id holds
    nothing more: the answer gives what the grant still holds.
    """

    grant_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    holder: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="The worker that holds it: the one asked to drop it when budgets change."
    )
    want_usd: Decimal = Field(ge=0, description="What the worker would like to hold.")
    min_usd: Decimal = Field(
        ge=0, description="Less than this is no use (the worst case of the request that asks)."
    )
    lease_s: float = Field(gt=0, description="Released after this long if never returned.")


class BudgetGrant(Contract):
    """The reply on llmbus.budget.grant."""

    granted: bool
    grant_id: str
    amount_usd: Decimal | None = Field(
        default=None, description="What the worker may admit against; null: no hard budget "
        "matches, so there is nothing to bound."
    )  # fmt: skip
    budgets: list[str] = Field(default_factory=list, description="The budgets it is held in.")
    message: str | None = Field(default=None, description="Why it was not granted.")


class BudgetGrantReturn(Contract):
    """The request on llmbus.budget.grant.return, once no admitted request is still running.

    `unused_usd` is the grant's amount less the true cost of what it admitted (and the worst
    case of any request that ended without a cost). The rest stays reserved until those calls'
    UsageRecorded arrive, or the lease runs out."""

    grant_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    unused_usd: Decimal = Field(ge=0)
    admitted: int = Field(default=0, ge=0, description="How many requests it admitted.")


class BudgetsChanged(Contract):
    """Published to llmbus.budget.changed when a budget changes: every worker drops its grants
    and answers with a GrantHolder."""


class GrantHolder(Contract):
    """Published to llmbus.budget.holders by a worker holding grants (once a second), and the
    reply a worker gives on llmbus.budget.changed once it has dropped them."""

    holder: str
    grants: list[str] = Field(default_factory=list)


class BudgetGrantReturned(Contract):
    """The reply on llmbus.budget.grant.return."""

    grant_id: str
    budgets: list[str] = Field(description="The budgets the grant was held in.")


class BudgetStatusQuery(Contract):
    """The request on llmbus.budget.status: `{}` asks for every budget."""


class BudgetStatus(Contract):
    """A budget in its current window: the reply on llmbus.budget.set, and a row of the reply on
    llmbus.budget.status."""

    name: str
    scope: dict[str, str]
    window: Window
    window_start: datetime
    spent_usd: float
    reserved_usd: float
    limit_usd: float
    percent: float = Field(description="spent_usd / limit_usd, in percent.")
    mode: Mode


class BudgetStatusList(RootModel[list[BudgetStatus]]):
    """The reply on llmbus.budget.status: every budget, by name (a JSON array, as before replies
    were typed)."""
