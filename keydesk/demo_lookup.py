"""The demo across the boundary: the guarantor's look-up service on loopback with the desk in http
mode against it, and one case in manual mode (a clerk looks the key up and records the certificate).

Composition only, like ``keydesk.demo``: the same service, token, adapters and service functions a
deployment uses. ``connect_lookup_service`` runs before the mails; ``play_manual_case`` after them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import smtplib
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session, select

from guarantor.csv_input import COLUMNS as GUARANTEE_COLUMNS
from guarantor.issue import IssuedGuarantee, issue_file
from guarantor.service.tokens import add_token
from intake.manual_lookup import ManualFacts, pending_lookups, record_manual_lookup, reveal_key
from intake.register_store import COLUMNS as CONTRACT_COLUMNS
from intake.register_store import import_contracts
from keydesk import demo_mail_builders as build
from keydesk import demo_scenario as scenario
from keydesk.composition import desk_context, guarantor_service_app
from keydesk.demo_documents import DemoError, key_notice_name
from keydesk.runtime import Runtime
from keydesk.secret_files import write_private_file
from store.tables import InboundMessage, OutboxMessage, Submission
from web.server import Listen, ServedApp

Notify = Callable[[str], None]
STAFF = "契約係 美郷 太郎"
TOKEN_FILE = "var/secrets/lookup.token"
# The firm and guarantee of the manual case: only this module knows them (the scenario's 15 mails
# and their checks stay as they are).
FIRM = scenario.Contractor("ueno", "有限会社上野工務店", "ueno@ueno-koumuten.example", "上野 真理", "0982-00-1114")
GUARANTEE = scenario.Guarantee(
    "ueno_manual", "ueno", "前払金保証", "R8-建築-113", "美郷町立図書館空調設備改修工事", 13_200_000, 5_280_000, 41_800,
    date(2026, 9, 28), date(2027, 3, 19), date(2026, 9, 28), date(2027, 3, 31))
_LOOKUP_TABLE = re.compile(r'\[desks\.misato\.lookup\]\n(?:(?!\[)[^\n]*\n)*')


@dataclass(frozen=True)
class ManualCase:
    receipt_no: str
    first_verdict: str  # when the mail came in: needs_review (lookup.manual)
    final_verdict: str  # after the clerk recorded what the guarantor's site shows
    codes: tuple[str, ...]
    replies: int  # mails the contractor got for it: the receipt, then the result

    @property
    def as_expected(self) -> bool:
        return (self.first_verdict, self.final_verdict, self.replies) == ("needs_review", "accepted", 2) \
            and "lookup.manual" in self.codes


def set_lookup(config_dir: Path, lines: str) -> None:
    """Replace the desk's ``[desks.misato.lookup]`` table of the demo's keydesk.toml."""
    path = config_dir / "keydesk.toml"
    text = path.read_text(encoding="utf-8")
    if not _LOOKUP_TABLE.search(text):
        raise DemoError("the default keydesk.toml has no [desks.misato.lookup] table")
    path.write_text(_LOOKUP_TABLE.sub(lambda _m: f"[desks.misato.lookup]\n{lines.strip()}\n\n", text, count=1),
                    encoding="utf-8")


def connect_lookup_service(runtime: Runtime, stack: contextlib.ExitStack) -> tuple[Runtime, str]:
    """Serve the guarantor's look-up service on loopback (until ``stack`` closes), give the desk a token
    and put the desk in http mode against it; returns the desk's runtime and the service's address."""
    served = ServedApp(guarantor_service_app(runtime), Listen("127.0.0.1", 0, what="guarantor.service")).start()
    stack.callback(served.stop)
    # `keydesk run` on the demo's config serves it again on the same port, so the desk's url still answers.
    path = runtime.config_dir / "keydesk.toml"
    text = path.read_text(encoding="utf-8")
    for old, new in (("port = 8443", f"port = {served.port}"), ("start_with_run = false", "start_with_run = true")):
        text, found = re.subn(rf"(?m)^{re.escape(old)}\b.*$", f"{new}  # set by keydesk demo", text, count=1)
        if not found:
            raise DemoError(f"the default keydesk.toml has no `{old}` in [guarantor.service]")
    path.write_text(text, encoding="utf-8")
    with Session(runtime.engine) as session:
        token = add_token(session, scenario.DESK, datetime.now(timezone.utc), actor="demo")
        session.commit()
    write_private_file(runtime.config_dir.parent / TOKEN_FILE, token)
    set_lookup(runtime.config_dir, f'mode = "http"\nurl = "{served.url}"\ntoken_file = "{TOKEN_FILE}"\n'
                                   f'lookup_site_url = "{served.url}/"')
    return Runtime(runtime.config_dir), served.url


def play_manual_case(runtime: Runtime, signing_key: Ed25519PrivateKey, *, poll: Callable[[Runtime], int],
                     deliver: Callable[[Runtime, str], int], notify: Notify) -> ManualCase:
    """A town whose guarantor has no API: the desk switches to manual mode for one more contractor."""
    url = runtime.settings.desks[scenario.DESK].lookup.lookup_site_url
    issued = _issue(runtime, signing_key)
    deliver(runtime, "notice")
    set_lookup(runtime.config_dir, f'mode = "manual"\nlookup_site_url = "{url}"')
    manual = Runtime(runtime.config_dir)
    message_id = _send(manual, issued)
    poll(manual)
    deliver(manual, "reply")
    with Session(manual.engine) as session:
        row = session.exec(select(InboundMessage).where(InboundMessage.message_id.in_(
            [message_id, message_id.strip("<>")]))).first()
        if row is None:
            raise DemoError("the desk never recorded the manual case's mail")
        first = row.verdict
        submissions = session.exec(select(Submission).where(Submission.inbound_id == row.id)).all()
        codes = tuple(item["code"] for s in submissions for item in json.loads(s.findings_json))
        if not any(p.receipt_no == row.receipt_no for p in pending_lookups(session, scenario.DESK)):
            raise DemoError("the manual case is not waiting for a clerk")
        # The clerk: reveals the key (audited), looks it up on the guarantor's site, records what it shows.
        reveal_key(session, manual.key_vault, scenario.DESK, row.receipt_no, staff=STAFF, now=datetime.now(timezone.utc))
        outcome = record_manual_lookup(session, desk_context(manual, scenario.DESK), row.receipt_no,
                                       _facts(issued), staff=STAFF, now=datetime.now(timezone.utc))
        session.commit()
        receipt_no = row.receipt_no or ""
    deliver(manual, "reply")
    with Session(manual.engine) as session:
        replies = len(session.exec(select(OutboxMessage).where(OutboxMessage.inbound_id == row.id,
                                                               OutboxMessage.kind == "reply")).all())
    set_lookup(runtime.config_dir, f'mode = "http"\nurl = "{url.rstrip("/")}"\ntoken_file = "{TOKEN_FILE}"\n'
                                   f'lookup_site_url = "{url}"')
    notify(f"手入力照会モード: {FIRM.name}のお知らせ(受付番号 {receipt_no})を職員が照会サイトで確認・記録し、"
           f"結果({outcome.verdict.value})を返信しました")
    return ManualCase(receipt_no, first or "", outcome.verdict.value, codes + outcome.codes, replies)


def _issue(runtime: Runtime, signing_key: Ed25519PrivateKey) -> IssuedGuarantee:
    g = GUARANTEE
    values = {
        "guarantee_type": g.guarantee_type, "contractor_name": FIRM.name, "contractor_email": FIRM.address,
        "obligee": g.obligee, "desk": g.desk, "contract_no": g.contract_no, "work_name": g.work_name,
        "work_category": g.work_category, "contract_amount": str(g.contract_amount),
        "guarantee_amount": str(g.guarantee_amount), "fee": str(g.fee), "contract_date": g.contract_date.isoformat(),
        "completion_date": g.completion_date.isoformat(), "period_start": g.period_start.isoformat(),
        "period_end": g.period_end.isoformat(), "bulk_fee_payment": "false",
    }
    register = {
        "contract_no": g.contract_no, "desk": g.desk, "work_name": g.work_name, "work_category": g.work_category,
        "contractor_name": FIRM.name, "contract_amount": str(g.contract_amount),
        "contract_date": g.contract_date.isoformat(), "completion_date": g.completion_date.isoformat(),
        "advance_amount": str(g.guarantee_amount), "intermediate_advance_amount": "", "department": g.department,
    }
    settings = runtime.settings
    with Session(runtime.engine) as session:
        departments = {desk: list(rules.departments) for desk, rules in settings.rules.desks.items()}
        imported = import_contracts(session, _csv(CONTRACT_COLUMNS, register), departments, datetime.now(timezone.utc))
        session.commit()
    [issued] = issue_file(runtime.engine, _csv(GUARANTEE_COLUMNS, values), settings=settings.guarantor,
                          signing_key=signing_key, out_dir=settings.guarantor.output_directory,
                          now=datetime.now(timezone.utc))
    if imported.errors or not isinstance(issued, IssuedGuarantee):
        raise DemoError(f"the manual case could not be prepared: {imported.errors or issued}")
    return issued


def _csv(columns: tuple[str, ...], values: dict[str, str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerow([values[column] for column in columns])
    return buffer.getvalue().encode("utf-8")


def _send(runtime: Runtime, issued: IssuedGuarantee) -> str:
    settings = runtime.settings
    desk = settings.desks[scenario.DESK]
    message_id = build.new_message_id(FIRM.address)
    head = build.MailHead(f"{FIRM.name} {FIRM.person}", FIRM.address, desk.address,
                          f"【電子保証】{GUARANTEE.work_name} {FIRM.name}", datetime.now(timezone.utc), message_id)
    body = (f"美郷町 契約係 御中\n\nいつもお世話になっております。{FIRM.name}の上野でございます。\n\n"
            "前払金保証の「認証キー等のお知らせ」を添付いたします。\nご確認のほど、よろしくお願いいたします。\n")
    attachment = build.Attachment(key_notice_name(issued.guarantee_no), issued.files["key_notice"].read_bytes())
    with smtplib.SMTP(settings.embedded.host, settings.embedded.smtp_port, timeout=30) as client:
        client.sendmail(FIRM.address, [desk.address], build.thunderbird_mail(head, body, [attachment]))
    return message_id


def _facts(issued: IssuedGuarantee) -> ManualFacts:
    """What the clerk reads on the guarantor's STEP3 screen and types in."""
    c = issued.certificate
    return ManualFacts(
        guarantee_type=c.guarantee_type, obligee=c.obligee, contractor_name=c.contractor_name, contract_no=c.contract_no,
        work_name=c.work_name, work_category=c.work_category, contract_amount=c.contract_amount,
        guarantee_amount=c.guarantee_amount, contract_date=c.contract_date, completion_date=c.completion_date,
        period_start=c.period_start, period_end=c.period_end, guarantor=c.guarantor,
    )
