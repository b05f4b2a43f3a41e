"""One intake pass over a desk's mailbox, exactly once in effect.

A pass has three stages, each safe to repeat after a crash at any point:

1. **Record** (intake/recording.py). Every new mail is stored durably (fsync) and its
   ``InboundMessage`` row committed before any of them is processed.
2. **Process** (here). Pending rows are *claimed* in batches (one committed UPDATE per batch; on
   PostgreSQL ``FOR UPDATE SKIP LOCKED``, so several workers take different rows, never the same
   rows in the same order). The claimed mails then go through the ``process`` hook (the pipeline)
   in ONE transaction per batch, each mail inside a SAVEPOINT of its own: its submissions,
   documents, reply and the mark "processed" commit together with the batch, and a mail whose
   processing raises rolls back only its savepoint, counts an attempt against that mail only, and
   leaves the others alone. The verdicts' audit events are appended together at the end of the
   batch, just before its commit (on PostgreSQL the desk's chain lock is held for that moment
   only). A batch commits after ``_PROCESS_BATCH`` mails or ``_COMMIT_SECONDS``, whichever first,
   so SQLite's single writer lock is never held long.
   A claim counts as an *interruption* until the commit that records the outcome undoes it: a
   run the process did not finish because it was killed from outside stays counted apart
   (``interrupted``, bounded by ``MAX_INTERRUPTIONS`` so a mail that kills the daemon itself
   cannot stop the desk forever), never as the mail's failure. A mail interrupted before is
   processed in a transaction of its own, so a mail that kills the process takes no batch
   companions down with it a second time. A quarantined mail is still acknowledged (the
   ``acknowledge`` hook, where the reply policy allows) and listed for staff in the digest.
3. **Act** (intake/mailbox_actions.py). Only after that commit is the mail moved to its verdict's
   folder (or flagged seen), one UID MOVE per folder; then ``mailbox_action_done`` is set for all
   of them in one commit. A crash in between only repeats the move.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from foundation.errors import ContentionError
from intake.decision_filing import file_decided_mails
from intake.claims import claim_batch, holders_in_hand
from intake.mailbox_actions import act
from intake.pass_report import PassReport, TakenMail
from intake.poller import MailboxConnection
from intake.raw_store import RawStore
from intake.recording import ACTOR, header_summary as header_summary, record_new
from intake.settings import Limits, MailboxSettings, PollSettings
from rules.findings import Verdict
from store import stored_findings
from store.audit import record as audit, record_many
from store.claim_owner import ClaimOwner
from store.retry import is_conflict, retry_on_conflict
from store.states import InboundState
from store.tables import InboundMessage, OutboxMessage, utcnow

__all__ = ["IntakeService", "Outcome", "PassReport", "TakenMail", "header_summary"]

log = logging.getLogger(__name__)

# Mails claimed at once, and the longest a batch's transaction stays open before it commits (the
# rest of the batch goes on in the next one). Small enough that two workers share a burst.
_PROCESS_BATCH = 20
_COMMIT_SECONDS = 0.25
# How long a pass waits for other workers' batches before it moves what is done, and how often it looks.
_AWAIT_OTHERS_SECONDS = 15.0
_AWAIT_OTHERS_STEP = 0.05


@dataclass(frozen=True)
class Outcome:
    """What the pipeline decided for one mail."""

    verdict: Verdict
    findings: tuple[str, ...] = ()  # finding codes, for the CLI and the row when the pipeline leaves it empty


# process(session, inbound_row, raw_bytes) -> Outcome. Runs inside the transaction that marks the
# row processed (in a SAVEPOINT of its own); it must not commit. For a too-large mail ``raw_bytes``
# are the headers only. The hook may also offer ``reserve_receipt_nos(session, rows)``: called in the
# short claim transaction, so the receipt counter's lock is not held through a whole batch.
ProcessHook = Callable[[Session, InboundMessage, bytes], Outcome]
# Called after a mail's processing committed and before its mailbox action (tests crash here).
AfterCommitHook = Callable[[InboundMessage], None]
# Called once per committed batch with the mails it took (the daemon wakes the outbox here).
BatchCommittedHook = Callable[[list[TakenMail]], None]
# acknowledge(session, inbound_row, raw_bytes): answer a mail being quarantined ("we have it, a person
# will look"), inside the transaction that quarantines it; must not commit.
QuarantineHook = Callable[[Session, InboundMessage, bytes], None]
# Processing runs a mail may see interrupted by the death of the process before it is quarantined.
MAX_INTERRUPTIONS = 10

_INBOUND = InboundMessage.__table__


@dataclass
class _BatchResult:
    done: int = 0  # how many of the batch's ids this transaction settled
    taken: list[TakenMail] = field(default_factory=list)
    failed: list[tuple[int, bool]] = field(default_factory=list)  # (inbound id, attempts used up)


class IntakeService:
    def __init__(
        self,
        *,
        desk: str,
        mailbox: MailboxSettings,
        poll: PollSettings,
        limits: Limits,
        engine: Engine,
        store: RawStore,
        process: ProcessHook,
        after_commit: AfterCommitHook | None = None,
        on_batch: BatchCommittedHook | None = None,
        acknowledge: QuarantineHook | None = None,
        owner: ClaimOwner | None = None,
    ) -> None:
        """``owner``: this process's claim identity, so several workers can process the same desk's
        mail (each mail by one of them); without it the caller must be the only one processing."""
        self.desk = desk
        self.mailbox = mailbox
        self.poll = poll
        self.limits = limits
        self.engine = engine
        self.store = store
        self.process = process
        self.after_commit = after_commit
        self.on_batch = on_batch
        # The pipeline answers quarantined mail too; a bare process hook may not.
        self.acknowledge = acknowledge or getattr(process, "acknowledge_quarantined", None)
        self.owner = owner

    @property
    def account(self) -> str:
        return self.mailbox.username

    def mine(self) -> tuple:
        """The WHERE clause for this desk's mailbox."""
        return (
            InboundMessage.desk == self.desk,
            InboundMessage.account == self.account,
            InboundMessage.mailbox == self.mailbox.folder,
        )

    def run_pass(self, conn: MailboxConnection) -> PassReport:
        """One pass on an open connection (the caller holds the mailbox lock)."""
        selected = conn.select()
        report = PassReport(uidvalidity=selected.uidvalidity)
        present = conn.search_uids()
        copies = record_new(self, conn, selected.uidvalidity, present, report)
        self._process_pending(report)
        self._await_other_workers(report)
        act(self, conn, selected.uidvalidity, set(present), copies, report)
        # Mails staff decided on in the console go on from the review folder to their outcome's folder.
        report.actions += file_decided_mails(conn, self.engine, self.desk, self.mailbox)
        return report

    def run_until_caught_up(self, conn: MailboxConnection) -> Iterator[PassReport]:
        """Passes one after the other until no new mail is left beyond a pass's window
        (``poll.mails_per_pass``); each pass's report as it ends."""
        while True:
            report = self.run_pass(conn)
            yield report
            if not report.more:
                return

    # -- stage 2: process ----------------------------------------------------------------------

    def process_pending(self) -> PassReport:
        """Stage 2 alone, without the mailbox: what a worker that does not hold the mailbox lock does
        with mail the lock holder recorded (the holder's pass waits for these batches and moves them)."""
        report = PassReport()
        self._process_pending(report)
        return report

    def _process_pending(self, report: PassReport) -> None:
        # Each pending mail is tried at most once per pass: the claims walk up the ids.
        after = 0
        while True:
            claim = retry_on_conflict(
                functools.partial(claim_batch, self, after, MAX_INTERRUPTIONS, _PROCESS_BATCH),
                what="claiming inbound mail",
            )
            if not claim.process and not claim.exhausted:
                return
            after = claim.last_id
            for inbound_id, reason in claim.exhausted:
                self._quarantine(inbound_id, reason, report)
            self._process_claimed(claim.process, report)

    def _await_other_workers(self, report: PassReport) -> None:
        """Wait (bounded) for the batches other live workers still have in hand, so this pass moves
        their mails too instead of leaving them in the folder until the next one. A worker that
        died meanwhile leaves its mails claimable: they are processed here."""
        if self.owner is None:
            return
        deadline = time.monotonic() + _AWAIT_OTHERS_SECONDS
        while time.monotonic() < deadline:
            with Session(self.engine) as session:
                holders = holders_in_hand(self, session, 0)
            if not holders:
                return
            others = [holder for holder in holders if holder != self.owner.id]
            if len(others) < len(holders) or not all(self.owner.alive(holder) for holder in others):
                self._process_pending(report)  # ours left over, or a dead worker's: take them
                continue
            time.sleep(_AWAIT_OTHERS_STEP)

    def _process_claimed(self, ids: list[int], report: PassReport) -> None:
        pending = list(ids)
        batched = len(pending) > 1
        while pending:
            if batched:
                try:
                    result = self._run_batch(pending)
                except Exception as exc:  # a lost race: mail by mail from here, each run again until it wins
                    if not is_conflict(exc):
                        raise
                    batched = False
                    continue
            else:
                result = self._run_single(pending[0])
            self._settle(result, report)
            pending = pending[result.done :]

    def _run_single(self, inbound_id: int) -> _BatchResult:
        try:
            # Losing a race (the audit chain, a receipt counter) runs the whole mail again.
            return retry_on_conflict(
                lambda: self._run_batch([inbound_id]), what=f"processing inbound mail {inbound_id}"
            )
        except ContentionError as exc:
            with Session(self.engine) as session:
                row = session.get(InboundMessage, inbound_id)
                give_up = self._note_failure(session, row, exc)
                session.commit()
            return _BatchResult(done=1, failed=[(inbound_id, give_up)])

    def _run_batch(self, ids: list[int]) -> _BatchResult:
        """Process claimed mails in one transaction, each in a SAVEPOINT; conflicts propagate."""
        result = _BatchResult()
        verdicts: list[tuple[int, dict]] = []
        with Session(self.engine) as session:
            # A write first: it opens SQLite's transaction (a SAVEPOINT outside one would start its
            # own and commit at its RELEASE) and, on PostgreSQL, locks the batch's rows.
            session.connection().execute(
                update(_INBOUND).where(_INBOUND.c.id.in_(ids)).values(processing_by=_INBOUND.c.processing_by)
            )
            # The batch's rows in one query, held here (the session's identity map keeps rows only
            # while someone does): each mail's session.get below then finds its row loaded.
            in_hand = {row.id: row for row in session.exec(select(InboundMessage).where(InboundMessage.id.in_(ids)))}
            started = time.monotonic()
            for inbound_id in ids:
                if result.done and time.monotonic() - started >= _COMMIT_SECONDS:
                    break
                result.done += 1
                try:
                    with session.begin_nested():
                        row = in_hand[inbound_id]
                        if row.processed_at is not None:
                            continue  # a worker that thought us dead took it over and finished it
                        taken, detail = self._process_row(session, row)
                except Exception as exc:  # one bad mail must not stop the others (a race aside)
                    if is_conflict(exc):
                        raise
                    row = session.get(InboundMessage, inbound_id)
                    result.failed.append((inbound_id, self._note_failure(session, row, exc)))
                    continue
                result.taken.append(taken)
                verdicts.append((inbound_id, detail))
            if verdicts:
                self._audit_verdicts(session, verdicts)
            session.commit()
        return result

    def _process_row(self, session: Session, row: InboundMessage) -> tuple[TakenMail, dict]:
        raw = self.store.read(row.raw_path)
        outcome = self.process(session, row, raw)
        verdict = Verdict(outcome.verdict)
        row.verdict = verdict.value
        if row.findings_json is None:
            row.findings_json = stored_findings.dump_codes(outcome.findings)
        if row.state == InboundState.NEW:
            row.state = InboundState.PROCESSED
        row.processed_at = utcnow()
        row.last_error = None
        row.interrupted = max(row.interrupted - 1, 0)
        row.processing_by = None
        session.add(row)
        detail = {"verdict": row.verdict, "findings": list(outcome.findings), "receipt_no": row.receipt_no}
        taken = TakenMail(row.id, row.uid, row.sender, row.subject, row.state, row.verdict, tuple(outcome.findings))
        return taken, detail

    def _audit_verdicts(self, session: Session, verdicts: list[tuple[int, dict]]) -> None:
        """Each verdict and the reply it queued (if any), audited in the transaction that commits both."""
        replies: dict[int, list[dict]] = {inbound_id: [] for inbound_id, _ in verdicts}
        rows = session.exec(
            select(OutboxMessage.inbound_id, OutboxMessage.id, OutboxMessage.message_id)
            .where(OutboxMessage.inbound_id.in_(list(replies)), OutboxMessage.kind == "reply")
            .order_by(OutboxMessage.id)
        ).all()
        for inbound_id, outbox_id, message_id in rows:
            replies[inbound_id].append({"outbox": outbox_id, "message_id": message_id})
        events = [
            ("intake.verdict", f"inbound:{inbound_id}", {**detail, "replies": replies[inbound_id]})
            for inbound_id, detail in verdicts
        ]
        record_many(session, self.desk, ACTOR, events)

    def _note_failure(self, session: Session, row: InboundMessage, exc: Exception) -> bool:
        """Count a failed attempt against this mail (not an interruption); True when none are left."""
        error = f"{type(exc).__name__}: {exc}"[:2000]
        log.warning("processing inbound mail %s failed: %s", row.id, type(exc).__name__)
        row.last_error = error
        row.attempts += 1
        row.interrupted = max(row.interrupted - 1, 0)
        row.processing_by = None
        session.add(row)
        return row.attempts >= self.poll.max_attempts

    def _settle(self, result: _BatchResult, report: PassReport) -> None:
        """After a batch committed: the report, the after-commit hook, and quarantine for mails out of attempts."""
        report.taken.extend(result.taken)
        report.failures += len(result.failed)
        if self.on_batch is not None and result.taken:
            self.on_batch(result.taken)
        if self.after_commit is not None and result.taken:
            with Session(self.engine) as session:
                for taken in result.taken:
                    self.after_commit(session.get(InboundMessage, taken.inbound_id))
        for inbound_id, give_up in result.failed:
            if give_up:
                self._quarantine(inbound_id, "gave up after repeated failures", report)

    def _quarantine(self, inbound_id: int, reason: str, report: PassReport) -> None:
        def attempt() -> InboundMessage:
            with Session(self.engine) as session:
                row = session.get(InboundMessage, inbound_id)
                row.state = InboundState.QUARANTINED
                row.processing_by = None
                session.add(row)
                audit(
                    session,
                    self.desk,
                    ACTOR,
                    "intake.quarantined",
                    f"inbound:{inbound_id}",
                    {
                        "attempts": row.attempts,
                        "interrupted": row.interrupted,
                        "error": (row.last_error or reason)[:500],
                    },
                )
                self._acknowledge(session, row)
                session.commit()
                session.refresh(row)
                return row

        row = retry_on_conflict(attempt, what=f"quarantining inbound mail {inbound_id}")
        log.error(
            "inbound mail %s quarantined (%d failed attempts, %d interrupted runs)",
            inbound_id,
            row.attempts,
            row.interrupted,
        )
        report.taken.append(TakenMail(row.id, row.uid, row.sender, row.subject, row.state, None, ()))

    def _acknowledge(self, session: Session, row: InboundMessage) -> None:
        """The sender still hears that the mail arrived; a failure here never blocks the quarantine."""
        if self.acknowledge is None:
            return
        try:
            with session.begin_nested():
                self.acknowledge(session, row, self.store.read(row.raw_path) if row.raw_path else b"")
        except Exception as exc:  # noqa: BLE001 - the mail is quarantined with or without an answer
            log.warning("inbound mail %s: no acknowledgement for the quarantined mail: %s", row.id, type(exc).__name__)
