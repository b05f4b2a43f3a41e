"""How the guarantor writes dates, amounts and certificate fields for people.

Shared by the PDFs and by ``keydesk lookup`` so that the screen and the paper say the same thing
with the same labels. Dates are written in 和暦 with the 西暦 in brackets, as public documents in
Japan usually do: ``令和8年4月1日(2026年4月1日)``.
"""

from __future__ import annotations

from datetime import date, datetime

from rules.domain import Certificate

# (first day, era name), newest first. Earlier eras are not needed for guarantees.
_ERAS = ((date(2019, 5, 1), "令和"), (date(1989, 1, 8), "平成"))


def wareki(day: date) -> str:
    """``令和8年4月1日``; the first year of an era is written 元年 as on official documents."""
    for start, name in _ERAS:
        if day >= start:
            year = day.year - start.year + 1
            year_text = "元" if year == 1 else str(year)
            return f"{name}{year_text}年{day.month}月{day.day}日"
    return seireki(day)


def seireki(day: date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def both_calendars(day: date) -> str:
    """``令和8年4月1日(2026年4月1日)``."""
    return f"{wareki(day)}({seireki(day)})"


def yen(amount: int) -> str:
    """``12,345,000円``."""
    return f"{amount:,}円"


def period(certificate: Certificate) -> str:
    return f"{both_calendars(certificate.period_start)}から{both_calendars(certificate.period_end)}まで"


def period_days(certificate: Certificate) -> int:
    """Days of the guarantee period, both ends included (as guarantee fees are counted)."""
    return (certificate.period_end - certificate.period_start).days + 1


def clock(moment: datetime) -> str:
    """``2026/04/01 10:15``: how a browser prints the time in a page header."""
    return moment.strftime("%Y/%m/%d %H:%M")


def certificate_fields(certificate: Certificate) -> list[tuple[str, str]]:
    """The certificate's content as (label, value) pairs, in the order a 保証証書 lists them.

    Deliberately without the 認証キー: it is not part of the certificate.
    """
    c = certificate
    return [
        ("保証契約番号", c.guarantee_no),
        ("保証の種類", c.guarantee_type.value),
        ("保証債権者(発注者)", c.obligee),
        ("保証契約者(受注者)", c.contractor_name),
        ("保証事業会社", c.guarantor),
        ("契約番号", c.contract_no),
        ("工事(業務)名", c.work_name),
        ("工事(業務)の区分", c.work_category),
        ("請負代金額", yen(c.contract_amount)),
        ("保証金額", yen(c.guarantee_amount)),
        ("保証料", yen(c.fee)),
        ("契約締結日", both_calendars(c.contract_date)),
        ("工期末", both_calendars(c.completion_date)),
        ("保証期間", period(c)),
        ("発行日", both_calendars(c.issued_on)),
    ]
