"""The one table of finding codes: the contract between verifier, rules, replies, digest and tests.

A finding is a stable code, a severity, a polite Japanese sentence for the sender (what to do)
and a detail for staff. Each code says which verdict it forces; the verdict of a guarantee or a
mail is the strongest verdict among its findings (see ``strongest``).

Add a code here, never inline elsewhere: templates and the digest look codes up in this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    NEEDS_REVIEW = "needs_review"  # a person must look
    RETURNED = "returned"  # the sender must fix and resend; the reply says how
    IGNORED = "ignored"  # automatic mail: recorded, not answered


# Stronger verdicts win when findings are combined.
_STRENGTH = {Verdict.ACCEPTED: 0, Verdict.NEEDS_REVIEW: 1, Verdict.RETURNED: 2, Verdict.IGNORED: 3}


def strongest(verdicts) -> Verdict:
    return max(verdicts, key=_STRENGTH.__getitem__, default=Verdict.ACCEPTED)


class Severity(StrEnum):
    INFO = "info"  # recorded and shown; changes nothing
    WARNING = "warning"  # a person should look
    ERROR = "error"  # cannot be accepted as sent


@dataclass(frozen=True)
class FindingCode:
    code: str
    severity: Severity
    verdict: Verdict  # the verdict this finding forces at least
    label: str  # a short Japanese label for staff (digest, CLI)
    message: str  # the sentence for the sender; ``{placeholders}`` filled from Finding.params


@dataclass(frozen=True)
class Finding:
    code: str
    detail: str = ""  # for staff: the facts behind it, in plain words
    params: dict[str, str] = field(default_factory=dict)
    guarantee_no: str | None = None
    document: str | None = None  # the attachment's display name, when it is about one

    @property
    def spec(self) -> FindingCode:
        return CODES[self.code]

    @property
    def severity(self) -> Severity:
        return self.spec.severity

    @property
    def verdict(self) -> Verdict:
        return self.spec.verdict

    @property
    def message(self) -> str:
        return self.spec.message.format_map(_Missing(self.params))


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return ""


def _code(code: str, severity: Severity, verdict: Verdict, label: str, message: str) -> FindingCode:
    return FindingCode(code, severity, verdict, label, message)


E, W, I = Severity.ERROR, Severity.WARNING, Severity.INFO
A, R, N, X = Verdict.ACCEPTED, Verdict.RETURNED, Verdict.NEEDS_REVIEW, Verdict.IGNORED

_TABLE = [
    _code("doc.certificate_view", E, R, "証書閲覧画面の印刷物",
          "添付のファイルは、e-Net保証のSTEP3で表示される電子証書の閲覧画面を保存・印刷したもので、"
          "提出書類としてお受けできません。STEP4でダウンロードできる"
          "「電子証書閲覧用「認証キー」等のお知らせ」(PDFファイル)をお送りください。"),
    _code("doc.fee_receipt", I, A, "保証料領収書",
          "保証料領収書が添付されていましたが、ご提出は不要です。"),
    _code("doc.fee_statement", I, A, "保証料計算書",
          "保証料計算書が添付されていましたが、ご提出は不要です。"),
    _code("doc.advance_claim", I, A, "前払金請求書",
          "前払金請求書をお預かりしました。担当課へ回付します。"),
    _code("doc.insurer_bond", W, N, "保険会社の保証証券等",
          "保険会社による履行保証保険・公共工事履行保証証券は電子保証とは別の方法で確認するため、"
          "担当者が内容を確認のうえご連絡します。"),
    _code("doc.encrypted_archive", E, R, "パスワード付きZIP",
          "パスワード付きのZIPファイルは開封できません。"
          "「認証キー等のお知らせ」のPDFファイルをそのまま添付してお送りください。"),
    _code("doc.encrypted", E, R, "パスワード付きPDF",
          "パスワードが設定されたPDFは読み取れません。"
          "e-Net保証からダウンロードしたPDFファイルを、そのままお送りください。"),
    _code("doc.no_text", E, R, "文字のないPDF(スキャン画像)",
          "PDFから文字を読み取れませんでした(スキャンした画像と思われます)。"
          "e-Net保証からダウンロードしたPDFファイルを、印刷・スキャンせずにそのままお送りください。"),
    _code("doc.broken", E, R, "読み取れないPDF",
          "添付のPDFファイル「{document}」を開けませんでした。ファイルが壊れているおそれがあります。"
          "もう一度ダウンロードしたPDFファイルをお送りください。"),
    _code("doc.other", I, A, "その他の添付ファイル",
          "添付ファイル「{document}」は電子保証の書類ではないため、確認の対象外としました。"),
    _code("key.missing", E, R, "認証キー等のお知らせが見当たらない",
          "「電子証書閲覧用「認証キー」等のお知らせ」のPDFファイルが見当たりませんでした。"
          "e-Net保証のSTEP4でダウンロードしたPDFファイルを添付してお送りください。"),
    _code("key.checksum", E, R, "認証キーの誤り(チェック文字不一致)",
          "保証契約番号{guarantee_no}の認証キーに誤りがあります(入力ミスの可能性があります)。"
          "e-Net保証からダウンロードした「認証キー等のお知らせ」のPDFファイルをそのままお送りください。"),
    _code("lookup.no_match", E, R, "保証契約番号と認証キーが一致しない",
          "保証契約番号{guarantee_no}と認証キーの組み合わせで電子証書を確認できませんでした。"
          "最新の「認証キー等のお知らせ」をe-Net保証からダウンロードし、お送りください。"),
    _code("lookup.revoked", E, R, "失効した保証",
          "保証契約番号{guarantee_no}の電子証書は失効しています。保証会社へご確認ください。"),
    _code("lookup.refused", W, N, "照会の一時停止",
          "保証契約番号{guarantee_no}の照会が一時的に制限されているため、担当者が確認のうえご連絡します。"),
    _code("lookup.unavailable", W, N, "照会サービスに接続できない",
          "電子証書の照会サービスに接続できなかったため、担当者が後ほど確認します。再送の必要はありません。"),
    _code("cert.signature", E, N, "電子証書の署名を検証できない",
          "保証契約番号{guarantee_no}の電子証書を検証できなかったため、担当者が確認のうえご連絡します。"),
    _code("cert.other_obligee", E, R, "発注者が当町でない",
          "保証契約番号{guarantee_no}の電子証書は、発注者が「{obligee}」となっており、当町あてのものではありません。"
          "提出先をご確認ください。"),
    _code("cert.before_start_date", E, R, "電子保証の対象となる契約日より前",
          "保証契約番号{guarantee_no}の契約日({contract_date})は、当町の電子保証の対象"
          "({start_date}以降の契約)より前のため、書面の保証証書をご提出ください。"),
    _code("cert.type_not_eligible", E, R, "対象外の保証の種類",
          "「{guarantee_type}」は電子保証の対象外です。書面の保証証書でのご提出をお願いします。"),
    _code("cert.category_not_eligible", E, R, "対象外の業務区分",
          "「{work_category}」の契約は当町の電子保証の対象外です。書面の保証証書でのご提出をお願いします。"),
    _code("cert.notice_mismatch", E, N, "お知らせと電子証書の内容が一致しない",
          "「認証キー等のお知らせ」の記載内容と電子証書の内容が一致しないため、担当者が確認のうえご連絡します。"),
    _code("amount.contract_guarantee_low", E, R, "契約保証の保証金額が不足",
          "契約保証の保証金額({guarantee_amount})が、契約金額の{ratio}以上という当町の基準を満たしていません。"
          "保証金額をご確認のうえ、保証会社にご相談ください。"),
    _code("amount.advance_high", E, N, "前払金の保証金額が上限超過",
          "前払金の保証金額が、契約金額に対する上限({ratio})を超えているため、担当者が確認のうえご連絡します。"),
    _code("period.ends_before_completion", E, R, "保証期間が工期末に届かない",
          "保証契約番号{guarantee_no}の保証期間の終期({period_end})が、工期末({completion_date})より前です。"
          "保証期間をご確認のうえ、保証会社にご相談ください。"),
    _code("register.no_contract", W, N, "契約台帳に該当なし",
          "契約番号{contract_no}の契約を当町の台帳で確認できなかったため、担当者が確認のうえご連絡します。"),
    _code("register.contractor_mismatch", W, N, "受注者が台帳と一致しない",
          "電子証書の受注者名が当町の契約台帳と一致しないため、担当者が確認のうえご連絡します。"),
    _code("sender.not_authenticated", W, N, "送信元の認証に失敗",
          "送信元のメールアドレスを確認できなかったため、担当者が確認のうえご連絡します。"),
    _code("submission.duplicate", I, A, "受付済みの保証",
          "保証契約番号{guarantee_no}は、すでに受付済みです(受付番号{previous_receipt})。再度のご提出は不要です。"),
    _code("mail.too_large", E, R, "メールが大きすぎる",
          "メールの容量が上限({limit})を超えているため受け取れませんでした。"
          "「認証キー等のお知らせ」のPDFファイルのみを添付してお送りください。"),
    _code("mail.automatic", I, X, "自動送信メール", ""),
    # Added with rules/evaluate.py and verifier/verify.py (issue 4).
    _code("amount.intermediate_advance_high", E, N, "中間前払金の保証金額が上限超過",
          "中間前払金の保証金額が、契約金額に対する上限({ratio})を超えているため、担当者が確認のうえご連絡します。"),
    _code("amount.advance_total_high", E, N, "前払金と中間前払金の合計が上限超過",
          "前払金と中間前払金の合計額が、契約金額に対する上限({ratio})を超えているため、"
          "担当者が確認のうえご連絡します。"),
    _code("amount.advance_below_threshold", W, N, "前払金の対象とならない契約金額",
          "契約金額が、当町で前払金の対象となる金額({threshold})に達していないため、担当者が確認のうえご連絡します。"),
    _code("register.work_mismatch", W, N, "工事名が台帳と一致しない",
          "電子証書の工事(業務)名が当町の契約台帳と一致しないため、担当者が確認のうえご連絡します。"),
    _code("register.amount_mismatch", W, N, "契約金額が台帳と一致しない",
          "電子証書の契約金額が当町の契約台帳と一致しないため、担当者が確認のうえご連絡します。"),
    _code("key.in_body", E, R, "認証キーがメール本文に記載",
          "メール本文に認証キーが記載されていましたが、当町では「電子証書閲覧用「認証キー」等のお知らせ」の"
          "PDFファイルでの提出をお願いしております。e-Net保証のSTEP4でダウンロードしたPDFファイルを"
          "添付してお送りください。"),
    _code("key.unreadable", W, N, "お知らせから番号・キーを読み取れない",
          "「認証キー等のお知らせ」から保証契約番号または認証キーを読み取れなかったため、"
          "担当者が確認のうえご連絡します。"),
    # Added with intake/mime.py and intake/archives.py (issue 5): limits and damaged containers.
    _code("mail.too_many_attachments", E, R, "添付ファイルが多すぎる",
          "添付ファイルの数が上限({limit}件)を超えているため、すべてを確認できませんでした。"
          "「認証キー等のお知らせ」のPDFファイルのみを添付してお送りください。"),
    _code("mail.malformed", W, N, "形式に問題のあるメール",
          "メールの形式に問題があり、内容の一部を読み取れなかったため、担当者が確認のうえご連絡します。"),
    _code("doc.too_large", E, R, "容量の大きすぎるPDF",
          "添付のPDFファイル「{document}」は容量が上限({limit})を超えているため、読み取れませんでした。"
          "e-Net保証からダウンロードしたPDFファイルを、そのままお送りください。"),
    _code("doc.archive_too_large", E, R, "上限を超える圧縮ファイル",
          "圧縮ファイル「{document}」は、展開後の容量・ファイル数・入れ子の深さのいずれかが上限を超えているため、"
          "開封できませんでした。PDFファイルを圧縮せず、そのまま添付してお送りください。"),
    _code("doc.archive_broken", E, R, "開けない圧縮ファイル",
          "添付のファイル「{document}」を展開できませんでした。ファイルが壊れているおそれがあります。"
          "PDFファイルを圧縮せず、そのまま添付してお送りください。"),
    # Added with verifier/verify.py (issue 4): the STEP3 screen sent along with the key notice.
    _code("doc.certificate_view_extra", I, A, "証書閲覧画面(お知らせと同封)",
          "添付の「{document}」は電子証書の閲覧画面を保存したものです。"
          "「認証キー等のお知らせ」で確認しますので、閲覧画面のご提出は不要です。"),
    # Added with the quarantine acknowledgement (issue 13): a mail the desk could not check by itself.
    _code("mail.processing_failed", W, N, "自動で確認できなかったメール",
          "お送りいただいたメールは受け付けましたが、自動での確認ができませんでした。"
          "担当者が内容を確認のうえ、必要に応じてご連絡いたします。"),
]

CODES: dict[str, FindingCode] = {spec.code: spec for spec in _TABLE}
if len(CODES) != len(_TABLE):
    raise RuntimeError("duplicate finding code in rules/findings.py")
