"""Mail context: sender, authentication results, automatic mail, body text, keys typed in the body."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import pytest

from intake.authentication_results import authentication, parse_authentication_results
from intake.mail_context import (
    TYPED_KEYS_MAX,
    automatic,
    choose_body,
    html_to_text,
    message_id,
    sender,
    sent_date,
    typed_keys,
)
from intake.mime import walk_mail
from formats import access_key, guarantee_no

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
AUTHSERV = "mx.town.misato.example.jp"
KEYS = dict(line.split("=", 1) for line in (FIXTURES / "keys.txt").read_text(encoding="utf-8").split())


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=policy.default)


def walk(name: str):
    return walk_mail((FIXTURES / name).read_bytes(), authserv_id=AUTHSERV)


# --- Authentication-Results -----------------------------------------------------------------


def test_only_our_authserv_id_is_trusted_and_the_forged_pass_is_ignored():
    walked = walk("authentication_results.eml")
    auth = walked.authentication
    assert (auth.spf, auth.dkim, auth.dmarc) == ("softfail", "none", "fail")
    assert auth.trusted_headers == 1 and auth.ignored_headers == 1
    assert auth.first("spf").get("smtp.mailfrom") == "suzuki@suzuki-koumu.example.jp"
    assert auth.first("dmarc").get("header.from") == "suzuki-koumu.example.jp"
    assert auth.dkim_pass_domains == ()


def test_without_a_configured_authserv_id_nothing_is_trusted():
    message = parse((FIXTURES / "authentication_results.eml").read_bytes())
    auth = authentication(message, None)
    assert auth.results == () and auth.trusted_headers == 0 and auth.ignored_headers == 2
    assert auth.spf is None and auth.dmarc is None


def test_topmost_header_of_our_server_wins_over_a_forged_one_with_our_id_below():
    raw = (
        b"Authentication-Results: MX.Town.Misato.Example.JP 1; dmarc=fail header.from=a.example.jp\r\n"
        b"Received: from somewhere\r\n"
        b"Authentication-Results: mx.town.misato.example.jp; dmarc=pass header.from=a.example.jp\r\n"
        b"From: x@a.example.jp\r\n\r\nbody\r\n"
    )
    auth = authentication(parse(raw), AUTHSERV)
    assert auth.dmarc == "fail"
    # Only the topmost header with our id counts: a lower one may have come with the mail.
    assert auth.trusted_headers == 1 and auth.ignored_headers == 1
    assert [r.result for r in auth.results if r.method == "dmarc"] == ["fail"]


def test_rfc8601_syntax_comments_quotes_versions_and_multiple_dkim():
    authserv, results = parse_authentication_results(
        'mx.example.jp (our "server"); spf = pass (sender IP is 192.0.2.1) smtp.mailfrom="a@b.example.jp";'
        ' dkim/1=fail reason="bad sig" header.d=other.example; dkim=pass header.d=b.example.jp header.i=@b.example.jp;'
        " dmarc=pass (p=reject) header.from=b.example.jp; iprev=pass policy.iprev=192.0.2.1"
    )
    assert authserv == "mx.example.jp"
    assert [(r.method, r.result) for r in results] == [
        ("spf", "pass"),
        ("dkim", "fail"),
        ("dkim", "pass"),
        ("dmarc", "pass"),
        ("iprev", "pass"),
    ]
    assert results[0].get("smtp.mailfrom") == "a@b.example.jp"
    assert results[1].reason == "bad sig"
    auth_none = parse_authentication_results("mx.example.jp; none")
    assert auth_none == ("mx.example.jp", [])
    with pytest.raises(ValueError):
        parse_authentication_results("  ")


def test_any_passing_dkim_signature_counts():
    raw = (
        b"Authentication-Results: mx.town.misato.example.jp; dkim=fail header.d=x.example;"
        b" dkim=pass header.d=B.example.jp\r\nFrom: a@b.example.jp\r\n\r\n"
    )
    auth = authentication(parse(raw), AUTHSERV)
    assert auth.dkim == "pass" and auth.dkim_pass_domains == ("b.example.jp",)


# --- automatic mail -------------------------------------------------------------------------


def test_bounce_is_automatic_for_every_reason_it_carries():
    walked = walk("bounce_mailer_daemon.eml")
    assert walked.automatic
    assert set(walked.automatic_reasons) == {
        "Auto-Submitted: auto-replied",
        "null Return-Path",
        "multipart/report (delivery or read report)",
        "sent by MAILER-DAEMON",
    }
    assert "could not" in walked.body_text  # the notification text, not the delivery-status part
    assert walked.documents == ()


def test_exchange_out_of_office_is_automatic():
    walked = walk("out_of_office_exchange.eml")
    assert walked.automatic
    assert walked.automatic_reasons == ("Auto-Submitted: auto-replied", "X-Auto-Response-Suppress")
    assert walked.subject == "自動応答: 【美郷町】受付のお知らせ"


def test_subject_only_auto_reply_counts_only_as_a_reply_without_documents():
    walked = walk("auto_reply_subject_only.eml")
    assert walked.automatic and walked.automatic_reasons == ("auto-reply subject on a reply without documents",)
    message = parse((FIXTURES / "auto_reply_subject_only.eml").read_bytes())
    assert not automatic(message, "text/plain", walked.subject, has_documents=True).automatic
    not_a_reply = parse(b"From: a@b.example.jp\r\nSubject: Out of Office\r\n\r\nx")
    assert not automatic(not_a_reply, "text/plain", "Out of Office", has_documents=False).automatic


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"Auto-Submitted: no", False),
        (b"Auto-Submitted: auto-generated (by a robot)", True),
        (b"Auto-Submitted: (comment) auto-notified", True),
        (b"Precedence: bulk", True),
        (b"Precedence: JUNK", True),
        (b"Precedence: list", True),
        (b"Precedence: List", True),
        (b"Precedence: first-class", False),
        (b"List-Id: <news.example.jp>", True),
        (b"List-Unsubscribe: <mailto:u@example.jp>", True),
        (b"Return-Path: <>", True),
        (b"Return-Path: < >", True),
        (b"Return-Path: <a@b.example.jp>", False),
        (b"X-Auto-Response-Suppress: OOF", True),
        (b"X-Autoreply: yes", True),
        (b"From: postmaster@b.example.jp", True),
        (b"X-Mailer: Outlook", False),
    ],
)
def test_automatic_headers(header, expected):
    raw = header + b"\r\nFrom: tanaka@kensetsu-sato.example.jp\r\nSubject: hi\r\n\r\nbody\r\n"
    assert automatic(parse(raw), "text/plain", "hi", has_documents=False).automatic is expected


@pytest.mark.parametrize(
    ("header", "top_type", "reason"),
    [
        (b"Precedence: auto_reply", "text/plain", "Precedence: auto_reply"),
        (b"Precedence: auto-reply", "text/plain", "Precedence: auto-reply"),
        (b"X-Precedence: bulk", "text/plain", "X-Precedence: bulk"),
        (b"Return-Path:", "text/plain", "null Return-Path"),
        (b"List-Id: <news.example.jp>", "text/plain", "mailing-list header list-id"),
        (b"X-Mailer: x", "message/delivery-status", "message/delivery-status (a report)"),
        (b"X-Mailer: x", "message/feedback-report", "message/feedback-report (a report)"),
        (b"X-Mailer: x", "message/disposition-notification", "message/disposition-notification (a report)"),
        (b"Sender: MAILER-DAEMON@mx.example.jp", "text/plain", "sent by MAILER-DAEMON"),
        (b"X-Failed-Recipients: a@b.example.jp", "text/plain", "x-failed-recipients"),
    ],
)
def test_each_automatic_reason_is_named(header, top_type, reason):
    """The reason is what staff read in the digest: each rule names itself, and only itself."""
    raw = header + b"\r\nFrom: tanaka@kensetsu-sato.example.jp\r\nSubject: hi\r\n\r\nbody\r\n"
    verdict = automatic(parse(raw), top_type, "hi", has_documents=False)
    assert verdict.automatic and verdict.reasons == (reason,)


def test_an_auto_reply_subject_on_a_mail_with_references_only_is_automatic():
    raw = b"From: a@b.example.jp\r\nSubject: Out of Office\r\nReferences: <r1@town.example.jp>\r\n\r\nx"
    verdict = automatic(parse(raw), "text/plain", "Out of Office", has_documents=False)
    assert verdict.automatic and verdict.reasons == ("auto-reply subject on a reply without documents",)


def test_contractor_mail_is_not_automatic():
    assert not walk("outlook2010_iso2022jp.eml").automatic
    assert not walk("thunderbird_forward_nested.eml").automatic


def test_a_card_number_or_a_word_before_the_key_does_not_hide_it():
    """Card numbers and 16-letter words are skipped one by one: the key typed after them is still read."""
    key = KEYS["access_key"]
    text = f"カード 1234-5678-9012-3456 ABCDEFGHJKMNPQRS 9999 8888 7777 6666\n番号 26-000123-5 認証キー {key}"
    [found] = typed_keys(text)
    assert (found.guarantee_no, found.guarantee_no_valid, found.access_key_valid) == ("26-000123-5", True, True)
    assert found.access_key == access_key.parse(key)


# --- sender ---------------------------------------------------------------------------------


def test_sender_from_and_reply_to_checked_and_invalid_ones_kept_flagged():
    raw = (
        b"From: =?UTF-8?B?5Yqg6Jek?= <Kato@Example.JP>\r\n"
        b'Reply-To: broken@@example.jp, good@example.jp, "x" <no-domain>\r\n\r\n'
    )
    found = sender(parse(raw))
    assert found.valid and found.address.display_name == "加藤"
    assert found.address.normalized == "Kato@example.jp"
    reply = [(a.address, a.valid) for a in found.reply_to]
    assert ("good@example.jp", True) in reply
    assert all(not valid for address, valid in reply if address != "good@example.jp")
    assert all(a.error for a in found.reply_to if not a.valid)


def test_an_invalid_address_keeps_where_it_came_from_and_why_it_is_refused():
    """Staff see the refused address as the sender wrote it: header, display name, address, reason."""
    raw = b'From: a@example.jp\r\nReply-To: "x" <no-domain>\r\n\r\n'
    [refused] = sender(parse(raw)).reply_to
    assert (refused.header, refused.display_name, refused.address) == ("Reply-To", "x", "no-domain")
    assert (refused.valid, refused.normalized) == (False, None)
    assert "@-sign" in refused.error  # email_validator's reason, not a placeholder
    [good] = sender(parse(raw)).from_
    assert (good.header, good.valid, good.normalized) == ("From", True, "a@example.jp")


def test_two_from_addresses_or_none_is_not_a_valid_sender():
    assert not sender(parse(b"From: a@example.jp, b@example.jp\r\n\r\n")).valid
    assert sender(parse(b"From: a@example.jp, b@example.jp\r\n\r\n")).address is None
    assert not sender(parse(b"Subject: x\r\n\r\n")).valid


def test_message_id_and_date():
    message = parse(b"Message-ID:  <abc@example.jp> (comment)\r\nDate: Tue, 7 Apr 2026 10:15:32 +0900\r\n\r\n")
    assert message_id(message) == "abc@example.jp"
    assert sent_date(message).isoformat() == "2026-04-07T10:15:32+09:00"
    assert sent_date(parse(b"Date: yesterday\r\n\r\n")) is None


# --- body and typed keys --------------------------------------------------------------------


def test_html_to_text():
    html = (
        "<html><head><title>t</title><style>.a{}</style></head><body><table><tr><td>保証契約番号</td>"
        "<td>26-000123-5</td></tr></table><p>a&nbsp;b&lt;c</p><br>end</body></html>"
    )
    assert html_to_text(html) == "保証契約番号 26-000123-5\n\na b<c\n\nend"
    assert html_to_text("<p>unclosed <b>tags") == "unclosed tags"


def test_choose_body_prefers_plain_text():
    assert choose_body(["plain"], ["<p>html</p>"]) == "plain"
    assert choose_body(["  "], ["<p>html</p>"]) == "html"
    assert choose_body([], []) == ""


def test_typed_keys_in_the_iphone_mail_including_a_mistyped_one():
    walked = walk("iphone_cp932_8bit.eml")
    right, wrong = walked.typed_keys
    assert right.guarantee_no == KEYS["guarantee_no"] and right.guarantee_no_valid
    assert right.access_key == access_key.canonical(KEYS["access_key"]) and right.access_key_valid
    assert wrong.guarantee_no == KEYS["second_guarantee_no"]
    assert wrong.access_key == access_key.canonical(KEYS["mistyped_key"]) and not wrong.access_key_valid
    assert KEYS["access_key"] not in repr(walked.typed_keys)  # never in logs
    assert right.access_key_masked == access_key.mask(KEYS["access_key"])


def test_typed_keys_full_width_dashes_and_number_only():
    key = KEYS["access_key"]
    wide = key.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"})
    text = (
        f"保証契約番号　２６ー０００１２３ー５\n認証キー　{wide.replace('-', '－')}\n別件 {guarantee_no.make(2026, 7)}"
    )
    found = typed_keys(text)
    assert [(k.guarantee_no, k.access_key_valid) for k in found] == [
        ("26-000123-5", True),
        (guarantee_no.make(2026, 7), False),
    ]
    assert found[1].access_key is None


def test_typed_keys_ignore_card_numbers_words_and_urls():
    text = (
        "カード 1234-5678-9012-3456 / ABCDEFGHJKMNPQRS / https://example.jp/P2KXFEDMZ56GQX9Nabc\n"
        "番号 26-000123-4"
    )  # wrong Luhn digit
    found = typed_keys(text)
    assert [(k.guarantee_no, k.guarantee_no_valid, k.access_key) for k in found] == [("26-000123-4", False, None)]


# --- edge cases the mutation run showed untested (issue 15) ----------------------------------


def test_message_id_without_brackets_empty_or_with_edge_characters():
    assert message_id(parse(b"Message-ID: abc@example.jp (sent by x)\r\n\r\n")) == "abc@example.jp"
    assert message_id(parse(b"Message-ID: \r\n\r\n")) is None
    # '!' and '~' are the first and last visible ASCII: kept; DEL is a control character: dropped.
    assert message_id(parse(b"Message-ID: <!a~\x7f@x>\r\n\r\n")) == "!a~@x"


def test_a_validator_failure_flags_the_address_instead_of_breaking_the_intake(monkeypatch):
    import intake.mail_context as mail_context

    def broken(*args, **kwargs):
        raise RuntimeError("validator bug")

    monkeypatch.setattr(mail_context, "validate_email", broken)
    found = sender(parse(b"From: =?utf-8?b?5bel5YuZ?= <koumu@example.jp>\r\n\r\n"))
    [address] = found.from_
    assert (address.header, address.display_name, address.address) == ("From", "工務", "koumu@example.jp")
    assert address.valid is False and address.normalized is None and not found.valid
    assert "validator bug" in address.error


def test_auto_submitted_no_with_a_parameter_is_a_person():
    message = parse(b"From: a@example.jp\r\nAuto-Submitted: no; reason=typed\r\n\r\n")
    assert automatic(message, "text/plain", "", True).automatic is False


def test_a_bare_daemon_sender_without_domain_is_automatic():
    message = parse(b"From: MAILER-DAEMON\r\nSubject: x\r\n\r\n")
    assert automatic(message, "text/plain", "x", False).automatic is True


@pytest.mark.parametrize(
    "html, text",
    [
        # Outlook's conditional comments hold markup: none of it is text.
        ("<!--[if mso]><p>old</p><![endif]--><p>a</p>", "a"),
        ("a<!-- <b>x</b> -->b<!-- <i>y</i> -->c", "abc"),
        ("<!----><p>a</p>", "a"),  # an empty comment
        ("a<!-- <b>x</b> -->b<!-- never closed <i>y</i>", "ab"),
        ("a-->b<!--c <i>x</i> -->d", "a-->bd"),  # a stray "-->" before the comment
    ],
)
def test_html_comments_are_dropped_with_the_markup_inside(html, text):
    assert html_to_text(html) == text


@pytest.mark.parametrize(
    "html, text",
    [
        ("ab<br>c", "ab\nc"),  # text before the first tag
        ("<p>a<script/>b</p>", "ab"),  # a self-closed script hides nothing
        ("<style><b>x</b></style>after", "after"),
        ("a<b>b</b>c", "abc"),  # inline tags do not split words
        ("<table><tr><th>a</th><th>b</th></tr></table>", "a b"),
        ("a  \t b<br>  c  ", "a b\nc"),
    ],
)
def test_html_to_text_edge_cases(html, text):
    assert html_to_text(html) == text


def test_choose_body_joins_parts_and_unifies_line_ends():
    assert choose_body(["a", "b"], []) == "a\nb"
    assert choose_body([], ["<p>a</p>", "<p>b</p>"]) == "a\nb"
    assert choose_body(["a\r\nb\rc"], []) == "a\nb\nc"


def test_typed_keys_lowercase_bare_or_letters_only_and_after_a_non_key():
    key = "1QFZ-2E8V-RKDT-WST0"
    canonical = access_key.canonical(key)
    assert [k.access_key for k in typed_keys(f"認証キー {key.lower()}")] == [canonical]
    assert [k.access_key for k in typed_keys(key.replace("-", ""))] == [canonical]
    assert [k.access_key for k in typed_keys("ABCD-EFGH-JKMN-PQRS")] == [access_key.canonical("ABCD-EFGH-JKMN-PQRS")]
    assert [k.access_key for k in typed_keys(f"UUUU-UUUU-UUUU-UUU1 {key}")] == [canonical]


def test_typed_keys_pair_each_key_with_the_nearest_number():
    key = "1QFZ-2E8V-RKDT-WST0"
    alone = typed_keys(key)
    assert [(k.guarantee_no, k.guarantee_no_valid) for k in alone] == [(None, False)]
    a, b, c = guarantee_no.make(2026, 1), guarantee_no.make(2026, 2), guarantee_no.make(2026, 3)
    assert typed_keys(f"{a} {b} {c} {key}")[0].guarantee_no == c  # the last number before it
    after = typed_keys(f"{key} {a} {b}")
    assert after[0].guarantee_no == a  # else the first after it
    assert [k.guarantee_no for k in after[1:]] == [b]


def test_typed_keys_with_the_configured_number_pattern_drop_spaces():
    import re

    pattern = re.compile(r"\d{2}\s?-\s?\d{6}\s?-\s?\d")
    assert [k.guarantee_no for k in typed_keys("番号 26 - 000123 - 5", pattern)] == ["26-000123-5"]


def test_typed_keys_are_capped():
    numbers = " ".join(guarantee_no.make(2026, n) for n in range(1, 61))
    assert len(typed_keys(numbers)) == TYPED_KEYS_MAX == 50
    many_keys = " ".join(access_key.generate() for _ in range(60))
    assert len(typed_keys(many_keys)) == TYPED_KEYS_MAX
