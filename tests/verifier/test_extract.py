"""Key-notice fields (verifier/extract.py), from PDFs of several producers and from plain text."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.domain import GuaranteeType
from formats import access_key
from verifier.extract import FieldProblem, KeyNoticeFields, ProblemKind, extract_fields, extract_key_notices
from verifier.pdf_text import TextResult, TextStatus, extract_in_process

from .conftest import NUMBER_1, NUMBER_2, PRINTED_AT, VALID_KEY, WRONG_CHECK_KEY, fixture_pdf

EXPECTED_FIRST = dict(
    guarantee_no=NUMBER_1,
    access_key=access_key.canonical(VALID_KEY),
    access_key_valid=True,
    guarantee_type=GuaranteeType.ADVANCE,
    obligee="美郷町長",
    contractor="株式会社美郷建設",
    work_name="町道美郷中央線道路改良工事",
    guarantee_amount=49_380_000,
    contract_amount=123_450_000,
    period_start=date(2026, 4, 1),
    period_end=date(2027, 3, 31),
    issued_on=date(2026, 4, 3),
    problems=(),
)


def _notices(name: str, signatures) -> list[KeyNoticeFields]:
    return extract_key_notices(extract_in_process(fixture_pdf(name)), signatures)


@pytest.mark.parametrize(
    "name",
    [
        "key_notice_reportlab.pdf",  # label and value on separate lines
        "key_notice_printed_chromium.pdf",  # a table; letter-spaced key; ２６－… and R8.4.1 dates
        "key_notice_cairo.pdf",  # the key split as "1QFZ-2E8V -RKDT-WST0"
        "key_notice_with_certificate_words_reportlab.pdf",
    ],
)
def test_every_field_from_several_producers(name, signatures):
    (notice,) = _notices(name, signatures)
    for field, expected in EXPECTED_FIRST.items():
        assert getattr(notice, field) == expected, field
    assert notice.pages == (0,)


@pytest.mark.parametrize("name", ["key_notice_two_reportlab.pdf", "key_notice_two_qpdf.pdf"])
def test_one_pdf_with_two_notices_gives_two_and_reports_the_wrong_check_symbol(name, signatures):
    first, second = _notices(name, signatures)
    assert (first.pages, second.pages) == ((0,), (1,))
    assert first.guarantee_no == NUMBER_1 and first.access_key_valid and first.problems == ()
    assert second.guarantee_no == NUMBER_2
    assert second.guarantee_type is GuaranteeType.CONTRACT
    assert second.guarantee_amount == 12_345_000
    # Not dropped: the key is kept and the problem says what is wrong with it, without leaking it.
    assert second.access_key == access_key.canonical(WRONG_CHECK_KEY)
    assert not second.access_key_valid
    problem = second.problem("access_key")
    assert problem.kind is ProblemKind.CHECKSUM
    assert "check character" in problem.detail
    assert access_key.canonical(WRONG_CHECK_KEY) not in problem.detail.replace("-", "")
    assert "****-****-****-XPF0" in problem.detail


def test_guarantor_renderer_fixture(signatures):
    (notice,) = _notices("key_notice_guarantor.pdf", signatures)
    assert notice.guarantee_no == "26-000777-8"
    assert notice.access_key == "RRT31E5RNMJMAS3R" and notice.access_key_valid
    assert notice.guarantee_type is GuaranteeType.CONTRACT
    assert notice.obligee == "美郷町長"  # label 保証債権者(発注者)
    assert notice.contractor == "株式会社美郷建設"  # label 保証契約者(受注者)
    assert notice.work_name == "町道美郷中央線道路改良工事(第2工区)"
    assert notice.guarantee_amount == 3_086_250
    assert notice.contract_amount is None  # not printed on the key notice: no problem either
    # 令和8年4月1日(2026年4月1日)から令和9年3月31日(2027年3月31日)まで
    assert (notice.period_start, notice.period_end) == (date(2026, 4, 1), date(2027, 3, 31))
    assert notice.issued_on == date(2026, 4, 3)
    assert notice.problems == ()


def test_live_guarantor_renderer_round_trip(signatures, sample_certificate):
    pdf = pytest.importorskip("guarantor.pdf")
    key = access_key.generate()
    data = pdf.render_key_notice(sample_certificate, key, PRINTED_AT)
    (notice,) = extract_key_notices(extract_in_process(data), signatures)
    c = sample_certificate
    assert notice.guarantee_no == c.guarantee_no
    assert notice.access_key == access_key.canonical(key) and notice.access_key_valid
    assert notice.guarantee_type is c.guarantee_type
    assert (notice.obligee, notice.contractor, notice.work_name) == (c.obligee, c.contractor_name, c.work_name)
    assert notice.guarantee_amount == c.guarantee_amount
    assert (notice.period_start, notice.period_end) == (c.period_start, c.period_end)
    assert notice.problems == ()


def test_garbled_re_save_reports_what_it_cannot_read(signatures):
    # Ghostscript turned every digit into another letter: no number, no key, no amounts.
    (notice,) = _notices("key_notice_gs.pdf", signatures)
    assert notice.guarantee_no is None and notice.access_key is None
    assert notice.guarantee_type is GuaranteeType.ADVANCE and notice.obligee == "美郷町長"
    kinds = {problem.field: problem.kind for problem in notice.problems}
    assert kinds["guarantee_no"] is ProblemKind.UNREADABLE
    assert kinds["access_key"] is ProblemKind.UNREADABLE
    assert kinds["guarantee_amount"] is ProblemKind.UNREADABLE
    assert kinds["issued_on"] is ProblemKind.MISSING


def test_missing_fields_are_problems_not_guesses(signatures):
    notice = extract_fields("電子証書閲覧用「認証キー」等のお知らせ\n以上\n", signatures)
    missing = {p.field for p in notice.problems if p.kind is ProblemKind.MISSING}
    assert missing == {
        "guarantee_no",
        "access_key",
        "guarantee_type",
        "obligee",
        "work_name",
        "guarantee_amount",
        "period_start",
        "issued_on",
    }
    assert notice.contractor is None and notice.contract_amount is None


def test_labels_must_be_labels(signatures):
    text = (
        "発注者用保証確認サービス(D-Sure)に入力してください\n"  # a sentence, not the 発注者 field
        "発注者:美郷町長 様\n"
        "保証の種類:契約保証予約\n"
        "契約金額 123,450,000円 保証金額 12,345,000円\n"  # two fields on one line
    )
    notice = extract_fields(text, signatures)
    assert notice.obligee == "美郷町長"
    assert notice.guarantee_type is GuaranteeType.CONTRACT_RESERVATION  # not read as 契約保証
    assert (notice.contract_amount, notice.guarantee_amount) == (123_450_000, 12_345_000)


def test_two_different_keys_without_labels_are_ambiguous(signatures):
    text = f"電子証書閲覧用「認証キー」等のお知らせ\n{VALID_KEY}\n{WRONG_CHECK_KEY}\n"
    notice = extract_fields(text, signatures)
    assert notice.access_key is None
    assert notice.problem("access_key").kind is ProblemKind.AMBIGUOUS


def test_unreadable_key_is_masked_in_the_detail(signatures):
    notice = extract_fields("認証キー:1QFZ-2E8V-RKDT\n", signatures)
    problem = notice.problem("access_key")
    assert problem.kind is ProblemKind.UNREADABLE
    assert "1QFZ-2E8V" not in problem.detail


def test_period_ending_before_it_starts_is_flagged(signatures):
    notice = extract_fields("保証期間:令和9年3月31日から令和8年4月1日まで\n", signatures)
    assert notice.problem("period_end").kind is ProblemKind.UNREADABLE


def test_not_ok_results_have_no_notices(signatures):
    assert extract_key_notices(TextResult(TextStatus.BROKEN, reason="x"), signatures) == []
    assert extract_key_notices(TextResult(TextStatus.ENCRYPTED), signatures) == []


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(
        alphabet=st.sampled_from(list("保証契約番号認証キー発注者:：\n -0123456789ABCDEFGHJK令和年月日円金¥(")),
        max_size=200,
    )
)
def test_arbitrary_text_never_raises(text, signatures):
    notice = extract_fields(text, signatures)
    assert isinstance(notice, KeyNoticeFields)
    if notice.access_key_valid:
        assert access_key.is_valid(notice.access_key)


def test_labels_as_notices_print_them_bullets_qualifiers_spacing_and_honorifics(signatures):
    text = (
        "・保証債権者(発注者)：美郷町長 殿\n"  # a bracketed qualifier after the label; 殿 is not the name
        "■保 証 金 額 12,345,000円\n"  # a letter-spaced label
        "保証の種類\n"  # label alone: the value is the next line
        "中間前払金保証\n"  # not read as 前払金保証
        "工事名\n"
        "町道 美郷線 改良工事\n"
        "保証期間 令和8年4月1日(2026年4月1日)から令和9年3月31日(2027年3月31日)まで\n"  # each date twice
        "発行日 令和8年4月3日\n"
        "保証契約番号 26-000123-5\n"
        "認証キー 1QFZ-2E8V-RKDT-WST0\n"
        "受注者 株式会社美郷建設 御中\n"
        "契約金額 123,450,000円\n"
    )
    assert extract_fields(text, signatures) == KeyNoticeFields(
        pages=(0,),
        guarantee_no="26-000123-5",
        access_key="1QFZ2E8VRKDTWST0",
        access_key_valid=True,
        guarantee_type=GuaranteeType.INTERMEDIATE_ADVANCE,
        obligee="美郷町長",
        contractor="株式会社美郷建設",
        work_name="町道 美郷線 改良工事",
        guarantee_amount=12_345_000,
        contract_amount=123_450_000,
        period_start=date(2026, 4, 1),
        period_end=date(2027, 3, 31),
        issued_on=date(2026, 4, 3),
    )


def test_a_period_wrapped_onto_the_next_line_is_read_whole(signatures):
    notice = extract_fields("保証期間 令和8年4月1日から\n令和9年3月31日まで\n", signatures)
    assert (notice.period_start, notice.period_end) == (date(2026, 4, 1), date(2027, 3, 31))
    assert notice.problem("period_start") is None and notice.problem("period_end") is None


def test_a_wrapped_period_giving_each_date_twice_is_read_whole(signatures):
    notice = extract_fields("保証期間 令和8年4月1日(2026年4月1日)から\n令和9年3月31日(2027年3月31日)まで\n", signatures)
    assert (notice.period_start, notice.period_end) == (date(2026, 4, 1), date(2027, 3, 31))
    assert notice.problem("period_start") is None


def test_a_label_followed_by_another_label_has_no_value(signatures):
    notice = extract_fields("保証期間\n発行日 令和8年4月3日\n発注者\n保証金額 1,000円\n", signatures)
    assert notice.issued_on == date(2026, 4, 3)  # not swallowed as the period's value
    assert notice.guarantee_amount == 1_000
    assert notice.problem("period_start") == FieldProblem(
        "period_start", ProblemKind.UNREADABLE, "no start and end dates in the period: ''"
    )
    assert notice.problem("obligee") == FieldProblem("obligee", ProblemKind.UNREADABLE, "no value for obligee")


def test_each_unreadable_or_missing_field_is_told_to_staff_in_its_own_words(signatures):
    notice = extract_fields(
        "保証金額 abc円\n保証の種類 前払\n保証期間 令和8年4月1日\n発行日 不明\n保証契約番号 123\n", signatures
    )
    assert notice.problems == (
        FieldProblem(
            "guarantee_no", ProblemKind.UNREADABLE, "the value after the label does not match the pattern: '123'"
        ),
        FieldProblem("access_key", ProblemKind.MISSING, "no access_key label and no value matching the pattern"),
        FieldProblem("guarantee_type", ProblemKind.UNREADABLE, "not a known guarantee type: '前払'"),
        FieldProblem("obligee", ProblemKind.MISSING, "no value for obligee"),
        FieldProblem("work_name", ProblemKind.MISSING, "no value for work_name"),
        FieldProblem("guarantee_amount", ProblemKind.UNREADABLE, "not an amount: 'abc円'"),
        FieldProblem("period_start", ProblemKind.UNREADABLE, "no start and end dates in the period: '令和8年4月1日'"),
        FieldProblem("issued_on", ProblemKind.UNREADABLE, "no issue date"),
    )
    missing = extract_fields("以上\n", signatures)
    assert missing.problem("guarantee_type") == FieldProblem(
        "guarantee_type", ProblemKind.MISSING, "no 保証の種類 label"
    )
    assert missing.problem("guarantee_amount") == FieldProblem(
        "guarantee_amount", ProblemKind.MISSING, "no label for guarantee_amount"
    )
    assert missing.problem("issued_on") == FieldProblem("issued_on", ProblemKind.MISSING, "no issue date")


def test_two_fields_on_one_line_and_a_mistyped_key_shown_masked(signatures):
    notice = extract_fields(f"保証契約番号 26-000123-5 認証キー {WRONG_CHECK_KEY}\n", signatures)
    assert notice.guarantee_no == "26-000123-5"
    assert (notice.access_key, notice.access_key_valid) == (access_key.canonical(WRONG_CHECK_KEY), False)
    assert notice.problem("access_key") == FieldProblem(
        "access_key",
        ProblemKind.CHECKSUM,
        "****-****-****-XPF0: the check character does not match: the key was probably mistyped",
    )


def test_a_key_shaped_value_with_a_letter_keys_never_use_is_unreadable_saying_which(signatures):
    notice = extract_fields("認証キー 1QFZ-2E8V-RKDT-WSTU\n", signatures)
    assert (notice.access_key, notice.access_key_valid) == (None, False)
    assert notice.problem("access_key") == FieldProblem(
        "access_key", ProblemKind.UNREADABLE, "not an access key: 'U' is not a character used in access keys"
    )


def test_the_value_after_the_label_wins_over_other_numbers_on_the_notice(signatures):
    notice = extract_fields(f"保証契約番号 {NUMBER_1}\n(旧番号 {NUMBER_2})\n", signatures)
    assert notice.guarantee_no == NUMBER_1 and notice.problem("guarantee_no") is None
    unlabelled = extract_fields(f"{NUMBER_1}\n{NUMBER_2}\n", signatures)
    assert unlabelled.guarantee_no is None
    assert unlabelled.problem("guarantee_no") == FieldProblem(
        "guarantee_no", ProblemKind.AMBIGUOUS, "2 different values and none after the label"
    )


def test_an_unlabelled_key_split_by_a_space_is_read_whole(signatures):
    notice = extract_fields("1QFZ-2E8V -RKDT-WST0\n", signatures)
    assert (notice.access_key, notice.access_key_valid) == ("1QFZ2E8VRKDTWST0", True)


def test_staff_see_the_first_40_characters_of_a_value_that_cannot_be_read(signatures):
    junk = "あいうえおかきくけこ" * 4 + "さしすせそ"  # 45 characters
    text = f"保証契約番号 {junk}\n保証の種類 {junk}\n保証金額 {junk}\n保証期間 {junk}\n"
    notice = extract_fields(text, signatures)
    shown = repr(junk[:40])
    assert notice.problem("guarantee_no").detail == f"the value after the label does not match the pattern: {shown}"
    assert notice.problem("guarantee_type").detail == f"not a known guarantee type: {shown}"
    assert notice.problem("guarantee_amount").detail == f"not an amount: {shown}"
    assert notice.problem("period_start").detail == f"no start and end dates in the period: {shown}"


def test_a_reversed_period_tells_staff_both_dates(signatures):
    reversed_ = extract_fields("保証期間:令和9年3月31日から令和8年4月1日まで\n", signatures)
    assert reversed_.problem("period_end").detail == "the period ends (2026-04-01) before it starts (2027-03-31)"


def test_a_complete_period_line_does_not_borrow_dates_from_the_next_line(signatures):
    notice = extract_fields("保証期間 令和8年4月1日から令和9年3月31日まで\n(令和8年4月3日 発行)\n", signatures)
    assert (notice.period_start, notice.period_end) == (date(2026, 4, 1), date(2027, 3, 31))


def test_a_wrapped_period_reads_the_line_after_not_the_one_before(signatures):
    notice = extract_fields("注記 令和8年1月1日\n保証期間 令和8年4月1日から\n令和9年3月31日まで\n", signatures)
    assert (notice.period_start, notice.period_end) == (date(2026, 4, 1), date(2027, 3, 31))


def test_a_label_alone_on_the_last_lines(signatures):
    issued = extract_fields("工事名 町道改良工事\n発行日\n令和8年4月3日\n", signatures)
    assert issued.issued_on == date(2026, 4, 3)  # its value is the very last line
    notice = extract_fields("工事名 町道改良工事\n発注者\n", signatures)
    assert notice.problem("obligee") == FieldProblem("obligee", ProblemKind.UNREADABLE, "no value for obligee")


def test_a_value_stops_at_the_next_label_on_its_line(signatures):
    notice = extract_fields("発注者 美郷町長 受注者 XL建設株式会社\n受注者XYZ\n", signatures)
    assert notice.obligee == "美郷町長"
    assert notice.contractor == "XL建設株式会社"  # 受注者XYZ has no space or colon: not the label


def test_pages_without_a_title_are_one_notice_read_across_pages(signatures):
    result = TextResult(TextStatus.OK, text=(f"保証契約番号 {NUMBER_1}", "発行日 令和8年4月3日"), page_count=2)
    (notice,) = extract_key_notices(result, signatures)
    assert notice.pages == (0, 1)
    assert (notice.guarantee_no, notice.issued_on) == (NUMBER_1, date(2026, 4, 3))
    assert extract_key_notices(TextResult(TextStatus.OK, text=(), page_count=0), signatures) == []
