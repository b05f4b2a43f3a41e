"""The contractors' side of the demo: which files each one attaches, the mail it writes, and its
mailbox (read over IMAP, written to over SMTP, as its mail program would).

A contractor takes the key notice (STEP4) or, by mistake, the STEP3 screen from the guarantor's
documents, saves the fee receipt out of the guarantor's notice mail in their own mailbox, or holds
a notice the registry does not know (a 契約保証予約, which is never issued electronically).
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from collections.abc import Callable, Iterator, Mapping, Sequence

from imapclient import IMAPClient

from guarantor.issue import IssuedGuarantee
from guarantor.notices import fee_document_names
from guarantor.pdf import render_key_notice
from guarantor.settings import GuarantorSettings
from keydesk.client_encodings import encrypted_zip
from keydesk.demo import mail_builders as build
from keydesk.demo import scenario
from keydesk.demo.scenario import Contractor, Doc, Guarantee, ScenarioMail, Style, contractor, guarantee
from keydesk.embedded_imap import EmbeddedImap
from keydesk.settings import Settings
from mailer.reply_policy import MARKER_HEADER
from rules.domain import Certificate, GuaranteeType
from formats import access_key as keys
from formats import guarantee_no as numbers
from foundation.errors import OperationalError


class DemoError(OperationalError):
    """A step of the demo did not do what it must (message for the person at the terminal)."""

    def user_lines(self) -> list[str]:
        return [f"keydesk: デモを完了できませんでした: {self}"]


# The 契約保証予約 notice carries a number the registry never issued.
UNREGISTERED_SERIAL = 990_001
ZIP_PASSWORD = "Misato-2026"
CERTIFICATE_VIEW_NAME = "電子証書の確認 _ e-Net保証.pdf"  # a browser names a saved page after its title

# (address, file name) → the attachment's bytes, from that mailbox
InboxAttachment = Callable[[str, str], bytes]


def key_notice_name(guarantee_no: str) -> str:
    return f"認証キー等のお知らせ_{guarantee_no}.pdf"


def mistyped(key: str, position: int = 6) -> str:
    """The key with one symbol changed (the check symbol catches every such typo)."""
    symbols = list(keys.canonical(key))
    symbols[position] = keys.ALPHABET[(keys.ALPHABET.index(symbols[position]) + 1) % len(keys.ALPHABET)]
    return keys.format_key("".join(symbols))


@dataclass
class DemoDocuments:
    issued: Mapping[str, IssuedGuarantee]  # scenario guarantee key → what the guarantor issued
    settings: GuarantorSettings
    now: datetime
    inbox_attachment: InboxAttachment

    def attachment(self, doc: Doc, guarantee_key: str) -> build.Attachment:
        if doc is Doc.UNREGISTERED_NOTICE:
            return self._unregistered(guarantee(guarantee_key))
        issued = self.issued[guarantee_key]
        number = issued.guarantee_no
        if doc is Doc.KEY_NOTICE:
            return build.Attachment(key_notice_name(number), issued.files["key_notice"].read_bytes())
        if doc is Doc.CERTIFICATE_VIEW:
            return build.Attachment(CERTIFICATE_VIEW_NAME, issued.files["certificate_view"].read_bytes())
        if doc is Doc.FEE_RECEIPT:
            name = fee_document_names(number)["fee_receipt"]
            owner = contractor(guarantee(guarantee_key).contractor).address
            return build.Attachment(name, self.inbox_attachment(owner, name))
        if doc is Doc.TYPO_KEY_NOTICE:
            pdf = render_key_notice(
                issued.certificate, mistyped(issued.access_key), self.now, lookup_url=self.settings.lookup_url
            )
            return build.Attachment(key_notice_name(number), pdf)
        raise ValueError(f"unknown document {doc}")

    def _unregistered(self, spec: Guarantee) -> build.Attachment:
        number = numbers.make(self.now.year, UNREGISTERED_SERIAL)
        certificate = Certificate(
            guarantee_no=number,
            guarantee_type=GuaranteeType(spec.guarantee_type),
            guarantor=self.settings.name,
            contractor_name=contractor(spec.contractor).name,
            obligee=spec.obligee,
            desk=spec.desk,
            contract_no=spec.contract_no,
            work_name=spec.work_name,
            work_category=spec.work_category,
            contract_amount=spec.contract_amount,
            guarantee_amount=spec.guarantee_amount,
            fee=spec.fee,
            contract_date=spec.contract_date,
            completion_date=spec.completion_date,
            period_start=spec.period_start,
            period_end=spec.period_end,
            issued_on=self.now.date(),
        )
        pdf = render_key_notice(certificate, keys.generate(), self.now, lookup_url=self.settings.lookup_url)
        return build.Attachment(key_notice_name(number), pdf)


def compose_mail(
    mail: ScenarioMail,
    firm: Contractor,
    desk_address: str,
    body: str,
    documents: DemoDocuments,
    now: datetime,
    answering: tuple[str, str] | None = None,
) -> tuple[str, bytes]:
    """(Message-ID, raw bytes) of the contractor's mail to the desk.

    ``answering``: (Message-ID, subject) of the desk's reply this mail answers (a resend is sent
    with the mailer's 返信 button, as the desk's reply asks)."""
    attachments = [documents.attachment(doc, key) for doc, key in mail.documents]
    outlook = mail.style in (Style.OUTLOOK2010_JIS, Style.OUTLOOK_WINMAIL)
    message_id = build.new_message_id(firm.address, "outlook" if outlook else "uuid")
    # An old Outlook profile writes the firm the short way, with ㈱ (CP932's NEC row 13).
    sender = f"{_short_firm(firm)} {firm.person}" if outlook else f"{firm.name} {firm.person}"
    subject, in_reply_to = (f"Re: {answering[1]}", answering[0]) if answering else (mail.subject, None)
    head = build.MailHead(sender, firm.address, desk_address, subject, now, message_id, in_reply_to)
    if mail.style is Style.THUNDERBIRD:
        return message_id, build.thunderbird_mail(head, body, attachments)
    if mail.style is Style.OUTLOOK2010_JIS:
        return message_id, build.outlook2010_jis_mail(head, body, attachments)
    if mail.style is Style.OUTLOOK_WINMAIL:
        [attachment] = attachments
        return message_id, build.outlook_winmail_mail(head, body, attachment)
    if mail.style is Style.PPAP:
        archive = encrypted_zip([(a.name, a.content) for a in attachments], ZIP_PASSWORD, now)
        name = f"{now:%Y%m%d}_認証キー等のお知らせ.zip"
        return message_id, build.thunderbird_mail(
            head, body, [build.Attachment(name, archive, "application/x-zip-compressed")]
        )
    if mail.style is Style.FORWARD:
        inner_subject, inner = _colleague_mail(firm, attachments, now - timedelta(minutes=40))
        return message_id, build.thunderbird_forward(head, body, inner, inner_subject)
    raise ValueError(f"unknown style {mail.style}")


def _short_firm(firm: Contractor) -> str:
    return firm.name.replace("株式会社", "㈱").replace("有限会社", "㈲")


def _colleague_mail(firm: Contractor, attachments: list[build.Attachment], when: datetime) -> tuple[str, bytes]:
    """The office's internal mail that carried the key notice to the engineer, who forwards it."""
    domain = firm.address.rpartition("@")[2]
    subject = "【電子保証】認証キー等のお知らせ(ダウンロード済み)"
    head = build.MailHead(
        f"{firm.name} 総務部", f"somu@{domain}", firm.address, subject, when, build.new_message_id(f"somu@{domain}")
    )
    body = (
        f"{firm.person.split()[0]}さん\n\ne-Net保証から「認証キー等のお知らせ」をダウンロードしました。\n"
        "美郷町の契約係への提出をお願いします。\n\n総務部\n"
    )
    return subject, build.thunderbird_mail(head, body, attachments)


def _bare(message_id: object) -> str:
    return str(message_id or "").strip().strip("<>")


class Contractors:
    """The contractors at their mail programs: reading their INBOX, sending to the desk."""

    def __init__(self, imap: EmbeddedImap, settings: Settings, clock: Callable[[], datetime]) -> None:
        self.imap = imap
        self.settings = settings
        self.clock = clock

    def inbox(self, address: str) -> Iterator[EmailMessage]:
        with IMAPClient(self.imap.host, self.imap.port, ssl=False, timeout=30) as client:
            client.login(address, self.imap.users[address])
            client.select_folder("INBOX", readonly=True)
            fetched = client.fetch(client.search("ALL"), ["RFC822"])
        for uid in sorted(fetched):
            yield message_from_bytes(fetched[uid][b"RFC822"], policy=policy.default)

    def saved_attachment(self, address: str, file_name: str) -> bytes:
        """The contractor opens the guarantor's notice in their mailbox and saves one attachment."""
        for mail in self.inbox(address):
            for part in mail.iter_attachments():
                if part.get_filename() == file_name:
                    return part.get_content()
        raise DemoError(f"{file_name} is not in the mailbox of {address}")

    def desk_reply(self, address: str, answered: str) -> tuple[str, str]:
        """(Message-ID, subject) of the desk's reply to the mail ``answered``, from the sender's INBOX."""
        for mail in self.inbox(address):
            if mail.get(MARKER_HEADER) and _bare(mail.get("In-Reply-To")) == _bare(answered):
                return str(mail["Message-ID"]).strip(), str(mail["Subject"])
        raise DemoError(f"the desk's reply to {answered} is not in the mailbox of {address}")

    def send(self, mails: Sequence[ScenarioMail], documents: DemoDocuments, sent: dict[str, str]) -> None:
        """Each contractor mails the desk through the SMTP server; adds mail key → Message-ID to ``sent``."""
        settings = self.settings
        desk = settings.desks[scenario.DESK]
        town = settings.rules.desks[scenario.DESK].town
        with smtplib.SMTP(settings.embedded.host, settings.embedded.smtp_port, timeout=30) as client:
            for mail in mails:
                firm = contractor(mail.contractor)
                answering = self.desk_reply(firm.address, sent[mail.resend_of]) if mail.resend_of else None
                message_id, raw = compose_mail(
                    mail, firm, desk.address, scenario.mail_body(mail, town), documents, self.clock(), answering
                )
                client.sendmail(firm.address, [desk.address], raw)
                sent[mail.key] = message_id
