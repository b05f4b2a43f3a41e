"""Building messages: no header injection, RFC 2047 encoding, ISO-2022-JP with fallback, threading."""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from email.header import decode_header, make_header
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.message import (
    Mailbox,
    MessageError,
    build_message,
    check_address,
    clean_header_text,
    thread_headers,
)

NOW = datetime(2026, 4, 6, 9, 30, tzinfo=timezone(timedelta(hours=9)))
DESK = Mailbox("keiyaku@town.misato.example", "美郷町 契約窓口")
EXPECTED_HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "X-Auto-Response-Suppress"]
ALLOWED_HEADERS = {
    *EXPECTED_HEADERS,
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
}


def build(subject="件名", to_name="", text="本文です。", **kwargs):
    return build_message(
        sender=DESK, to=[Mailbox("contractor@builder.example", to_name)], subject=subject, text=text, now=NOW, **kwargs
    )


def parse(message):
    raw = message.as_bytes()
    return raw, email.message_from_bytes(raw, policy=email.policy.default)


def header_names(raw: bytes) -> list[str]:
    head = raw.split(b"\n\n", 1)[0].decode("ascii")
    return [line.split(":", 1)[0] for line in head.split("\n") if line and not line[0].isspace()]


def assert_no_injection(raw: bytes) -> None:
    names = header_names(raw)
    assert set(names) <= ALLOWED_HEADERS and set(EXPECTED_HEADERS) <= set(names)
    assert len(names) == len(set(names))
    assert raw.isascii()


def display_name(raw: bytes) -> str:
    """The To display name as an RFC 2047 reader shows it.

    Python's modern address parser puts a space between adjacent encoded-words in a display
    name (RFC 2047 §6.2 says to drop it, as mail clients do), so long names are read with the
    legacy decoder, which follows the RFC.
    """
    folded = email.message_from_bytes(raw, policy=email.policy.compat32)["To"]
    unfolded = re.sub(r"\r?\n[ \t]", " ", folded)
    phrase = unfolded.rsplit("<", 1)[0].strip()
    if phrase.startswith("=?"):
        return str(make_header(decode_header(phrase)))
    return email.utils.parseaddr(unfolded)[0]


@pytest.mark.parametrize(
    "subject",
    [
        "受付\r\nBcc: victim@evil.example",
        "受付\nBcc: victim@evil.example",
        "Accepted\rX-Evil: 1",
        "Accepted\u2028X-Evil: 1\u2029",
        "=?utf-8?b?DQpCY2M6IHZpY3RpbUBldmlsLmV4YW1wbGU=?=",  # an encoded-word hiding "\r\nBcc: …"
        "=?utf-8?q?=0D=0ABcc=3A_victim=40evil.example?= tail",
        "Accepted\x00\x1b$B\x7f\x85X-Evil: 1",
    ],
)
def test_subjects_cannot_add_headers(subject):
    raw, parsed = parse(build(subject=subject))
    assert_no_injection(raw)
    assert parsed["Subject"] == clean_header_text(subject)
    assert "\r" not in parsed["Subject"] and "\n" not in parsed["Subject"]


def test_a_senders_encoded_word_reaches_the_reader_literally():
    trick = "=?utf-8?b?DQpCY2M6IHZpY3RpbUBldmlsLmV4YW1wbGU=?="
    raw, parsed = parse(build(subject=f"Re: {trick}"))
    assert parsed["Subject"] == f"Re: {trick}"
    assert b"DQpCY2M6" not in raw  # not passed through as an encoded-word of its own


@pytest.mark.parametrize(
    "name",
    [
        "山田建設\r\nBcc: victim@evil.example",
        '"Evil" <boss@evil.example>, other@evil.example',
        "=?utf-8?b?IjxhdHRhY2tlckBldmlsLmV4YW1wbGU+Ig==?=",
        'a\\"b\r\n\tX-Evil: 1',
        "\u202egnp.exe\u202c 山田",
    ],
)
def test_display_names_cannot_add_headers_or_addresses(name):
    raw, parsed = parse(build(to_name=name))
    assert_no_injection(raw)
    to = parsed["To"]
    assert [a.addr_spec for a in to.addresses] == ["contractor@builder.example"]
    assert display_name(raw) == clean_header_text(name, 120)


@pytest.mark.parametrize(
    "address",
    [
        "a@b.example\r\nBcc: c@d.example",
        "<a@b.example>",
        "a b@c.example",
        "a@b",
        "a@@b.example",
        "山田@b.example",
        "",
    ],
)
def test_addresses_that_are_not_addresses_are_refused(address):
    with pytest.raises(MessageError):
        build_message(sender=DESK, to=[Mailbox(address)], subject="x", text="y", now=NOW)
    with pytest.raises(MessageError):
        check_address(address)


def test_invisible_and_bidi_characters_are_removed():
    assert clean_header_text("受付\u200b番号\u202e  K-1\ufeff\t2 ") == "受付 番号 K-1 2"


def test_the_standard_headers_are_set():
    _raw, parsed = parse(build(auto_submitted="auto-replied"))
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["X-Auto-Response-Suppress"] == "All"
    assert parsed["Date"].datetime == NOW
    assert parsed["Message-ID"].endswith("@town.misato.example>")
    assert parsed["From"].addresses[0].display_name == "美郷町 契約窓口"
    assert parsed.get_content_charset() == "utf-8" and parsed["Content-Transfer-Encoding"] == "base64"
    assert parsed.get_content() == "本文です。\n"


def test_a_long_japanese_subject_is_folded_and_reads_back_whole():
    subject = "【美郷町 契約窓口】受付番号 K-2026-000123 認証キー等のお知らせを受け付けました" * 3
    raw, parsed = parse(build(subject=subject))
    head = raw.split(b"\n\n", 1)[0]
    assert max(len(line) for line in head.split(b"\n")) <= 76
    assert parsed["Subject"] == subject


def test_iso_2022_jp_on_request():
    subject = "【美郷町 契約窓口】受付番号 K-2026-000123 再送をお願いします"
    text = "受付時間 8:30～17:15\n担当:契約係\n"  # FULLWIDTH TILDE, as Windows writes 〜
    raw, parsed = parse(build(subject=subject, text=text, to_name="山田建設株式会社", charset="iso-2022-jp"))
    assert b"=?ISO-2022-JP?B?" in raw and b'charset="iso-2022-jp"' in raw
    assert parsed["Content-Transfer-Encoding"] == "7bit" and raw.isascii()
    body = parsed.get_payload(decode=True)
    assert b"\x1b$B" in body and body.decode("iso2022_jp") == text.replace("～", "〜")
    assert parsed["Subject"] == subject
    assert parsed["To"].addresses[0].display_name == "山田建設株式会社"


@pytest.mark.parametrize("unmappable", ["①", "髙橋", "ｶﾞｲﾄﾞ", "😀"])
def test_iso_2022_jp_falls_back_to_utf_8_when_a_character_does_not_fit(unmappable):
    raw, parsed = parse(build(subject=f"件名 {unmappable}", text=f"本文 {unmappable}", charset="iso-2022-jp"))
    assert parsed.get_content_charset() == "utf-8" and b"ISO-2022-JP" not in raw
    assert parsed["Subject"] == f"件名 {unmappable}" and parsed.get_content() == f"本文 {unmappable}\n"


def test_html_alternative_and_attachments_keep_the_prepared_headers():
    message = build(subject="受付\r\nBcc: x@evil.example", html="<p>本文</p>", charset="iso-2022-jp")
    message.add_attachment(b"%PDF-1.7", maintype="application", subtype="pdf", filename="notice.pdf")
    raw, parsed = parse(message)
    assert_no_injection(raw)
    assert parsed.get_content_type() == "multipart/mixed"
    html = parsed.get_body(("html",))
    assert html.get_content_charset() == "iso-2022-jp" and html.get_content() == "<p>本文</p>\n"


def test_thread_headers_keep_only_well_formed_ids():
    thread = thread_headers("<orig@mail.builder.example>\r\nBcc: x@evil.example", "<a@x> junk <b@y>\r\n <a@x> <no-at>")
    assert thread.in_reply_to == "<orig@mail.builder.example>"
    assert thread.references == ("<a@x>", "<b@y>", "<orig@mail.builder.example>")
    raw, parsed = parse(build(thread=thread))
    assert_no_injection(raw)
    assert parsed["In-Reply-To"] == "<orig@mail.builder.example>"
    assert parsed["References"] == "<a@x> <b@y> <orig@mail.builder.example>"


def test_a_long_reference_chain_is_trimmed():
    chain = " ".join(f"<m{i}@x.example>" for i in range(500))
    thread = thread_headers("<last@x.example>", chain)
    assert len(thread.references) == 10
    assert thread.references[0] == "<m0@x.example>" and thread.references[-2:] == (
        "<m499@x.example>",
        "<last@x.example>",
    )


def test_no_parent_means_no_threading():
    thread = thread_headers(None, None)
    assert (thread.in_reply_to, thread.references) == (None, ())
    raw, _ = parse(build(thread=thread))
    assert b"In-Reply-To" not in raw and b"References" not in raw


def as_jis(text: str, iso: bool) -> str:
    """What ISO-2022-JP carries for Windows code points (the mapping CP50220 also makes)."""
    return text.translate(str.maketrans("～∥－￠￡￢", "〜‖−¢£¬")) if iso else text


@settings(max_examples=300, deadline=None)
@given(subject=st.text(max_size=300), name=st.text(max_size=80), charset=st.sampled_from(["utf-8", "iso-2022-jp"]))
def test_any_subject_and_name_read_back_cleaned_and_add_nothing(subject, name, charset):
    raw, parsed = parse(build(subject=subject, to_name=name, charset=charset))
    assert_no_injection(raw)
    iso = parsed.get_content_charset() == "iso-2022-jp"
    assert parsed["Subject"] == as_jis(clean_header_text(subject), iso)
    assert display_name(raw) == as_jis(clean_header_text(name, 120), iso)
    assert [a.addr_spec for a in parsed["To"].addresses] == ["contractor@builder.example"]
    assert max(len(line) for line in raw.split(b"\n\n", 1)[0].split(b"\n")) <= 76
