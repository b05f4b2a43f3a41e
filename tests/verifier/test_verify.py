"""The decision over one mail, with in-memory fakes of the ports and the guarantor's real PDFs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guarantor.pdf import render_certificate_view, render_fee_receipt, render_fee_statement, render_key_notice
from rules.domain import GuaranteeType
from rules.findings import CODES, Finding, Verdict
from rules.schema import SenderPolicy
from rules.signatures import DocumentKind
from formats import access_key as keys
from verifier.certificate_signature import SignedCertificate, canonical_json
from verifier.lookup import LookupResult, LookupStatus
from verifier.pdf_text import TextResult, TextStatus
from verifier.verify import (
    BODY,
    InputDocument,
    MailContext,
    SenderAuthentication,
    notice_differences,
)

from tests.support.verify import (
    RULES,
    NOW,
    ISSUED,
    ADVANCE_CERT,
    CONTRACT_CERT,
    INTERMEDIATE_CERT,
    REGISTER_ROW,
    sign,
    FakeLookup,
    FakeRegister,
    FakeAccepted,
    Desk,
    pdf,
    notice,
    codes,
    all_codes,
)


@pytest.fixture
def desk() -> Desk:
    return Desk(FakeLookup(), FakeRegister(REGISTER_ROW), FakeAccepted())


# -- the good path --------------------------------------------------------------------------


def test_a_good_key_notice_is_accepted_with_everything_the_caller_needs(desk: Desk) -> None:
    key = desk.lookup.issue(ADVANCE_CERT)
    result = desk.verify(notice(ADVANCE_CERT, key))
    assert result.verdict is Verdict.ACCEPTED
    assert result.all_findings == ()
    [guarantee] = result.guarantees
    assert guarantee.guarantee_no == "26-000123-4"
    assert guarantee.access_key == keys.parse(key)
    assert guarantee.access_key_masked == keys.mask(key)
    assert keys.parse(key)[4:12] not in repr(guarantee)  # the key never shows in logs
    assert guarantee.certificate == ADVANCE_CERT
    assert guarantee.contract_no == "R8-001"
    assert guarantee.department == "kensetsu"
    assert guarantee.verdict is Verdict.ACCEPTED
    [document] = result.documents
    assert (document.name, document.kind) == ("認証キー等のお知らせ.pdf", DocumentKind.KEY_NOTICE)
    assert document.guarantee_nos == ("26-000123-4",)
    assert desk.lookup.calls == [("26-000123-4", keys.parse(key), NOW)]


def test_contract_guarantee_goes_to_the_contracts_section(desk: Desk) -> None:
    key = desk.lookup.issue(CONTRACT_CERT)
    result = desk.verify(notice(CONTRACT_CERT, key))
    assert result.verdict is Verdict.ACCEPTED
    assert result.guarantees[0].department == "keiyaku"


def test_fee_documents_and_claims_beside_a_good_notice_are_informational(desk: Desk) -> None:
    key = desk.lookup.issue(ADVANCE_CERT)
    result = desk.verify(
        notice(ADVANCE_CERT, key),
        pdf("領収書.pdf", render_fee_receipt(ADVANCE_CERT, ISSUED)),
        pdf("計算書.pdf", render_fee_statement(ADVANCE_CERT, ISSUED)),
        pdf("閲覧画面.pdf", render_certificate_view(ADVANCE_CERT, ISSUED, "https://portal.example/c/1")),
        InputDocument(
            "請求書.pdf",
            TextResult(
                TextStatus.OK, ("前払金請求書\n下記のとおり請求します。\n請求金額 4,938,000円\n振込先 美郷銀行",), 1
            ),
        ),
    )
    assert result.verdict is Verdict.ACCEPTED
    assert codes(result.findings) == [
        "doc.fee_receipt",
        "doc.fee_statement",
        "doc.certificate_view_extra",
        "doc.advance_claim",
    ]
    assert "閲覧画面.pdf" in result.findings[2].message
    assert [d.kind for d in result.documents] == [
        DocumentKind.KEY_NOTICE,
        DocumentKind.FEE_RECEIPT,
        DocumentKind.FEE_STATEMENT,
        DocumentKind.CERTIFICATE_VIEW,
        DocumentKind.ADVANCE_CLAIM,
    ]


# -- mails without a key notice -------------------------------------------------------------


def test_the_certificate_view_alone_is_returned_with_the_step4_advice(desk: Desk) -> None:
    result = desk.verify(
        pdf("電子証書.pdf", render_certificate_view(ADVANCE_CERT, ISSUED, "https://portal.example/c/1"))
    )
    assert result.verdict is Verdict.RETURNED
    assert codes(result.findings) == ["doc.certificate_view"]  # it says what to send: no key.missing too
    assert "STEP4" in result.findings[0].message
    assert result.guarantees == ()
    assert desk.lookup.calls == []


def test_a_fee_receipt_alone_is_returned_as_missing_the_key(desk: Desk) -> None:
    result = desk.verify(pdf("領収書.pdf", render_fee_receipt(ADVANCE_CERT, ISSUED)))
    assert result.verdict is Verdict.RETURNED
    assert codes(result.findings) == ["doc.fee_receipt", "key.missing"]


def test_a_mail_without_attachments_misses_the_key(desk: Desk) -> None:
    result = desk.verify()
    assert (result.verdict, codes(result.findings)) == (Verdict.RETURNED, ["key.missing"])


@pytest.mark.parametrize(
    "text, code, verdict",
    [
        (TextResult(TextStatus.OK, ("", ""), 2), "doc.no_text", Verdict.RETURNED),
        (TextResult(TextStatus.ENCRYPTED, reason="password"), "doc.encrypted", Verdict.RETURNED),
        (TextResult(TextStatus.BROKEN, reason="truncated"), "doc.broken", Verdict.RETURNED),
        (
            TextResult(
                TextStatus.OK,
                (
                    "公共工事履行保証証券\n保険会社 美郷損害保険株式会社\n証券番号 A-1\n保険金額 1,234,500円\nパスワード 別途通知",
                ),
                1,
            ),
            "doc.insurer_bond",
            Verdict.NEEDS_REVIEW,
        ),
    ],
)
def test_unreadable_or_foreign_documents_explain_themselves(desk: Desk, text, code: str, verdict: Verdict) -> None:
    result = desk.verify(InputDocument("添付.pdf", text))
    assert codes(result.findings) == [code]
    assert result.verdict is verdict
    assert result.findings[0].document == "添付.pdf"


def test_the_key_notice_cut_in_half_is_broken(desk: Desk) -> None:
    key = desk.lookup.issue(ADVANCE_CERT)
    data = render_key_notice(ADVANCE_CERT, key, ISSUED)
    result = desk.verify(pdf("half.pdf", data[: len(data) // 2]))
    assert result.documents[0].kind is DocumentKind.BROKEN
    assert (result.verdict, codes(result.findings)) == (Verdict.RETURNED, ["doc.broken"])
    assert "half.pdf" in result.findings[0].message


def test_other_documents_alone_miss_the_key(desk: Desk) -> None:
    result = desk.verify(
        InputDocument("memo.docx", None),
        InputDocument("letter.pdf", TextResult(TextStatus.OK, ("いつもお世話になっております。" * 5,), 1)),
    )
    assert codes(result.findings) == ["doc.other", "doc.other", "key.missing"]
    assert [d.kind for d in result.documents] == [DocumentKind.OTHER, DocumentKind.OTHER]
    assert result.verdict is Verdict.RETURNED


def test_problems_met_while_walking_the_mail_count(desk: Desk) -> None:
    problem = Finding(
        "doc.encrypted_archive", detail="zip with password", params={"document": "a.zip"}, document="a.zip"
    )
    result = desk.verify(context=MailContext(desk="misato", problems=(problem,)))
    assert codes(result.findings) == ["doc.encrypted_archive"]  # no key.missing on top: it says what to do
    assert result.verdict is Verdict.RETURNED


# -- automatic mail and the sender ----------------------------------------------------------


def test_automatic_mail_is_ignored_and_nothing_is_looked_up(desk: Desk) -> None:
    key = desk.lookup.issue(ADVANCE_CERT)
    result = desk.verify(
        notice(ADVANCE_CERT, key), context=MailContext(desk="misato", automatic=True, automatic_reason="Auto-Submitted")
    )
    assert result.verdict is Verdict.IGNORED
    assert codes(result.findings) == ["mail.automatic"]
    assert result.guarantees == ()
    assert result.documents[0].kind is DocumentKind.KEY_NOTICE
    assert desk.lookup.calls == []


@pytest.mark.parametrize(
    "authentication, expected",
    [
        (SenderAuthentication.PASSED, Verdict.ACCEPTED),
        (SenderAuthentication.FAILED, Verdict.NEEDS_REVIEW),
        (SenderAuthentication.UNKNOWN, Verdict.NEEDS_REVIEW),
    ],
)
def test_required_authentication(desk: Desk, authentication, expected: Verdict) -> None:
    desk.rules = RULES.model_copy(update={"sender": SenderPolicy(require_authentication=True)})
    key = desk.lookup.issue(ADVANCE_CERT)
    result = desk.verify(notice(ADVANCE_CERT, key), context=MailContext(desk="misato", authentication=authentication))
    assert result.verdict is expected
    assert ("sender.not_authenticated" in codes(result.findings)) is (expected is Verdict.NEEDS_REVIEW)


def test_authentication_not_required_by_default(desk: Desk) -> None:
    key = desk.lookup.issue(ADVANCE_CERT)
    result = desk.verify(
        notice(ADVANCE_CERT, key), context=MailContext(desk="misato", authentication=SenderAuthentication.FAILED)
    )
    assert result.verdict is Verdict.ACCEPTED


# -- keys typed into the body ---------------------------------------------------------------


@dataclass(frozen=True)
class Typed:
    guarantee_no: str | None
    access_key: str | None


def test_typed_key_asks_for_the_pdf_by_default(desk: Desk) -> None:
    key = desk.lookup.issue(ADVANCE_CERT)
    result = desk.verify(context=MailContext(desk="misato", typed_keys=(Typed("26-000123-4", keys.parse(key)),)))
    assert codes(result.findings) == ["key.in_body"]
    assert result.verdict is Verdict.RETURNED
    assert keys.parse(key) not in result.findings[0].detail
    assert desk.lookup.calls == []


def test_typed_key_is_verified_when_the_desk_accepts_them(desk: Desk) -> None:
    desk.rules = RULES.model_copy(update={"sender": SenderPolicy(key_in_body="accept")})
    key = desk.lookup.issue(ADVANCE_CERT)
    typed = (Typed("26‐000123‐4", keys.format_key(key).lower()), Typed("26-000999-0", None))
    result = desk.verify(context=MailContext(desk="misato", typed_keys=typed))
    assert result.verdict is Verdict.ACCEPTED
    [guarantee] = result.guarantees
    assert (guarantee.document, guarantee.certificate) == (BODY, ADVANCE_CERT)


def test_typed_key_beside_its_notice_is_not_judged_twice(desk: Desk) -> None:
    key = desk.lookup.issue(ADVANCE_CERT)
    result = desk.verify(
        notice(ADVANCE_CERT, key),
        context=MailContext(desk="misato", typed_keys=(Typed("26-000123-4", keys.parse(key)),)),
    )
    assert result.verdict is Verdict.ACCEPTED
    assert len(result.guarantees) == 1 and len(desk.lookup.calls) == 1


def test_typed_key_with_a_wrong_check_symbol_when_accepted(desk: Desk) -> None:
    desk.rules = RULES.model_copy(update={"sender": SenderPolicy(key_in_body="accept")})
    key = keys.parse(desk.lookup.issue(ADVANCE_CERT))
    typo = key[:-1] + ("0" if key[-1] != "0" else "1")
    result = desk.verify(context=MailContext(desk="misato", typed_keys=(Typed("26-000123-4", typo),)))
    assert all_codes(result) == {"key.checksum"}
    assert desk.lookup.calls == []


# -- key notice problems and the look-up ----------------------------------------------------


def test_mistyped_key_on_a_notice_is_caught_before_the_lookup(desk: Desk) -> None:
    key = keys.parse(desk.lookup.issue(ADVANCE_CERT))
    typo = key[:-1] + ("0" if key[-1] != "0" else "1")
    result = desk.verify(notice(ADVANCE_CERT, typo))
    [guarantee] = result.guarantees
    assert codes(guarantee.findings) == ["key.checksum"]
    assert "26-000123-4" in guarantee.findings[0].message
    assert result.verdict is Verdict.RETURNED
    assert desk.lookup.calls == []


def _notice_pdf(text: str) -> InputDocument:
    """A one-page key notice PDF whose text layer reads ``text``."""
    return InputDocument("n.pdf", TextResult(TextStatus.OK, (text,), 1))


def test_notice_without_a_readable_key_goes_to_a_person(desk: Desk) -> None:
    text = (
        "電子証書閲覧用「認証キー」等のお知らせ\n保証契約番号:26-000123-4\n認証キー:(印字なし)\n"
        "保証の種類:前払金保証\n保証金額:4,938,000円\n発注者用保証確認サービスで電子証書を閲覧してください。"
    )
    result = desk.verify(_notice_pdf(text))
    assert result.documents[0].kind is DocumentKind.KEY_NOTICE
    [guarantee] = result.guarantees
    assert codes(guarantee.findings) == ["key.unreadable"]
    assert "access_key" in guarantee.findings[0].detail
    assert result.verdict is Verdict.NEEDS_REVIEW


@pytest.mark.parametrize(
    "status, code, verdict",
    [
        (LookupStatus.NO_MATCH, "lookup.no_match", Verdict.RETURNED),
        (LookupStatus.REVOKED, "lookup.revoked", Verdict.RETURNED),
        (LookupStatus.REFUSED, "lookup.refused", Verdict.NEEDS_REVIEW),
        (LookupStatus.UNAVAILABLE, "lookup.unavailable", Verdict.NEEDS_REVIEW),
    ],
)
def test_lookup_answers(desk: Desk, status: LookupStatus, code: str, verdict: Verdict) -> None:
    key = keys.parse(desk.lookup.issue(ADVANCE_CERT))
    desk.lookup.answers[("26-000123-4", key)] = LookupResult(status, reason="because")
    result = desk.verify(notice(ADVANCE_CERT, key))
    [guarantee] = result.guarantees
    assert codes(guarantee.findings) == [code]
    assert "because" in guarantee.findings[0].detail or status is LookupStatus.NO_MATCH
    assert (guarantee.verdict, result.verdict) == (verdict, verdict)
    assert guarantee.certificate is None


def test_untrusted_or_forged_signature(desk: Desk) -> None:
    other = Ed25519PrivateKey.generate()
    key1 = desk.lookup.issue(ADVANCE_CERT, sign(ADVANCE_CERT, other))
    # A trusted signature over other bytes: the payload was changed after signing.
    good = sign(CONTRACT_CERT)
    forged = SignedCertificate(
        canonical_json(replace(CONTRACT_CERT, guarantee_amount=9_999_999)), good.signature, good.key_id
    )
    key2 = desk.lookup.issue(CONTRACT_CERT, forged)
    result = desk.verify(notice(ADVANCE_CERT, key1), notice(CONTRACT_CERT, key2))
    assert [codes(g.findings) for g in result.guarantees] == [["cert.signature"], ["cert.signature"]]
    assert "unknown_key" in result.guarantees[0].findings[0].detail
    assert "invalid" in result.guarantees[1].findings[0].detail
    assert all(g.certificate is None for g in result.guarantees)
    assert result.verdict is Verdict.NEEDS_REVIEW


def test_a_notice_that_says_something_else_than_the_certificate(desk: Desk) -> None:
    key = desk.lookup.issue(ADVANCE_CERT)
    edited = replace(ADVANCE_CERT, guarantee_amount=5_000_000, period_end=date(2027, 3, 31), obligee="美郷町長")
    result = desk.verify(notice(edited, key))
    [guarantee] = result.guarantees
    assert codes(guarantee.findings) == ["cert.notice_mismatch"]
    detail = guarantee.findings[0].detail
    assert "guarantee_amount" in detail and "period_end" in detail and "obligee" not in detail
    assert result.verdict is Verdict.NEEDS_REVIEW


def test_notice_differences_tolerate_spelling_and_wrapping() -> None:
    from verifier.extract import KeyNoticeFields

    same = KeyNoticeFields(
        pages=(0,),
        guarantee_no="26‐000123‐4",
        obligee="美郷町長 殿",
        contractor="美郷建設(株)",
        work_name="町道美郷線 道路改良",
        guarantee_type=GuaranteeType.ADVANCE,
    )
    assert notice_differences(same, ADVANCE_CERT) == []
    other = replace(same, work_name="町道", guarantee_type=GuaranteeType.CONTRACT, contractor="北郷建設")
    assert [d.split(":")[0] for d in notice_differences(other, ADVANCE_CERT)] == [
        "guarantee_type",
        "contractor",
        "work_name",
    ]


def test_a_certificate_for_another_number_is_a_mismatch(desk: Desk) -> None:
    key = keys.parse(desk.lookup.issue(ADVANCE_CERT))
    desk.lookup.answers[("26-000123-4", key)] = LookupResult(LookupStatus.FOUND, sign(CONTRACT_CERT))
    result = desk.verify(notice(ADVANCE_CERT, key))
    assert codes(result.guarantees[0].findings) == ["cert.notice_mismatch"]
    assert result.guarantees[0].certificate is None


# -- the desk's rules through the whole pipeline ---------------------------------------------


def test_rules_findings_reach_the_guarantee(desk: Desk) -> None:
    elsewhere = replace(ADVANCE_CERT, obligee="北郷町長", contract_no="R8-999")
    key = desk.lookup.issue(elsewhere)
    result = desk.verify(notice(elsewhere, key))
    assert codes(result.guarantees[0].findings) == ["cert.other_obligee", "register.no_contract"]
    assert result.verdict is Verdict.RETURNED
    assert result.guarantees[0].department == "kensetsu"


def test_already_accepted_guarantee_is_a_duplicate(desk: Desk) -> None:
    desk.accepted.receipts["26-000123-4"] = "K-2026-000042"
    key = desk.lookup.issue(ADVANCE_CERT)
    result = desk.verify(notice(ADVANCE_CERT, key))
    assert codes(result.guarantees[0].findings) == ["submission.duplicate"]
    assert "K-2026-000042" in result.guarantees[0].findings[0].message
    assert result.verdict is Verdict.ACCEPTED


def test_manual_mode_answers_an_already_accepted_number_at_once_without_a_clerk(desk: Desk) -> None:
    key = keys.parse(desk.lookup.issue(ADVANCE_CERT))
    desk.lookup.answers[("26-000123-4", key)] = LookupResult(LookupStatus.MANUAL, reason="manual mode")
    pending = desk.verify(notice(ADVANCE_CERT, key))
    assert codes(pending.guarantees[0].findings) == ["lookup.manual"]  # a new number waits for a clerk
    desk.accepted.receipts["26-000123-4"] = "K-2026-000042"
    result = desk.verify(notice(ADVANCE_CERT, key))
    [guarantee] = result.guarantees
    assert codes(guarantee.findings) == ["submission.duplicate"]
    [duplicate] = guarantee.findings
    assert duplicate.guarantee_no == "26-000123-4" and duplicate.params["previous_receipt"] == "K-2026-000042"
    assert "K-2026-000042" in duplicate.message and "manual mode" in duplicate.detail
    assert result.verdict is Verdict.ACCEPTED


def test_several_notices_in_one_mail_are_judged_each_and_the_strongest_wins(desk: Desk) -> None:
    key_a = desk.lookup.issue(ADVANCE_CERT)
    key_c = desk.lookup.issue(CONTRACT_CERT)
    low = replace(CONTRACT_CERT, guarantee_no="26-000126-7", guarantee_amount=1_000)
    key_low = desk.lookup.issue(low)
    result = desk.verify(
        notice(ADVANCE_CERT, key_a), notice(CONTRACT_CERT, key_c, "b.pdf"), notice(low, key_low, "c.pdf")
    )
    assert [g.verdict for g in result.guarantees] == [Verdict.ACCEPTED, Verdict.ACCEPTED, Verdict.RETURNED]
    assert codes(result.guarantees[2].findings) == ["amount.contract_guarantee_low"]
    assert result.verdict is Verdict.RETURNED


def test_the_same_notice_twice_is_judged_once(desk: Desk) -> None:
    key = desk.lookup.issue(ADVANCE_CERT)
    result = desk.verify(notice(ADVANCE_CERT, key), notice(ADVANCE_CERT, key, "copy.pdf"))
    assert len(result.guarantees) == 1 and len(desk.lookup.calls) == 1
    assert len(result.documents) == 2


def test_advances_in_the_same_mail_count_towards_the_total(desk: Desk) -> None:
    # 4,938,000 (40%) + 2,469,001 (20% + 1 yen) exceeds 60% together; the 中間前払金 alone also exceeds 20%.
    key_a = desk.lookup.issue(ADVANCE_CERT)
    key_i = desk.lookup.issue(INTERMEDIATE_CERT)
    result = desk.verify(notice(ADVANCE_CERT, key_a), notice(INTERMEDIATE_CERT, key_i, "i.pdf"))
    assert codes(result.guarantees[0].findings) == ["amount.advance_total_high"]
    assert codes(result.guarantees[1].findings) == ["amount.intermediate_advance_high", "amount.advance_total_high"]


def test_accepted_advances_count_towards_the_total(desk: Desk) -> None:
    desk.accepted.advances["R8-001"] = {GuaranteeType.ADVANCE: 4_938_000}
    fine = replace(INTERMEDIATE_CERT, guarantee_amount=2_469_000)
    key = desk.lookup.issue(fine)
    assert desk.verify(notice(fine, key)).verdict is Verdict.ACCEPTED
    desk.accepted.advances["R8-001"] = {GuaranteeType.ADVANCE: 4_938_001}
    assert "amount.advance_total_high" in all_codes(desk.verify(notice(fine, key)))


def test_every_code_this_module_uses_is_in_the_table() -> None:
    import verifier.verify as module

    used = (
        set(module._DOCUMENT_CODES.values())
        | set(module._LOOKUP_CODES.values())
        | {
            "doc.certificate_view_extra",
            "key.missing",
            "key.in_body",
            "key.checksum",
            "key.unreadable",
            "cert.signature",
            "cert.notice_mismatch",
            "sender.not_authenticated",
            "mail.automatic",
        }
    )
    assert used <= set(CODES)


def test_a_reservation_notice_is_refused_by_its_printed_type_without_a_lookup(desk: Desk) -> None:
    # 契約保証予約 is never issued electronically, so no look-up could find it: the reply must say
    # why it cannot be taken, not send the contractor after a notice that does not exist.
    reservation = replace(CONTRACT_CERT, guarantee_type=GuaranteeType.CONTRACT_RESERVATION)
    result = desk.verify(notice(reservation, keys.generate()))
    [guarantee] = result.guarantees
    assert codes(guarantee.findings) == ["cert.type_not_eligible"]
    assert "契約保証予約" in guarantee.findings[0].message
    assert result.verdict is Verdict.RETURNED
    assert desk.lookup.calls == []


def test_a_certificate_without_contract_number_is_matched_by_work_name_and_contractor(desk: Desk) -> None:
    unnumbered = replace(
        ADVANCE_CERT, contract_no="", work_name="町道美郷線　道路改良工事", contractor_name="美郷建設(株)"
    )
    key = desk.lookup.issue(unnumbered)
    result = desk.verify(notice(unnumbered, key))
    [guarantee] = result.guarantees
    assert codes(guarantee.findings) == ["register.matched_by_work"]
    assert guarantee.verdict is Verdict.ACCEPTED and guarantee.contract_no == "R8-001"
    other = replace(unnumbered, guarantee_no="26-000126-7", contractor_name="別建設株式会社")
    key = desk.lookup.issue(other)
    assert "register.no_contract" in codes(desk.verify(notice(other, key)).guarantees[0].findings)


# -- what the caller and staff get back (mutation run, issue 15) ------------------------------


def test_automatic_mail_still_lists_its_documents_and_says_why_it_was_ignored(desk: Desk) -> None:
    key = desk.lookup.issue(ADVANCE_CERT)
    result = desk.verify(
        notice(ADVANCE_CERT, key), context=MailContext(desk="misato", automatic=True, automatic_reason="Auto-Submitted")
    )
    [document] = result.documents
    assert document.name == "認証キー等のお知らせ.pdf"
    assert document.evidence  # staff see why it was taken for a key notice
    assert "Auto-Submitted" in result.findings[0].detail


def test_each_document_reports_its_findings_numbers_masked_keys_and_evidence(desk: Desk) -> None:
    key = desk.lookup.issue(ADVANCE_CERT)
    result = desk.verify(notice(ADVANCE_CERT, key), InputDocument("memo.docx", None))
    notice_result, memo = result.documents
    assert notice_result.access_keys_masked == (keys.mask(key),)
    assert notice_result.evidence and memo.evidence
    assert notice_result.findings == ()
    assert codes(memo.findings) == ["doc.other"] and memo.findings[0].document == "memo.docx"


def test_the_signed_certificate_and_its_type_reach_the_caller(desk: Desk) -> None:
    signed = sign(ADVANCE_CERT)
    key = desk.lookup.issue(ADVANCE_CERT, signed)
    [guarantee] = desk.verify(notice(ADVANCE_CERT, key)).guarantees
    assert guarantee.signed == signed  # the caller stores it as the proof
    assert guarantee.guarantee_type is GuaranteeType.ADVANCE


def test_a_typed_key_verified_in_accept_mode_reports_the_certificate_type(desk: Desk) -> None:
    desk.rules = RULES.model_copy(update={"sender": SenderPolicy(key_in_body="accept")})
    key = desk.lookup.issue(CONTRACT_CERT)
    result = desk.verify(context=MailContext(desk="misato", typed_keys=(Typed("26-000124-2", keys.parse(key)),)))
    [guarantee] = result.guarantees
    assert guarantee.guarantee_type is GuaranteeType.CONTRACT and guarantee.department == "keiyaku"


def test_a_notice_without_a_readable_key_keeps_its_printed_type_and_document(desk: Desk) -> None:
    text = (
        "電子証書閲覧用「認証キー」等のお知らせ\n保証契約番号:26-000123-4\n認証キー:(印字なし)\n"
        "保証の種類:前払金保証\n保証金額:4,938,000円\n発注者用保証確認サービスで電子証書を閲覧してください。"
    )
    result = desk.verify(_notice_pdf(text))
    [guarantee] = result.guarantees
    assert codes(guarantee.findings) == ["key.unreadable"]
    assert guarantee.guarantee_type is GuaranteeType.ADVANCE  # routed to the right department
    assert guarantee.document == "n.pdf" and guarantee.findings[0].document == "n.pdf"


def test_a_notice_with_a_key_but_no_number_goes_to_a_person(desk: Desk) -> None:
    text = (
        "電子証書閲覧用「認証キー」等のお知らせ\n認証キー:1QFZ-2E8V-RKDT-WST0\n保証の種類:前払金保証\n"
        "発注者用保証確認サービスで電子証書を閲覧してください。"
    )
    result = desk.verify(_notice_pdf(text))
    [guarantee] = result.guarantees
    assert (guarantee.guarantee_no, codes(guarantee.findings)) == (None, ["key.unreadable"])
    assert result.verdict is Verdict.NEEDS_REVIEW and desk.lookup.calls == []


def test_a_checksum_finding_names_its_guarantee_and_document(desk: Desk) -> None:
    key = keys.parse(desk.lookup.issue(ADVANCE_CERT))
    typo = key[:-1] + ("0" if key[-1] != "0" else "1")
    [guarantee] = desk.verify(notice(ADVANCE_CERT, typo, "typo.pdf")).guarantees
    [finding] = guarantee.findings
    assert (finding.guarantee_no, finding.document) == ("26-000123-4", "typo.pdf")


def test_number_only_and_duplicate_typed_keys_ask_for_the_pdf_once(desk: Desk) -> None:
    key = keys.parse(desk.lookup.issue(ADVANCE_CERT))
    typed = (Typed("26-000999-0", None), Typed("26-000123-4", key), Typed(None, key), Typed("26-000124-2", key))
    result = desk.verify(context=MailContext(desk="misato", typed_keys=typed))
    assert codes(result.findings) == ["key.in_body"]
    assert desk.lookup.calls == []


def test_a_typed_key_beside_its_notice_does_not_hide_the_next_typed_key(desk: Desk) -> None:
    key = desk.lookup.issue(ADVANCE_CERT)
    other = keys.parse(desk.lookup.issue(CONTRACT_CERT))
    typed = (Typed("26-000123-4", keys.parse(key)), Typed("26-000124-2", other))
    result = desk.verify(notice(ADVANCE_CERT, key), context=MailContext(desk="misato", typed_keys=typed))
    assert "key.in_body" in codes(result.findings)


def test_the_same_typed_key_twice_is_judged_once_in_accept_mode(desk: Desk) -> None:
    desk.rules = RULES.model_copy(update={"sender": SenderPolicy(key_in_body="accept")})
    key = keys.parse(desk.lookup.issue(ADVANCE_CERT))
    typed = (Typed("26-000123-4", key), Typed("26‐000123‐4", key))
    result = desk.verify(context=MailContext(desk="misato", typed_keys=typed))
    assert len(result.guarantees) == 1 and len(desk.lookup.calls) == 1


def test_a_repeated_notice_does_not_stop_the_notices_after_it(desk: Desk) -> None:
    key_a = desk.lookup.issue(ADVANCE_CERT)
    key_c = desk.lookup.issue(CONTRACT_CERT)
    result = desk.verify(
        notice(ADVANCE_CERT, key_a), notice(ADVANCE_CERT, key_a, "copy.pdf"), notice(CONTRACT_CERT, key_c, "c.pdf")
    )
    assert [g.guarantee_no for g in result.guarantees] == ["26-000123-4", "26-000124-2"]


class DeskAwareAccepted(FakeAccepted):
    """Receipts per (desk, number): another desk's acceptance is not a duplicate here."""

    def receipt_for(self, desk: str, guarantee_no: str) -> str | None:
        return self.receipts.get(f"{desk}/{guarantee_no}")


def test_manual_mode_duplicate_is_per_desk_and_names_the_guarantee(desk: Desk) -> None:
    desk.accepted = DeskAwareAccepted({"other/26-000123-4": "K-2026-000001"})
    key = keys.parse(desk.lookup.issue(ADVANCE_CERT))
    desk.lookup.answers[("26-000123-4", key)] = LookupResult(LookupStatus.MANUAL, reason="manual mode")
    [guarantee] = desk.verify(notice(ADVANCE_CERT, key)).guarantees
    assert codes(guarantee.findings) == ["lookup.manual"]  # accepted at another desk: not a duplicate here
    desk.accepted.receipts["misato/26-000123-4"] = "K-2026-000042"
    [guarantee] = desk.verify(notice(ADVANCE_CERT, key, "again.pdf")).guarantees
    [duplicate] = guarantee.findings
    assert duplicate.code == "submission.duplicate" and duplicate.document == "again.pdf"
    assert "26-000123-4" in duplicate.message


def test_a_type_the_desk_does_not_take_is_refused_from_the_notice(desk: Desk) -> None:
    desk.rules = RULES.model_copy(update={"eligible_guarantee_types": [GuaranteeType.ADVANCE]})
    key = desk.lookup.issue(CONTRACT_CERT)
    result = desk.verify(notice(CONTRACT_CERT, key, "k.pdf"))
    [guarantee] = result.guarantees
    [finding] = guarantee.findings
    assert finding.code == "cert.type_not_eligible" and "契約保証" in finding.message
    assert (finding.guarantee_no, finding.document) == ("26-000124-2", "k.pdf")
    assert "契約保証" in finding.detail
    assert desk.lookup.calls == []


def test_a_found_answer_without_a_certificate_is_treated_as_unavailable(desk: Desk) -> None:
    key = keys.parse(desk.lookup.issue(ADVANCE_CERT))
    desk.lookup.answers[("26-000123-4", key)] = LookupResult(LookupStatus.FOUND, None)
    [guarantee] = desk.verify(notice(ADVANCE_CERT, key)).guarantees
    assert codes(guarantee.findings) == ["lookup.unavailable"]


def test_a_signed_payload_that_is_not_a_certificate_is_a_signature_problem(desk: Desk) -> None:
    payload = b'{"not": "a certificate"}'
    from tests.support.verify import SIGNING_KEY
    from verifier.certificate_signature import key_id

    garbage = SignedCertificate(payload, SIGNING_KEY.sign(payload), key_id(SIGNING_KEY.public_key()))
    key = desk.lookup.issue(ADVANCE_CERT, garbage)
    [guarantee] = desk.verify(notice(ADVANCE_CERT, key)).guarantees
    assert codes(guarantee.findings) == ["cert.signature"]
    assert guarantee.certificate is None and guarantee.verdict is Verdict.NEEDS_REVIEW
    assert "26-000123-4" in guarantee.findings[0].message


def test_notice_differences_name_every_field_that_differs() -> None:
    from verifier.extract import KeyNoticeFields

    shown = KeyNoticeFields(
        pages=(0,),
        guarantee_no="26-000999-0",
        guarantee_type=GuaranteeType.CONTRACT,
        obligee="北郷町長",
        contractor="北郷建設",
        work_name="県道北郷線 舗装工事",
        guarantee_amount=1,
        contract_amount=2,
        period_start=date(2020, 1, 1),
        period_end=date(2020, 1, 2),
    )
    labels = [d.split(":")[0] for d in notice_differences(shown, ADVANCE_CERT)]
    assert labels == [
        "guarantee_no",
        "guarantee_type",
        "obligee",
        "contractor",
        "work_name",
        "guarantee_amount",
        "contract_amount",
        "period_start",
        "period_end",
    ]
    same = replace(
        shown,
        guarantee_no=ADVANCE_CERT.guarantee_no,
        guarantee_type=ADVANCE_CERT.guarantee_type,
        obligee=ADVANCE_CERT.obligee,
        contractor=ADVANCE_CERT.contractor_name,
        work_name=ADVANCE_CERT.work_name,
        guarantee_amount=ADVANCE_CERT.guarantee_amount,
        contract_amount=ADVANCE_CERT.contract_amount,
        period_start=ADVANCE_CERT.period_start,
        period_end=ADVANCE_CERT.period_end,
    )
    assert notice_differences(same, ADVANCE_CERT) == []


def test_a_wrapped_work_name_agrees_from_eight_characters_on() -> None:
    from verifier.extract import KeyNoticeFields

    certificate = replace(ADVANCE_CERT, work_name="町道美郷線道路改良工事その二")
    eight = KeyNoticeFields(pages=(0,), work_name="町道美郷線道路改")
    seven = KeyNoticeFields(pages=(0,), work_name="町道美郷線道路")
    assert notice_differences(eight, certificate) == []
    assert [d.split(":")[0] for d in notice_differences(seven, certificate)] == ["work_name"]
