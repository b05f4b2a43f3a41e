"""`keydesk demo`: the whole story on the embedded default, in a fresh ``var/demo/``.

The guarantor issues the guarantees of ``keydesk.demo.scenario``; its notices reach the
contractors' mailboxes over SMTP; the contractors mail the desk, right and wrong; the desk takes
the mail over IMAP, verifies, replies through the outbox; the staff digest goes out and is written
as HTML. Composition only: every step calls the same code as the real commands.

``run_demo`` does the work and returns a ``DemoReport`` (the test asserts on it); the command
prints the progress and the final table.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlmodel import Session, select

from guarantor import registry
from guarantor.issue import IssuedGuarantee, issue_file
from guarantor.keys import create_signing_key, publish_public_key
from intake.register_store import import_contracts
from keydesk.demo import lookup as demo_lookup
from keydesk.demo import scenario
from keydesk.composition import build_service, connector, connector_for, mailbox_lock, targets_for
from keydesk.daemon import start_embedded
from keydesk.database import upgrade
from keydesk.demo.documents import Contractors, DemoDocuments, DemoError
from keydesk.demo.report import DemoReport, DigestFile, MailOutcome, Notify
from keydesk.deployment import create_config, create_missing_secrets
from foundation.errors import UserFacingError
from keydesk.runtime import Runtime
from keydesk.secret_files import new_password
from keydesk.settings import load_settings
from mailer import delivery
from mailer.digest import collect, enqueue_digests, render_csv, render_html, render_text
from mailer.reply import template_environment
from mailer.smtp_client import SmtpSession
from foundation.config import ConfigError
from store import stored_findings
from store.audit import verify_chain
from store.tables import InboundMessage, OutboxMessage, Submission

log = logging.getLogger(__name__)

MARKER = ".keydesk-demo"  # only a folder carrying this is ever deleted by the demo


# -- the folder and its configuration ---------------------------------------------------------------


def demo_directory(home: Path) -> Path:
    return home / "var" / "demo"


def deployment_home(runtime: Runtime) -> Path:
    """The home of the configuration in use; the current folder when there is none yet."""
    try:
        return runtime.config_dir.parent
    except ConfigError:
        return Path.cwd()


def prepare_directory(directory: Path) -> None:
    """Delete the previous demo (recognised by its marker) and start an empty folder."""
    if directory.exists():
        if not (directory / MARKER).is_file() and any(directory.iterdir()):
            raise UserFacingError(f"{directory} はデモ用のフォルダではないため削除しません。中身を確認してください")
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER).write_text("Created by `keydesk demo`; deleted by the next run.\n", encoding="utf-8")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def set_toml_value(text: str, table: str, key: str, value: str) -> str:
    """Replace ``key = …`` in ``[table]`` of a TOML text we wrote (comments elsewhere are kept)."""
    current, lines, done = "", text.splitlines(keepends=True), False
    for index, line in enumerate(lines):
        header = _TABLE.match(line)
        if header:
            current = header.group(1)
        elif current == table and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            lines[index] = f"{key} = {value}  # set by keydesk demo\n"
            done = True
            break
    if not done:
        raise DemoError(f"the default keydesk.toml has no {key} in [{table}]")
    return "".join(lines)


def write_config(directory: Path, imap_port: int, smtp_port: int) -> Path:
    """`keydesk init` into ``directory/config``, then the demo's ports and mail users."""
    config_dir = directory / "config"
    with contextlib.redirect_stdout(io.StringIO()):  # init's next-step hints are not the demo's
        create_config(config_dir)
    path = config_dir / "keydesk.toml"
    text = path.read_text(encoding="utf-8")
    text = set_toml_value(text, "smtp", "port", str(smtp_port))
    text = set_toml_value(text, "embedded", "imap_port", str(imap_port))
    text = set_toml_value(text, "embedded", "smtp_port", str(smtp_port))
    text = set_toml_value(text, f"desks.{scenario.DESK}.mailbox", "port", str(imap_port))
    text = set_toml_value(text, "console", "enabled", "true")  # `keydesk run` on the demo starts the console
    # The embedded SMTP server checks no SPF/DKIM/DMARC, so no demo mail is authenticated: the demo
    # answers every sender in full, as a desk behind an authenticating relay would.
    text = set_toml_value(text, f"desks.{scenario.DESK}", "reply_to", '"all"')
    settings = load_settings(config_dir)
    known = {user.address for user in settings.embedded.users}
    staff = [a for d in settings.rules.desks.values() for dep in d.departments.values() for a in dep.digest_recipients]
    wanted = [c.address for c in scenario.CONTRACTORS] + [demo_lookup.FIRM.address] + staff
    blocks = ["\n# The demo's contractors and staff: each has a mailbox on the embedded server.\n"]
    for address in dict.fromkeys(a for a in wanted if a not in known):
        blocks.append(
            f'[[embedded.users]]\naddress = "{address}"\npassword_file = "var/secrets/mail-{address}.password"\n\n'
        )
    path.write_text(text + "".join(blocks), encoding="utf-8")
    create_missing_secrets(load_settings(config_dir))
    return config_dir


# -- the story ------------------------------------------------------------------------------------


def run_demo(
    directory: Path,
    stack: contextlib.ExitStack,
    *,
    imap_port: int = 0,
    smtp_port: int = 0,
    notify: Notify = lambda _text: None,
) -> DemoReport:
    """Play the scenario in ``directory`` (made by ``prepare_directory``). The embedded servers stay
    up until ``stack`` closes, so a caller can look into the mailboxes."""
    started, began = time.monotonic(), datetime.now(timezone.utc).replace(microsecond=0)
    if not (directory / MARKER).is_file():
        raise DemoError(f"{directory} was not prepared (prepare_directory)")
    imap_port, smtp_port = imap_port or free_port(), smtp_port or free_port()
    config_dir = write_config(directory, imap_port, smtp_port)
    runtime = Runtime(config_dir)
    settings = runtime.settings
    upgrade(runtime.raw_engine)
    report = DemoReport(
        directory, config_dir, settings.embedded.mail_directory, directory / "demo.log", imap_port, smtp_port
    )
    notify(f"設定とデータベースを作成しました: {config_dir}")

    signing_key = create_signing_key(settings.guarantor.signing_key)
    publish_public_key(signing_key.public_key(), settings.guarantor.trust_directory)
    # Two organisations: the guarantor's look-up service on loopback, the desk in http mode against it.
    runtime, report.lookup_url = demo_lookup.connect_lookup_service(runtime, stack)
    settings = runtime.settings
    notify(f"保証会社の照会サービスを {report.lookup_url}/ で起動し、窓口を HTTP 照会モードにしました")
    contracts = _import_register(runtime, directory)
    town = settings.rules.desks[scenario.DESK].town
    notify(f"保証会社の署名鍵を作成し、{town}の契約台帳を登録しました(契約 {contracts} 件)")

    imap = start_embedded(runtime, stack)
    report.passwords = dict(imap.users)
    notify(f"内蔵メールサーバーを起動しました(IMAP 127.0.0.1:{imap_port}、SMTP 127.0.0.1:{smtp_port})")

    issued = _issue(runtime, directory, signing_key)
    report.issued = len(issued)
    report.notices = _deliver(runtime, expected_kind="notice")
    towns = len({g.desk for g in scenario.issued_guarantees()})
    revoked = sum(1 for g in scenario.issued_guarantees() if g.revoke_reason)
    notify(
        f"保証会社が電子証書を {report.issued} 件発行し({towns} 町分、うち {revoked} 件は失効)、"
        f"「電子証書・認証キー登録のお知らせ」{report.notices} 通を受注者へ配信しました"
    )

    contractors = Contractors(imap, settings, lambda: _now(runtime))
    documents = DemoDocuments(issued, settings.guarantor, _now(runtime), contractors.saved_attachment)
    sent: dict[str, str] = {}
    for round_no in (1, 2):
        mails = [m for m in scenario.MAILS if m.round == round_no]
        contractors.send(mails, documents, sent)
        taken = _poll(runtime)
        replies = _deliver(runtime, expected_kind="reply")
        report.replies += replies
        notify(
            f"{'受注者' if round_no == 1 else '返送を受けた受注者'}が {len(mails)} 通を窓口へ送信し、"
            f"窓口が IMAP で {taken} 通を受け付けて、返信 {replies} 通を送りました"
        )

    report.manual = demo_lookup.play_manual_case(runtime, signing_key, poll=_poll, deliver=_deliver, notify=notify)
    report.mails = _outcomes(runtime, sent)
    report.digests = _digest(runtime, directory, since=began)
    digests_sent = _deliver(runtime, expected_kind="digest")
    notify(f"職員あての受付状況(ダイジェスト)を {digests_sent} 通送信し、HTML を保存しました")

    report.console_url, report.console_login, report.console_password = _demo_staff(runtime)

    with Session(runtime.engine) as session:
        chain = verify_chain(session)
    report.audit_events, report.audit_intact = chain.events, chain.intact
    report.elapsed = time.monotonic() - started
    return report


DEMO_STAFF_LOGIN = "demo"


def _demo_staff(runtime: Runtime) -> tuple[str, str, str]:
    """An administrator for the staff console, so the demo's needs_review mail can be decided."""
    from console.accounts import add_staff

    password = new_password()
    departments = {d for rules in runtime.settings.rules.desks.values() for d in rules.departments}
    with Session(runtime.engine) as session:
        add_staff(
            session,
            login=DEMO_STAFF_LOGIN,
            name="デモ 職員",
            role="admin",
            departments=[],
            password=password,
            known_departments=departments,
            desk=scenario.DESK,
        )
        session.commit()
    console = runtime.settings.console
    return f"http://{console.host}:{console.port}/", DEMO_STAFF_LOGIN, password


def _now(runtime: Runtime) -> datetime:
    return datetime.now(ZoneInfo(runtime.settings.timezone))


def _import_register(runtime: Runtime, directory: Path) -> int:
    data = scenario.contracts_csv()
    (directory / "contracts.csv").write_bytes(data)
    with Session(runtime.engine) as session:
        result = import_contracts(session, data, runtime.settings.rules.desks, datetime.now(timezone.utc))
        if result.errors:
            raise DemoError(f"the demo register was refused: {result.errors}")
        session.commit()
    return result.created


def _issue(runtime: Runtime, directory: Path, signing_key) -> dict[str, IssuedGuarantee]:
    """Issue the scenario's guarantees from its CSV and revoke the ones it revokes."""
    data = scenario.guarantees_csv()
    (directory / "guarantees.csv").write_bytes(data)
    settings = runtime.settings.guarantor
    results = issue_file(
        runtime.engine,
        data,
        settings=settings,
        signing_key=signing_key,
        out_dir=settings.output_directory,
        now=_now(runtime),
    )
    specs = scenario.issued_guarantees()
    refused = [r for r in results if not isinstance(r, IssuedGuarantee)]
    if refused or len(results) != len(specs):
        raise DemoError(f"the guarantor refused demo rows: {refused}")
    issued = {spec.key: result for spec, result in zip(specs, results)}
    with Session(runtime.engine) as session:
        for spec in specs:
            if spec.revoke_reason:
                registry.revoke(session, issued[spec.key].guarantee_no, spec.revoke_reason, datetime.now(timezone.utc))
        session.commit()
    return issued


def _deliver(runtime: Runtime, expected_kind: str) -> int:
    """Send every due outbox row over SMTP; returns how many rows of ``expected_kind`` went out."""
    settings = runtime.settings
    result = delivery.deliver_due(
        runtime.engine, SmtpSession(connector_for(settings)), settings.outbox, now=datetime.now(timezone.utc)
    )
    if result.connection_error or result.failed or result.retry_later or result.unconfirmed:
        raise DemoError(f"outbox delivery did not complete: {result.summary()}")
    with Session(runtime.engine) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.kind == expected_kind)).all()
        pending = [row.id for row in rows if row.state != delivery.SENT]
    if pending:
        raise DemoError(f"{expected_kind} mails still unsent: outbox rows {pending}")
    return result.sent


def _poll(runtime: Runtime) -> int:
    """One intake pass over the desk's mailbox, exactly as `keydesk poll --once` does it."""
    settings = runtime.settings
    service = build_service(runtime, scenario.DESK)
    with mailbox_lock(settings, scenario.DESK), connector(settings, scenario.DESK)() as conn:
        report = service.run_pass(conn)
    if report.failures:
        raise DemoError(f"the desk failed to process {report.failures} mail(s); see the log")
    return len(report.taken)


def _outcomes(runtime: Runtime, sent: dict[str, str]) -> list[MailOutcome]:
    outcomes = []
    with Session(runtime.engine) as session:
        for mail in scenario.MAILS:
            bare = sent[mail.key].strip("<>")  # stored with or without the angle brackets
            row = session.exec(
                select(InboundMessage).where(
                    InboundMessage.desk == scenario.DESK, InboundMessage.message_id.in_([bare, f"<{bare}>"])
                )
            ).first()
            if row is None:
                raise DemoError(f"the desk never recorded the mail {mail.key} ({sent[mail.key]})")
            submissions = session.exec(select(Submission).where(Submission.inbound_id == row.id)).all()
            codes = stored_findings.codes(row.findings_json) + [
                c for s in submissions for c in stored_findings.codes(s.findings_json)
            ]
            resend_of = next((s.resend_of_id for s in submissions if s.resend_of_id), None)
            previous = session.get(Submission, resend_of) if resend_of else None
            reply = session.exec(
                select(OutboxMessage).where(OutboxMessage.inbound_id == row.id, OutboxMessage.kind == "reply")
            ).first()
            outcomes.append(
                MailOutcome(
                    mail=mail,
                    sender=scenario.contractor(mail.contractor),
                    message_id=sent[mail.key],
                    receipt_no=row.receipt_no,
                    verdict=row.verdict,
                    codes=tuple(dict.fromkeys(codes)),
                    resend_of_receipt=session.get(InboundMessage, previous.inbound_id).receipt_no if previous else None,
                    replied=reply is not None and reply.state == delivery.SENT,
                )
            )
    return outcomes


def _digest(runtime: Runtime, directory: Path, since: datetime) -> list[DigestFile]:
    """Put the staff digests into the outbox and write the same digests as HTML and CSV."""
    settings = runtime.settings
    zone = settings.digest.timezone
    env = template_environment(settings.config_dir / "templates")
    now = datetime.now(timezone.utc)
    out = directory / "digest"
    out.mkdir()
    files = []
    with Session(runtime.engine) as session:
        for target in targets_for(settings, None):
            enqueue_digests(session, target, env, now=now, zone=zone, since=since)
            for digest in collect(session, target, now=now, zone=zone, since=since):
                stem = f"{target.desk}-{digest.department}"
                html, csv = out / f"{stem}.html", out / f"{stem}.csv"
                html.write_text(render_html(digest, env), encoding="utf-8")
                csv.write_bytes(render_csv(digest))
                files.append(
                    DigestFile(digest.department_name, tuple(digest.recipients), html, csv, render_text(digest, env))
                )
        session.commit()
    return files
