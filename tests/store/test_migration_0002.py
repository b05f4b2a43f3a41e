"""Migration 0002 rewrites stored findings into the one shape, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import text

from keydesk.database import _alembic_config, make_engine
from rules.findings import Finding
from store import stored_findings

ROW = (
    "INSERT INTO inbound_message (id, desk, account, mailbox, uidvalidity, uid, sha256, size, received_at, state,"
    " attempts, automatic, mailbox_action_done, findings_json)"
    " VALUES (:id, 'misato', 'desk@example', 'INBOX', 1, :id, :sha, 10, CURRENT_TIMESTAMP, 'processed', 1,"
    " false, true, :findings)"
)


def test_0002_gives_every_stored_finding_the_one_shape(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        config = _alembic_config(engine)
        command.upgrade(config, "0001")
        already = stored_findings.dump([Finding("doc.fee_receipt", detail="領収書のみ", document="領収書.pdf")])
        values = {
            1: json.dumps(["doc.fee_receipt", "no.such.code"]),  # the code-only shape of before
            2: json.dumps([{"code": "key.missing"}]),  # an object missing keys
            3: already,  # already in shape: untouched
            4: json.dumps({"raw_bytes": 10}),  # not a list: kept as it is
            5: "not json",
            6: None,
        }
        with engine.begin() as connection:
            for row_id, findings in values.items():
                connection.execute(text(ROW), {"id": row_id, "sha": f"{row_id:064d}", "findings": findings})
            connection.execute(
                text(
                    "INSERT INTO submission (id, desk, inbound_id, verdict, findings_json, created_at)"
                    " VALUES (1, 'misato', 1, 'returned', :findings, CURRENT_TIMESTAMP)"
                ),
                {"findings": '["lookup.no_match"]'},
            )

        command.upgrade(config, "0002")

        with engine.connect() as connection:
            stored = dict(connection.execute(text("SELECT id, findings_json FROM inbound_message")).all())
            submission = connection.execute(text("SELECT findings_json FROM submission")).scalar_one()
        assert json.loads(stored[1]) == json.loads(stored_findings.dump_codes(["doc.fee_receipt", "no.such.code"]))
        assert json.loads(stored[1])[0]["severity"] == Finding("doc.fee_receipt").severity.value
        assert json.loads(stored[1])[0]["message"] == Finding("doc.fee_receipt").message != ""
        assert json.loads(stored[1])[1] == {
            "code": "no.such.code",
            "severity": None,
            "message": "",
            "detail": "",
            "guarantee_no": None,
            "document": None,
        }
        assert json.loads(stored[2]) == json.loads(stored_findings.dump_codes(["key.missing"]))
        assert stored[3] == already
        assert (stored[4], stored[5], stored[6]) == (values[4], values[5], None)
        assert json.loads(submission) == json.loads(stored_findings.dump_codes(["lookup.no_match"]))
        assert stored_findings.codes(stored[1]) == ["doc.fee_receipt", "no.such.code"]

        # IMAP numbers above 2^31 - 1 fit after 0002 (PostgreSQL's integer could not hold them).
        with engine.begin() as connection:
            connection.execute(
                text(ROW.replace("'INBOX', 1, :id,", "'INBOX', 4294967295, 4294967295,")),
                {"id": 7, "sha": "7" * 64, "findings": "[]"},
            )
            assert connection.execute(text("SELECT uidvalidity, uid FROM inbound_message WHERE id = 7")).one() == (
                4294967295,
                4294967295,
            )
            connection.execute(text("DELETE FROM inbound_message WHERE id = 7"))

        command.downgrade(config, "0001")  # the way down works too
        command.upgrade(config, "head")
    finally:
        engine.dispose()


def test_the_reader_takes_only_the_stored_shape() -> None:
    assert stored_findings.codes(stored_findings.dump([Finding("doc.fee_receipt"), Finding("key.missing")])) == [
        "doc.fee_receipt",
        "key.missing",
    ]
    assert stored_findings.codes(None) == []
    assert stored_findings.codes("not json") == []
    assert stored_findings.codes('{"code": "doc.fee_receipt"}') == []
    assert stored_findings.codes('[{"code": 3}, {"detail": "x"}, {"code": "key.missing"}]') == ["key.missing"]
