"""Guarantees revoked after the desk accepted them: found, marked, and put before staff.

A revoked guarantee is only "returned" when it arrives revoked; one revoked later is something the
town must be told. Two ways find it:

- ``mark_revoked``: the embedded guarantor revoked it in this same database (``keydesk guarantor
  revoke``) and tells the desk at once;
- ``recheck_accepted``: a periodic look-up of the accepted guarantees through the desk's
  ``CertificateLookup`` port, whatever adapter serves it (embedded, http, …), in ``keydesk run``.

Either way the submission gets ``revoked_at`` / ``revoked_reason`` and the audit event
``submission.revoked_after_acceptance`` (subject ``submission:<id>``): the digest shows it in its
first section and the console can flag it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterable

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from intake.register_store import submission_certificate
from rules.findings import Verdict
from store.audit import record as audit
from store.key_vault import KeyVault
from store.retry import retry_on_conflict
from store.tables import Submission
from verifier.lookup import CertificateLookup, LookupStatus

log = logging.getLogger(__name__)
REVOKED_AFTER_ACCEPTANCE = "submission.revoked_after_acceptance"


def mark_revoked(session: Session, guarantee_no: str, reason: str, now: datetime, *, actor: str,
                 desk: str | None = None) -> list[int]:
    """Mark the accepted, not yet marked submissions of this guarantee (at ``desk``, or at every desk);
    returns their ids. In the caller's transaction."""
    query = select(Submission).where(
        Submission.guarantee_no == guarantee_no, Submission.verdict == Verdict.ACCEPTED.value,
        Submission.revoked_at.is_(None),
    )
    if desk is not None:
        query = query.where(Submission.desk == desk)
    marked = []
    for submission in session.exec(query.order_by(Submission.id)).all():
        submission.revoked_at = now
        submission.revoked_reason = reason or None
        session.add(submission)
        audit(session, submission.desk, actor, REVOKED_AFTER_ACCEPTANCE, f"submission:{submission.id}",
              {"guarantee_no": guarantee_no, "reason": reason}, at=now)
        marked.append(submission.id)
        log.warning("accepted guarantee %s (submission %s, desk %s) was revoked: %s",
                    guarantee_no, submission.id, submission.desk, reason)
    return marked


@dataclass
class RecheckReport:
    checked: int = 0
    revoked: list[str] = field(default_factory=list)  # guarantee numbers found revoked in this round
    not_checked: int = 0  # the look-up did not answer (unavailable, refused): tried again next round

    def summary(self) -> str:
        return (f"{self.checked} accepted guarantees looked up again, {len(self.revoked)} revoked"
                + (f", {self.not_checked} not answered" if self.not_checked else ""))


@dataclass(frozen=True)
class _Due:
    id: int
    desk: str
    guarantee_no: str
    access_key: str


def recheck_accepted(engine: Engine, lookup_for: Callable[[str], CertificateLookup], vault: KeyVault,
                     now: datetime, *, desks: Iterable[str]) -> RecheckReport:
    """Look every accepted, unrevoked guarantee of ``desks`` up again whose period has not ended;
    mark those the look-up now answers "revoked". ``lookup_for(desk)`` gives the desk's adapter."""
    report = RecheckReport()
    for due in _due(engine, list(desks), vault, now):
        result = lookup_for(due.desk).lookup(due.guarantee_no, due.access_key, now)
        if result.status is LookupStatus.FOUND:
            report.checked += 1
        elif result.status is LookupStatus.REVOKED:
            report.checked += 1

            def attempt(due: _Due = due, reason: str = result.reason) -> list[int]:
                with Session(engine) as session:
                    marked = mark_revoked(session, due.guarantee_no, reason, now, actor="recheck", desk=due.desk)
                    session.commit()
                    return marked

            if retry_on_conflict(attempt, what=f"marking {due.guarantee_no} revoked"):
                report.revoked.append(due.guarantee_no)
        else:
            # NO_MATCH after acceptance (the key was reissued?) is for a person, not for this loop.
            report.not_checked += 1
    return report


def _due(engine: Engine, desks: list[str], vault: KeyVault, now: datetime) -> list[_Due]:
    with Session(engine) as session:
        rows = session.exec(
            select(Submission).where(
                Submission.desk.in_(desks), Submission.verdict == Verdict.ACCEPTED.value,
                Submission.revoked_at.is_(None), Submission.guarantee_no.is_not(None),
                Submission.access_key_encrypted.is_not(None),
            ).order_by(Submission.id)
        ).all()
        due, seen = [], set()
        for row in rows:
            certificate = submission_certificate(row)
            if (row.desk, row.guarantee_no) in seen or (certificate and certificate.period_end < now.date()):
                continue
            seen.add((row.desk, row.guarantee_no))
            due.append(_Due(row.id, row.desk, row.guarantee_no, vault.decrypt(row.access_key_encrypted)))
        return due
