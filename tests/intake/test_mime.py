"""MIME walking: the documents found in real mailers' mails, names made safe, limits kept."""

from __future__ import annotations

import hashlib
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intake.mime import MailLimits, safe_display_name, walk_mail
from intake.settings import Limits
from intake.text_decoding import decode_bytes, decode_header, decode_iso2022jp

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
AUTHSERV = "mx.town.misato.example.jp"
PDF = (FIXTURES / "key_notice.pdf").read_bytes()


def walk(name: str, **kwargs):
    return walk_mail((FIXTURES / name).read_bytes(), authserv_id=AUTHSERV, **kwargs)


def codes(walked) -> list[str]:
    return [problem.code for problem in walked.problems]


# --- Japanese text --------------------------------------------------------------------------


def test_outlook_iso2022jp_with_cp932_characters_decodes_without_replacement_characters():
    walked = walk("outlook2010_iso2022jp.eml")
    assert walked.subject == "【電子保証】①町道舗装補修工事 ㈱髙橋建設"
    assert walked.sender.from_[0].display_name == "㈱髙橋建設 田中太郎"
    assert "町道①号線舗装補修工事(工期：令和8年4月10日～令和8年9月30日)" in walked.body_text
    assert "\ufffd" not in walked.body_text + walked.subject
    [document] = walked.documents
    assert document.display_name == "認証キー等のお知らせ①.pdf"  # RFC 2047 inside quotes
    assert document.is_pdf and document.declared_type == "application/pdf"
    assert document.content == PDF
    assert document.sha256 == hashlib.sha256(PDF).hexdigest()
    assert document.path == ("認証キー等のお知らせ①.pdf",)
    assert walked.problems == ()


def test_iphone_raw_cp932_headers_and_filename():
    walked = walk("iphone_cp932_8bit.eml")
    assert walked.subject == "【電子保証】認証キー送付（ソフト表示工業）"
    # ソ and 表 end in byte 0x5C (a backslash) in CP932: the quoted name must survive it.
    assert walked.sender.from_[0].display_name == "株式会社ソフト表示工業 佐藤"
    assert walked.sender.from_[0].valid
    assert [d.display_name for d in walked.documents] == ["お知らせ表.pdf"]
    assert "保証契約番号：26-000123-5" in walked.body_text


def test_rfc2231_continued_filename_split_inside_a_character():
    walked = walk("thunderbird_rfc2231.eml")
    [document] = walked.documents
    assert document.display_name == "電子証書閲覧用「認証キー」等のお知らせ（前払金保証）.pdf"
    assert document.is_pdf
    # text/plain preferred over the HTML alternative
    assert walked.body_text == "契約係 御中\n\n加藤建設の加藤です。認証キー等のお知らせを添付します。"


def test_raw_jis_in_a_quoted_filename_whose_bytes_contain_a_quote():
    # あ is 0x24 0x22 in JIS: a '"' byte inside the quoted value, as old mailers sent it unencoded.
    name = b"\x1b$B$\"$$\x1b(B.pdf"
    raw = (b"From: a@example.jp\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
           b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"" + name + b"\"\r\n\r\n"
           b"%PDF-1.4\r\n--x--\r\n")
    assert [d.display_name for d in walk_mail(raw).documents] == ["あい.pdf"]


def test_rfc2231_in_iso2022jp_and_quoted_extended_value():
    raw = (b"From: a@example.jp\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
           b"Content-Type: application/pdf; name*=\"iso-2022-jp'ja'%1B%24B-%21%1B%28B.pdf\"\r\n\r\n"
           b"%PDF-1.4\r\n--x--\r\n")
    assert [d.display_name for d in walk_mail(raw).documents] == ["①.pdf"]


_PARAM_BYTES = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=300, deadline=None)
@given(_PARAM_BYTES, _PARAM_BYTES)
def test_hostile_parameters_never_lose_the_attachment(type_params, disposition_params):
    raw = (b"From: a@example.jp\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
           b"Content-Type: application/pdf; " + type_params + b"\r\n"
           b"Content-Disposition: attachment; " + disposition_params + b"\r\n\r\n"
           b"%PDF-1.4\r\n--x--\r\n")
    walked = walk_mail(raw)
    assert walked.problems == ()
    [document] = walked.documents
    assert document.is_pdf
    assert "/" not in document.display_name and "\\" not in document.display_name


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_decode_header_never_raises(data):
    assert isinstance(decode_header(b"=?iso-2022-jp?B?" + data + b"?= " + data), str)


def test_iso2022jp_decoder_reads_cp50220_rows_and_katakana_escape():
    # ① (NEC row 13), 髙 (NEC-selected IBM extension), ～ (cp932 reading of 0x2141), ｶﾅ (ESC ( I)
    data = b"\x1b$B-!|b!A\x1b(I6E\x1b(Babc"
    assert decode_iso2022jp(data) == "①髙～ｶﾅabc"
    assert decode_bytes(data, "ISO-2022-JP") == "①髙～ｶﾅabc"


def test_mislabelled_charsets_fall_back_to_what_the_bytes_are():
    assert decode_bytes("認証キー".encode("cp932"), "iso-2022-jp") == "認証キー"
    assert decode_bytes("認証キー".encode("cp932"), "utf-8") == "認証キー"
    assert decode_bytes("認証キー①".encode("utf-8"), None) == "認証キー①"
    assert decode_bytes(b"abc", "x-unknown-charset") == "abc"
    assert decode_bytes(b"abc", "base64") == "abc"  # a non-text codec is not a charset


def test_encoded_words_split_inside_a_utf8_character_are_joined():
    encoded = "認証".encode("utf-8")
    import base64

    first = base64.b64encode(encoded[:4]).decode()
    second = base64.b64encode(encoded[4:]).decode()
    assert decode_header(f"=?UTF-8?B?{first}?=\r\n =?UTF-8?B?{second}?= キー") == "認証 キー"
    assert decode_header("=?utf-8?q?=E8=AA=8D=E8=A8=BC_OK?=") == "認証 OK"
    assert decode_header("=?bogus?X?abc?= plain") == "=?bogus?X?abc?= plain"


# --- forwarded mail, TNEF, archives ----------------------------------------------------------


def test_nested_forwarded_mails_yield_the_pdf_with_its_path():
    walked = walk("thunderbird_forward_nested.eml")
    [document] = walked.documents
    assert document.display_name == "お知らせ.pdf"
    assert document.path == ("Fwd 認証キー等のお知らせ.eml", "forwarded mail", "お知らせ.pdf")
    assert document.content == PDF
    # the body is the outer mail's, not the forwarded ones'
    assert walked.body_text == "契約係 御中\n\n転送にて失礼いたします。"


def test_winmail_dat_yields_the_pdf_under_its_unicode_long_name():
    walked = walk("outlook_winmail_dat.eml")
    [document] = walked.documents
    assert document.display_name == "認証キー等のお知らせ.pdf"
    assert document.path == ("winmail.dat", "認証キー等のお知らせ.pdf")
    assert document.content == PDF and document.is_pdf


def test_encrypted_zip_is_reported_as_ppap_and_not_opened():
    walked = walk("ppap_encrypted_zip.eml")
    assert walked.documents == ()
    [problem] = walked.problems
    assert problem.code == "doc.encrypted_archive"
    assert problem.document == "認証キー.zip"
    assert "パスワード付きのZIP" in problem.message


def test_windows_zip_with_cp932_names():
    walked = walk("windows_zip_cp932.eml")
    names = [(d.display_name, d.path, d.raw_name) for d in walked.documents]
    assert names == [
        ("お知らせ①.pdf", ("お知らせ.zip", "お知らせ①.pdf"), "認証キー等のお知らせ/お知らせ①.pdf"),
        ("メモ.txt", ("お知らせ.zip", "メモ.txt"), "認証キー等のお知らせ/メモ.txt"),
    ]
    assert walked.documents[0].content == PDF and walked.documents[0].is_pdf
    assert not walked.documents[1].is_pdf


def test_zip_bomb_is_stopped_while_reading_and_nothing_of_it_is_kept():
    started = time.monotonic()
    walked = walk("zip_bomb.eml")
    assert time.monotonic() - started < 10
    assert walked.documents == ()
    assert codes(walked) == ["doc.archive_too_large"]
    assert walked.problems[0].document == "oshirase.zip"


def test_zip_bomb_under_a_smaller_budget_stops_earlier():
    walked = walk("zip_bomb.eml", limits=MailLimits(archive_unpacked_max_bytes=1024 * 1024))
    assert walked.documents == () and codes(walked) == ["doc.archive_too_large"]


def test_nested_zip_beyond_the_depth_limit():
    walked = walk("nested_zip_too_deep.eml")
    assert walked.documents == ()
    [problem] = walked.problems
    assert problem.code == "doc.archive_too_large" and problem.document == "level4.zip"
    # one level more allowed: the PDF is found four archives down
    deeper = walk("nested_zip_too_deep.eml", limits=MailLimits(archive_depth_max=4))
    [document] = deeper.documents
    assert document.path == ("level1.zip", "level2.zip", "level3.zip", "level4.zip", "oshirase.pdf")
    assert deeper.problems == ()


# --- names ----------------------------------------------------------------------------------


def test_sender_given_names_are_never_paths():
    walked = walk("path_traversal_names.eml")
    first, second = walked.documents
    assert first.display_name == "passwd.pdf" and first.raw_name == "../../etc/passwd.pdf"
    assert first.is_pdf
    assert second.display_name == "請求書fdp.exe"  # the right-to-left override and BEL are gone
    assert second.raw_name == "請求書\u202efdp.exe\x07"
    assert not second.is_pdf


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("C:\\Users\\tanaka\\Desktop\\お知らせ.pdf", "お知らせ.pdf"),
        ("..", "fallback"),
        ("/", "fallback"),
        ("\u202e\u200b", "fallback"),
        ("a\r\nb.pdf", "ab.pdf"),
        ("x" * 300 + ".pdf", "x" * 196 + ".pdf"),
    ],
)
def test_safe_display_name(raw, expected):
    assert safe_display_name(raw, "fallback") == expected


def test_unnamed_attachment_gets_a_generated_name():
    message = _base_message()
    message.add_attachment(PDF, maintype="application", subtype="pdf")
    walked = walk_mail(message.as_bytes())
    assert [d.display_name for d in walked.documents] == ["attachment-1.pdf"]


# --- limits and hostile structure ------------------------------------------------------------


def _base_message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "tanaka@kensetsu-sato.example.jp"
    message["To"] = "keiyaku@town.misato.example.jp"
    message["Subject"] = "test"
    message.set_content("本文です。")
    return message


def test_too_many_attachments_keeps_the_first_ones_and_says_so():
    message = _base_message()
    for number in range(22):
        message.add_attachment(PDF, maintype="application", subtype="pdf", filename=f"{number:02d}.pdf")
    walked = walk_mail(message.as_bytes())
    assert len(walked.documents) == 20
    assert walked.documents[-1].display_name == "19.pdf"
    assert codes(walked) == ["mail.too_many_attachments"]
    assert "20件" in walked.problems[0].message


def test_pdf_over_the_size_limit_is_reported_not_kept():
    message = _base_message()
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename="big.pdf")
    walked = walk_mail(message.as_bytes(), limits=MailLimits(pdf_max_bytes=1024))
    assert walked.documents == ()
    assert codes(walked) == ["doc.too_large"] and walked.problems[0].document == "big.pdf"


def test_limits_from_settings():
    limits = MailLimits.from_settings(Limits(attachments_max=3, archive_depth_max=1))
    assert limits.attachments_max == 3 and limits.archive_depth_max == 1
    assert limits.pdf_max_bytes == 20 * 1024 * 1024


def test_is_pdf_by_magic_not_declared_type():
    message = _base_message()
    message.add_attachment(b"\r\n\r\n%PDF-1.7 junk", maintype="application", subtype="octet-stream", filename="a.bin")
    message.add_attachment(b"not a pdf at all", maintype="application", subtype="pdf", filename="b.pdf")
    walked = walk_mail(message.as_bytes())
    assert [(d.display_name, d.is_pdf, d.declared_type) for d in walked.documents] == [
        ("a.bin", True, "application/octet-stream"), ("b.pdf", False, "application/pdf")]


def test_html_only_mail_gives_text_and_inline_logo_is_not_a_document():
    message = EmailMessage()
    message["From"] = "a@example.jp"
    message.set_content("<html><head><style>p{}</style></head><body><p>認証キー&amp;番号</p>"
                        "<div>26-000123-5</div><script>x()</script></body></html>", subtype="html")
    message.add_related(b"\x89PNG\r\n\x1a\nlogo", maintype="image", subtype="png", cid="<logo@x>")
    walked = walk_mail(message.as_bytes())
    assert walked.body_text == "認証キー&番号\n\n26-000123-5"
    assert walked.documents == ()


def test_deeply_nested_multiparts_do_not_crash_and_keep_the_headers():
    raw = b"From: a@example.jp\r\nSubject: deep\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n"
    for level in range(1500):
        raw += b"--b%d\r\nContent-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n" % (level, level + 1)
    walked = walk_mail(raw, limits=MailLimits(mime_parts_max=2000))  # the nesting limit, not the part count
    assert walked.subject == "deep" and walked.sender.valid
    assert codes(walked) == ["mail.malformed"]
    # With the default part limit the mail is refused before parsing: kept, answered "please resend".
    walked = walk_mail(raw)
    assert walked.subject == "deep" and walked.sender.valid
    assert codes(walked) == ["mail.unreadable"]


def test_moderately_nested_multiparts_stop_at_the_mime_depth_limit():
    raw = b"From: a@example.jp\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n"
    for level in range(60):
        raw += b"--b%d\r\nContent-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n" % (level, level + 1)
    raw += b"--b60\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4\r\n"
    walked = walk_mail(raw)
    assert codes(walked) == ["mail.malformed"] and walked.documents == ()


def test_malformed_headers_do_not_raise():
    raw = (
        b"From: \"unterminated <@@@>\r\n"
        b"Reply-To: ,,,<>\r\n"
        b"Date: 99 Foo 20260 25:61:61 +9999\r\n"
        b"Message-ID: \r\n"
        b"Subject: =?iso-2022-jp?B?!!!?= \xff\xfe\r\n"
        b"Content-Type: multipart/mixed; boundary=\r\n"
        b"Content-Disposition: attachment; filename*0*=x'y'%ZZ; filename*999999=a\r\n"
        b"Authentication-Results: ;;;\r\n"
        b"Auto-Submitted: (comment\r\n"
        b"\r\n--\r\n"
    )
    walked = walk_mail(raw, authserv_id=AUTHSERV)
    assert walked.date is None and walked.message_id is None
    assert not walked.sender.valid


def test_base64_with_garbage_and_unknown_transfer_encoding():
    raw = (
        b"From: a@example.jp\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
        b"--x\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"JVBERi0xLjQK!!!*** garbage\r\n"
        b"--x\r\nContent-Type: application/pdf; name=b.pdf\r\nContent-Transfer-Encoding: x-uuencode-ish\r\n\r\n"
        b"%PDF-1.4 raw\r\n--x--\r\n"
    )
    walked = walk_mail(raw)
    assert [(d.display_name, d.is_pdf) for d in walked.documents] == [("a.pdf", True), ("b.pdf", True)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000), st.integers(min_value=0, max_value=5000))
def test_walk_never_raises_on_mutated_real_mail(noise, position):
    base = (FIXTURES / "outlook_winmail_dat.eml").read_bytes()
    position = min(position, len(base))
    mutated = base[:position] + noise + base[position + len(noise) // 2 :]
    walked = walk_mail(mutated, authserv_id=AUTHSERV)
    assert isinstance(walked.subject, str)
    for document in walked.documents:
        assert "/" not in document.display_name and "\\" not in document.display_name
