"""The one table of verdict and finding labels: the contract between verifier, rules, replies, digest and tests.

A finding is a stable code, a severity, a polite Japanese sentence for the sender (what to do)
and a detail for staff. Each code says which verdict it forces and, when it returns the mail, what
the sender is asked to do (``Request``): the reply's subject and closing follow that request, so
a paper case never asks for the PDF again. The verdict of a guarantee or a mail is the strongest
verdict among its findings (see ``strongest``).

Add a code here, never inline elsewhere: templates, the digest, the CLI and the demo look codes and
verdict labels up in these tables. ``WORDING`` names each verdict once per use (staff, digest section,
digest tally, reply); ``_TABLE`` is grouped by prefix, one row per code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    NEEDS_REVIEW = "needs_review"  # a person must look
    RETURNED = "returned"  # the sender must fix and resend; the reply says how
    IGNORED = "ignored"  # automatic mail: recorded, not answered


# Stronger verdicts win when findings are combined.
_STRENGTH = {Verdict.ACCEPTED: 0, Verdict.NEEDS_REVIEW: 1, Verdict.RETURNED: 2, Verdict.IGNORED: 3}


def strongest(verdicts: Iterable[Verdict]) -> Verdict:
    return max(verdicts, key=_STRENGTH.__getitem__, default=Verdict.ACCEPTED)


@dataclass(frozen=True)
class Wording:
    """How one verdict (or one digest state that is not a verdict) is named, one label per use."""

    staff: str  # a line's state for staff: CLI, digest lines, demo, console
    section: str = ""  # the title of its digest section
    tally: str = ""  # its count in the digest's subject and summary line, and the CSV's 区分 column
    sender: str = ""  # a guarantee in this state, as the reply names it (returned: see SENDER_STATES)


# The one table of these labels: every module names a verdict through it, never in a literal.
WORDING: dict[str, Wording] = {
    Verdict.ACCEPTED: Wording("受付済", "受付済", "受付", "受付済み"),
    Verdict.NEEDS_REVIEW: Wording("要確認", "要確認(担当者の確認が必要なもの)", "要確認", "担当者が確認します"),
    Verdict.RETURNED: Wording("返送", "返送(再送をお願いしたもの)", "返送"),
    Verdict.IGNORED: Wording("対象外(自動送信メール)"),
    # Digest states that are not verdicts: a guarantee revoked after acceptance, a reply that did not
    # arrive, a mail whose processing failed (all three under "failure" but revoked).
    "revoked": Wording("受付後に失効", "受付後に失効した保証(至急ご確認ください)", "受付後の失効"),
    "failure": Wording("失敗", "送信・処理の失敗", "失敗"),
    "reply_failed": Wording("返信不達"),
    "quarantined": Wording("処理失敗(隔離)"),
}

# The staff label of each verdict (WORDING's staff column).
VERDICT_LABELS: dict[Verdict, str] = {verdict: WORDING[verdict].staff for verdict in Verdict}


class Severity(StrEnum):
    INFO = "info"  # recorded and shown; changes nothing
    WARNING = "warning"  # a person should look
    ERROR = "error"  # cannot be accepted as sent


class Request(StrEnum):
    """What a returned mail asks the sender to do: one request per reply, named in its subject."""

    NONE = ""
    PDF = "pdf"  # send the key notice PDF (again)
    PAPER = "paper"  # this guarantee is not electronic here: submit the paper 保証証書
    ADDRESSEE = "addressee"  # the certificate is for another obligee: check where it should go
    GUARANTOR = "guarantor"  # the guarantee itself must change: consult the guarantor


# When a mail's returned findings ask for different things, the reply leads with the first of these:
# paper and addressee make a resent PDF pointless, and a changed guarantee comes with a new notice.
REQUEST_ORDER = (Request.PAPER, Request.ADDRESSEE, Request.GUARANTOR, Request.PDF)

# How the reply names the state of one guarantee (the sender's view, not staff shorthand): a
# returned one by what it asks for.
SENDER_STATES: dict[Verdict | Request, str] = {
    Verdict.ACCEPTED: WORDING[Verdict.ACCEPTED].sender,
    Verdict.NEEDS_REVIEW: WORDING[Verdict.NEEDS_REVIEW].sender,
    Request.PDF: "お知らせの再送をお願いします",
    Request.PAPER: "書面の保証証書でのご提出をお願いします",
    Request.ADDRESSEE: "提出先のご確認をお願いします",
    Request.GUARANTOR: "保証内容のご確認をお願いします",
}


@dataclass(frozen=True)
class FindingCode:
    code: str
    severity: Severity
    verdict: Verdict  # the verdict this finding forces at least
    label: str  # a short Japanese label for staff (digest, CLI)
    message: str  # the sentence for the sender; ``{placeholders}`` filled from Finding.params
    asks: Request = Request.NONE  # for a returned finding: what the sender must do


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


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def label_of(code: str) -> str:
    """The staff label of a code; an unknown (retired) code shows as itself."""
    spec = CODES.get(code)
    return spec.label if spec else code


def request_of(findings: Iterable[Finding]) -> Request:
    """The one thing a mail with these findings asks of its sender (NONE: nothing is returned)."""
    asked = {f.spec.asks for f in findings if f.code in CODES and f.verdict is Verdict.RETURNED}
    return next((request for request in REQUEST_ORDER if request in asked), Request.NONE)


def _code(
    code: str, severity: Severity, verdict: Verdict, label: str, message: str, asks: Request | None = None
) -> FindingCode:
    # A returned finding asks for the PDF unless its row says otherwise.
    if asks is None:
        asks = Request.PDF if verdict is Verdict.RETURNED else Request.NONE
    return FindingCode(code, severity, verdict, label, message, asks)


E, W, I = Severity.ERROR, Severity.WARNING, Severity.INFO  # noqa: E741 - short names keep the table one code a line
A, R, N, X = Verdict.ACCEPTED, Verdict.RETURNED, Verdict.NEEDS_REVIEW, Verdict.IGNORED
PAPER, ADDRESSEE, GUARANTOR = Request.PAPER, Request.ADDRESSEE, Request.GUARANTOR
_ASK_GUARANTOR = "保証内容をご確認のうえ、保証会社にご相談ください。"
_STAFF_CONTACT = "担当者が確認のうえご連絡します。"

_TABLE = [
    # -- mail.*: the mail as a whole -------------------------------------------------------------------
    _code(
        "mail.too_large",
        E,
        R,
        "メールが大きすぎる",
        "メールの容量が上限({limit})を超えているため受け取れませんでした。"
        "「認証キー等のお知らせ」のPDFファイルのみを添付してお送りください。",
    ),
    _code(
        "mail.too_many_attachments",
        E,
        R,
        "添付ファイルが多すぎる",
        "添付ファイルの数が上限({limit}件)を超えているため、すべてを確認できませんでした。"
        "「認証キー等のお知らせ」のPDFファイルのみを添付してお送りください。",
    ),
    _code(
        "mail.malformed",
        W,
        N,
        "形式に問題のあるメール",
        "メールの形式に問題があり、内容の一部を読み取れなかったため、" + _STAFF_CONTACT,
    ),
    _code("mail.automatic", I, X, "自動送信メール", ""),
    _code(
        "mail.processing_failed",
        W,
        N,
        "自動で確認できなかったメール",
        "お送りいただいたメールは受け付けましたが、自動での確認ができませんでした。"
        "担当者が内容を確認のうえ、必要に応じてご連絡いたします。",
    ),
    _code(
        "mail.unreadable",
        E,
        R,
        "読み取れないメール(上限超過)",
        "恐れ入りますが、このメールは内容を読み取ることができませんでした。"
        "お手数ですが、「電子証書閲覧用「認証キー」等のお知らせ」のPDFファイルを添付して、もう一度お送りください。",
    ),
    # -- doc.*: the attached documents -----------------------------------------------------------------
    _code(
        "doc.certificate_view",
        E,
        R,
        "証書閲覧画面の印刷物",
        "添付のファイルは、e-Net保証のSTEP3で表示される電子証書の閲覧画面を保存・印刷したもので、"
        "保証証書の提出としては認められません。STEP4でダウンロードできる"
        "「電子証書閲覧用「認証キー」等のお知らせ」(PDFファイル)をお送りください。",
    ),
    _code(
        "doc.certificate_view_extra",
        I,
        A,
        "証書閲覧画面(お知らせと同封)",
        "添付の「{document}」は電子証書の閲覧画面を保存したものです。"
        "「認証キー等のお知らせ」で確認しますので、閲覧画面のご提出は不要です。",
    ),
    _code("doc.fee_receipt", I, A, "保証料領収書", "保証料領収書が添付されていましたが、ご提出は不要です。"),
    _code("doc.fee_statement", I, A, "保証料計算書", "保証料計算書が添付されていましたが、ご提出は不要です。"),
    _code("doc.advance_claim", I, A, "前払金請求書", "前払金請求書をお預かりしました。担当課へ回付します。"),
    _code(
        "doc.insurer_bond",
        W,
        N,
        "保険会社の保証証券等",
        "保険会社による履行保証保険・公共工事履行保証証券は電子保証とは別の方法で確認するため、"
        "担当者が内容を確認のうえご連絡します。",
    ),
    _code(
        "doc.encrypted_archive",
        E,
        R,
        "パスワード付きZIP",
        "パスワード付きのZIPファイルは開封できません。"
        "「認証キー等のお知らせ」のPDFファイルをそのまま添付してお送りください。",
    ),
    _code(
        "doc.encrypted",
        E,
        R,
        "パスワード付きPDF",
        "パスワードが設定されたPDFは読み取れません。"
        "e-Net保証からダウンロードしたPDFファイルを、そのままお送りください。",
    ),
    _code(
        "doc.no_text",
        E,
        R,
        "文字のないPDF(スキャン画像)",
        "PDFから文字を読み取れませんでした(スキャンした画像と思われます)。"
        "e-Net保証からダウンロードしたPDFファイルを、印刷・スキャンせずにそのままお送りください。",
    ),
    _code(
        "doc.broken",
        E,
        R,
        "読み取れないPDF",
        "添付のPDFファイル「{document}」を開けませんでした。ファイルが壊れているおそれがあります。"
        "もう一度ダウンロードしたPDFファイルをお送りください。",
    ),
    _code(
        "doc.too_large",
        E,
        R,
        "容量の大きすぎるPDF",
        "添付のPDFファイル「{document}」は容量が上限({limit})を超えているため、読み取れませんでした。"
        "e-Net保証からダウンロードしたPDFファイルを、そのままお送りください。",
    ),
    _code(
        "doc.archive_too_large",
        E,
        R,
        "上限を超える圧縮ファイル",
        "圧縮ファイル「{document}」は、展開後の容量・ファイル数・入れ子の深さのいずれかが上限を超えているため、"
        "開封できませんでした。PDFファイルを圧縮せず、そのまま添付してお送りください。",
    ),
    _code(
        "doc.archive_broken",
        E,
        R,
        "開けない圧縮ファイル",
        "添付のファイル「{document}」を展開できませんでした。ファイルが壊れているおそれがあります。"
        "PDFファイルを圧縮せず、そのまま添付してお送りください。",
    ),
    _code(
        "doc.other",
        I,
        A,
        "その他の添付ファイル",
        "添付ファイル「{document}」は電子保証の書類ではないため、確認の対象外としました。",
    ),
    # -- key.*: the 保証契約番号 and 認証キー --------------------------------------------------------------------
    _code(
        "key.missing",
        E,
        R,
        "認証キー等のお知らせが見当たらない",
        "「電子証書閲覧用「認証キー」等のお知らせ」のPDFファイルが見当たりませんでした。"
        "e-Net保証のSTEP4でダウンロードしたPDFファイルを添付してお送りください。",
    ),
    _code(
        "key.checksum",
        E,
        R,
        "認証キーの誤り(チェック文字不一致)",
        "保証契約番号{guarantee_no}の認証キーに誤りがあります(入力ミスの可能性があります)。"
        "e-Net保証からダウンロードした「認証キー等のお知らせ」のPDFファイルをそのままお送りください。",
    ),
    _code(
        "key.in_body",
        E,
        R,
        "認証キーがメール本文に記載",
        "メール本文に認証キーが記載されていましたが、当町では「電子証書閲覧用「認証キー」等のお知らせ」の"
        "PDFファイルでの提出をお願いしております。e-Net保証のSTEP4でダウンロードしたPDFファイルを"
        "添付してお送りください。",
    ),
    _code(
        "key.unreadable",
        W,
        N,
        "お知らせから番号・キーを読み取れない",
        "「認証キー等のお知らせ」から保証契約番号または認証キーを読み取れなかったため、" + _STAFF_CONTACT,
    ),
    # -- lookup.*: the certificate look-up service -----------------------------------------------------
    _code(
        "lookup.no_match",
        E,
        R,
        "保証契約番号と認証キーが一致しない",
        "保証契約番号{guarantee_no}と認証キーの組み合わせで電子証書を確認できませんでした。"
        "最新の「認証キー等のお知らせ」をe-Net保証からダウンロードし、お送りください。",
    ),
    _code(
        "lookup.revoked",
        E,
        R,
        "失効した保証",
        "保証契約番号{guarantee_no}の電子証書は失効しています。保証会社へご確認ください。",
        GUARANTOR,
    ),
    _code(
        "lookup.revoked_after_acceptance",
        E,
        N,
        "受付後に失効した保証",
        "保証契約番号{guarantee_no}の電子証書は、受付の後に失効したことを確認しました。" + _STAFF_CONTACT,
    ),
    _code(
        "lookup.refused",
        W,
        N,
        "照会の一時停止",
        "保証契約番号{guarantee_no}の照会が一時的に制限されているため、" + _STAFF_CONTACT,
    ),
    _code(
        "lookup.unavailable",
        W,
        N,
        "照会サービスに接続できない(自動で再照会)",
        "電子証書の照会サービスに一時的に接続できなかったため、書類はお預かりし、照会ができ次第あらためて"
        "結果をお知らせします。再送の必要はありません。",
    ),
    _code(
        "lookup.manual",
        W,
        N,
        "照会は職員が行う(手入力照会)",
        "保証契約番号{guarantee_no}の電子証書は担当者が照会のうえ確認し、結果をあらためてお知らせします。"
        "再送の必要はありません。",
    ),
    _code(
        "lookup.completed",
        I,
        A,
        "照会完了のお知らせ",
        "先にお預かりした書類について、電子証書の照会と確認が済みましたので、結果をお知らせします。",
    ),
    # -- cert.*: the certificate itself ----------------------------------------------------------------
    _code(
        "cert.signature",
        E,
        N,
        "電子証書の署名を検証できない",
        "保証契約番号{guarantee_no}の電子証書を検証できなかったため、" + _STAFF_CONTACT,
    ),
    _code(
        "cert.notice_mismatch",
        E,
        N,
        "お知らせと電子証書の内容が一致しない",
        "「認証キー等のお知らせ」の記載内容と電子証書の内容が一致しないため、" + _STAFF_CONTACT,
    ),
    _code(
        "cert.other_obligee",
        E,
        R,
        "発注者が当町でない",
        "保証契約番号{guarantee_no}の電子証書は、発注者が「{obligee}」となっており、当町あてのものではありません。"
        "提出先をご確認ください。",
        ADDRESSEE,
    ),
    _code(
        "cert.before_start_date",
        E,
        R,
        "電子保証の対象となる契約日より前",
        "保証契約番号{guarantee_no}の契約日({contract_date})は、当町の電子保証の対象"
        "({start_date}以降の契約)より前のため、書面の保証証書をご提出ください。",
        PAPER,
    ),
    _code(
        "cert.type_not_eligible",
        E,
        R,
        "対象外の保証の種類",
        "「{guarantee_type}」は当町の電子保証の対象外です。書面の保証証書でのご提出をお願いします。",
        PAPER,
    ),
    _code(
        "cert.category_not_eligible",
        E,
        R,
        "対象外の業務区分",
        "「{work_category}」の契約は当町の電子保証の対象外です。書面の保証証書でのご提出をお願いします。",
        PAPER,
    ),
    _code(
        "cert.intermediate_not_allowed",
        E,
        N,
        "中間前払金の対象外の業務区分",
        "「{work_category}」の契約は、当町では中間前払金の対象となっていないため、" + _STAFF_CONTACT,
    ),
    # -- amount.*: guaranteed amounts against the contract (every number in yen) -----------------------
    _code(
        "amount.contract_guarantee_low",
        E,
        R,
        "契約保証の保証金額が不足",
        "契約保証の保証金額({guarantee_amount})は、請負代金額{contract_amount}の{ratio}にあたる"
        "{required}に足りません({basis}当町では{ratio}以上が必要です)。" + _ASK_GUARANTOR,
        GUARANTOR,
    ),
    _code(
        "amount.advance_high",
        E,
        N,
        "前払金の保証金額が上限超過",
        "前払金保証の保証金額({guarantee_amount})が、請負代金額{contract_amount}に対する上限"
        "{ratio}({limit})を超えているため、" + _STAFF_CONTACT,
    ),
    _code(
        "amount.intermediate_advance_high",
        E,
        N,
        "中間前払金の保証金額が上限超過",
        "中間前払金保証の保証金額({guarantee_amount})が、請負代金額{contract_amount}に対する上限"
        "{ratio}({limit})を超えているため、" + _STAFF_CONTACT,
    ),
    _code(
        "amount.advance_total_high",
        E,
        N,
        "前払金と中間前払金の合計が上限超過",
        "前払金({advance_amount})と中間前払金({intermediate_amount})の合計{total}が、請負代金額"
        "{contract_amount}に対する上限{ratio}({limit})を超えているため、" + _STAFF_CONTACT,
    ),
    _code(
        "amount.advance_below_threshold",
        W,
        N,
        "前払金の対象とならない契約金額",
        "請負代金額({contract_amount})が、当町で前払金の対象となる金額({threshold}{boundary})に"
        "当たらないため、" + _STAFF_CONTACT,
    ),
    _code(
        "amount.advance_not_register",
        W,
        N,
        "保証金額が支払予定の前払金額と一致しない",
        "{guarantee_type}の保証金額({guarantee_amount})が、当町の支払予定額({register_amount})"
        "{expected}となっていないため、" + _STAFF_CONTACT,
    ),
    _code(
        "amount.intermediate_without_advance",
        W,
        N,
        "前払金の記録がない中間前払金",
        "中間前払金保証の提出がありましたが、この契約の前払金を当町で確認できないため、" + _STAFF_CONTACT,
    ),
    # -- period.*: the guarantee period (every date in 和暦) ---------------------------------------------
    _code(
        "period.ends_before_completion",
        E,
        R,
        "保証期間が工期末に届かない",
        "保証契約番号{guarantee_no}の保証期間の終期({period_end})が、工期末({completion_date})より前です。"
        + _ASK_GUARANTOR,
        GUARANTOR,
    ),
    _code(
        "period.starts_after_contract_date",
        E,
        R,
        "契約保証の保証期間が契約日より後に始まる",
        "保証契約番号{guarantee_no}の契約保証の保証期間の始期({period_start})が、契約日({contract_date})より"
        "後になっています。契約保証は契約日から保証されている必要があります。" + _ASK_GUARANTOR,
        GUARANTOR,
    ),
    _code(
        "period.intermediate_too_early",
        E,
        N,
        "中間前払金の保証期間が認定前に始まる",
        "中間前払金保証(保証期間の始期{period_start})は、{condition}ため、" + _STAFF_CONTACT,
    ),
    # -- register.*: the town's contract register (台帳) -------------------------------------------------
    _code(
        "register.no_contract",
        W,
        N,
        "契約台帳に該当なし",
        "契約番号{contract_no}の契約を当町の台帳で確認できなかったため、" + _STAFF_CONTACT,
    ),
    _code(
        "register.matched_by_work",
        I,
        A,
        "工事名と受注者で台帳と照合",
        "電子証書に契約番号の記載がないため、工事名と受注者名で当町の契約台帳(契約番号{contract_no})と照合しました。",
    ),
    _code(
        "register.contractor_mismatch",
        W,
        N,
        "受注者が台帳と一致しない",
        "電子証書の受注者名「{contractor_name}」が、当町の契約台帳の受注者名と一致しないため、" + _STAFF_CONTACT,
    ),
    _code(
        "register.work_mismatch",
        W,
        N,
        "工事名が台帳と一致しない",
        "電子証書の工事(業務)名「{work_name}」が、当町の契約台帳と一致しないため、" + _STAFF_CONTACT,
    ),
    _code(
        "register.amount_mismatch",
        W,
        N,
        "契約金額が台帳と一致しない",
        "電子証書の契約金額({contract_amount})が、当町の契約台帳の請負代金額({register_amount})と"
        "一致しないため、" + _STAFF_CONTACT,
    ),
    # -- sender.*: who sent the mail -------------------------------------------------------------------
    _code(
        "sender.not_authenticated",
        W,
        N,
        "送信元の認証に失敗",
        "送信元のメールアドレスを確認できなかったため、" + _STAFF_CONTACT,
    ),
    # -- submission.*: the guarantee against those already accepted ------------------------------------
    _code(
        "submission.duplicate",
        I,
        A,
        "受付済みの保証",
        "保証契約番号{guarantee_no}は、すでに受付済みです(受付番号{previous_receipt})。再度のご提出は不要です。",
    ),
    # -- reply.*: recorded after the reply decision (digest and staff only; never in a reply, none was sent) ---
    _code(
        "reply.suppressed",
        I,
        A,
        "返信を保留(送信上限)",
        "短時間に多数のメールをお送りいただいたため、返信を控えております。",
    ),
    _code(
        "reply.withheld", I, A, "返信なし(送信元を確認できず)", "送信元を確認できなかったため、返信を控えております。"
    ),
]


CODES: dict[str, FindingCode] = {spec.code: spec for spec in _TABLE}
if len(CODES) != len(_TABLE):
    raise RuntimeError("duplicate finding code in rules/findings.py")

# Findings that promise the sender a second mail: the look-up is still to be done (retried by the
# desk, or by a clerk by hand), so the first reply says the result follows instead of "we may call you".
RESULT_FOLLOWS: frozenset[str] = frozenset({"lookup.unavailable", "lookup.manual"})
if not CODES.keys() >= RESULT_FOLLOWS:
    raise RuntimeError("RESULT_FOLLOWS names an unknown finding code")
