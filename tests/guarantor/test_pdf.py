"""Each PDF's text comes back through pypdf with the right values, verbatim."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import date

import pytest
from pypdf import PdfReader

from guarantor import pdf
from guarantor.formatting import both_calendars, wareki
from rules.domain import GuaranteeType

KEY = "7K3M-Q9TX-2HVB-R4NR"
URL = "https://portal.guarantor.example/certificates/26-000123-5"


def _text(data: bytes) -> str:
    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages) == 1
    return reader.pages[0].extract_text()


def _lines(data: bytes) -> set[str]:
    return {line.strip() for line in _text(data).splitlines()}


def test_the_key_notice_carries_number_key_and_terms(certificate, now):
    data = pdf.render_key_notice(certificate, "7k3mq9tx2hvbr4nr", now, lookup_url="https://d-sure.example/look")
    lines = _lines(data)
    assert pdf.KEY_NOTICE_TITLE in lines
    for expected in (
        "保証契約番号：26-000123-5",
        f"認証キー：{KEY}",  # printed in its formatted form whatever spelling came in
        "保証の種類：前払金保証",
        "保証債権者(発注者)：美郷町長",
        "保証契約者(受注者)：株式会社美郷建設",
        "工事(業務)名：町道美郷中央線道路改良工事(第2工区)",
        "保証金額：12,345,000円",
        "保証期間：令和8年4月1日(2026年4月1日)から令和9年3月31日(2027年3月31日)まで",
        "発行日：令和8年4月1日(2026年4月1日)",
        "照会画面のURL：https://d-sure.example/look",
    ):
        assert expected in lines, expected
    text = _text(data)
    assert "D-Sure" in text and "「保証契約番号」と「認証キー」を入力" in text
    # Nothing on it may make the desk take it for the certificate screen.
    assert "印刷・保存が可能" not in text
    assert PdfReader(io.BytesIO(data)).metadata.title == pdf.KEY_NOTICE_TITLE


def test_the_key_notice_defaults_to_the_configured_lookup_url(certificate, now):
    assert f"照会画面のURL：{pdf.DEFAULT_LOOKUP_URL}" in _lines(pdf.render_key_notice(certificate, KEY, now))


def test_the_certificate_view_looks_like_a_browser_printout_without_the_key(certificate, now):
    data = pdf.render_certificate_view(certificate, now, URL)
    text = _text(data)
    lines = _lines(data)
    assert "2026/04/01 10:15" in lines  # header: date and time
    assert any(pdf.CERTIFICATE_VIEW_TITLE in line and "e-Net保証" in line for line in lines)  # page title
    assert URL in lines and "1/1" in lines  # footer: URL and page x/y
    assert "この画面は、印刷・保存が可能です" in text
    for expected in (
        "保証契約番号：26-000123-5",
        "保証金額：12,345,000円",
        "請負代金額：30,862,500円",
        "工期末：令和9年3月15日(2027年3月15日)",
        "保証期間：令和8年4月1日(2026年4月1日)から令和9年3月31日(2027年3月31日)まで",
    ):
        assert expected in lines, expected
    assert "認証キー" not in text
    assert pdf.KEY_NOTICE_TITLE not in text


def test_the_fee_receipt(certificate, now):
    lines = _lines(pdf.render_fee_receipt(certificate, now))
    assert pdf.FEE_RECEIPT_TITLE in lines
    assert "領収金額：98,760円" in lines
    assert "株式会社美郷建設 様" in lines
    assert "保証契約番号：26-000123-5" in lines
    assert "発行日：令和8年4月1日(2026年4月1日)" in lines


def test_the_fee_statement(certificate, now):
    lines = _lines(pdf.render_fee_statement(certificate, now))
    assert pdf.FEE_STATEMENT_TITLE in lines
    assert "保証料：98,760円" in lines
    assert "保証日数：365日" in lines
    assert "納付方法：保証料一括納付制度(一括後払)" in lines
    assert "保証契約番号：26-000123-5" in lines


def test_a_long_work_name_is_shrunk_to_stay_on_one_line(certificate, now):
    long_name = "令和8年度 美郷町" + "町道美郷中央線ほか" * 4 + "道路改良工事(第2工区)"
    lines = _lines(pdf.render_key_notice(replace(certificate, work_name=long_name), KEY, now))
    assert f"工事(業務)名：{long_name}" in lines


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 4, 1), "令和8年4月1日"),
        (date(2019, 5, 1), "令和元年5月1日"),
        (date(2019, 4, 30), "平成31年4月30日"),
    ],
)
def test_wareki(day, expected):
    assert wareki(day) == expected
    assert both_calendars(day) == f"{expected}({day.year}年{day.month}月{day.day}日)"


def test_every_guarantee_type_renders(certificate, now):
    for guarantee_type in (GuaranteeType.CONTRACT, GuaranteeType.INTERMEDIATE_ADVANCE):
        lines = _lines(pdf.render_key_notice(replace(certificate, guarantee_type=guarantee_type), KEY, now))
        assert f"保証の種類：{guarantee_type.value}" in lines
