"""Budget commands that arrive together: the admission desk fills a Batch, the budget book
applies it in memory and saves it in one transaction, and answers with a BatchResult."""

from dataclasses import dataclass, field

from llmbus.shared.contracts import UsageRecorded
from llmbus.shared.contracts.budget import BudgetAdmission, BudgetReservation


@dataclass
class Waiting:
    """A reservation to admit, or to hold while it may still wait for open ones to settle."""

    reservation: BudgetReservation
    may_wait: bool = False
    deadline: float = 0.0  # the caller's, on its own (monotonic) clock


@dataclass
class Batch:
    """Budget commands applied together and saved in one transaction: settlements first (they
    free room), then lease expiry, then the reservations that waited, then new ones."""

    settlements: list[UsageRecorded] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)
    expire: bool = False


@dataclass
class BatchResult:
    answered: list[tuple[Waiting, BudgetAdmission]] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)

    @property
    def refused(self) -> int:
        return sum(not admission.admitted for _, admission in self.answered)
