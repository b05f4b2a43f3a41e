"""The whole intake with the real pipeline: mail on a real IMAP server (pymap, Dovecot), taken by
`keydesk poll --once`, verified against issued guarantees, recorded on SQLite and PostgreSQL,
answered and filed. The other IMAP tests use a stand-in for the pipeline; this one does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import Session, select

from keydesk.database import make_engine
from store.tables import InboundMessage, OutboxMessage, Submission
from tests.support.deployment import issue_guarantees
from tests.support.desk_mail import mail
from tests.support.cli import invoke
from tests.support.servers import deployment_for

ACCEPTED = "keydesk/受付済"
RETURNED = "keydesk/返送"


@pytest.fixture(params=["sqlite", "postgresql"])
def desk(request, imap_server, tmp_path):
    """A deployment reading ``imap_server``, its database on SQLite or PostgreSQL, guarantees issued."""
    config = deployment_for(tmp_path, imap_server)
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        path = config / "keydesk.toml"
        text = path.read_text(encoding="utf-8")
        assert 'url = "sqlite:///var/keydesk.db"' in text
        path.write_text(text.replace('url = "sqlite:///var/keydesk.db"', f'url = "{url}"'), encoding="utf-8")
    issued = issue_guarantees(config, tmp_path)
    return issued, imap_server, request.param


def _database_url(config: Path) -> str:
    from keydesk.runtime import Runtime

    return Runtime(config).settings.database_url()


def test_poll_once_takes_verifies_records_answers_and_files_with_the_real_pipeline(desk):
    issued, server, backend = desk
    config = issued["config"]
    notice = Path(issued["rows"][0]["files"]["key_notice"]).read_bytes()
    receipt = Path(issued["rows"][0]["files"]["fee_receipt"]).read_bytes()
    server.append(mail([("認証キー等のお知らせ.pdf", notice)]))
    server.append(mail([("領収書.pdf", receipt)], subject="保証料の領収書"))

    result = invoke(config, "poll", "--once", "--json")

    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert sorted(line["verdict"] for line in lines) == ["accepted", "returned"]
    url = _database_url(config)
    assert url.startswith("postgresql" if backend == "postgresql" else "sqlite")
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            rows = session.exec(select(InboundMessage).order_by(InboundMessage.uid)).all()
            submissions = session.exec(select(Submission)).all()
            replies = session.exec(select(OutboxMessage).where(OutboxMessage.kind == "reply")).all()
    finally:
        engine.dispose()
    assert [(row.state, row.verdict, row.mailbox_action_done) for row in rows] == [
        ("processed", "accepted", True),
        ("processed", "returned", True),
    ]
    assert [s.guarantee_no for s in submissions if s.verdict == "accepted"] == [issued["rows"][0]["guarantee_no"]]
    assert len(replies) == 2  # one answer per mail
    assert "doc.fee_receipt" in [item["code"] for item in json.loads(rows[1].findings_json)]
    assert server.uids("INBOX") == []
    assert (server.folder_count(ACCEPTED), server.folder_count(RETURNED)) == (1, 1)

    again = invoke(config, "poll", "--once", "--json")
    assert again.exit_code == 0 and not [line for line in again.stdout.splitlines() if line.startswith("{")]
