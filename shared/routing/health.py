"""Which models a worker passes over for now: one cooling down after a 429, and one whose
credentials failed the check (until a later check passes). Per process: another worker learns
for itself."""

import time
from collections.abc import Callable
from dataclasses import dataclass

Reason = str  # "cooling down for 12 s", "credentials rejected", ...


@dataclass
class Health:
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._cool_until: dict[str, float] = {}
        self._unhealthy: dict[str, Reason] = {}

    def cool_down(self, model: str, seconds: float) -> None:
        until = self.clock() + max(seconds, 0.0)
        self._cool_until[model] = max(until, self._cool_until.get(model, 0.0))

    def mark_unhealthy(self, model: str, reason: Reason) -> None:
        self._unhealthy[model] = reason

    def mark_healthy(self, model: str) -> None:
        self._unhealthy.pop(model, None)

    def unhealthy(self) -> dict[str, Reason]:
        return dict(self._unhealthy)

    def excluded(self, model: str) -> Reason | None:
        """Why `model` is passed over now; None when it may be called."""
        reason = self._unhealthy.get(model)
        if reason is not None:
            return reason
        until = self._cool_until.get(model)
        if until is None:
            return None
        left = until - self.clock()
        if left <= 0:
            del self._cool_until[model]
            return None
        return f"cooling down after a rate limit ({left:.0f} s left)"
