"""Nothing silent: bounced replies in `outbox list --failed` and `status`; returned mails in the digest
of the department their guarantee concerns, under the contractor their documents name."""

from __future__ import annotations

import json
from pathlib import Path

from sqlmodel import Session, select

from keydesk.runtime import Runtime
from store.tables import OutboxMessage, Submission
from tests.conftest import invoke
from tests.desk_mail import SENDER, mail, take


def _files(issued: dict, index: int) -> dict[str, bytes]:
    return {kind: Path(path).read_bytes() for kind, path in issued["rows"][index]["files"].items() if path}


def _bounce_of(message_id: str) -> bytes:
    return (
        # Only a report our server authenticated (or that our relay wrote) may mark a reply lost.
        "Authentication-Results: mx.town.misato.example; dkim=pass header.d=misato-kensetsu.example\r\n"
        "From: MAILER-DAEMON@mx.misato-kensetsu.example\r\nTo: keiyaku@town.misato.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nAuto-Submitted: auto-replied\r\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n"
        "--b\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Final-Recipient: rfc822; {SENDER}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n"
        "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {message_id}\r\nSubject: x\r\n--b--\r\n"
    ).encode()


def test_a_bounced_reply_is_listed_as_failed_and_counted_by_status(issued: dict) -> None:
    config = issued["config"]
    runtime = Runtime(config)
    row, _ = take(runtime, mail([("お知らせ.pdf", _files(issued, 0)["key_notice"])]), uid=1)
    with Session(runtime.engine) as session:
        reply = session.exec(select(OutboxMessage).where(OutboxMessage.inbound_id == row.id)).one()
        reply.state, reply.recipient_states_json = "sent", json.dumps({SENDER: "sent"})  # the server took it
        session.add(reply)
        session.commit()
        reply_id, message_id = reply.id, reply.message_id
    assert invoke(config, "outbox", "list", "--failed").stdout.strip() == "該当する送信メールはありません"

    take(runtime, _bounce_of(message_id), uid=2)

    listed = invoke(config, "outbox", "list", "--failed").stdout
    assert f"{reply_id}\t不達 (エラー通知あり)\treply" in listed
    status = json.loads(invoke(config, "status", "--json", "--no-connect").stdout)
    desk = status["desks"]["misato"]
    assert desk["outbox"]["failed"] == 1
    assert any("need a person" in problem for problem in desk["problems"])


def test_a_returned_step3_printout_goes_to_its_guarantee_types_department_under_the_contractor(issued: dict) -> None:
    """Row 0 is a 前払金保証 of 株式会社美郷建設 (建設課), row 2 a 契約保証 of 有限会社山田土木 (契約係)."""
    runtime = Runtime(issued["config"])
    advance, _ = take(runtime, mail([("電子証書.pdf", _files(issued, 0)["certificate_view"])]), uid=1)
    contract, _ = take(runtime, mail([("電子証書.pdf", _files(issued, 2)["certificate_view"])]), uid=2)
    with Session(runtime.engine) as session:
        first = session.exec(select(Submission).where(Submission.inbound_id == advance.id)).one()
        second = session.exec(select(Submission).where(Submission.inbound_id == contract.id)).one()
    assert (first.verdict, first.guarantee_type, first.department) == ("returned", "前払金保証", "kensetsu")
    assert first.contractor_name == "株式会社美郷建設"
    assert (second.guarantee_type, second.department, second.contractor_name) == ("契約保証", "keiyaku", "有限会社山田土木")

    digest = invoke(issued["config"], "digest", "--print", "--since", "2000-01-01").stdout
    kensetsu = digest[digest.index("建設課"):]
    assert "株式会社美郷建設" in kensetsu and "(不明)" not in digest


def test_a_returned_mail_that_names_nothing_goes_to_the_configured_department(issued: dict) -> None:
    rules = issued["config"] / "rules.toml"
    rules.write_text(rules.read_text(encoding="utf-8").replace('# returned_department = "keiyaku"',
                                                               'returned_department = "kensetsu"'), encoding="utf-8")
    runtime = Runtime(issued["config"])
    row, _ = take(runtime, mail([]), uid=1)
    with Session(runtime.engine) as session:
        submission = session.exec(select(Submission).where(Submission.inbound_id == row.id)).one()
    assert (submission.verdict, submission.department, submission.contractor_name) == ("returned", "kensetsu", None)


def test_returned_department_must_name_a_department(issued: dict) -> None:
    rules = issued["config"] / "rules.toml"
    rules.write_text(rules.read_text(encoding="utf-8").replace('# returned_department = "keiyaku"',
                                                               'returned_department = "somewhere"'), encoding="utf-8")
    import pytest

    from keydesk.settings import load_settings
    from rules.config_base import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_settings(issued["config"])
    assert caught.value.lines == ["config/rules.toml: desks.misato: returned_department 'somewhere' is not one of "
                                  "the departments (keiyaku, kensetsu)"]
