"""Migration 0010 gives the staff decisions' reasons the one stored-findings shape, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import text

from keydesk.database import _alembic_config, make_engine
from rules.findings import Finding
from store import stored_findings

INBOUND = (
    "INSERT INTO inbound_message (id, desk, account, mailbox, uidvalidity, uid, sha256, size, received_at, state,"
    " attempts, automatic, mailbox_action_done, findings_json)"
    " VALUES (:id, 'misato', 'desk@example', 'INBOX', 1, :id, :sha, 10, CURRENT_TIMESTAMP, 'processed', 1,"
    " false, true, '[]')"
)
SUBMISSION = (
    "INSERT INTO submission (id, desk, inbound_id, verdict, findings_json, created_at)"
    " VALUES (:id, 'misato', :id, 'needs_review', '[]', CURRENT_TIMESTAMP)"
)
DECISION = (
    "INSERT INTO staff_decision (id, desk, submission_id, inbound_id, decision, verdict, reasons_json, note,"
    " staff_login, staff_name, decided_at, mailbox_action_done)"
    " VALUES (:id, 'misato', :id, :id, 'return', 'returned', :reasons, '', 'tanaka', '田中', CURRENT_TIMESTAMP, false)"
)


def test_0010_gives_the_reasons_of_staff_decisions_the_one_shape(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        config = _alembic_config(engine)
        command.upgrade(config, "0009")
        already = stored_findings.dump([Finding("lookup.no_match", detail="窓口で照会")])
        values = {
            1: json.dumps(["lookup.no_match", "no.such.code"]),  # the code-only shape of before
            2: "[]",
            3: already,  # already in shape: untouched
            4: "not json",  # kept as it is
        }
        with engine.begin() as connection:
            for row_id, reasons in values.items():
                connection.execute(text(INBOUND), {"id": row_id, "sha": f"{row_id:064d}"})
                connection.execute(text(SUBMISSION), {"id": row_id})
                connection.execute(text(DECISION), {"id": row_id, "reasons": reasons})

        command.upgrade(config, "0010")

        with engine.connect() as connection:
            stored = dict(connection.execute(text("SELECT id, reasons_json FROM staff_decision")).all())
        assert json.loads(stored[1]) == json.loads(stored_findings.dump_codes(["lookup.no_match", "no.such.code"]))
        assert json.loads(stored[1])[0]["message"] == Finding("lookup.no_match").message != ""
        assert stored_findings.codes(stored[1]) == ["lookup.no_match", "no.such.code"]
        assert (stored[2], stored[3], stored[4]) == ("[]", already, "not json")

        command.downgrade(config, "0009")  # the way down gives the codes back
        with engine.connect() as connection:
            down = dict(connection.execute(text("SELECT id, reasons_json FROM staff_decision")).all())
        assert json.loads(down[1]) == ["lookup.no_match", "no.such.code"]
        assert json.loads(down[3]) == ["lookup.no_match"]
        assert (down[2], down[4]) == ("[]", "not json")
        command.upgrade(config, "head")
    finally:
        engine.dispose()
