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
        (0.004, "$0.004"),  # a small limit, once printed as $0.00
        (0.000021, "$0.000021"),  # one cheap call's spend
        (Decimal("0.5"), "$0.50"),
        (Decimal("0.1234"), "$0.123"),
        (Decimal("0.00032"), "$0.00032"),
        (Decimal("0.000321987"), "$0.000322"),
        (0.0003, "$0.0003"),
        ("0.0000213", "$0.0000213"),
        (Decimal("0E-10"), "$0.00"),
        (0, "$0.00"),
        (Decimal("-0.0005"), "-$0.0005"),
        (Decimal("1E-14"), "$0.00000000000001"),
    ],
)
def test_an_amount_under_a_dollar_keeps_three_significant_digits(
    amount: Decimal | float | str, shown: str
) -> None:
    assert usd(amount) == shown
