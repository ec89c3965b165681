"""Amounts of money as people read them: cents for most, enough digits for tiny LLM costs."""

from decimal import Decimal

CENT = Decimal("0.01")
# a token costs well under a cent: below one, keep two significant digits, down to 1e-10 $
MAX_PLACES = 10


def usd(amount: Decimal | float | int) -> str:
    """`$12.50`, `$0.00032`, `$0.00`: never `$0E-10` or a rounded-away `$0.00` for a real cost."""
    value = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    sign, value = ("-" if value < 0 else ""), abs(value)
    if value == 0 or value >= CENT:
        return f"{sign}${value:,.2f}"
    places = min(MAX_PLACES, 1 - value.adjusted())
    return f"{sign}${value:.{places}f}"
