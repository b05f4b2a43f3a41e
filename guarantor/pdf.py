"""The guarantor's four PDFs, modelled on the flyer (seed/denshi-hosho-annai.txt).

- the key notice 「電子証書閲覧用「認証キー」等のお知らせ」 (STEP4): the one document a contractor
  submits to the town; it carries the 保証契約番号 and the 認証キー;
- the certificate view (STEP3): the certificate's screen as a browser prints it. It is NOT a
  submission and never shows the key: towns refuse it (「閲覧画面をPDF化した書類」);
- 保証料領収書 (fee receipt) and 保証料計算書 (fee statement, for 保証料一括納付制度 users).

Every label and its value is one text line (``label：value``) so the desk's reader finds them.
"""

from __future__ import annotations

from datetime import datetime

from guarantor.formatting import (
    both_calendars,
    certificate_fields,
    clock,
    period,
    period_days,
    yen,
)
from guarantor.pdf_layout import GOTHIC, MARGIN, PAGE_HEIGHT, Sheet
from guarantor.settings import GuarantorSettings
from rules.domain import Certificate
from formats.access_key import format_key

KEY_NOTICE_TITLE = "電子証書閲覧用「認証キー」等のお知らせ"
CERTIFICATE_VIEW_TITLE = "電子証書の確認"
PRINTABLE_NOTE = "この画面は、印刷・保存が可能です。"
FEE_RECEIPT_TITLE = "保証料領収書"
FEE_STATEMENT_TITLE = "保証料計算書"
BULK_PAYMENT = "保証料一括納付制度(一括後払)"
DEFAULT_LOOKUP_URL: str = GuarantorSettings.model_fields["lookup_url"].default
DEFAULT_PORTAL_NAME = "e-Net保証"


def render_key_notice(
    certificate: Certificate, access_key: str, issued_at: datetime, *, lookup_url: str | None = None
) -> bytes:
    """The STEP4 key notice. ``access_key`` in any accepted spelling; it is printed formatted."""
    c = certificate
    sheet = Sheet(KEY_NOTICE_TITLE, author=c.guarantor, subject=f"保証契約番号 {c.guarantee_no}")
    sheet.line(f"発行日：{both_calendars(issued_at.date())}", size=10, align="right")
    sheet.space(6)
    sheet.line(f"{c.obligee} 様", size=12)
    sheet.space(14)
    sheet.line(KEY_NOTICE_TITLE, size=16, font=GOTHIC, align="center")
    sheet.space(14)
    sheet.line("下記の保証契約について、電子証書を閲覧するための「認証キー」等をお知らせいたします。", size=10.5)
    sheet.space(4)
    sheet.line("記", size=11, align="center")
    sheet.space(6)
    sheet.table_top()
    sheet.field("保証契約番号", c.guarantee_no, size=13, font=GOTHIC)
    sheet.field("認証キー", format_key(access_key), size=13, font=GOTHIC)
    sheet.field("保証の種類", c.guarantee_type.value)
    sheet.field("保証債権者(発注者)", c.obligee)
    sheet.field("保証契約者(受注者)", c.contractor_name)
    sheet.field("工事(業務)名", c.work_name)
    sheet.field("保証金額", yen(c.guarantee_amount))
    sheet.field("保証期間", period(c), size=10.5)
    sheet.field("保証事業会社", c.guarantor)
    sheet.space(18)

    top = sheet.y
    sheet.line("■ 電子証書の閲覧方法(発注者の皆様へ)", size=11, font=GOTHIC, indent=8)
    sheet.line("1. 発注者用保証確認サービス(D-Sure)の照会画面を開いてください。", size=10, indent=16)
    sheet.line(f"照会画面のURL：{lookup_url or DEFAULT_LOOKUP_URL}", size=10, indent=30)
    sheet.line("2. 上記の「保証契約番号」と「認証キー」を入力してください。", size=10, indent=16)
    sheet.line("3. 表示された電子証書で、保証の種類・保証金額・保証期間などをご確認ください。", size=10, indent=16)
    sheet.line("※ 認証キーは電子証書を閲覧するための暗証番号です。大切に保管してください。", size=9, indent=16)
    sheet.box(top)
    sheet.space(14)

    top = sheet.y
    sheet.line("■ 受注者の皆様へ", size=11, font=GOTHIC, indent=8)
    sheet.line("【重要】このPDFファイルを、発注者が指定する方法で発注者へご提出ください。", size=10, indent=16)
    sheet.line(
        "電子証書の内容を表示した画面を保存したファイルやその印刷物は、提出書類として認められません。",
        size=10,
        indent=16,
    )
    sheet.box(top)
    sheet.space(16)
    sheet.line("以上", size=10.5, align="right")
    return sheet.finish()


def render_certificate_view(certificate: Certificate, printed_at: datetime, url: str) -> bytes:
    """The STEP3 screen as a browser prints it: header with time and title, footer with URL and 1/1."""
    c = certificate
    page_title = f"{CERTIFICATE_VIEW_TITLE} | {DEFAULT_PORTAL_NAME}"
    sheet = Sheet(page_title, author=c.guarantor)
    header_y = PAGE_HEIGHT - MARGIN / 2
    sheet.margin_text(clock(printed_at), header_y, "left", share=0.25)
    sheet.margin_text(page_title, header_y, "center", share=0.45)
    sheet.margin_text(url, MARGIN / 2, "left", share=0.85)
    sheet.margin_text("1/1", MARGIN / 2, "right", share=0.1)

    sheet.bar(f"{DEFAULT_PORTAL_NAME}　インターネット保証サービス", size=12)
    sheet.space(10)
    sheet.line(CERTIFICATE_VIEW_TITLE, size=15, font=GOTHIC)
    sheet.line(PRINTABLE_NOTE, size=10, font=GOTHIC)
    sheet.space(8)
    sheet.bar("電子証書の内容", size=10.5)
    sheet.table_top()
    for label, value in certificate_fields(c):
        sheet.field(label, value, size=10.5, font=GOTHIC)
    sheet.space(10)
    sheet.line(f"{c.guarantor}は、上記の保証契約の内容を証明します。", size=10, font=GOTHIC)
    return sheet.finish()


def _fee_header(sheet: Sheet, certificate: Certificate, title: str, issued_at: datetime) -> None:
    sheet.line(f"発行日：{both_calendars(issued_at.date())}", size=10, align="right")
    sheet.space(10)
    sheet.line(title, size=18, font=GOTHIC, align="center")
    sheet.space(14)
    sheet.line(f"{certificate.contractor_name} 様", size=13)
    sheet.space(10)


def render_fee_receipt(certificate: Certificate, issued_at: datetime) -> bytes:
    c = certificate
    sheet = Sheet(FEE_RECEIPT_TITLE, author=c.guarantor, subject=f"保証契約番号 {c.guarantee_no}")
    _fee_header(sheet, c, FEE_RECEIPT_TITLE, issued_at)
    sheet.line(f"領収金額：{yen(c.fee)}", size=16, font=GOTHIC, align="center")
    sheet.space(6)
    sheet.line(f"但し：{c.guarantee_type.value}の保証料として", size=11, align="center")
    sheet.line("上記の金額を正に領収いたしました。", size=11, align="center")
    sheet.space(16)
    sheet.table_top()
    sheet.field("保証契約番号", c.guarantee_no)
    sheet.field("保証の種類", c.guarantee_type.value)
    sheet.field("保証債権者(発注者)", c.obligee)
    sheet.field("工事(業務)名", c.work_name)
    sheet.field("保証金額", yen(c.guarantee_amount))
    sheet.field("保証期間", period(c), size=10.5)
    sheet.space(24)
    sheet.line(c.guarantor, size=12, align="right")
    sheet.line("本書は電子交付による領収書です。", size=9, align="right")
    return sheet.finish()


def render_fee_statement(certificate: Certificate, issued_at: datetime) -> bytes:
    c = certificate
    sheet = Sheet(FEE_STATEMENT_TITLE, author=c.guarantor, subject=f"保証契約番号 {c.guarantee_no}")
    _fee_header(sheet, c, FEE_STATEMENT_TITLE, issued_at)
    sheet.line("下記の保証契約の保証料を、次のとおり計算いたしました。", size=11)
    sheet.space(10)
    sheet.table_top()
    sheet.field("保証契約番号", c.guarantee_no)
    sheet.field("保証の種類", c.guarantee_type.value)
    sheet.field("保証債権者(発注者)", c.obligee)
    sheet.field("工事(業務)名", c.work_name)
    sheet.field("請負代金額", yen(c.contract_amount))
    sheet.field("保証金額", yen(c.guarantee_amount))
    sheet.field("保証期間", period(c), size=10.5)
    sheet.field("保証日数", f"{period_days(c)}日")
    sheet.field("保証料", yen(c.fee), font=GOTHIC)
    sheet.field("納付方法", BULK_PAYMENT)
    sheet.space(12)
    sheet.line(f"本保証の保証料は、{BULK_PAYMENT}によりお支払いいただきます。", size=10)
    sheet.space(24)
    sheet.line(c.guarantor, size=12, align="right")
    return sheet.finish()
