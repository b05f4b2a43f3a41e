"""`keydesk rules check --replay N`: what the current rules would decide for recorded guarantees.

Each recent submission whose certificate the rules could judge (read, signed, looked up) is
evaluated again against the register and the accepted guarantees as they are now; the changed
verdicts, findings and departments come back. Nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlmodel import Session, select

from intake.register_store import DbAcceptedIndex, DbContractRegister, submission_certificate
from rules.evaluate import RULE_CODES, evaluate
from rules.findings import CODES, strongest
from rules.schema import DeskRules
from store import stored_findings
from store.tables import InboundMessage, Submission
from verifier.register import find_contract


@dataclass(frozen=True)
class ReplayChange:
    """What the current rules would decide differently for one recorded guarantee."""

    receipt_no: str | None
    guarantee_no: str
    old_verdict: str
    new_verdict: str
    added: tuple[str, ...]
    resolved: tuple[str, ...]
    old_department: str | None
    new_department: str | None

    @property
    def verdict_changed(self) -> bool:
        return self.old_verdict != self.new_verdict


def replay_submissions(
    session: Session, desks: Mapping[str, DeskRules], limit: int
) -> tuple[list[ReplayChange], int, int]:
    """(what would change, submissions that could not be replayed, submissions seen), newest first.

    Reads only: the caller rolls the session back.
    """
    rows = session.exec(
        select(Submission, InboundMessage.receipt_no)
        .join(InboundMessage, Submission.inbound_id == InboundMessage.id)
        .order_by(Submission.id.desc())
        .limit(limit)
    ).all()
    register, accepted = DbContractRegister(session), DbAcceptedIndex(session)
    changes: list[ReplayChange] = []
    skipped = 0
    for submission, receipt_no in rows:
        rules = desks.get(submission.desk)
        certificate = submission_certificate(submission)
        kept = [code for code in stored_findings.codes(submission.findings_json) if code not in RULE_CODES]
        if (
            rules is None
            or certificate is None
            or any(c.startswith(("lookup.", "cert.signature", "key.")) for c in kept)
        ):
            # No certificate the rules could judge (unknown, unread or untrusted): nothing to replay.
            skipped += 1
            continue
        contract = find_contract(register, submission.desk, certificate)
        number = contract.contract_no if contract else certificate.contract_no
        findings = evaluate(
            certificate,
            rules,
            contract=contract,
            previous_receipt=accepted.receipt_for(submission.desk, certificate.guarantee_no, before_id=submission.id),
            other_advances=accepted.advance_amounts(submission.desk, number),
        )
        new_codes = [f.code for f in findings]
        verdict = strongest([CODES[c].verdict for c in kept if c in CODES] + [f.verdict for f in findings])
        department = rules.department_for(certificate.guarantee_type)
        old_codes = [c for c in stored_findings.codes(submission.findings_json) if c in RULE_CODES]
        added = tuple(sorted(set(new_codes) - set(old_codes)))
        resolved = tuple(sorted(set(old_codes) - set(new_codes)))
        if (
            verdict.value != submission.verdict
            or added
            or resolved
            or (department and department != submission.department)
        ):
            changes.append(
                ReplayChange(
                    receipt_no,
                    certificate.guarantee_no,
                    submission.verdict,
                    verdict.value,
                    added,
                    resolved,
                    submission.department,
                    department,
                )
            )
    return changes, skipped, len(rows)
