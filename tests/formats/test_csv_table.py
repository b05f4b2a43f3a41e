"""Reading the CSV files staff save from Excel (the guarantor's issuing list, the town's register):
encodings, the header's column names, line numbers staff can find in the file, and the error
wording they read."""

from __future__ import annotations

import pytest

from formats.csv_table import CsvTableError, decode, open_table

COLUMNS = ("契約番号", "金額")


def read(data: bytes, columns=COLUMNS, optional=(), aliases=None) -> tuple[list[str], list[tuple[int, list[str]]]]:
    names, records = open_table(data, columns, optional, aliases)
    return names, list(records)


def test_utf8_with_or_without_bom_and_cp932_read_the_same() -> None:
    text = "契約番号,金額\r\nR8-001,1200000\r\n"
    expected = (["契約番号", "金額"], [(2, ["R8-001", "1200000"])])
    assert read(text.encode("utf-8")) == expected
    assert read(b"\xef\xbb\xbf" + text.encode("utf-8")) == expected  # Excel's "CSV UTF-8" writes a BOM
    assert read(text.encode("cp932")) == expected  # Excel's plain "CSV" on Japanese Windows


def test_a_file_in_neither_encoding_is_refused_naming_both() -> None:
    # a CP932 character cut after its lead byte: such bytes start no UTF-8 character, and a space
    # cannot follow it in CP932
    data = "契約番号".encode("cp932")[:-1] + b" \n"
    with pytest.raises(CsvTableError) as caught:
        decode(data)
    assert str(caught.value) == (
        "文字コードを判別できません: UTF-8 でも Shift_JIS (CP932) でもないファイルです(どちらかで保存してください)"
    )
    assert caught.value.line is None


def test_an_empty_file_says_the_header_is_missing_without_a_line() -> None:
    with pytest.raises(CsvTableError) as caught:
        read(b"")
    assert str(caught.value) == "ファイルが空です(1行目に列名が必要です)"
    assert caught.value.reason == "ファイルが空です(1行目に列名が必要です)"
    assert caught.value.line is None


def test_records_carry_the_line_they_start_on_across_multi_line_cells_and_blank_rows() -> None:
    data = '契約番号,金額\r\n"R8-001","100"\r\n\r\n , \r\n"R8-\r\n002",200\r\nR8-003,300\r\n'.encode()
    names, records = read(data)
    assert names == ["契約番号", "金額"]
    # line 3 is empty and line 4 holds only spaces: skipped; the record on lines 5-6 is reported at 5
    assert records == [(2, ["R8-001", "100"]), (5, ["R8-\r\n002", "200"]), (7, ["R8-003", "300"])]


def test_a_mac_excel_file_with_cr_line_ends_is_read() -> None:
    # Excel for Mac's "CSV (Macintosh)" ends lines with a bare CR
    assert read("契約番号,金額\rR8-001,1\rR8-002,2\r".encode()) == (
        ["契約番号", "金額"],
        [(2, ["R8-001", "1"]), (3, ["R8-002", "2"])],
    )


def test_header_names_are_normalised_and_trailing_empty_columns_dropped() -> None:
    # full-width letters and spaces around a name are how hand-made headers arrive; Excel may
    # leave empty columns after the last one
    names, records = read(" 契約番号 ,金額,ＩＤ,,\nR8-001,1,7,,\n".encode(), columns=("契約番号", "金額", "ID"))
    assert names == ["契約番号", "金額", "ID"]
    assert records == [(2, ["R8-001", "1", "7", "", ""])]


def test_columns_may_come_in_any_order_with_optional_ones() -> None:
    names, records = read("備考,金額,契約番号\nmemo,1,R8-001\n".encode(), optional=("備考",))
    assert names == ["備考", "金額", "契約番号"]
    assert records == [(2, ["memo", "1", "R8-001"])]


def test_a_towns_own_column_names_are_read_as_the_canonical_ones_whatever_their_spacing() -> None:
    aliases = {"工事 番号": "契約番号", "請負金額": "金額"}
    names, _ = read("工事番号,請負 金額\nR8-001,1\n".encode(), aliases=aliases)
    assert names == ["契約番号", "金額"]


def test_every_header_problem_is_named_at_once_on_line_1() -> None:
    data = "契約番号,契約番号,備考,メモ\nR8-001,R8-001,,\n".encode()
    with pytest.raises(CsvTableError) as caught:
        read(data, columns=("契約番号", "金額", "工期"))
    assert caught.value.line == 1
    assert caught.value.reason == (
        "足りない列: 金額, 工期、不明な列: '備考', 'メモ'、重複した列: 契約番号(必要な列: 契約番号, 金額, 工期)"
    )
    assert str(caught.value) == "1行目: " + caught.value.reason


def test_an_optional_column_is_not_unknown_but_an_unlisted_one_is() -> None:
    with pytest.raises(CsvTableError) as caught:
        read("契約番号,金額,備考,メモ\n".encode(), optional=("備考",))
    assert caught.value.reason == "不明な列: 'メモ'(必要な列: 契約番号, 金額)"


def test_columns_given_twice_are_refused_all_named() -> None:
    with pytest.raises(CsvTableError) as caught:
        read("金額,契約番号,金額,契約番号\n".encode())
    assert caught.value.reason == "重複した列: 契約番号, 金額(必要な列: 契約番号, 金額)"


def test_a_header_cell_too_large_for_csv_is_reported_on_line_1() -> None:
    with pytest.raises(CsvTableError) as caught:
        read(("契約番号,金額" + "x" * 200_000 + "\n").encode())
    assert caught.value.line == 1
    assert caught.value.reason.startswith("CSVとして読めません: field larger than field limit")


def test_a_broken_record_is_reported_on_the_line_it_starts_on() -> None:
    data = ('契約番号,金額\nR8-001,1\n"R8-\n002",2\nR8-003,' + "9" * 200_000 + "\n").encode()
    _, records = open_table(data, COLUMNS)
    assert next(records) == (2, ["R8-001", "1"])
    assert next(records) == (3, ["R8-\n002", "2"])
    with pytest.raises(CsvTableError) as caught:
        next(records)
    assert caught.value.line == 5
    assert str(caught.value).startswith("5行目: CSVとして読めません: ")
