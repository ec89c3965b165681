"""What a budget command refuses to do. Each derives from the one llmbus error hierarchy."""

from decimal import Decimal

from llmbus.shared.errors import InvalidRequestError, LlmbusError, NotFoundError
from llmbus.shared.money import usd


class BudgetError(LlmbusError):
    """A budget command that cannot be carried out (an event's own fault, never retried)."""


class BudgetExceededError(BudgetError):
    def __init__(
        self,
        budget: str,
        spent_usd: Decimal,
        reserved_usd: Decimal,
        limit_usd: Decimal,
        requested_usd: Decimal,
    ) -> None:
        super().__init__(
            f"budget {budget!r} cannot cover {usd(requested_usd)}: spent {usd(spent_usd)}"
            f" + reserved {usd(reserved_usd)} of limit {usd(limit_usd)}"
        )
        self.budget = budget
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.limit_usd = limit_usd
        self.requested_usd = requested_usd


class UnknownReservationError(BudgetError, NotFoundError):
    """No open reservation has this request id."""


class BudgetRenamedError(BudgetError, InvalidRequestError):
    """A budget's name is its identity; a new name is a new budget."""
