"""Dates, amounts and text as documents print them (verifier/normalise.py)."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.normalise import (
    clean_text,
    find_amount,
    find_amounts,
    find_date,
    find_dates,
    parse_amount,
    parse_date,
    parse_number,
    unspace,
)

FULL_WIDTH = str.maketrans("0123456789/.-,", "０１２３４５６７８９／．－，")
KANJI_DIGITS = "〇一二三四五六七八九"
DAIJI_DIGITS = "〇壱弐参四五六七八九"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("令和8年4月1日", date(2026, 4, 1)),
        ("令和８年４月１日", date(2026, 4, 1)),
        ("令和 8 年 4 月 1 日", date(2026, 4, 1)),
        ("令和元年5月1日", date(2019, 5, 1)),
        ("㋿8年4月1日", date(2026, 4, 1)),
        ("令和八年四月一日", date(2026, 4, 1)),
        ("R8.4.1", date(2026, 4, 1)),
        ("r08/04/01", date(2026, 4, 1)),
        ("H31.4.30", date(2019, 4, 30)),
        ("平成元年1月8日", date(1989, 1, 8)),
        ("2026年4月1日", date(2026, 4, 1)),
        ("２０２６年４月１日", date(2026, 4, 1)),
        ("2026/04/01", date(2026, 4, 1)),
        ("2026-04-01", date(2026, 4, 1)),
        ("２０２６－０４－０１", date(2026, 4, 1)),
    ],
)
def test_dates_in_every_supported_spelling(text, expected):
    assert parse_date(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not a date"),
        ("来週の月曜日", "not a date"),
        ("令和0年4月1日", "no year 0"),
        ("平成32年1月1日", "平成 runs from"),  # 平成 ended on 2019-04-30
        ("令和元年4月30日", "令和 runs from"),  # 令和 began on 2019-05-01
        ("2026年2月30日", "no such day"),
        ("2026/13/01", "no such day"),
        ("2026/04-01", "not a date"),  # mixed separators
    ],
)
def test_garbage_dates_raise_a_clear_value_error(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_date(text)


def test_find_dates_in_running_text_skips_impossible_ones():
    text = "保証期間 令和8年4月1日(2026年4月1日)から令和9年2月30日、R9.3.31 まで 発行 2026/04/02"
    assert find_dates(text) == [date(2026, 4, 1), date(2026, 4, 1), date(2027, 3, 31), date(2026, 4, 2)]
    assert find_date("日付なし") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("¥12,345,000円", 12_345_000),
        ("12,345,000 円", 12_345_000),
        ("金12,345,000円", 12_345_000),
        ("￥１２，３４５，０００－", 12_345_000),
        ("\\12,345,000-", 12_345_000),  # the backslash Japanese fonts draw as ¥
        ("金壱千万円", 10_000_000),
        ("金壱千弐百参拾四万五千円也", 12_345_000),
        ("一億二千三百四十五万円", 123_450_000),
        ("1億2,345万6,789円", 123_456_789),
        ("百万円", 1_000_000),
        ("0円", 0),
    ],
)
def test_amounts_in_every_supported_spelling(text, expected):
    assert parse_amount(text) == expected


@pytest.mark.parametrize("text", ["", "円", "abc円", "12,34円", "十十円", "千百千円", "十二三円", "1二円", "万円"])
def test_garbage_amounts_raise_a_clear_value_error(text):
    with pytest.raises(ValueError):
        parse_amount(text)


def test_find_amounts_only_takes_numbers_marked_as_money():
    text = "保証契約番号 26-000123-5 契約金額 123,450,000円 保証金額 ¥49,380,000- 第2工区 一式"
    assert find_amounts(text) == [123_450_000, 49_380_000]
    assert find_amount("金額の記載なし 第3号") is None


def test_clean_text_folds_what_nfkc_leaves():
    # Chromium's PDFs carry CJK radicals for 長/西 and U+2027 for the middle dot.
    assert clean_text("美郷町⻑ ⻄日本 印刷‧保存\u200b ＡＢ１２") == "美郷町長 西日本 印刷・保存 AB12"


def test_unspace_joins_letter_spaced_runs_only():
    assert unspace("認証キー 1 Q F Z - 2 E 8 V") == "認証キー 1QFZ-2E8V"
    assert unspace("保 証 期 間 令和8年") == "保証期間 令和8年"
    assert unspace("美郷町長 様") == "美郷町長 様"


# ----------------------------------------------------------------------------- property tests


def _wareki_parts(day: date) -> tuple[str, str, int]:
    if day >= date(2019, 5, 1):
        return "令和", "R", day.year - 2018
    return "平成", "H", day.year - 1988


def _date_renderings(day: date) -> list[str]:
    era, letter, year = _wareki_parts(day)
    year_text = "元" if year == 1 else str(year)
    plain = [
        f"{era}{year_text}年{day.month}月{day.day}日",
        f"{era}{year}年{day.month:02d}月{day.day:02d}日",
        f"{era} {year_text} 年 {day.month} 月 {day.day} 日",
        f"{letter}{year}.{day.month}.{day.day}",
        f"{letter.lower()}{year:02d}/{day.month:02d}/{day.day:02d}",
        f"{day.year}年{day.month}月{day.day}日",
        f"{day.year}/{day.month:02d}/{day.day:02d}",
        f"{day.year}-{day.month:02d}-{day.day:02d}",
        f"{day.year}.{day.month}.{day.day}",
        f"{era}{_kanji_positional(year) if year > 1 else '元'}年{_kanji(day.month)}月{_kanji(day.day)}日",
    ]
    return plain + [text.translate(FULL_WIDTH) for text in plain]


def _kanji_positional(number: int) -> str:
    return "".join(KANJI_DIGITS[int(d)] for d in str(number))


def _kanji(
    number: int,
    digits: str = KANJI_DIGITS,
    ten: str = "十",
    hundred: str = "百",
    thousand: str = "千",
    bigs: tuple[str, ...] = ("", "万", "億", "兆"),
    explicit_one: bool = False,
) -> str:
    """An independent renderer of kanji numerals (so the parser is not tested against itself)."""
    if number == 0:
        return digits[0]
    out = []
    for power in reversed(range(len(bigs))):
        section = number // 10 ** (4 * power) % 10_000
        if not section:
            continue
        part = ""
        for value, unit in ((1000, thousand), (100, hundred), (10, ten)):
            digit = section // value % 10
            if digit:
                part += ("" if digit == 1 and not explicit_one else digits[digit]) + unit
        if section % 10:
            part += digits[section % 10]
        out.append(part + bigs[power])
    return "".join(out)


def _mixed(number: int) -> str:
    """``1億2,345万6,789``: arabic sections with kanji 億/万, as bank documents write."""
    parts = []
    for power, unit in ((3, "兆"), (2, "億"), (1, "万"), (0, "")):
        section = number // 10 ** (4 * power) % 10_000
        if section:
            parts.append(f"{section:,}{unit}")
    return "".join(parts) or "0"


@settings(max_examples=300)
@given(st.dates(min_value=date(1989, 1, 8), max_value=date(2099, 12, 31)))
def test_every_rendering_of_a_date_parses_back_to_it(day):
    for text in _date_renderings(day):
        assert parse_date(text) == day, text
        assert find_date(f"発行日:{text}(水) 以上") == day, text


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=10**15))
def test_every_rendering_of_an_amount_parses_back_to_it(amount):
    renderings = [
        f"¥{amount:,}円",
        f"{amount:,} 円",
        f"金{amount:,}円",
        f"{amount}円",
        f"￥{amount:,}-",
        f"金{_kanji(amount)}円",
        f"金{_kanji(amount, DAIJI_DIGITS, '拾', '百', '千', ('', '萬', '億', '兆'), True)}円也",
        f"{_mixed(amount)}円",
    ]
    for text in renderings + [r.translate(FULL_WIDTH) for r in renderings]:
        assert parse_amount(text) == amount, text
        assert find_amount(f"保証金額:{text} 以上") == amount, text


@given(st.text(max_size=40))
def test_arbitrary_text_gives_a_value_or_a_value_error(text):
    for parse in (parse_date, parse_amount, parse_number):
        try:
            value = parse(text)
        except ValueError:
            continue  # the one exception a parser may raise; anything else fails the test
        assert value is not None
    find_dates(text)
    find_amounts(text)


# -- edges the mutation run showed untested (issue 15) ---------------------------------------


def test_dash_folding_and_squeezing():
    from verifier.normalise import fold_dashes, squeeze

    assert fold_dashes("26−000123–4") == "26-000123-4"
    assert squeeze(" 保 証\n期間 ") == "保証期間"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5百", 500),  # one arabic digit before 百 is a count of hundreds
        ("二〇二六", 2026),  # kanji digits written positionally
        ("二千二十六", 2026),
    ],
)
def test_numbers_mixing_digits_and_units(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize("text", ["12百", "10百", "二〇二六百", "一万二万", "1,2345", "十二三", "二1", "円"])
def test_impossible_numbers_raise_naming_the_text(text):
    with pytest.raises(ValueError) as raised:
        parse_number(text)
    assert repr(text) in str(raised.value)  # staff see which printed value could not be read


@pytest.mark.parametrize("text", ["2026年2月30日", "令和8年2月30日", "令和0年4月1日", "令和元年4月30日", "2026/13/01"])
def test_impossible_dates_name_the_whole_date(text):
    with pytest.raises(ValueError) as raised:
        parse_date(text)
    assert repr(text) in str(raised.value)


def test_an_impossible_date_does_not_hide_the_dates_after_it():
    assert find_dates("2026年2月30日 2026年3月1日") == [date(2026, 3, 1)]


@pytest.mark.parametrize("text", ["あ円", "99999999999999999円"])
def test_garbage_or_absurd_amounts_name_the_text(text):
    with pytest.raises(ValueError) as raised:
        parse_amount(text)
    assert repr(text) in str(raised.value)


def test_amounts_with_a_trailing_comma_or_written_as_enya():
    assert parse_amount("12,345,000,円") == 12_345_000  # a comma left at a line end
    assert find_amounts("合計 12,000円也") == [12_000]


def test_an_absurd_amount_does_not_hide_the_amounts_after_it():
    assert find_amounts("9999999999999999円 / 1,000円") == [1_000]
