"""Reading ``keydesk guarantor issue`` CSV files: one guarantee request per row, validated.

Excel writes CSV as UTF-8 with a BOM or as CP932 (Shift_JIS), and turns ISO dates into
``2026/4/1`` and amounts into ``12,345,000``: all of these are read. Each bad row becomes a
``RowError`` with its line number (the header is line 1) and every problem in it, so the person
fixing the file sees them at once; good rows are unaffected.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

from email_validator import EmailNotValidError, validate_email

from guarantor.errors import GuarantorError
from rules.domain import GuaranteeType
from formats.csv_table import CsvTableError, open_table

COLUMNS = (
    "guarantee_type",
    "contractor_name",
    "contractor_email",
    "obligee",
    "desk",
    "contract_no",
    "work_name",
    "work_category",
    "contract_amount",
    "guarantee_amount",
    "fee",
    "contract_date",
    "completion_date",
    "period_start",
    "period_end",
    "bulk_fee_payment",
)
# Longest text accepted per column: they go into PDFs, mails and columns of limited size.
_MAX_CHARS = {
    "contractor_name": 100,
    "obligee": 100,
    "desk": 64,
    "contract_no": 64,
    "work_name": 200,
    "work_category": 64,
}
MAX_ROWS = 10_000
_MAX_YEN = 10**13
_AMOUNT_RE = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+")
_DATE_RE = re.compile(r"([0-9]{4})[-/]([0-9]{1,2})[-/]([0-9]{1,2})")
_DESK_RE = re.compile(r"[A-Za-z0-9_-]+")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}

RESERVATION_REASON = "契約保証予約は電子交付の対象外のため、電子証書を発行できません(書面での交付となります)"


@dataclass(frozen=True)
class GuaranteeRequest:
    line: int
    guarantee_type: GuaranteeType
    contractor_name: str
    contractor_email: str
    obligee: str
    desk: str
    contract_no: str
    work_name: str
    work_category: str
    contract_amount: int
    guarantee_amount: int
    fee: int
    contract_date: date
    completion_date: date
    period_start: date
    period_end: date
    bulk_fee_payment: bool


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str


def read_requests(data: bytes) -> list[GuaranteeRequest | RowError]:
    """Every non-blank row after the header, as a request or an error, in file order."""
    try:
        columns, records = open_table(data, COLUMNS)
        results: list[GuaranteeRequest | RowError] = []
        for line, fields in records:
            if len(results) >= MAX_ROWS:
                raise GuarantorError(f"行が多すぎます(1ファイル{MAX_ROWS}行まで。ファイルを分けてください)")
            results.append(_read_row(line, columns, fields))
    except CsvTableError as exc:
        raise GuarantorError(str(exc)) from None
    return results


class _Row:
    """Field parsers that collect problems instead of stopping at the first."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.problems: list[str] = []

    def problem(self, column: str, reason: str) -> None:
        self.problems.append(f"{column}: {reason}")

    def text(self, column: str) -> str:
        value = self.values[column].strip()
        if not value:
            self.problem(column, "入力されていません")
        elif any(unicodedata.category(c).startswith("C") for c in value):
            self.problem(column, "改行や制御文字は使えません")
        elif len(value) > _MAX_CHARS[column]:
            self.problem(column, f"長すぎます({len(value)}文字。{_MAX_CHARS[column]}文字以内)")
        return value

    def amount(self, column: str, minimum: int) -> int:
        raw = self.values[column]
        value = unicodedata.normalize("NFKC", raw).strip().lstrip("¥\\").removesuffix("円").strip()
        if not _AMOUNT_RE.fullmatch(value):
            self.problem(
                column, f"金額は円単位の整数で入力してください(例: 12345000 または 12,345,000): {raw.strip()!r}"
            )
            return 0
        number = int(value.replace(",", ""))
        if not minimum <= number < _MAX_YEN:
            self.problem(column, f"金額が範囲外です({number:,}円)")
        return number

    def day(self, column: str) -> date:
        raw = self.values[column]
        match = _DATE_RE.fullmatch(unicodedata.normalize("NFKC", raw).strip())
        try:
            if not match:
                raise ValueError
            value = date(*(int(part) for part in match.groups()))
        except ValueError:
            self.problem(column, f"日付は 2026-04-01 の形で入力してください: {raw.strip()!r}")
            return date(2000, 1, 1)
        if not 2000 <= value.year <= 2099:
            self.problem(column, f"年が範囲外です: {raw.strip()!r}")
        return value

    def flag(self, column: str) -> bool:
        raw = self.values[column]
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value not in _FALSE:
            self.problem(column, f"true または false で入力してください: {raw.strip()!r}")
        return False


def _read_row(line: int, columns: list[str], fields: list[str]) -> GuaranteeRequest | RowError:
    if len(fields) > len(columns) and any(v.strip() for v in fields[len(columns) :]):
        return RowError(line, f"列が多すぎます({len(fields)}列。見出しは{len(columns)}列です)")
    if len(fields) < len(columns):
        return RowError(line, f"列が足りません({len(fields)}列。見出しは{len(columns)}列です)")
    row = _Row(dict(zip(columns, fields)))
    raw_type = unicodedata.normalize("NFKC", row.values["guarantee_type"]).strip()
    try:
        guarantee_type = GuaranteeType(raw_type)
    except ValueError:
        allowed = "、".join(t.value for t in GuaranteeType)
        return RowError(line, f"guarantee_type: 保証の種類は {allowed} のいずれかです: {raw_type!r}")
    if guarantee_type is GuaranteeType.CONTRACT_RESERVATION:
        return RowError(line, RESERVATION_REASON)

    email = row.values["contractor_email"].strip()
    try:
        email = validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        row.problem("contractor_email", f"メールアドレスが正しくありません: {email!r} ({exc})")
    desk = row.text("desk")
    if desk and not _DESK_RE.fullmatch(desk):
        row.problem("desk", f"窓口 ID は半角英数字・-・_ で入力してください: {desk!r}")

    request = GuaranteeRequest(
        line=line,
        guarantee_type=guarantee_type,
        contractor_name=row.text("contractor_name"),
        contractor_email=email,
        obligee=row.text("obligee"),
        desk=desk,
        contract_no=row.text("contract_no"),
        work_name=row.text("work_name"),
        work_category=row.text("work_category"),
        contract_amount=row.amount("contract_amount", 1),
        guarantee_amount=row.amount("guarantee_amount", 1),
        fee=row.amount("fee", 0),
        contract_date=row.day("contract_date"),
        completion_date=row.day("completion_date"),
        period_start=row.day("period_start"),
        period_end=row.day("period_end"),
        bulk_fee_payment=row.flag("bulk_fee_payment"),
    )
    if not row.problems:
        if request.guarantee_amount > request.contract_amount:
            row.problem("guarantee_amount", "保証金額が請負代金額を超えています")
        if request.completion_date < request.contract_date:
            row.problem("completion_date", "工期末が契約締結日より前です")
        if request.period_end < request.period_start:
            row.problem("period_end", "保証期間の終期が始期より前です")
    if row.problems:
        return RowError(line, "; ".join(row.problems))
    return request
