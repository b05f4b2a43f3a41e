"""The contract register: CSV import (encodings, bad lines, re-import) and the ports' DB adapters."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from sqlmodel import Session, SQLModel, select

from intake.register_store import (
    COLUMNS,
    DbAcceptedIndex,
    DbContractRegister,
    import_contracts,
    submission_certificate,
)
from keydesk.database import make_engine
from rules.domain import Certificate, GuaranteeType
from tests.support.certificates import ADVANCE_CERT
from store.tables import Contract as ContractRow, InboundMessage, Submission
from verifier.certificate_signature import SignedCertificate, canonical_json

NOW = datetime(2026, 4, 15, 9, 0, tzinfo=timezone.utc)
DEPARTMENTS = {"misato": {"keiyaku", "kensetsu"}, "kita": {"somu"}}
HEADER = ",".join(COLUMNS)
ROW_1 = 'R8-001,misato,町道美郷線 道路改良工事,工事,株式会社美郷建設,"12,345,000",2026-04-10,2027-03-15,"4,938,000",,kensetsu'
ROW_2 = "R8-002,misato,美郷川 護岸設計業務,建設コンサルタント業務,㈱髙橋設計,5000000,2026/4/20,令和9年2月26日,,,keiyaku"


@pytest.fixture
def engine(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path}/t.db")
    SQLModel.metadata.create_all(engine)
    yield engine
    engine.dispose()


def run_import(engine, data: bytes):
    with Session(engine) as session:
        report = import_contracts(session, data, DEPARTMENTS, NOW)
        session.commit()
    return report


def rows(engine) -> dict[str, ContractRow]:
    with Session(engine) as session:
        return {row.contract_no: row for row in session.exec(select(ContractRow)).all()}


def csv_bytes(*lines: str, encoding: str = "utf-8") -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode(encoding)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp932"])
def test_import_reads_utf8_bom_and_cp932(engine, encoding: str) -> None:
    report = run_import(engine, csv_bytes(HEADER, ROW_1, ROW_2, encoding=encoding))
    assert (report.created, report.updated, report.errors) == (2, 0, [])
    imported = rows(engine)
    first, second = imported["R8-001"], imported["R8-002"]
    assert first.work_name == "町道美郷線 道路改良工事"
    assert first.contract_amount == 12_345_000 and first.advance_amount == 4_938_000
    assert first.intermediate_advance_amount is None
    assert first.contract_date == date(2026, 4, 10) and first.completion_date == date(2027, 3, 15)
    # CP932-only characters (㈱ becomes (株) under NFKC, 髙 stays) survive the round trip.
    assert second.contractor_name == "(株)髙橋設計"
    assert second.completion_date == date(2027, 2, 26)
    assert second.department == "keiyaku"


def test_bad_lines_are_reported_by_line_and_good_lines_imported(engine) -> None:
    data = csv_bytes(
        HEADER,
        ROW_1,  # line 2: good
        "R8-003,nowhere,工事名,工事,業者,1000000,2026-04-10,2027-03-15,,,keiyaku",  # 3: unknown desk
        "R8-004,misato,工事名,工事,業者,1000000,2026-04-10,2027-03-15,,,somu",  # 4: unknown department
        "R8-005,misato,工事名,工事,業者,百万円?,2026-04-10,2027-03-15,,,keiyaku",  # 5: bad amount
        "R8-006,misato,工事名,工事,業者,1000000,2026-02-30,2027-03-15,,,keiyaku",  # 6: no such day
        "R8-007,misato,工事名,工事,業者,1000000,2026-04-10",  # 7: short row
        "",  # 8: blank, skipped
        "R8-001,misato,重複,工事,業者,1000000,2026-04-10,2027-03-15,,,keiyaku",  # 9: repeated number
        "R8-008,misato,,工事,業者,1000000,2026-04-10,2027-03-15,,,keiyaku",  # 10: empty work name
        "R8-009,misato,工事名,工事,業者,1000000,2027-04-10,2026-03-15,,,keiyaku",  # 11: ends before start
        ROW_2,  # 12: good
    )
    report = run_import(engine, data)
    assert report.created == 2
    lines = dict(report.errors)
    assert sorted(lines) == [3, 4, 5, 6, 7, 9, 10, 11]
    assert "'nowhere' は設定にない窓口" in lines[3]
    assert "'somu' は窓口 misato の部署にありません" in lines[4]
    assert "contract_amount" in lines[5] and "金額" in lines[5]
    assert "contract_date" in lines[6] and "日付" in lines[6]
    assert "列の数が7です" in lines[7]
    assert "2行目と重複" in lines[9]
    assert "work_name が空欄" in lines[10]
    assert "より前" in lines[11]
    assert set(rows(engine)) == {"R8-001", "R8-002"}


def test_reimport_updates_rows_by_desk_and_number(engine) -> None:
    run_import(engine, csv_bytes(HEADER, ROW_1, ROW_2))
    changed = ROW_1.replace('"12,345,000"', "13000000").replace("株式会社美郷建設", "美郷建設株式会社")
    report = run_import(engine, csv_bytes(HEADER, changed))
    assert (report.created, report.updated, report.errors) == (0, 1, [])
    imported = rows(engine)
    assert len(imported) == 2
    assert imported["R8-001"].contract_amount == 13_000_000
    assert imported["R8-001"].contractor_name == "美郷建設株式会社"


def test_same_number_at_another_desk_is_another_contract(engine) -> None:
    other = ROW_1.replace(",misato,", ",kita,").replace(",kensetsu", ",somu")
    report = run_import(engine, csv_bytes(HEADER, ROW_1, other))
    assert (report.created, report.errors) == (2, [])
    with Session(engine) as session:
        register = DbContractRegister(session)
        assert register.get("kita", "R8-001").department == "somu"
        assert register.get("misato", "R8-001").department == "kensetsu"
        assert register.get("misato", "R8-999") is None


def test_columns_in_another_order_are_fine(engine) -> None:
    names = list(COLUMNS)
    values = ["R8-001", "misato", "工事名", "工事", "業者", "1000000", "2026-04-10", "2027-03-15", "", "", "keiyaku"]
    order = list(reversed(range(len(names))))
    report = run_import(engine, csv_bytes(",".join(names[i] for i in order), ",".join(values[i] for i in order)))
    assert (report.created, report.errors) == (1, [])


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "ファイルが空です"),
        (csv_bytes("contract_no,desk"), "足りない列"),
        (csv_bytes(HEADER + ",extra"), "不明な列: 'extra'"),
        (b"\xff\xfe\x00\x00garbage\x81", "UTF-8 でも Shift_JIS"),
    ],
)
def test_unreadable_files_fail_whole_with_a_reason(engine, data: bytes, reason: str) -> None:
    with pytest.raises(match=reason):
        run_import(engine, data)
    assert rows(engine) == {}


def _certificate(no: str, kind: GuaranteeType, amount: int) -> Certificate:
    return replace(ADVANCE_CERT, guarantee_no=no, guarantee_type=kind, guarantee_amount=amount, fee=1000)


def test_accepted_index_finds_receipts_and_advance_amounts(engine) -> None:
    with Session(engine) as session:
        mail = InboundMessage(
            desk="misato",
            account="a",
            mailbox="INBOX",
            uidvalidity=1,
            uid=1,
            sha256="0" * 64,
            size=1,
            receipt_no="K-2026-000001",
        )
        returned_mail = InboundMessage(
            desk="misato",
            account="a",
            mailbox="INBOX",
            uidvalidity=1,
            uid=2,
            sha256="1" * 64,
            size=1,
            receipt_no="K-2026-000002",
        )
        session.add(mail)
        session.add(returned_mail)
        session.flush()
        advance = _certificate("26-000001-6", GuaranteeType.ADVANCE, 4_938_000)
        signed = SignedCertificate(payload=canonical_json(advance), signature=b"\0" * 64, key_id="k")
        accepted = Submission(
            desk="misato",
            inbound_id=mail.id,
            guarantee_no=advance.guarantee_no,
            guarantee_type=advance.guarantee_type.value,
            contract_no="R8-001",
            verdict="accepted",
            certificate_json=signed.to_json(),
        )
        session.add(accepted)
        session.add(
            Submission(
                desk="misato",
                inbound_id=returned_mail.id,
                guarantee_no="26-000002-4",
                guarantee_type="中間前払金保証",
                contract_no="R8-001",
                verdict="returned",
            )
        )
        session.commit()
        index = DbAcceptedIndex(session)
        assert index.receipt_for("misato", "26-000001-6") == "K-2026-000001"
        assert index.receipt_for("misato", "26-000002-4") is None  # returned, not accepted
        assert index.receipt_for("kita", "26-000001-6") is None
        assert dict(index.advance_amounts("misato", "R8-001")) == {GuaranteeType.ADVANCE: 4_938_000}
        assert dict(index.advance_amounts("misato", "R8-002")) == {}
        assert submission_certificate(accepted) == advance
        assert submission_certificate(Submission(desk="misato", inbound_id=1, verdict="returned")) is None
