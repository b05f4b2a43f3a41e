"""Replies to contractors: subjects and bodies per verdict, headers, masking, charsets, injection."""

from __future__ import annotations

import email
import email.policy
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mailer.reply import (
    FoundDocument,
    GuaranteeLine,
    ReplyFacts,
    TemplateProblem,
    build_reply,
    ensure_masked,
    local_time_text,
    render_reply,
    template_environment,
)
from mailer.reply_policy import MARKER_HEADER
from rules.findings import Finding, Verdict
from verifier.access_key import generate

TEMPLATES = Path(__file__).resolve().parents[2] / "config" / "templates"
NOW = datetime(2026, 4, 10, 1, 24, tzinfo=timezone.utc)
KEY = generate()  # a real, well-formed key: it must never appear whole in a reply
PREFIX = "【美郷町 契約窓口】受付番号 K-2026-000123 認証キー等のお知らせ"


@pytest.fixture
def env():
    return template_environment(TEMPLATES)


def facts(**changes) -> ReplyFacts:
    base = ReplyFacts(
        desk="misato",
        desk_name="美郷町 契約窓口",
        desk_address="keiyaku@town.misato.example",
        contact=["美郷町 総務課 契約係", "電話 0000-00-0000(平日 8:30〜17:15)"],
        receipt_no="K-2026-000123",
        received_at=datetime(2026, 4, 10, 1, 23, tzinfo=timezone.utc),  # 10:23 JST, a Friday
        recipient="tanaka@misato-kensetsu.example",
        verdict=Verdict.ACCEPTED,
        original_message_id="<20260410102300.abc@mail.misato-kensetsu.example>",
        original_references="<first@mail.misato-kensetsu.example>",
        original_subject="【電子保証】工事番号 第12号 美郷橋補修工事",
        documents=[FoundDocument("認証キー等のお知らせ_26-000123-4.pdf", "認証キー等のお知らせ", "26-000123-4", KEY)],
        guarantees=[GuaranteeLine("26-000123-4", Verdict.ACCEPTED, "前払金保証", "美郷橋補修工事")],
    )
    return replace(base, **changes)


def parsed(message) -> email.message.EmailMessage:
    """What the contractor's mail client sees: the bytes on the wire, parsed again."""
    return email.message_from_bytes(message.as_bytes(), policy=email.policy.default)


@pytest.mark.parametrize(
    ("verdict", "ending"),
    [
        (Verdict.ACCEPTED, "を受け付けました"),
        (Verdict.RETURNED, "の再送をお願いします"),
        (Verdict.NEEDS_REVIEW, "をお預かりしました(担当者が確認します)"),
    ],
)
def test_subject_per_verdict(env, verdict, ending) -> None:
    subject, _ = render_reply(facts(verdict=verdict), env)
    assert subject == PREFIX + ending
    assert parsed(build_reply(facts(verdict=verdict), env, now=NOW))["Subject"] == PREFIX + ending


def test_accepted_body_has_receipt_time_documents_next_step_and_contact(env) -> None:
    _, body = render_reply(facts(findings=[Finding("doc.fee_receipt")]), env)
    assert "受付番号:K-2026-000123" in body
    assert "受付日時:2026年4月10日(金) 10時23分" in body  # 01:23 UTC shown in JST
    assert "認証キー等のお知らせ_26-000123-4.pdf" in body and "種類:認証キー等のお知らせ" in body
    assert "保証契約番号 26-000123-4(前払金保証):受付済み" in body
    assert "保証料領収書が添付されていましたが、ご提出は不要です。" in body  # the finding's sentence
    # Issue 14: wording as a town official writes it, and nothing that overstates what happened.
    assert "保証証書の提出として受け付けました" in body
    assert "お電話をいただく必要はございません" in body and "以上で完了です" not in body
    assert body.rstrip().endswith("電話 0000-00-0000(平日 8:30〜17:15)\nkeiyaku@town.misato.example")
    assert "\n\n\n" not in body and not any(line != line.rstrip() for line in body.splitlines())


def test_returned_body_lists_each_reason_and_asks_for_the_key_notice(env) -> None:
    findings = [
        Finding("doc.certificate_view", document="閲覧画面.pdf"),
        Finding("lookup.no_match", params={"guarantee_no": "26-000123-4"}, guarantee_no="26-000123-4"),
        Finding("doc.broken", params={}, document="壊れた.pdf"),
        Finding("doc.certificate_view", document="閲覧画面2.pdf"),  # the same sentence only once
    ]
    _, body = render_reply(facts(verdict=Verdict.RETURNED, findings=findings), env)
    assert "■再送をお願いする理由" in body
    assert body.count("STEP3で表示される電子証書の閲覧画面") == 1
    assert "保証契約番号26-000123-4と認証キーの組み合わせで電子証書を確認できませんでした。" in body
    assert "添付のPDFファイル「壊れた.pdf」を開けませんでした。" in body  # Finding.document fills {document}
    assert "このメールに返信する形でお送りください" in body


def test_needs_review_says_a_person_will_look_and_no_resend_is_needed(env) -> None:
    _, body = render_reply(facts(verdict=Verdict.NEEDS_REVIEW, findings=[Finding("register.no_contract",
                                                                                   params={"contract_no": "R8-12"})]), env)
    assert "■担当者が確認する事項" in body
    assert "契約番号R8-12の契約を当町の台帳で確認できなかったため" in body
    assert "あらためてお送りいただく必要はありません" in body


def test_resend_names_the_earlier_receipt(env) -> None:
    _, body = render_reply(facts(resend=True, resend_of_receipt_no="K-2026-000100"), env)
    assert "今回のメールは、前回お送りいただいたメール(受付番号 K-2026-000100)の再送として受け付けました" in body
    _, plain = render_reply(facts(), env)
    assert "再送" not in plain.split("━")[0]


def test_headers_thread_and_mark_the_reply(env) -> None:
    message = parsed(build_reply(facts(), env, now=NOW))
    assert message["In-Reply-To"] == "<20260410102300.abc@mail.misato-kensetsu.example>"
    assert message["References"] == (
        "<first@mail.misato-kensetsu.example> <20260410102300.abc@mail.misato-kensetsu.example>"
    )
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Auto-Response-Suppress"] == "All"
    assert message[MARKER_HEADER] == "reply; desk=misato"
    assert message["From"].addresses[0].display_name == "美郷町 契約窓口"
    assert message["From"].addresses[0].addr_spec == "keiyaku@town.misato.example"
    assert [a.addr_spec for a in message["To"].addresses] == ["tanaka@misato-kensetsu.example"]
    assert message["Message-ID"].endswith("@town.misato.example>")
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert message.as_bytes().isascii()  # base64 body: 7-bit clean on every hop


def test_the_key_is_always_masked(env) -> None:
    raw_key = KEY.replace("-", "")
    message = build_reply(facts(), env, now=NOW)
    body = parsed(message).get_content()
    assert f"認証キー:****-****-****-{KEY[-4:]}" in body
    assert KEY not in body and raw_key not in body
    assert raw_key[4:12] not in body.replace("-", "")
    # A garbled value is masked whole rather than partly shown.
    assert ensure_masked("not-a-key-at-all") == "****-****-****-****"
    assert ensure_masked(f"****-****-****-{KEY[-4:]}") == f"****-****-****-{KEY[-4:]}"
    # A row masked the old way (first and last 4) is shown with the last 4 only.
    assert ensure_masked(f"{KEY[:4]}-****-****-{KEY[-4:]}") == f"****-****-****-{KEY[-4:]}"


def test_iso_2022_jp_when_the_desk_asks_for_it(env) -> None:
    message = build_reply(facts(charset="iso-2022-jp", verdict=Verdict.RETURNED,
                                findings=[Finding("doc.certificate_view")]), env, now=NOW)
    raw = message.as_bytes()
    assert raw.isascii()
    assert b"=?ISO-2022-JP?B?" in raw  # subject and display name encoded in JIS as well
    again = parsed(message)
    assert again.get_content_charset() == "iso-2022-jp"
    assert again["Content-Transfer-Encoding"] == "7bit"
    assert again["Subject"] == PREFIX + "の再送をお願いします"
    body = again.get_content()
    assert "電話 0000-00-0000(平日 8:30〜17:15)" in body
    assert "STEP4でダウンロードできる" in body
    assert b"\x1b$B" in raw  # the JIS escape sequence really is in the body


def test_iso_2022_jp_falls_back_to_utf8_for_characters_jis_lacks(env) -> None:
    message = build_reply(facts(charset="iso-2022-jp",
                                documents=[FoundDocument("髙橋建設①.pdf", "その他の添付ファイル")]), env, now=NOW)
    again = parsed(message)
    assert again.get_content_charset() == "utf-8"
    assert "髙橋建設①.pdf" in again.get_content()


def test_header_injection_in_the_original_subject_and_display_name_stays_text(env) -> None:
    hostile = facts(
        original_subject="ご確認ください\r\nBcc: victim@evil.example\r\n\r\n本文を乗っ取り",
        original_message_id="<x@evil.example>\r\nBcc: victim@evil.example",
        original_references="<a@b.example>\nBcc: victim2@evil.example <c@d.example>",
        desk_name="美郷町 契約窓口\r\nBcc: victim3@evil.example",
        documents=[FoundDocument("a.pdf\r\nBcc: victim4@evil.example", "その他の添付ファイル")],
    )
    message = build_reply(hostile, env, now=NOW)
    raw = message.as_bytes()
    again = parsed(message)
    assert "Bcc" not in again and b"\nBcc:" not in raw and b"\rBcc:" not in raw
    assert sorted(again.keys()) == sorted([
        "From", "To", "Subject", "Date", "Message-ID", "In-Reply-To", "References", "Auto-Submitted",
        "X-Auto-Response-Suppress", "Content-Type", "Content-Transfer-Encoding", "MIME-Version", MARKER_HEADER,
        "Precedence",
    ])
    assert again["Precedence"] == "auto_reply"
    assert again["In-Reply-To"] == "<x@evil.example>"
    assert again["References"] == "<a@b.example> <c@d.example> <x@evil.example>"
    assert [a.addr_spec for a in again["To"].addresses] == ["tanaka@misato-kensetsu.example"]
    assert len(again["From"].addresses) == 1
    body = again.get_content()
    assert "■件　　名:ご確認ください Bcc: victim@evil.example 本文を乗っ取り" in body  # one line of text
    assert "1. a.pdf Bcc: victim4@evil.example" in body


def test_an_encoded_word_in_the_original_subject_is_not_decoded_into_a_header(env) -> None:
    message = build_reply(facts(original_subject="=?utf-8?b?DQpCY2M6IHZpY3RpbUBldmlsLmV4YW1wbGU=?="), env, now=NOW)
    again = parsed(message)
    assert "Bcc" not in again
    assert "=?utf-8?b?DQpCY2M6IHZpY3RpbUBldmlsLmV4YW1wbGU=?=" in again.get_content()


def test_automatic_mail_is_never_answered(env) -> None:
    with pytest.raises(ValueError, match="never answered"):
        render_reply(facts(verdict=Verdict.IGNORED), env)


def test_times_are_shown_in_the_configured_zone() -> None:
    moment = datetime(2026, 4, 10, 15, 5, tzinfo=timezone.utc)
    assert local_time_text(moment, "Asia/Tokyo") == "2026年4月11日(土) 0時05分"
    assert local_time_text(moment, "UTC") == "2026年4月10日(金) 15時05分"
    with pytest.raises(ValueError):
        local_time_text(datetime(2026, 4, 10, 15, 5), "Asia/Tokyo")


def test_admins_edit_the_templates_of_their_deployment(tmp_path: Path) -> None:
    for name in ("reply_subject.txt.j2", "reply_body.txt.j2"):
        (tmp_path / name).write_text((TEMPLATES / name).read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "reply_subject.txt.j2").write_text("【{{ desk_name }}】{{ receipt_no }} 受付のお知らせ\n", encoding="utf-8")
    subject, _ = render_reply(facts(), template_environment(tmp_path))
    assert subject == "【美郷町 契約窓口】K-2026-000123 受付のお知らせ"


def test_a_broken_or_missing_template_is_named(tmp_path: Path) -> None:
    env = template_environment(tmp_path)
    with pytest.raises(TemplateProblem, match="templates/reply_subject.txt.j2: the template is missing"):
        render_reply(facts(), env)
    (tmp_path / "reply_subject.txt.j2").write_text("{{ no_such_value }}", encoding="utf-8")
    with pytest.raises(TemplateProblem, match="reply_subject.txt.j2: 'no_such_value' is undefined"):
        render_reply(facts(), env)
    (tmp_path / "reply_subject.txt.j2").write_text("{% if %}", encoding="utf-8")
    with pytest.raises(TemplateProblem, match=r"reply_subject.txt.j2:1: "):
        render_reply(facts(), env)


# -- issue 14: one coherent message per verdict --------------------------------------------------

PAPER = [Finding("cert.before_start_date", params={"guarantee_no": "26-000123-4", "contract_date": "令和8年3月31日",
                                                   "start_date": "令和8年4月1日"}, guarantee_no="26-000123-4")]
OTHER_TOWN = [Finding("cert.other_obligee", params={"guarantee_no": "26-000123-4", "obligee": "秋田県美郷町長"},
                      guarantee_no="26-000123-4")]
SHORT = [Finding("amount.contract_guarantee_low", guarantee_no="26-000123-4", params={
    "guarantee_amount": "999,999円", "contract_amount": "10,000,000円", "ratio": "10%", "required": "1,000,000円",
    "basis": ""})]


@pytest.mark.parametrize("findings, subject_end, wanted, unwanted", [
    (PAPER, "書面の保証証書でのご提出をお願いします", ["書面の保証証書を、美郷町 契約窓口へご提出ください", "■お受けできない理由",
                                           "書面の保証証書でのご提出をお願いします"],
     ["このメールに返信する形でお送りください", "再送をお願いする理由", "お知らせの再送"]),
    (OTHER_TOWN, "電子証書の提出先をご確認ください", ["提出先をご確認ください", "「秋田県美郷町長」"],
     ["このメールに返信する形でお送りください", "書面の保証証書", "お知らせの再送"]),
    (SHORT, "保証内容のご確認をお願いします", ["保証会社に保証内容をご相談ください", "1,000,000円", "999,999円"],
     ["書面の保証証書", "再送をお願いする理由"]),
    (PAPER + [Finding("doc.certificate_view", document="閲覧画面.pdf")], "書面の保証証書でのご提出をお願いします",
     ["書面の保証証書を"], ["このメールに返信する形でお送りください"]),
])
def test_a_returned_reply_asks_one_thing_in_subject_and_body(env, findings, subject_end, wanted, unwanted) -> None:
    returned = [GuaranteeLine("26-000123-4", Verdict.RETURNED, "契約保証", "美郷橋補修工事")]
    subject, body = render_reply(facts(verdict=Verdict.RETURNED, findings=findings, guarantees=returned), env)
    assert subject == "【美郷町 契約窓口】受付番号 K-2026-000123 " + subject_end
    for text in wanted:
        assert text in body, text
    for text in unwanted:
        assert text not in body, text


def test_the_greeting_names_the_company_when_the_certificate_does(env) -> None:
    _, body = render_reply(facts(contractor_name="株式会社美郷建設"), env)
    assert body.startswith("株式会社美郷建設\nご担当者様\n")
    _, anonymous = render_reply(facts(), env)
    assert anonymous.startswith("ご担当者様\n")


@pytest.mark.parametrize("code", ["lookup.unavailable", "lookup.manual"])
def test_a_held_look_up_promises_the_result_instead_of_a_call(env, code) -> None:
    """The first reply of a submission whose look-up is still to be done says a second mail follows;
    it does not also say staff may phone, which would leave the contractor unsure what comes next."""
    held = facts(verdict=Verdict.NEEDS_REVIEW, findings=[Finding(code, guarantee_no="26-000123-4")])
    _, body = render_reply(held, env)
    assert "■照会中の事項" in body and "■担当者が確認する事項" not in body
    assert "結果をこのメールアドレスあてにお送りいたします" in body
    assert "必要な場合はこちらからご連絡いたします" not in body
    # Any other needs_review reason keeps the words about staff.
    _, other = render_reply(facts(verdict=Verdict.NEEDS_REVIEW, findings=[Finding("lookup.refused", guarantee_no="26-000123-4")]), env)
    assert "■担当者が確認する事項" in other and "必要な場合はこちらからご連絡いたします" in other
    assert "結果をこのメールアドレスあてにお送りいたします" not in other
