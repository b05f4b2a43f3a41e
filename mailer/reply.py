"""The answer a contractor gets for each mail: composed from facts, worded by admin templates.

Pure composition (no database, no clock: the time is a parameter). The intake gathers a
``ReplyFacts`` in the same transaction that records the submission, calls ``build_reply`` and
enqueues the result with the idempotency key ``reply:<inbound id>``.

The wording lives in ``config/templates/reply_subject.txt.j2`` and ``reply_body.txt.j2`` of the
deployment, so a town can change it without code. Everything that came from the sender (their
subject, attachment names, values read from documents) is cleaned to one displayable line before
it reaches a template, and every 認証キー is masked again here, whatever the caller passed.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal
from collections.abc import Sequence
from zoneinfo import ZoneInfo

import jinja2

from mailer.message import Mailbox, build_message, clean_header_text, thread_headers
from mailer.reply_policy import REPLY_KIND, mark
from rules.findings import RESULT_FOLLOWS, SENDER_STATES, Finding, Request, Severity, Verdict, request_of
from formats.access_key import mask
from foundation.errors import UserFacingError

SUBJECT_TEMPLATE = "reply_subject.txt.j2"
BODY_TEMPLATE = "reply_body.txt.j2"
# The short reply to an unauthenticated sender (mailer/reply_policy.py): it quotes nothing the
# sender wrote, so a forged From cannot make the town's domain carry a stranger's text.
SHORT_SUBJECT_TEMPLATE = "reply_short_subject.txt.j2"
SHORT_BODY_TEMPLATE = "reply_short_body.txt.j2"
_WEEKDAYS = "月火水木金土日"
_MASKED = re.compile(r"^\*{4}-\*{4}-\*{4}-(?:[0-9A-Z]{4}|\*{4})$")
# Rows written before only the last 4 symbols were shown (``7K3M-****-****-R4NC``).
_OLD_MASKED = re.compile(r"^[0-9A-Z]{4}-(\*{4}-\*{4}-[0-9A-Z]{4})$")


class TemplateProblem(UserFacingError, ValueError):
    """A template of the deployment is missing or broken; the message names the file."""


@dataclass(frozen=True)
class FoundDocument:
    """One file found in the mail, as the reply lists it."""

    display_name: str
    kind_label: str  # Japanese, e.g. 「認証キー等のお知らせ」「電子証書の閲覧画面」
    guarantee_no: str | None = None
    masked_key: str | None = None


@dataclass(frozen=True)
class GuaranteeLine:
    """The result for one guarantee submitted in the mail."""

    guarantee_no: str
    verdict: Verdict
    guarantee_type: str | None = None  # e.g. 前払金保証
    work_name: str | None = None


@dataclass(frozen=True)
class ReplyFacts:
    desk: str  # desk id, e.g. "misato"
    desk_name: str  # e.g. 「美郷町 契約窓口」
    desk_address: str
    contact: Sequence[str]
    receipt_no: str  # e.g. K-2026-000123
    received_at: datetime  # aware
    recipient: str  # the checked reply address (mailer.reply_policy.reply_address)
    verdict: Verdict
    original_message_id: str | None = None
    original_references: str | None = None
    original_subject: str | None = None
    documents: Sequence[FoundDocument] = ()
    guarantees: Sequence[GuaranteeLine] = ()
    findings: Sequence[Finding] = ()
    resend: bool = False  # this mail answers one of our "please resend" replies
    resend_of_receipt_no: str | None = None
    contractor_name: str | None = None  # the firm named on the verified certificate, for the greeting
    charset: Literal["utf-8", "iso-2022-jp"] = "utf-8"
    timezone: str = "Asia/Tokyo"
    short: bool = False  # the short reply: no subject, no file names, no findings, no threading
    extra: dict[str, Any] = field(default_factory=dict)  # more values for customised templates


def template_environment(template_dir: Path) -> jinja2.Environment:
    """The deployment's templates (``<config>/templates``): strict, HTML escaped, text verbatim."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_template(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    """Render one template; any problem becomes a TemplateProblem naming the file."""
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateNotFound:
        raise TemplateProblem(f"templates/{name}: the template is missing (keydesk init writes the default)") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"templates/{name}:{exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateProblem(f"templates/{name}: {exc.message}") from None


def local_time_text(moment: datetime, zone: str) -> str:
    """``2026年4月10日(金) 10時23分`` in the desk's zone (JST by default)."""
    if moment.tzinfo is None:
        raise ValueError("an aware datetime is needed to show the time in the desk's zone")
    local = moment.astimezone(ZoneInfo(zone))
    return (
        f"{local.year}年{local.month}月{local.day}日({_WEEKDAYS[local.weekday()]}) {local.hour}時{local.minute:02d}分"
    )


def ensure_masked(value: str | None) -> str | None:
    """A key that is already masked stays as it is; anything else is masked here."""
    if value is None or value == "":
        return None
    if _MASKED.match(value):
        return value
    old = _OLD_MASKED.match(value)
    return f"****-{old.group(1)}" if old else mask(value)


def finding_sentence(finding: Finding) -> str:
    """The sender's sentence, with every value that came from outside cleaned to one line."""
    params = {k: clean_header_text(str(v), 200) for k, v in finding.params.items()}
    if finding.document and "document" not in params:
        params["document"] = clean_header_text(finding.document, 200)
    if finding.guarantee_no and "guarantee_no" not in params:
        params["guarantee_no"] = clean_header_text(finding.guarantee_no, 64)
    return dataclasses.replace(finding, params=params).message


def _sentences(findings: Sequence[Finding], severities: set[Severity]) -> list[str]:
    out: list[str] = []
    for finding in findings:
        if finding.severity not in severities:
            continue
        sentence = finding_sentence(finding)
        if sentence and sentence not in out:
            out.append(sentence)
    return out


def guarantee_state(verdict: Verdict, findings: Sequence[Finding]) -> str:
    """How the reply names one guarantee's state: a returned one says what is asked (paper, PDF …)."""
    if verdict is not Verdict.RETURNED:
        return SENDER_STATES.get(verdict, "")
    return SENDER_STATES[request_of(findings) or Request.PDF]


def reply_context(facts: ReplyFacts) -> dict[str, Any]:
    """What the reply templates see (documented in the templates' header comments)."""
    request = request_of(facts.findings) if facts.verdict is Verdict.RETURNED else Request.NONE
    if facts.verdict is Verdict.RETURNED and request is Request.NONE:
        request = Request.PDF
    return {
        **facts.extra,
        **_desk_context(facts),
        "verdict": str(facts.verdict),
        "original_subject": clean_header_text(facts.original_subject or "", 200),
        "documents": [
            {
                "display_name": clean_header_text(d.display_name, 200) or "(名前のないファイル)",
                "kind_label": clean_header_text(d.kind_label, 60),
                "guarantee_no": clean_header_text(d.guarantee_no or "", 64),
                "masked_key": ensure_masked(d.masked_key) or "",
            }
            for d in facts.documents
        ],
        "guarantees": [
            {
                "guarantee_no": clean_header_text(g.guarantee_no, 64),
                "guarantee_type": clean_header_text(g.guarantee_type or "", 32),
                "work_name": clean_header_text(g.work_name or "", 200),
                "state": guarantee_state(g.verdict, [f for f in facts.findings if f.guarantee_no == g.guarantee_no]),
                "verdict": str(g.verdict),
            }
            for g in facts.guarantees
        ],
        "problems": _sentences(facts.findings, {Severity.ERROR, Severity.WARNING}),
        "notes": _sentences(facts.findings, {Severity.INFO}),
        "request": str(request),
        "contractor_name": clean_header_text(facts.contractor_name or "", 100),
        "results_follow": facts.verdict is Verdict.NEEDS_REVIEW
        and any(f.code in RESULT_FOLLOWS for f in facts.findings),
        "resend": facts.resend,
        "resend_of_receipt_no": clean_header_text(facts.resend_of_receipt_no or "", 32),
    }


def _tidy(text: str) -> str:
    # Template conditionals leave trailing spaces and runs of blank lines; mail wants neither.
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"


def _desk_context(facts: ReplyFacts) -> dict[str, Any]:
    """What both replies say of the desk and the receipt: written by the desk, never by the sender."""
    if facts.verdict == Verdict.IGNORED:
        raise ValueError("automatic mail is never answered (verdict ignored)")
    return {
        "desk_name": clean_header_text(facts.desk_name),
        "desk_address": facts.desk_address,
        "contact": [clean_header_text(line) for line in facts.contact],
        "receipt_no": clean_header_text(facts.receipt_no, 32),
        "received_at": local_time_text(facts.received_at, facts.timezone),
    }


def short_reply_context(facts: ReplyFacts) -> dict[str, Any]:
    """What the short reply's templates see: only what the desk itself wrote, nothing of the sender's."""
    return {
        **_desk_context(facts),
        "unreadable": any(f.code == "mail.unreadable" for f in facts.findings),
    }


def render_reply(facts: ReplyFacts, env: jinja2.Environment) -> tuple[str, str]:
    """(subject, body) as the contractor will read them."""
    if facts.short:
        context = short_reply_context(facts)
        templates = (SHORT_SUBJECT_TEMPLATE, SHORT_BODY_TEMPLATE)
    else:
        context = reply_context(facts)
        templates = (SUBJECT_TEMPLATE, BODY_TEMPLATE)
    subject = clean_header_text(render_template(env, templates[0], context))
    body = _tidy(render_template(env, templates[1], context))
    return subject, body


def build_reply(facts: ReplyFacts, env: jinja2.Environment, *, now: datetime) -> EmailMessage:
    """The reply, ready for ``mailer.outbox.enqueue(kind="reply", idempotency_key=f"reply:{inbound_id}")``."""
    subject, body = render_reply(facts, env)
    message = build_message(
        sender=Mailbox(facts.desk_address, facts.desk_name),
        to=[Mailbox(facts.recipient)],
        subject=subject,
        text=body,
        now=now,
        charset=facts.charset,
        auto_submitted="auto-replied",
        suppress_auto_responses=True,
        thread=None if facts.short else thread_headers(facts.original_message_id, facts.original_references),
    )
    mark(message, kind=REPLY_KIND, desk=facts.desk)
    return message
