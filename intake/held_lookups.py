"""Held look-ups: a submission whose look-up service was unreachable is looked up again later.

The pipeline holds such a submission (``lookup_state = "held"``, verdict needs_review with
``lookup.unavailable``) and the contractor is told at once that the mail arrived and the check will
follow. ``retry_held`` (run by `keydesk run` and after `keydesk poll --once`) decides each mail whose
pause is over once more, exactly as when it came in (``Pipeline.verify_again``: same walk, same
look-up port, same signature check and rules). Still unreachable: the next pause of the desk's
schedule, and after the last one staff decide (``lookup_state = "staff"``, in the digest). Answered:
the held submissions take the new verdict and the contractor gets the one result mail.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from intake.pipeline import Pipeline
from intake.reply_builder import found_document, guarantee_lines
from intake.result_reply import enqueue_result_reply
from rules.findings import Verdict, strongest
from store import stored_findings
from store.audit import record as audit
from store.retry import retry_on_conflict
from store.states import LookupState
from store.tables import InboundMessage, Submission
from verifier.verify import MailVerdict

log = logging.getLogger(__name__)
HELD = LookupState.HELD


@dataclass
class HeldReport:
    decided: list[str] = field(default_factory=list)  # receipt numbers answered now
    still_held: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)  # now for staff

    @property
    def anything(self) -> bool:
        return bool(self.decided or self.given_up)


def due_mails(session: Session, desk: str, now: datetime) -> list[int]:
    """Inbound ids with a held submission whose pause is over, oldest first."""
    return sorted(
        set(
            session.exec(
                select(Submission.inbound_id).where(
                    Submission.desk == desk, Submission.lookup_state == HELD, Submission.next_lookup_at <= now
                )
            )
        )
    )


def retry_held(pipeline: Pipeline, engine: Engine, now: datetime) -> HeldReport:
    report = HeldReport()
    with Session(engine) as session:
        due = due_mails(session, pipeline.profile.desk_id, now)
    for inbound_id in due:
        retry_on_conflict(
            partial(_retry_mail, pipeline, engine, inbound_id, now, report),
            what=f"held look-up of inbound mail {inbound_id}",
        )
    return report


def _retry_mail(pipeline: Pipeline, engine: Engine, inbound_id: int, now: datetime, report: HeldReport) -> None:
    with Session(engine) as session:
        # Locked (PostgreSQL) before the held rows are read: of several workers, the second waits
        # and then finds nothing held, instead of looking the guarantee up a second time.
        row = session.get(InboundMessage, inbound_id, with_for_update=True)
        held = list(
            session.exec(select(Submission).where(Submission.inbound_id == inbound_id, Submission.lookup_state == HELD))
        )
        if not held:
            return
        verdict = pipeline.verify_again(session, row, pipeline.store.read(row.raw_path), now)
        if any(f.code == "lookup.unavailable" for f in verdict.all_findings):
            _hold_again(session, pipeline, row, held, now, report)
        else:
            _decide(session, pipeline, row, held, verdict, now, report)
        session.commit()


def _hold_again(
    session: Session, pipeline: Pipeline, row: InboundMessage, held: list[Submission], now: datetime, report: HeldReport
) -> None:
    for submission in held:
        submission.lookup_attempts += 1
        submission.next_lookup_at = pipeline.lookup_settings.next_lookup_at(submission.lookup_attempts, now)
        if submission.next_lookup_at is None:
            submission.lookup_state = LookupState.STAFF
        session.add(submission)
    if held[0].lookup_state == LookupState.STAFF:
        audit(
            session,
            row.desk,
            "intake",
            "lookup.gave_up",
            f"inbound:{row.id}",
            {"receipt_no": row.receipt_no, "tries": held[0].lookup_attempts},
            at=now,
        )
        log.warning("mail %s: the look-up service stayed unreachable; staff decide", row.receipt_no)
        report.given_up.append(row.receipt_no or "")
    else:
        report.still_held.append(row.receipt_no or "")


def _decide(
    session: Session,
    pipeline: Pipeline,
    row: InboundMessage,
    held: list[Submission],
    verdict: MailVerdict,
    now: datetime,
    report: HeldReport,
) -> None:
    by_number = {g.guarantee_no: g for g in verdict.guarantees if g.guarantee_no}
    for submission in held:
        guarantee = by_number.get(submission.guarantee_no)
        if guarantee is None:
            continue  # cannot happen for the same raw mail; left held rather than guessed
        certificate = guarantee.certificate
        submission.verdict = guarantee.verdict.value
        submission.findings_json = stored_findings.dump(verdict.findings + guarantee.findings)
        submission.guarantee_type = guarantee.guarantee_type.value if guarantee.guarantee_type else None
        submission.contract_no = guarantee.contract_no
        submission.contractor_name = certificate.contractor_name if certificate else None
        submission.work_name = certificate.work_name if certificate else None
        submission.department = guarantee.department
        submission.certificate_json = guarantee.signed.to_json() if certificate and guarantee.signed else None
        submission.lookup_state, submission.next_lookup_at = LookupState.DONE, None
        session.add(submission)
    others = session.exec(select(Submission.verdict).where(Submission.inbound_id == row.id)).all()
    mail_verdict = strongest([Verdict(v) for v in others] + [f.verdict for f in verdict.findings])
    row.verdict = mail_verdict.value
    session.add(row)
    audit(
        session,
        row.desk,
        "intake",
        "lookup.completed",
        f"inbound:{row.id}",
        {"receipt_no": row.receipt_no, "verdict": mail_verdict.value},
        at=now,
    )
    enqueue_result_reply(
        session,
        profile=pipeline.profile,
        templates=pipeline.templates,
        row=row,
        verdict=mail_verdict,
        guarantees=guarantee_lines(verdict),
        findings=verdict.all_findings,
        documents=[found_document(d) for d in verdict.documents],
        now=now,
    )
    log.info("mail %s: held look-up answered: %s", row.receipt_no, mail_verdict.value)
    report.decided.append(row.receipt_no or "")
