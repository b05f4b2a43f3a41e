"""The demo contractors' mails, byte for byte as their mailers send them.

The ``email`` package would normalise exactly what the demo must show the desk coping with:
ISO-2022-JP carrying CP932-only characters (①, ㈱, 髙) the way Windows writes it, encoded words
in quoted file names, RFC 2231 file names, Outlook's winmail.dat. So each mail is assembled from
header lines and encoded bodies (``keydesk.client_encodings``, which the test fixtures use too);
line ends are CRLF, as on the wire.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from collections.abc import Sequence

from keydesk.client_encodings import (
    b64_lines,
    b_word,
    cp50220,
    crlf,
    jis_words,
    rfc2231_filename,
    tnef_stream,
    utf8_word,
    utf8_words,
)

# ---------------------------------------------------------------------------------------------
# Mails
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MailHead:
    sender_name: str
    sender_address: str
    to_address: str
    subject: str
    date: datetime  # aware
    message_id: str  # with angle brackets
    in_reply_to: str | None = None  # the Message-ID this mail answers


@dataclass(frozen=True)
class Attachment:
    name: str
    content: bytes
    content_type: str = "application/pdf"


def new_message_id(address: str, style: str = "uuid") -> str:
    """A Message-ID in the shape the named mailer uses (``uuid``: Thunderbird, ``outlook``)."""
    domain = address.rpartition("@")[2] or "localhost"
    if style == "outlook":
        return f"<{secrets.token_hex(6)}${secrets.token_hex(4)}${secrets.token_hex(4)}$@{domain}>"
    token = secrets.token_hex(16)
    return f"<{token[:8]}-{token[8:12]}-{token[12:16]}-{token[16:20]}-{token[20:]}@{domain}>"


def _boundary(prefix: str) -> bytes:
    return (prefix + secrets.token_hex(12)).encode("ascii")


def _thread(head: MailHead) -> bytes:
    if not head.in_reply_to:
        return b""
    answered = head.in_reply_to.encode("ascii")
    return b"References: " + answered + b"\n" + b"In-Reply-To: " + answered + b"\n"


def _thunderbird_headers(head: MailHead, content_type: bytes) -> bytes:
    return (
        b"Message-ID: "
        + head.message_id.encode("ascii")
        + b"\n"
        + _thread(head)
        + b"Date: "
        + format_datetime(head.date).encode("ascii")
        + b"\n"
        + b"MIME-Version: 1.0\n"
        + b"User-Agent: Mozilla Thunderbird\n"
        + b"Content-Language: ja\n"
        + b"To: "
        + head.to_address.encode("ascii")
        + b"\n"
        + b"From: "
        + utf8_word(head.sender_name)
        + b" <"
        + head.sender_address.encode("ascii")
        + b">\n"
        + b"Subject: "
        + utf8_words(head.subject)
        + b"\n"
        + b"Content-Type: "
        + content_type
        + b"\n"
    )


def _thunderbird_part(attachment: Attachment) -> bytes:
    if attachment.content_type == "message/rfc822":
        # A forwarded mail travels as it is (7bit/8bit), never base64: readers open it inline.
        return (
            b'Content-Type: message/rfc822; charset=UTF-8; name="'
            + utf8_word(attachment.name)
            + b'"\n'
            + b"Content-Disposition: attachment;\n "
            + rfc2231_filename(attachment.name)
            + b"\n\n"
            + attachment.content.replace(b"\r\n", b"\n")
            + b"\n"
        )
    return (
        b"Content-Type: "
        + attachment.content_type.encode("ascii")
        + b'; name="'
        + utf8_word(attachment.name)
        + b'"\n'
        + b"Content-Disposition: attachment;\n "
        + rfc2231_filename(attachment.name)
        + b"\n"
        + b"Content-Transfer-Encoding: base64\n\n"
        + b64_lines(attachment.content, 72)
        + b"\n\n"
    )


def thunderbird_mail(head: MailHead, body: str, attachments: Sequence[Attachment]) -> bytes:
    """Thunderbird 115: UTF-8 (8bit, format=flowed) text, base64 attachments with RFC 2231 names."""
    boundary = _boundary("------------")
    text = body.replace("\r\n", "\n").encode("utf-8")
    mail = (
        _thunderbird_headers(head, b'multipart/mixed; boundary="' + boundary + b'"')
        + b"\nThis is a multi-part message in MIME format.\n"
        + b"--"
        + boundary
        + b"\n"
        + b"Content-Type: text/plain; charset=UTF-8; format=flowed\n"
        + b"Content-Transfer-Encoding: 8bit\n\n"
        + text
        + b"\n\n"
    )
    for attachment in attachments:
        mail += b"--" + boundary + b"\n" + _thunderbird_part(attachment)
    return crlf(mail + b"--" + boundary + b"--\n")


def thunderbird_forward(head: MailHead, body: str, forwarded: bytes, forwarded_subject: str) -> bytes:
    """Thunderbird's 「添付として転送」: the original mail rides along as message/rfc822."""
    name = f"{forwarded_subject}.eml"
    return thunderbird_mail(head, body, [Attachment(name, forwarded, "message/rfc822")])


def _outlook_from(head: MailHead) -> bytes:
    name = b_word(cp50220(head.sender_name), "iso-2022-jp")
    return b"From: " + name + b" <" + head.sender_address.encode("ascii") + b">\n"


def _outlook_text(body: str) -> bytes:
    return (
        b'Content-Type: text/plain;\n\tcharset="iso-2022-jp"\n'
        b"Content-Transfer-Encoding: 7bit\n\n" + cp50220(body.replace("\r\n", "\n")) + b"\n\n"
    )


def outlook2010_jis_mail(head: MailHead, body: str, attachments: Sequence[Attachment]) -> bytes:
    """Outlook 2010 on Japanese Windows: ISO-2022-JP (CP50220) everywhere, file names as encoded
    words inside quotes (``filename="=?iso-2022-jp?B?…?="``), which RFC 2047 forbids but every
    Japanese mailer of that age writes."""
    boundary = _boundary("----=_NextPart_000_0001_")
    mail = (
        _outlook_from(head)
        + b"To: <"
        + head.to_address.encode("ascii")
        + b">\n"
        + b"Subject: "
        + jis_words(head.subject)
        + b"\n"
        + b"Date: "
        + format_datetime(head.date).encode("ascii")
        + b"\n"
        + b"Message-ID: "
        + head.message_id.encode("ascii")
        + b"\n"
        + _thread(head)
        + b"MIME-Version: 1.0\n"
        + b'Content-Type: multipart/mixed;\n\tboundary="'
        + boundary
        + b'"\n'
        + b"X-Mailer: Microsoft Outlook 14.0\n"
        + b"Content-Language: ja\n\n"
        + b"This is a multipart message in MIME format.\n\n"
        + b"--"
        + boundary
        + b"\n"
        + _outlook_text(body)
    )
    for attachment in attachments:
        name = b_word(cp50220(attachment.name), "iso-2022-jp")
        mail += (
            b"--"
            + boundary
            + b"\n"
            + b"Content-Type: "
            + attachment.content_type.encode("ascii")
            + b';\n\tname="'
            + name
            + b'"\n'
            + b"Content-Transfer-Encoding: base64\n"
            + b'Content-Disposition: attachment;\n\tfilename="'
            + name
            + b'"\n\n'
            + b64_lines(attachment.content)
            + b"\n\n"
        )
    return crlf(mail + b"--" + boundary + b"--\n\n")


def outlook_winmail_mail(head: MailHead, body: str, attachment: Attachment) -> bytes:
    """Outlook in rich-text mode through Exchange: the file hides inside winmail.dat (TNEF)."""
    boundary = _boundary("_000_TYCPR01MB")
    winmail = tnef_stream(attachment.name, attachment.content, head.subject)
    stamp = format_datetime(head.date).encode("ascii")
    mail = (
        _outlook_from(head)
        + b'To: "'
        + head.to_address.encode("ascii")
        + b'" <'
        + head.to_address.encode("ascii")
        + b">\n"
        + b"Subject: "
        + jis_words(head.subject)
        + b"\n"
        + b"Thread-Topic: "
        + jis_words(head.subject)
        + b"\n"
        + b"Date: "
        + stamp
        + b"\n"
        + b"Message-ID: "
        + head.message_id.encode("ascii")
        + b"\n"
        + _thread(head)
        + b"Accept-Language: ja-JP, en-US\n"
        + b"Content-Language: ja-JP\n"
        + b"X-MS-Has-Attach: yes\n"
        + b"X-MS-TNEF-Correlator: "
        + head.message_id.encode("ascii")
        + b"\n"
        + b'Content-Type: multipart/mixed;\n\tboundary="'
        + boundary
        + b'"\n'
        + b"MIME-Version: 1.0\n\n"
        + b"--"
        + boundary
        + b"\n"
        + _outlook_text(body)
        + b"--"
        + boundary
        + b"\n"
        + b'Content-Type: application/ms-tnef; name="winmail.dat"\n'
        + b"Content-Description: winmail.dat\n"
        + b'Content-Disposition: attachment; filename="winmail.dat"; size='
        + str(len(winmail)).encode()
        + b"\n"
        + b"Content-Transfer-Encoding: base64\n\n"
        + b64_lines(winmail)
        + b"\n\n"
        + b"--"
        + boundary
        + b"--\n"
    )
    return crlf(mail)
