"""The usage service's commands and queries on its event store: recording provider calls
(store.py), the budgets kept in memory (budget_book.py), and the admission desk that batches
budget commands into one transaction (admission_desk.py)."""

from llmbus.services.usage.application.admission_desk import AdmissionDesk
from llmbus.services.usage.application.budget_book import BudgetBook, Clock, utc_now
from llmbus.services.usage.application.store import UsageApplication

__all__ = ["AdmissionDesk", "BudgetBook", "Clock", "UsageApplication", "utc_now"]
