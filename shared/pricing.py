"""A model's price, its version, and what tokens cost at it. Shared by the completion worker
(which stamps each UsageRecorded with the version it priced the call at) and the usage service
(whose price book keeps every version, and reprices usage with them). Imports no litellm.
"""

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Any

PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Price:
    """USD per token: input, output, and input read from the provider's cache."""

    input_per_token: Decimal
    output_per_token: Decimal
    cached_per_token: Decimal

    @cached_property  # priced on every call: hashed once
    def version(self) -> str:
        """Names the price by its content, so a worker knows the version of the price it uses
        without asking anyone, and two processes with the same catalog agree."""
        text = "|".join(_plain(d) for d in (self.input_per_token, self.output_per_token,
                                            self.cached_per_token))  # fmt: skip
        return "p-" + hashlib.sha256(text.encode()).hexdigest()[:10]

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> Decimal:
        """As litellm prices a reply: cached prompt tokens at the cache price, the rest of the
        prompt at the input price."""
        uncached = max(prompt_tokens - cached_tokens, 0)
        return (
            uncached * self.input_per_token
            + min(cached_tokens, prompt_tokens) * self.cached_per_token
            + completion_tokens * self.output_per_token
        )

    @classmethod
    def per_million(cls, input_usd: Any, output_usd: Any, cached_usd: Any = None) -> "Price":
        """From USD per million tokens, as price lists quote them; the cache price defaults
        to the input price (never an underestimate)."""
        cached = input_usd if cached_usd is None else cached_usd
        return cls(*(Decimal(str(v)) / PER_MILLION for v in (input_usd, output_usd, cached)))

    def as_dict(self) -> dict[str, str]:
        return {
            "input_per_token": _plain(self.input_per_token),
            "output_per_token": _plain(self.output_per_token),
            "cached_per_token": _plain(self.cached_per_token),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Price":
        return cls(*(Decimal(str(data[k])) for k in
                     ("input_per_token", "output_per_token", "cached_per_token")))  # fmt: skip


def _plain(value: Decimal) -> str:
    # one spelling per number: 5E-7, 0.0000005 and 5.0E-7 are the same price
    return format(value.normalize(), "f")
