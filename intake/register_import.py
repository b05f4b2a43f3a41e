"""The town's contract register from CSV, as towns keep it: their own column names (契約番号, 担当課 …),
departments by id or display name, work-category labels mapped through the rules' aliases, and the
optional columns 低入札 and 中間前払金 認定 (a date or a 認定済 flag).

Bad lines are reported with their line number and reason and skipped; the good ones are inserted
or updated by (desk, contract_no). ``dry_run`` reports what would change and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Collection, Mapping, Protocol

from sqlmodel import Session, select

from rules.domain import Contract
from rules.wording import yen
from store.tables import Contract as ContractRow
from verifier.csv_table import CsvTableError, open_table
from verifier.normalise import nfkc, parse_amount, parse_date

COLUMNS = (
    "contract_no", "desk", "work_name", "work_category", "contractor_name", "contract_amount",
    "contract_date", "completion_date", "advance_amount", "intermediate_advance_amount", "department",
)
OPTIONAL_COLUMNS = ("low_bid", "intermediate_certified_on", "intermediate_certified")
# The names a town's export may give the columns (compared after NFKC, spaces ignored).
HEADER_ALIASES = {
    "契約番号": "contract_no", "窓口": "desk", "工事名": "work_name", "業務名": "work_name",
    "工事(業務)名": "work_name", "工事・業務名": "work_name", "工種": "work_category", "業種": "work_category",
    "業務区分": "work_category", "契約区分": "work_category", "受注者": "contractor_name",
    "受注者名": "contractor_name", "請負代金額": "contract_amount", "契約金額": "contract_amount",
    "契約日": "contract_date", "契約年月日": "contract_date", "工期末": "completion_date",
    "完成期限": "completion_date", "履行期限": "completion_date", "前払金額": "advance_amount",
    "中間前払金額": "intermediate_advance_amount", "担当課": "department", "部署": "department",
    "低入札": "low_bid", "中間前払金認定日": "intermediate_certified_on", "認定日": "intermediate_certified_on",
    "中間前払金認定": "intermediate_certified", "認定済": "intermediate_certified",
}
_REQUIRED_TEXT = ("contract_no", "work_name", "work_category", "contractor_name", "department")
_FIELDS = ("work_name", "work_category", "contractor_name", "contract_amount", "contract_date", "completion_date",
           "advance_amount", "intermediate_advance_amount", "department", "low_bid", "intermediate_certified_on",
           "intermediate_certified")
_YES = {"1", "true", "yes", "y", "はい", "○", "〇", "◯", "該当", "有", "あり", "低入札", "認定済", "済"}
_NO = {"", "0", "false", "no", "n", "いいえ", "×", "-", "ー", "非該当", "無", "なし", "未", "未認定"}


class DeskRegisterRules(Protocol):
    """What the import needs of a desk's rules (``rules.schema.DeskRules`` fits)."""

    def department_id(self, label: str) -> str | None: ...

    def work_category(self, label: str) -> str | None: ...


@dataclass(frozen=True)
class _IdsOnly:
    """A desk known only by its department ids: no display names, every category label taken as is."""

    ids: Collection[str]

    def department_id(self, label: str) -> str | None:
        return label if label in self.ids else None

    def work_category(self, label: str) -> str | None:
        return label


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    by_desk: dict[str, int] = field(default_factory=dict)  # rows created or updated, per desk
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason); header = line 1
    changes: list[str] = field(default_factory=list)  # what was (or, dry run, would be) written, for staff


def import_contracts(
    session: Session, data: bytes, desks: Mapping[str, DeskRegisterRules | Collection[str]], now: datetime,
    *, dry_run: bool = False,
) -> ImportReport:
    """Insert or update register rows by (desk, contract_no); bad lines are reported and skipped.

    ``desks`` maps each known desk to its rules (``DeskRules``: department names and category
    aliases) or just its department ids. The desk column may be left out when there is one desk.
    Adds to ``session``; the caller commits (or, with ``dry_run``, nothing is added). Raises
    ``CsvTableError`` when the file cannot be read at all.
    """
    known = {desk: (rules if hasattr(rules, "department_id") else _IdsOnly(frozenset(rules)))  # type: ignore[arg-type]
             for desk, rules in desks.items()}
    only_desk = next(iter(known)) if len(known) == 1 else None
    required = [c for c in COLUMNS if not (c == "desk" and only_desk)]
    optional = (*OPTIONAL_COLUMNS, *(("desk",) if only_desk else ()))
    header_names, records = open_table(data, required, optional, HEADER_ALIASES)
    report = ImportReport()
    seen: dict[tuple[str, str], int] = {}
    try:
        for line, values in records:
            _import_record(session, line, values, header_names, known, only_desk, seen, report, now, dry_run)
    except CsvTableError as error:
        # A broken quote ends the file here; what came before is kept, the rest is reported.
        report.errors.append((error.line or 0, error.reason))
    return report


def _import_record(session: Session, line: int, values: list[str], header_names: list[str],
                   desks: Mapping[str, DeskRegisterRules], only_desk: str | None, seen: dict[tuple[str, str], int],
                   report: ImportReport, now: datetime, dry_run: bool) -> None:
    try:
        if len(values) < len(header_names) or any(v.strip() for v in values[len(header_names):]):
            raise ValueError(f"列の数が{len(values)}です({len(header_names)}列必要です)")
        row = dict(zip(header_names, values))
        contract = _parse_row(row, desks, only_desk)
    except ValueError as error:
        report.errors.append((line, str(error)))
        return
    identity = (contract.desk, contract.contract_no)
    if identity in seen:
        report.errors.append((line, f"contract_no {contract.contract_no} は{seen[identity]}行目と重複しています"))
        return
    seen[identity] = line
    outcome = _upsert(session, contract, now, dry_run)
    if outcome is None:
        report.unchanged += 1
        return
    created, differences = outcome
    report.by_desk[contract.desk] = report.by_desk.get(contract.desk, 0) + 1
    if created:
        report.created += 1
        report.changes.append(f"新規 {contract.desk} {contract.contract_no} {contract.work_name}"
                              f"(請負代金額 {yen(contract.contract_amount)})")
    else:
        report.updated += 1
        report.changes.append(f"更新 {contract.desk} {contract.contract_no}: {'、'.join(differences)}")


def _parse_row(row: dict[str, str], desks: Mapping[str, DeskRegisterRules], only_desk: str | None) -> Contract:
    text = {name: nfkc(row[name]).strip() for name in _REQUIRED_TEXT}
    for name, value in text.items():
        if not value:
            raise ValueError(f"{name} が空欄です")
    desk = nfkc(row.get("desk", "")).strip() or only_desk or ""
    if not desk:
        raise ValueError("desk が空欄です")
    if desk not in desks:
        raise ValueError(f"desk {desk!r} は設定にない窓口です(設定済み: {', '.join(sorted(desks))})")
    rules = desks[desk]
    department = rules.department_id(text["department"])
    if department is None:
        raise ValueError(f"department {text['department']!r} は窓口 {desk} の部署にありません"
                         "(rules.toml の部署の id または name で指定してください)")
    category = rules.work_category(text["work_category"])
    if category is None:
        raise ValueError(f"work_category {text['work_category']!r} はどの業務区分にも対応していません"
                         "(rules.toml の eligible_work_categories か work_category_aliases に加えてください)")
    contract_date = _date(row, "contract_date")
    completion_date = _date(row, "completion_date")
    if completion_date < contract_date:
        raise ValueError(f"completion_date ({completion_date}) が contract_date ({contract_date}) より前です")
    contract_amount = _amount(row, "contract_amount")
    if contract_amount is None or contract_amount <= 0:
        raise ValueError("contract_amount は1円以上の金額で入力してください")
    certified_on = _optional_date(row, "intermediate_certified_on")
    return Contract(
        contract_no=text["contract_no"], desk=desk, work_name=text["work_name"], work_category=category,
        contractor_name=text["contractor_name"], contract_amount=contract_amount, contract_date=contract_date,
        completion_date=completion_date, advance_amount=_amount(row, "advance_amount"),
        intermediate_advance_amount=_amount(row, "intermediate_advance_amount"), department=department,
        low_bid=_flag(row, "low_bid"), intermediate_certified_on=certified_on,
        intermediate_certified=_flag(row, "intermediate_certified") or certified_on is not None,
    )


def _date(row: dict[str, str], name: str) -> date:
    value = row[name].strip()
    if not value:
        raise ValueError(f"{name} が空欄です")
    return _parsed_date(name, value)


def _optional_date(row: dict[str, str], name: str) -> date | None:
    value = row.get(name, "").strip()
    return _parsed_date(name, value) if value else None


def _parsed_date(name: str, value: str) -> date:
    try:
        return parse_date(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} は日付として読めません(例: 2026-04-01、2026/4/1、令和8年4月1日)") from None


def _amount(row: dict[str, str], name: str) -> int | None:
    value = row[name].strip()
    if not value:
        return None
    try:
        return parse_amount(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} は金額として読めません(例: 12,345,000)") from None


def _flag(row: dict[str, str], name: str) -> bool:
    value = nfkc(row.get(name, "")).strip().lower()
    if value in _YES:
        return True
    if value in _NO:
        return False
    raise ValueError(f"{name} {value!r} は「○」か空欄で入力してください(○・1・該当・認定済 / 空欄・0・非該当)")


def _shown(name: str, value: object) -> str:
    if value is None:
        return "(空欄)"
    if isinstance(value, bool):
        return "○" if value else "-"
    if isinstance(value, int) and name.endswith("amount"):
        return yen(value)
    return str(value)


def _upsert(session: Session, contract: Contract, now: datetime, dry_run: bool) -> tuple[bool, list[str]] | None:
    """(created, the fields that change) or None when the row is already as the file says."""
    row = session.exec(
        select(ContractRow).where(ContractRow.desk == contract.desk, ContractRow.contract_no == contract.contract_no)
    ).first()
    created = row is None
    if row is None:
        row = ContractRow(desk=contract.desk, contract_no=contract.contract_no, work_name="", work_category="",
                          contractor_name="", contract_amount=0, contract_date=contract.contract_date,
                          completion_date=contract.completion_date, department="")
        differences = []
    else:
        differences = [f"{name} {_shown(name, getattr(row, name))} → {_shown(name, getattr(contract, name))}"
                       for name in _FIELDS if getattr(row, name) != getattr(contract, name)]
        if not differences:
            return None
    if not dry_run:
        for name in _FIELDS:
            setattr(row, name, getattr(contract, name))
        row.updated_at = now
        session.add(row)
    return created, differences
