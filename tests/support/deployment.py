"""A deployment for a test: the guarantor's three guarantees and the town's register as data,
issued and imported through the CLI; keydesk.toml edited section by section."""

from __future__ import annotations

import json
import re
import time
from datetime import date
from pathlib import Path

from rules.domain import Certificate, GuaranteeType
from tests.support.cli import invoke

POSTGRES_ENV = "KEYDESK_TEST_POSTGRES_URL"  # an empty server to make test databases in (.ci/run sets it)

# One certificate's content, as the guarantor side and the verifier's tests both use it.
ADVANCE_CERTIFICATE = Certificate(
    guarantee_no="26-000123-5",
    guarantee_type=GuaranteeType.ADVANCE,
    guarantor="西日本建設業保証株式会社",
    contractor_name="株式会社美郷建設",
    obligee="美郷町長",
    desk="misato",
    contract_no="R8-土木-001",
    work_name="町道美郷中央線道路改良工事(第2工区)",
    work_category="工事",
    contract_amount=30_862_500,
    guarantee_amount=12_345_000,
    fee=98_760,
    contract_date=date(2026, 4, 1),
    completion_date=date(2027, 3, 15),
    period_start=date(2026, 4, 1),
    period_end=date(2027, 3, 31),
    issued_on=date(2026, 4, 1),
)


GUARANTEES = """guarantee_type,contractor_name,contractor_email,obligee,desk,contract_no,work_name,work_category,contract_amount,guarantee_amount,fee,contract_date,completion_date,period_start,period_end,bulk_fee_payment
前払金保証,株式会社美郷建設,info@misato-kensetsu.example,美郷町長,misato,R8-土木-001,町道美郷中央線道路改良工事,工事,30862500,12345000,98760,2026-04-01,2027-03-15,2026-04-01,2027-03-31,false
中間前払金保証,株式会社美郷建設,info@misato-kensetsu.example,美郷町長,misato,R8-土木-001,町道美郷中央線道路改良工事,工事,30862500,6172500,41500,2026-04-01,2027-03-15,2026-10-01,2027-03-31,false
契約保証,有限会社山田土木,keiri@yamada-doboku.example,美郷町長,misato,R8-土木-002,美郷川護岸補修工事,工事,15400000,1540000,12300,2026-04-10,2026-12-25,2026-04-10,2026-12-25,true
"""
# The register as the town keeps it: other spellings of the firms, amounts with commas, CP932.
CONTRACTS = """contract_no,desk,work_name,work_category,contractor_name,contract_amount,contract_date,completion_date,advance_amount,intermediate_advance_amount,department
R8-土木-001,misato,町道美郷中央線道路改良工事,工事,㈱美郷建設,"30,862,500",2026/4/1,2027/3/15,"12,345,000",,kensetsu
R8-土木-002,misato,美郷川護岸補修工事,工事,山田土木 有限会社,"15,400,000",2026/4/10,2026/12/25,,,keiyaku
"""


def issue_guarantees(deployment: Path, tmp_path: Path) -> dict:
    """Migrate ``deployment``'s database, issue the three guarantees and import the register."""
    assert invoke(deployment, "db", "upgrade").exit_code == 0
    assert invoke(deployment, "guarantor", "init").exit_code == 0
    guarantees = tmp_path / "guarantees.csv"
    guarantees.write_text(GUARANTEES, encoding="utf-8")
    out = tmp_path / "documents"
    result = invoke(deployment, "guarantor", "issue", str(guarantees), "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 3 and all("guarantee_no" in row for row in rows), result.output
    contracts = tmp_path / "contracts.csv"
    contracts.write_bytes(CONTRACTS.encode("cp932"))
    result = invoke(deployment, "contracts", "import", str(contracts))
    assert result.exit_code == 0, result.output
    assert "新規 2 件" in result.output
    return {"rows": rows, "config": deployment, "tmp": tmp_path}


def edit_section(config: Path, header: str, **values) -> None:
    """Set ``key = value`` lines in one section of keydesk.toml (uncommenting an example line)."""
    path = config / "keydesk.toml"
    text = path.read_text(encoding="utf-8")
    start = text.index(f"{header}\n")
    end = text.find("\n[", start + 1)
    end = len(text) if end < 0 else end
    section = text[start:end]
    for key, value in values.items():
        line = f"{key} = {value}"
        section, count = re.subn(rf"(?m)^#? ?{key} = .*$", line.replace("\\", "\\\\"), section, count=1)
        if not count:
            section += f"\n{line}"
    path.write_text(text[:start] + section + text[end:], encoding="utf-8")


def use_smtp(config: Path, port: int, security: str = "plain", **extra) -> None:
    edit_section(config, "[smtp]", port=str(port), security=f'"{security}"', **extra)


def drop_database(admin_url: str, name: str, deadline_seconds: float = 30.0) -> None:
    """Drop a test database. FORCE ends our own sessions, but not a session we may not signal (an
    autovacuum worker that just started on it): that one ends by itself, so try again until a deadline."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import DBAPIError

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    deadline = time.monotonic() + deadline_seconds
    try:
        while True:
            try:
                with admin.connect() as connection:
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                return
            except DBAPIError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # polling an external server's state, bounded by the deadline
    finally:
        admin.dispose()
