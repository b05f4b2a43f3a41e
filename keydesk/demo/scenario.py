"""The demo's cast: contractors, the guarantees the guarantor issues, the town's contract register,
and the mails the contractors send to 美郷町's contract desk, each with the verdict it must get.

Everything here is invented (firms, people, addresses under ``.example``). The register spells
some firms differently from the certificates (㈱ / (有)), as a town's spreadsheet does; the
desk must still match them. ``keydesk.demo`` plays the story; ``tests/test_demo.py`` checks it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from guarantor.csv_input import COLUMNS as GUARANTEE_COLUMNS
from intake.register_store import COLUMNS as CONTRACT_COLUMNS
from rules.findings import Verdict

DESK = "misato"  # the desk of the default configuration
OTHER_TOWN_DESK = "kitayama"  # a neighbouring town: not served by this deployment


@dataclass(frozen=True)
class Contractor:
    key: str
    name: str  # as on the certificate
    address: str
    person: str
    phone: str
    register_name: str | None = None  # how the town's register spells the firm, when it differs


@dataclass(frozen=True)
class Guarantee:
    """One row of the guarantor's issuing CSV (and, for 美郷町, of the town's register)."""

    key: str
    contractor: str
    guarantee_type: str
    contract_no: str
    work_name: str
    contract_amount: int
    guarantee_amount: int
    fee: int
    contract_date: date
    completion_date: date
    period_start: date
    period_end: date
    work_category: str = "工事"
    obligee: str = "美郷町長"
    desk: str = DESK
    bulk_fee_payment: bool = False
    issued: bool = True  # False: never issued (the 契約保証予約 notice the contractor has is not in the registry)
    revoke_reason: str | None = None  # revoked by the guarantor before the contractor mails it
    department: str = "kensetsu"  # the register's department in charge of the works
    # Added with issue 14: the register's own category label (建設工事 → 工事 by the rules' aliases) and 低入札.
    register_category: str | None = None
    low_bid: bool = False


class Style(StrEnum):
    """How the mail is written: which mailer, and how the PDF travels."""

    THUNDERBIRD = "thunderbird"
    OUTLOOK2010_JIS = "outlook2010_jis"  # ISO-2022-JP the Windows way (①, ㈱, 髙)
    OUTLOOK_WINMAIL = "outlook_winmail"  # the PDF inside winmail.dat
    FORWARD = "forward"  # an internal mail forwarded as an attachment (message/rfc822)
    PPAP = "ppap"  # a password-protected ZIP


class Doc(StrEnum):
    """What the contractor attaches, for a guarantee."""

    KEY_NOTICE = "key_notice"  # the STEP4 PDF: right
    CERTIFICATE_VIEW = "certificate_view"  # the STEP3 screen saved as PDF
    FEE_RECEIPT = "fee_receipt"  # taken from the guarantor's notice mail in the contractor's mailbox
    TYPO_KEY_NOTICE = "typo_key_notice"  # the key notice with one character of the key changed
    UNREGISTERED_NOTICE = "unregistered_notice"  # a key notice for a guarantee not in the registry


@dataclass(frozen=True)
class ScenarioMail:
    key: str
    contractor: str
    what: str  # what was sent, for the table (Japanese)
    style: Style
    documents: tuple[tuple[Doc, str], ...]  # (document, guarantee key)
    subject: str  # a resend answers the desk's reply instead: "Re: " + that reply's subject
    note: str  # the sentence of the body that says what is attached
    expected_verdict: Verdict
    expected_codes: frozenset[str]  # every one of these findings must be among the mail's findings
    round: int = 1  # 2: sent after the desk's replies to round 1 have arrived
    resend_of: str | None = None  # the returned mail this one answers


CONTRACTORS = (
    Contractor("misato", "株式会社美郷建設", "info@misato-kensetsu.example", "美郷 一郎", "0982-00-1101", "㈱美郷建設"),
    Contractor(
        "yamada", "有限会社山田土木", "keiri@yamada-doboku.example", "山田 花子", "0982-00-1102", "(有)山田土木"
    ),
    Contractor("sakamoto", "株式会社坂本組", "info@sakamoto-gumi.example", "坂本 健二", "0982-00-1103"),
    Contractor("nishitani", "株式会社西谷工務店", "office@nishitani-koumuten.example", "西谷 美咲", "0982-00-1104"),
    Contractor("kawaguchi", "有限会社川口設備", "kawaguchi@kawaguchi-setsubi.example", "川口 誠", "0982-00-1105"),
    Contractor("togo", "株式会社東郷建設", "soumu@togo-kensetsu.example", "東郷 和也", "0982-00-1106"),
    Contractor("kitayama", "北山建設株式会社", "info@kitayama-kensetsu.example", "北山 翔太", "0983-00-2201"),
    Contractor("matsuo", "株式会社松尾電気工業", "matsuo@matsuo-denki.example", "松尾 拓也", "0982-00-1107"),
    Contractor("omori", "有限会社大森造園", "omori@omori-zouen.example", "大森 陽子", "0982-00-1108"),
    Contractor("nakamura", "株式会社中村建設", "keiyaku@nakamura-kensetsu.example", "中村 修", "0982-00-1109"),
    Contractor("noguchi", "株式会社野口舗道", "noguchi@noguchi-hodo.example", "野口 直樹", "0982-00-1110"),
    Contractor("morita", "株式会社森田測量設計", "sekkei@morita-sokuryo.example", "森田 恵", "0982-00-1111"),
    Contractor("fujii", "有限会社藤井工業", "fujii@fujii-kogyo.example", "藤井 大輔", "0982-00-1112"),
    Contractor(
        "takahashi", "株式会社髙橋建設", "tanaka@takahashi-kensetsu.example", "田中 太郎", "0982-00-1113", "㈱髙橋建設"
    ),
    # Added with issue 14.
    Contractor("hamada", "浜田土建株式会社", "info@hamada-doken.example", "浜田 亮", "0982-00-1114", "浜田土建㈱"),
)

_D = date
GUARANTEES = (
    Guarantee(
        "misato_advance",
        "misato",
        "前払金保証",
        "R8-土木-101",
        "町道美郷中央線道路改良工事",
        30_800_000,
        12_320_000,
        98_760,
        _D(2026, 4, 15),
        _D(2027, 3, 15),
        _D(2026, 4, 15),
        _D(2027, 3, 31),
    ),
    Guarantee(
        "yamada_advance",
        "yamada",
        "前払金保証",
        "R8-土木-102",
        "美郷川護岸補修工事",
        18_700_000,
        7_480_000,
        61_200,
        _D(2026, 5, 1),
        _D(2027, 2, 26),
        _D(2026, 5, 1),
        _D(2027, 2, 28),
    ),
    Guarantee(
        "yamada_intermediate",
        "yamada",
        "中間前払金保証",
        "R8-土木-102",
        "美郷川護岸補修工事",
        18_700_000,
        3_740_000,
        18_400,
        _D(2026, 5, 1),
        _D(2027, 2, 26),
        _D(2026, 10, 1),
        _D(2027, 2, 28),
    ),
    Guarantee(
        "sakamoto_contract",
        "sakamoto",
        "契約保証",
        "R8-建築-103",
        "美郷町立美郷小学校体育館改修工事",
        52_800_000,
        5_280_000,
        42_100,
        _D(2026, 6, 1),
        _D(2027, 3, 19),
        _D(2026, 6, 1),
        _D(2027, 3, 19),
        bulk_fee_payment=True,
    ),
    Guarantee(
        "nishitani_advance",
        "nishitani",
        "前払金保証",
        "R8-建築-104",
        "美郷町公民館屋根改修工事",
        9_680_000,
        3_872_000,
        30_900,
        _D(2026, 6, 10),
        _D(2026, 12, 25),
        _D(2026, 6, 10),
        _D(2027, 1, 15),
    ),
    Guarantee(
        "kawaguchi_reservation",
        "kawaguchi",
        "契約保証予約",
        "R8-設備-112",
        "美郷町学校給食センター空調設備更新工事",
        19_800_000,
        1_980_000,
        0,
        _D(2026, 7, 1),
        _D(2027, 2, 26),
        _D(2026, 7, 1),
        _D(2027, 2, 26),
        issued=False,
    ),
    Guarantee(
        "togo_before_start",
        "togo",
        "前払金保証",
        "R7-土木-088",
        "町道西ノ谷線舗装工事",
        14_300_000,
        5_720_000,
        45_600,
        _D(2026, 3, 25),
        _D(2026, 12, 18),
        _D(2026, 3, 25),
        _D(2026, 12, 25),
    ),
    Guarantee(
        "kitayama_other_town",
        "kitayama",
        "前払金保証",
        "R8-北-015",
        "北山町営住宅外壁改修工事",
        22_000_000,
        8_800_000,
        70_200,
        _D(2026, 6, 20),
        _D(2027, 1, 29),
        _D(2026, 6, 20),
        _D(2027, 2, 15),
        obligee="北山町長",
        desk=OTHER_TOWN_DESK,
    ),
    Guarantee(
        "matsuo_typo",
        "matsuo",
        "前払金保証",
        "R8-設備-105",
        "美郷町役場庁舎照明設備改修工事",
        12_100_000,
        4_840_000,
        38_600,
        _D(2026, 7, 6),
        _D(2027, 1, 29),
        _D(2026, 7, 6),
        _D(2027, 2, 15),
    ),
    Guarantee(
        "omori_revoked",
        "omori",
        "契約保証",
        "R8-土木-106",
        "美郷中央公園植栽整備工事",
        8_250_000,
        825_000,
        9_800,
        _D(2026, 7, 13),
        _D(2026, 12, 18),
        _D(2026, 7, 13),
        _D(2026, 12, 18),
        revoke_reason="保証委託者からの申出により保証契約を解除したため",
    ),
    Guarantee(
        "nakamura_low",
        "nakamura",
        "契約保証",
        "R8-土木-107",
        "美郷橋橋梁補修工事",
        61_600_000,
        3_080_000,
        27_300,
        _D(2026, 7, 21),
        _D(2027, 3, 12),
        _D(2026, 7, 21),
        _D(2027, 3, 12),
    ),
    Guarantee(
        "noguchi_ppap",
        "noguchi",
        "前払金保証",
        "R8-土木-108",
        "町道美郷北線舗装補修工事",
        16_500_000,
        6_600_000,
        52_700,
        _D(2026, 8, 3),
        _D(2027, 1, 22),
        _D(2026, 8, 3),
        _D(2027, 2, 5),
    ),
    Guarantee(
        "morita_forward",
        "morita",
        "前払金保証",
        "R8-委託-109",
        "美郷町橋梁長寿命化修繕計画策定業務",
        7_700_000,
        2_310_000,
        24_600,
        _D(2026, 8, 17),
        _D(2027, 3, 19),
        _D(2026, 8, 17),
        _D(2027, 3, 31),
        work_category="建設コンサルタント業務",
    ),
    Guarantee(
        "fujii_winmail",
        "fujii",
        "契約保証",
        "R8-設備-110",
        "美郷町浄水場送水ポンプ設備更新工事",
        34_100_000,
        3_410_000,
        28_900,
        _D(2026, 9, 1),
        _D(2027, 3, 19),
        _D(2026, 9, 1),
        _D(2027, 3, 19),
    ),
    Guarantee(
        "takahashi_jis",
        "takahashi",
        "前払金保証",
        "R8-土木-111",
        "町道1号線舗装補修工事",
        25_300_000,
        10_120_000,
        80_800,
        _D(2026, 9, 14),
        _D(2027, 3, 12),
        _D(2026, 9, 14),
        _D(2027, 3, 31),
    ),
    # Added with issue 14: a 低入札 contract whose 契約保証 is 10% (30% needed); the obligee written with the
    # prefecture and the mayor's name, the register's label 建設工事 — both accepted as they are.
    Guarantee(
        "hamada_low_bid",
        "hamada",
        "契約保証",
        "R8-土木-113",
        "美郷西地区排水路改修工事",
        23_100_000,
        2_310_000,
        19_800,
        _D(2026, 9, 24),
        _D(2027, 3, 19),
        _D(2026, 9, 24),
        _D(2027, 3, 19),
        obligee="島根県美郷町長 山田太郎",
        department="keiyaku",
        register_category="建設工事",
        low_bid=True,
    ),
    # A 中間前払金 whose period starts before the middle of the 工期 (no 認定 yet): a person must look
    # (it is the 要確認 item the demo leaves for staff to decide in the console).
    Guarantee(
        "misato_intermediate_early",
        "misato",
        "中間前払金保証",
        "R8-土木-101",
        "町道美郷中央線道路改良工事",
        30_800_000,
        6_160_000,
        24_900,
        _D(2026, 4, 15),
        _D(2027, 3, 15),
        _D(2026, 6, 1),
        _D(2027, 3, 31),
    ),
)

_ACCEPTED, _RETURNED, _REVIEW = Verdict.ACCEPTED, Verdict.RETURNED, Verdict.NEEDS_REVIEW
_NONE: frozenset[str] = frozenset()

MAILS = (
    ScenarioMail(
        "correct",
        "misato",
        "認証キー等のお知らせ(前払金保証)",
        Style.THUNDERBIRD,
        ((Doc.KEY_NOTICE, "misato_advance"),),
        "【電子保証】町道美郷中央線道路改良工事 株式会社美郷建設",
        "前払金保証の「認証キー等のお知らせ」を添付いたします。",
        _ACCEPTED,
        _NONE,
    ),
    ScenarioMail(
        "two_notices",
        "yamada",
        "お知らせ2件を1通で(前払金・中間前払金)",
        Style.THUNDERBIRD,
        ((Doc.KEY_NOTICE, "yamada_advance"), (Doc.KEY_NOTICE, "yamada_intermediate")),
        "【電子保証】美郷川護岸補修工事 前払金・中間前払金 有限会社山田土木",
        "前払金保証と中間前払金保証の「認証キー等のお知らせ」を2件添付いたします。",
        _ACCEPTED,
        _NONE,
    ),
    ScenarioMail(
        "step3_printout",
        "sakamoto",
        "STEP3の閲覧画面を保存したPDF(誤り)",
        Style.THUNDERBIRD,
        ((Doc.CERTIFICATE_VIEW, "sakamoto_contract"),),
        "【電子保証】美郷町立美郷小学校体育館改修工事 契約保証",
        "契約保証の電子証書を保存しましたので添付いたします。",
        _RETURNED,
        frozenset({"doc.certificate_view"}),
    ),
    ScenarioMail(
        "fee_receipt",
        "nishitani",
        "保証料領収書のみ(誤り)",
        Style.THUNDERBIRD,
        ((Doc.FEE_RECEIPT, "nishitani_advance"),),
        "【電子保証】美郷町公民館屋根改修工事 株式会社西谷工務店",
        "保証会社から届いた書類を添付いたします。",
        _RETURNED,
        frozenset({"doc.fee_receipt", "key.missing"}),
    ),
    ScenarioMail(
        "reservation",
        "kawaguchi",
        "契約保証予約のお知らせ",
        Style.THUNDERBIRD,
        ((Doc.UNREGISTERED_NOTICE, "kawaguchi_reservation"),),
        "【電子保証】美郷町学校給食センター空調設備更新工事 契約保証予約",
        "契約保証予約の「認証キー等のお知らせ」を添付いたします。",
        _RETURNED,
        frozenset({"cert.type_not_eligible"}),
    ),
    ScenarioMail(
        "before_start",
        "togo",
        "令和8年3月契約分(電子保証の対象外)",
        Style.OUTLOOK2010_JIS,
        ((Doc.KEY_NOTICE, "togo_before_start"),),
        "【電子保証】町道西ノ谷線舗装工事 ㈱東郷建設",
        "前払金保証の「認証キー等のお知らせ」を添付いたします。",
        _RETURNED,
        frozenset({"cert.before_start_date"}),
    ),
    ScenarioMail(
        "other_town",
        "kitayama",
        "北山町あての電子証書",
        Style.THUNDERBIRD,
        ((Doc.KEY_NOTICE, "kitayama_other_town"),),
        "【電子保証】町営住宅外壁改修工事 北山建設株式会社",
        "前払金保証の「認証キー等のお知らせ」を添付いたします。",
        _RETURNED,
        frozenset({"cert.other_obligee"}),
    ),
    ScenarioMail(
        "typo_key",
        "matsuo",
        "認証キーが1文字違うお知らせ",
        Style.THUNDERBIRD,
        ((Doc.TYPO_KEY_NOTICE, "matsuo_typo"),),
        "【電子保証】美郷町役場庁舎照明設備改修工事 株式会社松尾電気工業",
        "前払金保証の「認証キー等のお知らせ」を添付いたします。",
        _RETURNED,
        frozenset({"key.checksum"}),
    ),
    ScenarioMail(
        "revoked",
        "omori",
        "失効した保証のお知らせ",
        Style.THUNDERBIRD,
        ((Doc.KEY_NOTICE, "omori_revoked"),),
        "【電子保証】美郷中央公園植栽整備工事 有限会社大森造園",
        "契約保証の「認証キー等のお知らせ」を添付いたします。",
        _RETURNED,
        frozenset({"lookup.revoked"}),
    ),
    ScenarioMail(
        "low_contract_guarantee",
        "nakamura",
        "契約金額の5%の契約保証",
        Style.THUNDERBIRD,
        ((Doc.KEY_NOTICE, "nakamura_low"),),
        "【電子保証】美郷橋橋梁補修工事 契約保証 株式会社中村建設",
        "契約保証の「認証キー等のお知らせ」を添付いたします。",
        _RETURNED,
        frozenset({"amount.contract_guarantee_low"}),
    ),
    ScenarioMail(
        "encrypted_zip",
        "noguchi",
        "パスワード付きZIP(PPAP)",
        Style.PPAP,
        ((Doc.KEY_NOTICE, "noguchi_ppap"),),
        "【電子保証】町道美郷北線舗装補修工事 株式会社野口舗道",
        "「認証キー等のお知らせ」を圧縮して添付いたします。パスワードは別のメールでお送りいたします。",
        _RETURNED,
        frozenset({"doc.encrypted_archive"}),
    ),
    ScenarioMail(
        "forwarded",
        "morita",
        "社内メールを添付で転送",
        Style.FORWARD,
        ((Doc.KEY_NOTICE, "morita_forward"),),
        "Fwd: 【電子保証】橋梁長寿命化修繕計画策定業務 認証キー等のお知らせ",
        "事務担当から届いた「認証キー等のお知らせ」を転送いたします。",
        _ACCEPTED,
        _NONE,
    ),
    ScenarioMail(
        "winmail_dat",
        "fujii",
        "Outlookのwinmail.dat",
        Style.OUTLOOK_WINMAIL,
        ((Doc.KEY_NOTICE, "fujii_winmail"),),
        "【電子保証】浄水場送水ポンプ設備更新工事 契約保証",
        "契約保証の「認証キー等のお知らせ」を添付いたします。",
        _ACCEPTED,
        _NONE,
    ),
    ScenarioMail(
        "iso2022jp",
        "takahashi",
        "古いOutlook(ISO-2022-JP、①・㈱入り)",
        Style.OUTLOOK2010_JIS,
        ((Doc.KEY_NOTICE, "takahashi_jis"),),
        "【電子保証】町道①号線舗装補修工事 ㈱髙橋建設",
        "町道①号線舗装補修工事の前払金保証について、「認証キー等のお知らせ」を添付いたします。",
        _ACCEPTED,
        _NONE,
    ),
    ScenarioMail(
        "resend",
        "sakamoto",
        "正しいお知らせを再送(返送のあと)",
        Style.THUNDERBIRD,
        ((Doc.KEY_NOTICE, "sakamoto_contract"),),
        "",
        "ご指摘ありがとうございました。STEP4でダウンロードした「認証キー等のお知らせ」をお送りいたします。",
        _ACCEPTED,
        _NONE,
        round=2,
        resend_of="step3_printout",
    ),
    # Added with issue 14: the careful clerk's rules.
    ScenarioMail(
        "low_bid",
        "hamada",
        "低入札の契約で契約金額の10%の契約保証",
        Style.THUNDERBIRD,
        ((Doc.KEY_NOTICE, "hamada_low_bid"),),
        "【電子保証】美郷西地区排水路改修工事 契約保証 浜田土建株式会社",
        "契約保証の「認証キー等のお知らせ」を添付いたします。",
        _RETURNED,
        frozenset({"amount.contract_guarantee_low"}),
    ),
    ScenarioMail(
        "intermediate_early",
        "misato",
        "工期の半ばより前に始まる中間前払金保証",
        Style.THUNDERBIRD,
        ((Doc.KEY_NOTICE, "misato_intermediate_early"),),
        "【電子保証】町道美郷中央線道路改良工事 中間前払金 株式会社美郷建設",
        "中間前払金保証の「認証キー等のお知らせ」を添付いたします。",
        _REVIEW,
        frozenset({"period.intermediate_too_early"}),
    ),
)


def contractor(key: str) -> Contractor:
    return _CONTRACTORS[key]


def guarantee(key: str) -> Guarantee:
    return _GUARANTEES[key]


_CONTRACTORS = {c.key: c for c in CONTRACTORS}
_GUARANTEES = {g.key: g for g in GUARANTEES}


def issued_guarantees() -> list[Guarantee]:
    """The guarantees the guarantor issues, in the order of its CSV."""
    return [g for g in GUARANTEES if g.issued]


def mail_body(mail: ScenarioMail, town: str) -> str:
    """The body a contractor writes: greeting, what is attached, signature."""
    firm = contractor(mail.contractor)
    return "\n".join(
        [
            f"{town} 契約係 御中",
            "",
            "いつも大変お世話になっております。",
            f"{firm.name}の{firm.person.split()[0]}でございます。",
            "",
            mail.note,
            "ご確認のほど、よろしくお願いいたします。",
            "",
            "--------------------------------",
            firm.name,
            firm.person,
            f"TEL {firm.phone}",
            firm.address,
            "--------------------------------",
            "",
        ]
    )


def _csv(header: tuple[str, ...], rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def guarantees_csv() -> bytes:
    """The guarantor's issuing file (``keydesk guarantor issue``), one row per issued guarantee."""
    rows = []
    for g in issued_guarantees():
        firm = contractor(g.contractor)
        values = {
            "guarantee_type": g.guarantee_type,
            "contractor_name": firm.name,
            "contractor_email": firm.address,
            "obligee": g.obligee,
            "desk": g.desk,
            "contract_no": g.contract_no,
            "work_name": g.work_name,
            "work_category": g.work_category,
            "contract_amount": str(g.contract_amount),
            "guarantee_amount": str(g.guarantee_amount),
            "fee": str(g.fee),
            "contract_date": g.contract_date.isoformat(),
            "completion_date": g.completion_date.isoformat(),
            "period_start": g.period_start.isoformat(),
            "period_end": g.period_end.isoformat(),
            "bulk_fee_payment": "true" if g.bulk_fee_payment else "false",
        }
        rows.append([values[column] for column in GUARANTEE_COLUMNS])
    return _csv(GUARANTEE_COLUMNS, rows)


def contracts_csv() -> bytes:
    """美郷町's contract register (``keydesk contracts import``): every contract of the desk, one row each.

    Amounts with commas and dates with slashes, as the town's spreadsheet writes them.
    """
    rows, seen = [], set()
    for g in GUARANTEES:
        if g.desk != DESK or g.contract_no in seen:
            continue
        seen.add(g.contract_no)
        firm = contractor(g.contractor)
        advances = {x.guarantee_type: x.guarantee_amount for x in GUARANTEES if x.contract_no == g.contract_no}
        values = {
            "contract_no": g.contract_no,
            "desk": g.desk,
            "work_name": g.work_name,
            "work_category": g.work_category,
            "contractor_name": firm.register_name or firm.name,
            "contract_amount": f"{g.contract_amount:,}",
            "contract_date": f"{g.contract_date.year}/{g.contract_date.month}/{g.contract_date.day}",
            "completion_date": f"{g.completion_date.year}/{g.completion_date.month}/{g.completion_date.day}",
            "advance_amount": _amount_or_blank(advances.get("前払金保証")),
            "intermediate_advance_amount": _amount_or_blank(advances.get("中間前払金保証")),
            "department": g.department,
            "low_bid": "○" if g.low_bid else "",
        }
        if g.register_category:
            values["work_category"] = g.register_category
        rows.append([values[column] for column in _REGISTER_COLUMNS])
    return _csv(_REGISTER_COLUMNS, rows)


_REGISTER_COLUMNS = (*CONTRACT_COLUMNS, "low_bid")  # 低入札 is an optional column of the register


def _amount_or_blank(amount: int | None) -> str:
    return f"{amount:,}" if amount else ""
