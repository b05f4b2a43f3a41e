"""「電子証書・認証キー登録のお知らせ」: the guarantor's mail to the contractor after issuing.

The mail never carries the 認証キー (the flyer: the contractor logs in and downloads the key
notice PDF). It is put into the outbox in the issuing transaction, so a guarantee is never
issued without its notice, nor the notice sent for a guarantee that was rolled back.
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage

from sqlmodel import Session

from guarantor.formatting import period, yen
from guarantor.settings import GuarantorSettings
from mailer.message import Mailbox, build_message
from mailer.outbox import enqueue
from mailer.reply_policy import mark
from rules.domain import Certificate
from store.tables import CertificateRecord, OutboxMessage

SUBJECT = "電子証書・認証キー登録のお知らせ"
KIND = "notice"


def idempotency_key(record: CertificateRecord) -> str:
    return f"notice:{record.id}"


def fee_document_names(guarantee_no: str) -> dict[str, str]:
    return {
        "fee_receipt": f"保証料領収書_{guarantee_no}.pdf",
        "fee_statement": f"保証料計算書_{guarantee_no}.pdf",
    }


def build_notice(
    certificate: Certificate,
    *,
    contractor_email: str,
    settings: GuarantorSettings,
    now: datetime,
    attachments: dict[str, bytes],
) -> EmailMessage:
    """The notice mail; ``attachments`` maps file name to PDF bytes (possibly empty)."""
    c = certificate
    message = build_message(
        sender=Mailbox(settings.notice_sender, settings.name),
        to=[Mailbox(contractor_email)],
        subject=f"【e-Net保証】{SUBJECT}(保証契約番号 {c.guarantee_no})",
        text=_body(c, settings, attached=list(attachments)),
        now=now,
        # An automatic notice (RFC 3834): auto-responders must not answer it.
        auto_submitted="auto-generated",
    )
    mark(message, kind=KIND, desk=c.desk)
    for name, data in attachments.items():
        message.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return message


def _body(c: Certificate, settings: GuarantorSettings, attached: list[str]) -> str:
    lines = [
        f"{c.contractor_name} 御中",
        "",
        f"{settings.name}でございます。",
        "平素は格別のお引き立てを賜り、厚く御礼申し上げます。",
        "",
        "下記の保証契約を締結し、電子証書と認証キーを登録いたしましたのでお知らせいたします。",
        "",
        f"  保証契約番号：{c.guarantee_no}",
        f"  保証の種類：{c.guarantee_type.value}",
        f"  発注者：{c.obligee}",
        f"  工事(業務)名：{c.work_name}",
        f"  保証金額：{yen(c.guarantee_amount)}",
        f"  保証期間：{period(c)}",
        "",
        "■ 今後のお手続き",
        "1. e-Net保証にログインし、「電子証書の確認はこちら」から電子証書の内容をご確認ください。",
        f"   {settings.portal_url}",
        "2. 該当する保証契約番号を選び、「認証キー」の表示をクリックして、",
        "   「認証キー等のお知らせ」(PDFファイル)をダウンロードしてください。",
        "3. ダウンロードしたPDFファイルを、発注者が指定する方法で発注者へご提出ください。",
        "",
        "※ 電子証書の内容を表示した画面を保存したファイルは、提出書類ではありません。",
        "   誤ってご提出なさらないようご注意ください。",
        "※ 安全のため、このメールには認証キーを記載しておりません。",
    ]
    if attached:
        lines.append(f"※ {'、'.join(attached)} を添付しております。")
    lines += [
        "※ このメールは送信専用のアドレスからお送りしています。ご返信いただいてもお答えできません。",
        "",
        settings.name,
        "",
    ]
    return "\n".join(lines)


def enqueue_notice(
    session: Session,
    *,
    record: CertificateRecord,
    certificate: Certificate,
    settings: GuarantorSettings,
    now: datetime,
    fee_documents: dict[str, bytes | None],
) -> OutboxMessage:
    """Put the notice into the outbox (``notice:<certificate id>``), in the caller's transaction.

    ``fee_documents`` holds ``fee_receipt`` and ``fee_statement`` PDFs (None when not issued);
    they are attached only when ``settings.attach_fee_documents``.
    """
    attachments: dict[str, bytes] = {}
    if settings.attach_fee_documents:
        names = fee_document_names(certificate.guarantee_no)
        attachments = {names[kind]: data for kind, data in fee_documents.items() if data is not None}
    message = build_notice(
        certificate, contractor_email=record.contractor_email, settings=settings, now=now, attachments=attachments
    )
    row, _created = enqueue(
        session,
        desk=record.desk,
        idempotency_key=idempotency_key(record),
        kind=KIND,
        message=message,
        envelope_from=settings.notice_sender,
        recipients=[record.contractor_email],
    )
    return row
