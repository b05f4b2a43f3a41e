"""Values written the way a town office writes them: yen with commas, percentages, 和暦 dates."""

from __future__ import annotations

from datetime import date
from fractions import Fraction


def yen(amount: int) -> str:
    return f"{amount:,}円"


def percent(ratio: Fraction) -> str:
    value = ratio * 100
    if value.denominator == 1:
        return f"{value.numerator}%"
    return f"{float(value):g}%"


_ERAS = ((date(2019, 5, 1), "令和"), (date(1989, 1, 8), "平成"), (date(1926, 12, 25), "昭和"))


def japanese_date(day: date) -> str:
    """令和8年4月1日 (元年 for the first year), as a town office writes dates."""
    for first_day, name in _ERAS:
        if day >= first_day:
            year = day.year - first_day.year + 1
            return f"{name}{'元' if year == 1 else year}年{day.month}月{day.day}日"
    return f"{day.year}年{day.month}月{day.day}日"
