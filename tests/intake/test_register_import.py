"""The register as towns keep it (issue 14): their own column names, departments by display name,
work-category labels through the rules' aliases, 低入札 and 中間前払金 認定, and a dry run."""

from __future__ import annotations

import tomllib
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from sqlmodel import Session, SQLModel, select

from intake.register_store import DbContractRegister, import_contracts
from keydesk.database import make_engine
from rules.schema import RuleSet
from store.tables import Contract as ContractRow

NOW = datetime(2026, 4, 15, 9, 0, tzinfo=timezone.utc)
CONFIG = Path(__file__).resolve().parents[2] / "config" / "rules.toml"
DESKS = RuleSet.model_validate(tomllib.loads(CONFIG.read_text(encoding="utf-8"))).desks
TOWN_HEADER = "契約番号,工事名,業務区分,受注者,請負代金額,契約日,工期末,前払金額,中間前払金額,担当課,低入札,中間前払金認定日,認定済"


@pytest.fixture
def engine(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path}/t.db")
    SQLModel.metadata.create_all(engine)
    yield engine
    engine.dispose()


def csv_bytes(*lines: str, encoding: str = "cp932") -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode(encoding)


def run_import(engine, data: bytes, dry_run: bool = False):
    with Session(engine) as session:
        report = import_contracts(session, data, DESKS, NOW, dry_run=dry_run)
        session.commit()
    return report


def rows(engine) -> dict[str, ContractRow]:
    with Session(engine) as session:
        return {row.contract_no: row for row in session.exec(select(ContractRow)).all()}


def test_a_towns_export_with_its_own_names_imports(engine) -> None:
    data = csv_bytes(
        TOWN_HEADER,
        'R8-001,町道美郷線 道路改良工事,建設工事,株式会社美郷建設,"12,345,000",2026/4/10,2027/3/15,"4,938,000",,建設課,,,',
        "R8-002,美郷川 護岸設計業務,建設コンサルタント等業務,㈱髙橋設計,5000000,令和8年4月20日,令和9年2月26日,,,契約係,○,,",
        "R8-003,役場庁舎 改修工事,工事,美郷工務店,30000000,2026-04-01,2027-03-31,,,kensetsu,,2026-10-01,",
        "R8-004,町民体育館 改修工事,建築工事,美郷工務店,20000000,2026-04-01,2027-03-31,,,kensetsu,,,認定済",
    )
    report = run_import(engine, data)
    assert report.errors == [] and report.created == 4
    imported = rows(engine)
    assert imported["R8-001"].work_category == "工事" and imported["R8-001"].department == "kensetsu"
    assert imported["R8-002"].work_category == "建設コンサルタント業務" and imported["R8-002"].department == "keiyaku"
    assert imported["R8-002"].low_bid is True and imported["R8-001"].low_bid is False
    assert imported["R8-003"].intermediate_certified_on == date(2026, 10, 1)
    assert imported["R8-003"].intermediate_certified is True
    assert imported["R8-004"].intermediate_certified is True and imported["R8-004"].intermediate_certified_on is None
    with Session(engine) as session:
        contract = DbContractRegister(session).get("misato", "R8-002")
        assert contract is not None and contract.low_bid
        assert DbContractRegister(session).find_by_work("misato", "美郷川護岸設計業務", "(株)髙橋設計").contract_no == "R8-002"
        assert DbContractRegister(session).find_by_work("misato", "役場庁舎 改修工事", "別の会社") is None
        assert DbContractRegister(session).find_by_work("misato", "", "美郷工務店") is None


def test_labels_that_map_to_nothing_are_one_line_errors_naming_the_row(engine) -> None:
    data = csv_bytes(
        TOWN_HEADER,
        "R8-010,除雪作業,役務,美郷建設,1000000,2026-04-10,2027-03-15,,,建設課,,,",          # line 2: unknown category
        "R8-011,町道補修工事,工事,美郷建設,1000000,2026-04-10,2027-03-15,,,総務課,,,",      # 3: unknown department
        "R8-012,町道補修工事,工事,美郷建設,1000000,2026-04-10,2027-03-15,,,建設課,たぶん,,",  # 4: unclear flag
        "R8-013,町道補修工事,工事,美郷建設,1000000,2026-04-10,2027-03-15,,,建設課,,秋ごろ,",  # 5: bad date
        "R8-014,町道補修工事,工事,美郷建設,1000000,2026-04-10,2027-03-15,,,建設課,,,",      # 6: good
    )
    report = run_import(engine, data)
    lines = dict(report.errors)
    assert sorted(lines) == [2, 3, 4, 5] and report.created == 1
    assert "work_category '役務'" in lines[2] and "work_category_aliases" in lines[2]
    assert "department '総務課'" in lines[3]
    assert "low_bid 'たぶん'" in lines[4]
    assert "intermediate_certified_on '秋ごろ'" in lines[5]
    assert all("\n" not in reason for reason in lines.values())


def test_a_dry_run_shows_what_would_change_and_writes_nothing(engine) -> None:
    first = "R8-001,町道美郷線 道路改良工事,建設工事,株式会社美郷建設,12345000,2026-04-10,2027-03-15,,,建設課,,,"
    run_import(engine, csv_bytes(TOWN_HEADER, first))
    changed = first.replace("12345000", "13000000").replace(",建設課,,,", ",建設課,○,,")
    new = "R8-002,美郷川 護岸設計業務,測量,髙橋設計,5000000,2026-04-20,2027-02-26,,,契約係,,,"
    report = run_import(engine, csv_bytes(TOWN_HEADER, changed, new, first.replace("R8-001", "R8-001")), dry_run=True)
    assert (report.created, report.updated) == (1, 1)
    assert any(c.startswith("更新 misato R8-001") and "12,345,000円 → 13,000,000円" in c and "low_bid - → ○" in c
               for c in report.changes), report.changes
    assert any(c.startswith("新規 misato R8-002") for c in report.changes)
    assert set(rows(engine)) == {"R8-001"} and rows(engine)["R8-001"].contract_amount == 12_345_000
    # The same file again without --dry-run: the same counts, now written; a third time: nothing changes.
    assert (run_import(engine, csv_bytes(TOWN_HEADER, changed, new)).created, rows(engine)["R8-001"].low_bid) == (1, True)
    again = run_import(engine, csv_bytes(TOWN_HEADER, changed, new))
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)
