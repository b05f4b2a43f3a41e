"""Text as documents print it, turned into comparable values: NFKC text, dates and yen amounts.

Japanese documents write the same date as 令和8年4月1日, R8.4.1, ２０２６年４月１日 or 2026/04/01,
and the same amount as ¥12,345,000円, 12,345,000 円 or 金壱千弐百参拾四万五千円. Everything here is
pure: strings in, values out. ``parse_*`` reads a whole string and raises ``ValueError`` (with a
reason) on anything else; ``find_*`` looks for the first value inside longer text and returns None.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

# Dashes and long-vowel marks that PDFs and people use where a hyphen is meant.
_DASHES = "‐‑‒–—―−－ｰ"
_DASH_RE = re.compile(f"[{_DASHES}]")


def nfkc(text: str) -> str:
    """NFKC: full-width digits and letters to ASCII, ㋿ to 令和, half-width kana to full-width."""
    return unicodedata.normalize("NFKC", text)


# Fonts (Noto CJK among them) map some kanji glyphs to CJK Radicals Supplement code points, which
# NFKC leaves alone: Chromium's PDFs say 美郷町⻑ (U+2ED1), not 美郷町長. Fold those that stand for
# a whole character (component-only radicals such as ⺅ are not text and are left as they are).
_RADICALS = str.maketrans(
    {
        "⺟": "母",
        "⺠": "民",
        "⻄": "西",
        "⻑": "長",
        "⻘": "青",
        "⻝": "食",
        "⻤": "鬼",
        "⻩": "黄",
        "⻨": "麦",
        "⻫": "斉",
        "⻭": "歯",
        "⻯": "竜",
        "⻲": "亀",
        "⻆": "角",
        "⻣": "骨",
        "⻗": "雨",
        "⺩": "王",
        "⺧": "牛",
        "⺫": "目",
        "⺬": "示",
        "⻅": "见",
        "⻉": "贝",
        "⻋": "车",
        "⻓": "长",
        "⻔": "门",
        "⻢": "马",
        "⻥": "鱼",
        "⻦": "鸟",
        "⻰": "龙",
        "⻱": "龜",
        "⻳": "龟",
        "⺝": "月",
        # Middle dots that extraction yields for 「・」 (Chromium: U+2027 HYPHENATION POINT).
        "‧": "・",
        "·": "・",
        "∙": "・",
        # Invisible characters that only get in the way of matching.
        "\u200b": None,
        "\u200c": None,
        "\u200d": None,
        "\ufeff": None,
        "\u00ad": None,
    }
)


def clean_text(text: str) -> str:
    """NFKC plus the look-alikes NFKC keeps: what every reader of extracted text should compare."""
    return nfkc(text).translate(_RADICALS)


# A run of single characters separated by single spaces ("1 Q F Z - 2 E 8 V", "保 証 期 間").
_LETTER_SPACED = re.compile(r"(?<!\S)\S(?: \S(?!\S))+")


def unspace(text: str) -> str:
    """Join letter-spaced runs, which CSS letter-spacing and spaced-out headings produce."""
    return _LETTER_SPACED.sub(lambda match: match.group(0).replace(" ", ""), text)


def fold_dashes(text: str) -> str:
    """Every dash look-alike to ``-`` (for numbers such as 26-000123-4 and keys)."""
    return _DASH_RE.sub("-", text)


def squeeze(text: str) -> str:
    """Without any whitespace: PDF extraction puts spaces and line breaks inside words."""
    return "".join(text.split())


# --------------------------------------------------------------------------------------------
# Numbers written with kanji (both the everyday digits and the 大字 used on money documents)
# --------------------------------------------------------------------------------------------

_KANJI_DIGIT = {
    "〇": 0,
    "零": 0,
    "一": 1,
    "二": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
    "壱": 1,
    "壹": 1,
    "弐": 2,
    "貳": 2,
    "参": 3,
    "參": 3,
    "肆": 4,
    "伍": 5,
    "陸": 6,
    "漆": 7,
    "捌": 8,
    "玖": 9,
}
_SMALL_UNIT = {"十": 10, "拾": 10, "百": 100, "佰": 100, "陌": 100, "千": 1000, "阡": 1000, "仟": 1000}
_BIG_UNIT = {"万": 10**4, "萬": 10**4, "億": 10**8, "兆": 10**12}
KANJI_NUMERAL_CHARS = "".join([*_KANJI_DIGIT, *_SMALL_UNIT, *_BIG_UNIT])
_TOKEN_RE = re.compile(r"[0-9][0-9,]*|.", re.S)


def parse_number(text: str) -> int:
    """A whole number written with ASCII digits, kanji, or both (``1億2,345万``, ``二〇二六``)."""
    source = squeeze(clean_text(text))
    if not source:
        raise ValueError("no number given")
    total = 0
    section = 0  # the part below the current 万/億/兆
    current: int | None = None  # digits read but not yet multiplied
    current_kind = ""  # "arabic", "kanji" (one kanji digit) or "positional" (二〇二六)
    no_small = 10**5
    last_small = no_small
    last_big = 10**17
    for token in _TOKEN_RE.findall(source):
        if token[0].isdigit():
            if current is not None:
                raise ValueError(f"{text!r}: two numbers run together")
            if "," in token and not re.fullmatch(r"[0-9]{1,3}(,[0-9]{3})+", token):
                raise ValueError(f"{text!r}: thousands separators in the wrong place")
            current, current_kind = int(token.replace(",", "")), "arabic"
        elif token in _KANJI_DIGIT:
            value = _KANJI_DIGIT[token]
            if current is None:
                current, current_kind = value, "kanji"
            elif current_kind in ("kanji", "positional") and last_small == no_small:
                # Kanji digits written positionally (二〇二六), only where no 十百千 came before.
                current, current_kind = current * 10 + value, "positional"
            else:
                raise ValueError(f"{text!r}: digits in an impossible order")
        elif token in _SMALL_UNIT:
            unit = _SMALL_UNIT[token]
            if unit >= last_small or (
                current_kind in ("positional", "arabic") and current is not None and current >= 10
            ):
                raise ValueError(f"{text!r}: {token} in an impossible place")
            section += (1 if current is None else current) * unit
            last_small, current, current_kind = unit, None, ""
        elif token in _BIG_UNIT:
            unit = _BIG_UNIT[token]
            value = section + (current or 0)
            if unit >= last_big or value == 0:
                raise ValueError(f"{text!r}: {token} in an impossible place")
            total += value * unit
            last_big, section, current, current_kind, last_small = unit, 0, None, "", no_small
        else:
            raise ValueError(f"{text!r}: {token!r} is not part of a number")
    return total + section + (current or 0)


# --------------------------------------------------------------------------------------------
# Dates
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Era:
    name: str
    letter: str
    first_day: date
    last_day: date


ERAS = (
    Era("令和", "R", date(2019, 5, 1), date(9999, 12, 31)),
    Era("平成", "H", date(1989, 1, 8), date(2019, 4, 30)),
    Era("昭和", "S", date(1926, 12, 25), date(1989, 1, 7)),
)
_ERA_BY_NAME = {era.name: era for era in ERAS} | {era.letter: era for era in ERAS}

_NUM = rf"(?:[0-9]{{1,4}}|[{''.join(_KANJI_DIGIT)}十]{{1,4}})"
_S = r"\s*"
_ERA_NAMES = "|".join(e.name for e in ERAS)
_ERA_LETTERS = "".join(e.letter for e in ERAS)
_DATE_PATTERNS = (
    # 令和8年4月1日, 令和元年5月1日, R8年4月1日, 令和八年四月一日
    re.compile(
        rf"(?<![A-Za-z])(?P<era>{_ERA_NAMES}|[{_ERA_LETTERS}]){_S}(?P<y>元|{_NUM}){_S}年"
        rf"{_S}(?P<m>{_NUM}){_S}月{_S}(?P<d>{_NUM}){_S}日",
        re.I,
    ),
    # R8.4.1, R08/04/01, 令和8.4.1 (one separator throughout)
    re.compile(
        rf"(?<![A-Za-z])(?P<era>{_ERA_NAMES}|[{_ERA_LETTERS}]){_S}(?P<y>元|[0-9]{{1,2}})(?P<sep>[./-])"
        r"(?P<m>[0-9]{1,2})(?P=sep)(?P<d>[0-9]{1,2})(?![0-9])",
        re.I,
    ),
    # 2026年4月1日, 二〇二六年四月一日
    re.compile(
        rf"(?<![0-9])(?P<y>[0-9]{{4}}|[〇一二三四五六七八九]{{4}}){_S}年{_S}(?P<m>{_NUM}){_S}月{_S}(?P<d>{_NUM}){_S}日"
    ),
    # 2026/04/01, 2026-04-01, 2026.4.1
    re.compile(r"(?<![0-9])(?P<y>[0-9]{4})(?P<sep>[./-])(?P<m>[0-9]{1,2})(?P=sep)(?P<d>[0-9]{1,2})(?![0-9])"),
)


def _date_from_match(match: re.Match[str]) -> date:
    groups = match.groupdict()
    month, day = parse_number(groups["m"]), parse_number(groups["d"])
    era_name = groups.get("era")
    if era_name is None:
        year = parse_number(groups["y"])
        return _make_date(year, month, day, match.group(0))
    era = _ERA_BY_NAME[era_name.upper() if len(era_name) == 1 else era_name]
    era_year = 1 if groups["y"] == "元" else parse_number(groups["y"])
    if era_year < 1:
        raise ValueError(f"{match.group(0)!r}: there is no year 0 of {era.name}")
    result = _make_date(era.first_day.year + era_year - 1, month, day, match.group(0))
    if not era.first_day <= result <= era.last_day:
        raise ValueError(f"{match.group(0)!r}: {era.name} runs from {era.first_day} to {era.last_day}")
    return result


def _make_date(year: int, month: int, day: int, source: str) -> date:
    try:
        return date(year, month, day)
    except ValueError:
        raise ValueError(f"{source!r}: no such day ({year}-{month}-{day})") from None


def parse_date(text: str) -> date:
    """One date, the whole string (surrounding spaces allowed); raises ValueError otherwise."""
    source = fold_dashes(clean_text(text)).strip()
    for pattern in _DATE_PATTERNS:
        match = pattern.fullmatch(source)
        if match:
            return _date_from_match(match)
    raise ValueError(f"{text!r} is not a date (expected e.g. 令和8年4月1日, R8.4.1 or 2026/04/01)")


def find_dates(text: str) -> list[date]:
    """Every valid date in the text, in the order they appear (impossible dates are skipped)."""
    source = fold_dashes(clean_text(text))
    found: list[tuple[int, date]] = []
    taken: list[range] = []
    for pattern in _DATE_PATTERNS:
        for match in pattern.finditer(source):
            if any(match.start() in span for span in taken):
                continue
            try:
                value = _date_from_match(match)
            except ValueError:
                continue
            found.append((match.start(), value))
            taken.append(range(match.start(), match.end()))
    return [value for _, value in sorted(found, key=lambda item: item[0])]


def find_date(text: str) -> date | None:
    dates = find_dates(text)
    return dates[0] if dates else None


# --------------------------------------------------------------------------------------------
# Amounts of money (yen)
# --------------------------------------------------------------------------------------------

_DIGITS_OR_KANJI = rf"[0-9{KANJI_NUMERAL_CHARS}][0-9,{KANJI_NUMERAL_CHARS}]*"
# 金 / ¥ (and the backslash that Japanese fonts draw as ¥) before, 円 / 円也 / - after.
_AMOUNT_RE = re.compile(rf"(?P<prefix>金|¥|\\)?\s*(?P<number>{_DIGITS_OR_KANJI})\s*(?P<suffix>円也|円|也|-)?")
MAX_AMOUNT = 10**15  # a thousand trillion yen: anything larger is a misreading


def _amount_from_match(match: re.Match[str], text: str) -> int:
    number = match.group("number").strip(",")
    value = parse_number(number)
    if value > MAX_AMOUNT:
        raise ValueError(f"{text!r}: amount too large to be real")
    return value


def parse_amount(text: str) -> int:
    """Yen from ``¥12,345,000円``, ``12,345,000 円``, ``金壱千万円``, ``1億2,345万円``; raises ValueError."""
    source = fold_dashes(clean_text(text)).strip()
    match = _AMOUNT_RE.fullmatch(source)
    if not match:
        raise ValueError(f"{text!r} is not an amount of yen (expected e.g. 12,345,000円)")
    return _amount_from_match(match, text)


def find_amounts(text: str) -> list[int]:
    """Every amount marked as money (with 金, ¥ or 円) in the text, in order."""
    source = fold_dashes(clean_text(text))
    values = []
    for match in _AMOUNT_RE.finditer(source):
        if not (match.group("prefix") or match.group("suffix") in ("円", "円也")):
            continue
        try:
            values.append(_amount_from_match(match, text))
        except ValueError:
            continue
    return values


def find_amount(text: str) -> int | None:
    amounts = find_amounts(text)
    return amounts[0] if amounts else None
