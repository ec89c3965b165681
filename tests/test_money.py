"""Amounts read as people expect: tiny LLM costs keep their digits."""

from decimal import Decimal

import pytest

from llmbus.shared.money import usd


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (Decimal("12.5"), "$12.50"),
        (Decimal("1234.567"), "$1,234.57"),
        (Decimal("0.01"), "$0.01"),
        (Decimal("0.00032"), "$0.00032"),
        (Decimal("0.000321987"), "$0.00032"),
        (0.0003, "$0.00030"),
        (Decimal("0E-10"), "$0.00"),
        (0, "$0.00"),
        (Decimal("-0.0005"), "-$0.00050"),
        (Decimal("1E-14"), "$0.0000000000"),
    ],
)
def test_an_amount_keeps_two_significant_digits_under_a_cent(
    amount: Decimal | float, shown: str
) -> None:
    assert usd(amount) == shown
