"""The usage service's domain: budgets (reservations, grants, settlements) and the ledger of
provider calls, model prices and repricings, and gateway API keys. Aggregates and their events
only: no NATS, no database, no provider."""

from llmbus.services.usage.domain.budget import Budget
from llmbus.services.usage.domain.budget_state import Cover
from llmbus.services.usage.domain.errors import (
    BudgetError,
    BudgetExceededError,
    BudgetRenamedError,
    UnknownReservationError,
)
from llmbus.services.usage.domain.holdings import Reservation
from llmbus.services.usage.domain.keys import ApiKey
from llmbus.services.usage.domain.ledger import ProviderCall
from llmbus.services.usage.domain.prices import ModelPrice, RepricedCall
from llmbus.services.usage.domain.window import LIFETIME_START, window_start

__all__ = [
    "LIFETIME_START",
    "ApiKey",
    "Budget",
    "BudgetError",
    "BudgetExceededError",
    "BudgetRenamedError",
    "Cover",
    "ModelPrice",
    "ProviderCall",
    "RepricedCall",
    "Reservation",
    "UnknownReservationError",
    "window_start",
]
