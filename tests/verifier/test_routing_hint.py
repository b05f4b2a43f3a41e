"""The routing hint of a mail without a usable key notice: the first type, contractor and number its
readable documents show (pure; nothing in it decides a verdict)."""

from __future__ import annotations

from formats import access_key as keys
from rules.domain import GuaranteeType
from verifier.pdf_text import TextResult, TextStatus
from verifier.routing_hint import RoutingHint, routing_hint
from verifier.verify import InputDocument

from tests.support.verify import ADVANCE_CERT, CONTRACT_CERT, SIGNATURES, notice


def text(name: str, *pages: str, status: TextStatus = TextStatus.OK) -> InputDocument:
    return InputDocument(name, TextResult(status, tuple(pages), len(pages)))


def test_a_readable_document_gives_its_type_contractor_and_number() -> None:
    hint = routing_hint([notice(ADVANCE_CERT, keys.generate())], SIGNATURES)
    assert hint == RoutingHint(GuaranteeType.ADVANCE, "株式会社美郷建設", "26-000123-4")


def test_unreadable_and_empty_documents_are_skipped() -> None:
    readable = notice(ADVANCE_CERT, keys.generate())
    broken = text("壊れた.pdf", "保証の種類:契約保証", status=TextStatus.BROKEN)
    empty = text("空.pdf")
    missing = InputDocument("不明.bin", None)
    hint = routing_hint([missing, broken, empty, readable], SIGNATURES)
    assert hint == RoutingHint(GuaranteeType.ADVANCE, "株式会社美郷建設", "26-000123-4")


def test_the_first_document_that_shows_a_field_wins_and_later_ones_fill_the_gaps() -> None:
    only_type = text("領収書.pdf", "保証の種類:契約保証")
    hint = routing_hint([only_type, notice(ADVANCE_CERT, keys.generate())], SIGNATURES)
    assert hint == RoutingHint(GuaranteeType.CONTRACT, "株式会社美郷建設", "26-000123-4")
    first = routing_hint([notice(CONTRACT_CERT, keys.generate()), notice(ADVANCE_CERT, keys.generate())], SIGNATURES)
    assert first.guarantee_type is GuaranteeType.CONTRACT and first.guarantee_no == CONTRACT_CERT.guarantee_no


def test_a_contractor_name_too_long_to_be_a_name_is_left_out() -> None:
    misread = text("画面.pdf", "保証契約者(受注者):" + "株式会社" * 30)
    assert routing_hint([misread], SIGNATURES).contractor is None
    named = text("画面.pdf", "保証契約者(受注者):" + "あ" * 80)
    assert routing_hint([named], SIGNATURES).contractor == "あ" * 80


def test_nothing_readable_gives_an_empty_hint() -> None:
    assert routing_hint([], SIGNATURES) == RoutingHint()
    assert routing_hint([text("x.pdf", "ご確認ください")], SIGNATURES) == RoutingHint()
