from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from guarantor.csv_input import COLUMNS, RESERVATION_REASON, GuaranteeRequest, RowError, read_requests
from guarantor.errors import GuarantorError
from rules.domain import GuaranteeType

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

HEADER = ",".join(COLUMNS)
GOOD = "前払金保証,株式会社美郷建設,info@misato-kensetsu.example,美郷町長,misato,R8-1,道路改良工事,工事,30862500,12345000,98760,2026-04-01,2027-03-15,2026-04-01,2027-03-31,false"


def _csv(*rows: str) -> bytes:
    return ("\n".join([HEADER, *rows]) + "\n").encode("utf-8")


def test_the_utf8_fixture_reads_every_row_and_refuses_the_reservation():
    results = read_requests((FIXTURES / "guarantees.csv").read_bytes())
    assert [r.line for r in results] == [2, 3, 4, 5, 6, 7]
    errors = [r for r in results if isinstance(r, RowError)]
    assert errors == [RowError(6, RESERVATION_REASON)]
    requests = [r for r in results if isinstance(r, GuaranteeRequest)]
    assert {r.desk for r in requests} == {"misato", "tonari"}
    assert sum(r.bulk_fee_payment for r in requests) == 1
    bulk = next(r for r in requests if r.bulk_fee_payment)
    assert (bulk.contract_amount, bulk.guarantee_amount) == (15_400_000, 1_540_000)  # "15,400,000" in the file


@pytest.mark.parametrize("name", ["guarantees_cp932.csv", "guarantees_bom.csv"])
def test_excel_files_in_cp932_and_utf8_with_bom(name):
    results = read_requests((FIXTURES / name).read_bytes())
    assert [type(r) for r in results] == [GuaranteeRequest, GuaranteeRequest, RowError]
    first, second, reservation = results
    assert first.guarantee_type is GuaranteeType.ADVANCE  # the BOM did not end up in the first column's name
    assert first.contractor_name == "株式会社美郷建設"
    assert first.work_name == "美郷町営住宅外壁改修工事"
    assert (first.contract_amount, first.guarantee_amount, first.fee) == (20_350_000, 8_140_000, 65_120)
    assert first.contract_date == date(2026, 4, 20)  # Excel's 2026/4/20
    assert first.bulk_fee_payment is False and second.bulk_fee_payment is True  # FALSE / TRUE
    assert reservation == RowError(4, RESERVATION_REASON)


def test_cp932_and_bom_files_mean_the_same():
    cp932 = read_requests((FIXTURES / "guarantees_cp932.csv").read_bytes())
    bom = read_requests((FIXTURES / "guarantees_bom.csv").read_bytes())
    assert cp932 == bom


def test_a_bad_row_names_its_line_and_every_problem_and_good_rows_survive():
    bad = GOOD.replace("30862500", "三千万").replace("2027-03-31", "2027-02-30").replace("info@", "info at ")
    results = read_requests(_csv(GOOD, bad, GOOD))
    assert isinstance(results[0], GuaranteeRequest) and isinstance(results[2], GuaranteeRequest)
    error = results[1]
    assert isinstance(error, RowError) and error.line == 3
    for column in ("contract_amount", "period_end", "contractor_email"):
        assert column in error.reason


def test_line_numbers_count_physical_lines_and_blank_rows_are_skipped():
    multiline = GOOD.replace("道路改良工事", '"道路改良工事\n(第2工区)"')
    results = read_requests(_csv(multiline, ",,,,,,,,,,,,,,,", "", GOOD.replace(",工事,30862500", ",,30862500")))
    assert results[0].line == 2
    assert isinstance(results[0], RowError) and "work_name" in results[0].reason  # no line breaks in names
    assert isinstance(results[1], RowError) and results[1].line == 6
    assert "work_category" in results[1].reason


@pytest.mark.parametrize(
    ("change", "column"),
    [
        (("12345000", "40000000"), "guarantee_amount"),  # more than the contract
        (("2027-03-15", "2025-03-15"), "completion_date"),  # before the contract date
        (("false", "maybe"), "bulk_fee_payment"),
        ((",misato,", ",美郷,"), "desk"),
        (("前払金保証", "履行保証保険"), "guarantee_type"),
        (("98760", "-1"), "fee"),
    ],
)
def test_each_check(change, column):
    (result,) = read_requests(_csv(GOOD.replace(*change, 1)))
    assert isinstance(result, RowError) and column in result.reason


def test_amounts_in_full_width_and_with_yen_are_read():
    row = GOOD.replace("30862500", '"３０,８６２,５００円"')
    (result,) = read_requests(_csv(row))
    assert isinstance(result, GuaranteeRequest) and result.contract_amount == 30_862_500


def test_too_few_columns():
    (result,) = read_requests(_csv("前払金保証,株式会社美郷建設"))
    assert isinstance(result, RowError) and "列が足りません" in result.reason


def test_a_header_problem_stops_the_whole_file():
    with pytest.raises(GuarantorError, match="contract_amount"):
        read_requests(HEADER.replace("contract_amount", "contract_amout").encode() + b"\n" + GOOD.encode())
    with pytest.raises(GuarantorError, match="空"):
        read_requests(b"")


def test_bytes_in_no_known_encoding_are_refused():
    with pytest.raises(GuarantorError, match="文字コード"):
        read_requests(HEADER.encode() + b"\n\x82\xff\xfe\x80\x81")
