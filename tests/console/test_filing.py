"""After a decision, the next intake pass moves the mail from the review folder to its outcome's
folder, on a real IMAP server (pymap, and Dovecot where installed)."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session

from console.accounts import StaffMember
from console.decisions import decide
from intake.intake_service import IntakeService
from intake.poller import MailboxConnection
from intake.raw_store import RawStore
from keydesk.composition import build_context
from keydesk.composition import build_pipeline
from keydesk.runtime import Runtime
from tests.support.console import UNREGISTERED, files
from tests.support.cli import invoke
from tests.support.desk_mail import mail
from store.tables import InboundMessage
from tests.support.servers import PASSWORD as IMAP_PASSWORD, dovecot_server, imap_server, pymap_server  # noqa: F401


@pytest.mark.parametrize("decision, folder", [("accept", "keydesk/受付済"), ("handled", "keydesk/対応済")])
def test_a_decided_mail_leaves_the_review_folder_for_its_outcome(
    issued: dict, imap_server, decision: str, folder: str
) -> None:
    csv_path = issued["tmp"] / "unregistered.csv"
    csv_path.write_text(UNREGISTERED, encoding="utf-8")
    result = invoke(issued["config"], "guarantor", "issue", str(csv_path), "--out", str(issued["tmp"] / "d2"), "--json")
    unregistered = json.loads(result.stdout.splitlines()[0])
    runtime = Runtime(issued["config"])
    settings = runtime.settings
    mailbox = imap_server.mailbox_settings()
    service = IntakeService(
        desk="misato",
        mailbox=mailbox,
        poll=settings.poll,
        limits=settings.limits,
        engine=runtime.engine,
        store=RawStore(settings.storage.directory),
        process=build_pipeline(runtime, "misato"),
    )
    imap_server.append(mail([("お知らせ.pdf", files(unregistered)["key_notice"])]))
    with MailboxConnection(mailbox, password=IMAP_PASSWORD) as conn:
        taken = service.run_pass(conn).taken
    assert [t.verdict for t in taken] == ["needs_review"]
    assert imap_server.folder_count("keydesk/要確認") == 1

    context = build_context(runtime)
    with Session(runtime.engine) as session:
        receipt = session.get(InboundMessage, taken[0].inbound_id).receipt_no
    decide(context, StaffMember("tanaka", "田中 一郎", "clerk", ("kensetsu",)), receipt, decision=decision)
    with MailboxConnection(mailbox, password=IMAP_PASSWORD) as conn:
        report = service.run_pass(conn)
        assert report.actions == 1
        assert service.run_pass(conn).actions == 0  # filed once
    assert imap_server.folder_count("keydesk/要確認") == 0
    assert imap_server.folder_count(folder) == 1
    assert imap_server.folder_count("INBOX") == 0


@pytest.mark.parametrize("where", ["console", "cli"])
def test_a_mail_looked_up_by_hand_leaves_the_review_folder_too(issued: dict, imap_server, where: str) -> None:
    """Recorded in the console or with `keydesk manual record`: the same decision, the same filing."""
    from console.manual import record_lookup
    from store.tables import Submission
    from sqlmodel import select
    from tests.support.console import manual_form
    from tests.support.desk_mail import use_lookup

    use_lookup(issued["config"], 'mode = "manual"')
    runtime = Runtime(issued["config"])
    settings = runtime.settings
    mailbox = imap_server.mailbox_settings()
    service = IntakeService(
        desk="misato",
        mailbox=mailbox,
        poll=settings.poll,
        limits=settings.limits,
        engine=runtime.engine,
        store=RawStore(settings.storage.directory),
        process=build_pipeline(runtime, "misato"),
    )
    imap_server.append(mail([("中間前払金.pdf", files(issued["rows"][1])["key_notice"])]))
    with MailboxConnection(mailbox, password=IMAP_PASSWORD) as conn:
        taken = service.run_pass(conn).taken
    assert [t.verdict for t in taken] == ["needs_review"]
    assert imap_server.folder_count("keydesk/要確認") == 1

    with Session(runtime.engine) as session:
        receipt = session.get(InboundMessage, taken[0].inbound_id).receipt_no
        submission_id = session.exec(select(Submission.id).where(Submission.inbound_id == taken[0].inbound_id)).one()
    if where == "console":
        outcome = record_lookup(
            build_context(runtime),
            StaffMember("tanaka", "田中 一郎", "clerk", ("kensetsu",)),
            receipt,
            submission_id=submission_id,
            form=manual_form(),
        )
        assert outcome.verdict == "accepted"
    else:
        typed = {k: v for k, v in manual_form(contract_amount="30862500", completion_date="2027-03-15").items() if v}
        facts_file = issued["tmp"] / "facts.json"
        facts_file.write_text(json.dumps(typed, ensure_ascii=False), encoding="utf-8")
        recorded = invoke(
            issued["config"], "manual", "record", receipt, "--staff", "田中 一郎", "--facts", str(facts_file)
        )
        assert recorded.exit_code == 0 and "accepted" in recorded.output
    with MailboxConnection(mailbox, password=IMAP_PASSWORD) as conn:
        assert service.run_pass(conn).actions == 1
    assert imap_server.folder_count("keydesk/要確認") == 0
    assert imap_server.folder_count("keydesk/受付済") == 1
