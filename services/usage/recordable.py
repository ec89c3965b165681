"""What the usage store, its budgets and its DuckDB projection can hold.

Checked by the usage service before a UsageRecorded is stored (one beyond bounds is parked on
llmbus.deadletter.usage), and again when a stored event is projected, for a store written
before the check. The bounds are the consumer's, not the contract's: the completion worker
builds UsageRecorded from provider replies, and a reply it cannot describe must not stop it
from recording a paid call; nor may a stored event stop validating when read back.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from llmbus.shared.contracts import UsageRecorded

# DuckDB keeps cost_usd as DECIMAL(18, 10), whose largest value is just under 1e8; no call costs
# a million dollars, and a million dollars' calls sum well within it.
MAX_COST_USD = 1_000_000.0
# token counts are BIGINT; no call reads or writes a billion tokens
MAX_TOKENS = 1_000_000_000
MAX_PROMPT_VERSION = 2**31 - 1  # an INTEGER column
TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens")


@dataclass(frozen=True)
class Unrecordable:
    """A stored usage event the projection cannot hold (beyond bounds, refused by DuckDB, or no
    longer read as a UsageRecorded), with why: it is skipped, and parked."""

    usage_id: str
    reason: str
    usage: dict[str, Any]  # as stored

    @classmethod
    def of(cls, event: UsageRecorded, reason: str) -> "Unrecordable":
        return cls(event.usage_id, reason, event.model_dump(mode="json"))


@dataclass(frozen=True)
class Repriced:
    """A stored UsageRepriced, as the projection applies it: the call's row gets a new cost."""

    call_position: int  # the position of the call's UsageRecorded
    cost_usd: Decimal
    price_version: str


def out_of_bounds(event: UsageRecorded) -> str | None:
    """Why this event cannot be recorded, or None. Names the field, never its value."""
    if event.cost_usd > MAX_COST_USD:
        return f"cost_usd is over {MAX_COST_USD:.0f}, the most a call is taken to cost"
    for name in TOKEN_FIELDS:
        if not 0 <= getattr(event, name) <= MAX_TOKENS:
            return f"{name} is not between 0 and {MAX_TOKENS}"
    if event.prompt_version is not None and not 0 <= event.prompt_version <= MAX_PROMPT_VERSION:
        return f"prompt_version is not between 0 and {MAX_PROMPT_VERSION}"
    return None
