"""Amounts of money as people read them: cents, and enough digits for tiny LLM costs."""

from decimal import Decimal


def usd(amount: Decimal | float | int | str) -> str:
    """Dollars with cents, and three significant digits under a dollar: a $0.004 limit or a
    $0.0000213 spend must not print as $0.00 (nor as $0E-10)."""
    value = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    sign, value = ("-" if value < 0 else ""), abs(value)
    if value == 0 or value >= 1:
        return f"{sign}${value:,.2f}"
    places = max(2, 2 - value.adjusted())
    whole, _, cents = f"{value:.{places}f}".rstrip("0").partition(".")
    return f"{sign}${whole}.{cents.ljust(2, '0')}"
