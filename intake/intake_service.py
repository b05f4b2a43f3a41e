"""One intake pass over a desk's mailbox, exactly once in effect.

A pass has three stages, each safe to repeat after a crash at any point:

1. **Record.** For every UID not yet recorded under the folder's current UIDVALIDITY, the raw
   mail is stored (fsync) and its ``InboundMessage`` row committed before anything else. A mail
   whose SHA-256 is already known (a UIDVALIDITY reset, a second delivery) is recognised and never
   becomes a second row: the existing row follows it to its new place.
2. **Process.** Each unprocessed row goes through the ``process`` hook (the pipeline) inside ONE
   transaction that also marks the row processed: submissions, documents and the reply in the
   outbox commit together or not at all. An attempt counts against a mail only when processing
   it failed (an exception); a run the process did not finish because it was killed from outside
   is counted apart (``interrupted``, bounded by ``MAX_INTERRUPTIONS`` so a mail that kills the
   daemon itself cannot stop the desk forever). A quarantined mail is still acknowledged (the
   ``acknowledge`` hook, where the reply policy allows) and listed for staff in the digest.
3. **Act.** Only after that commit is the mail moved to its verdict's folder (or flagged seen);
   then ``mailbox_action_done`` is set. A crash in between only repeats the move.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, or_, select

from intake.decision_filing import file_decided_mails
from foundation.errors import OperationalError
from intake.mime_headers import raw_value
from intake.poller import MailboxConnection
from intake.raw_store import RawStore
from intake.settings import Limits, MailboxSettings, PollSettings
from intake.text_decoding import decode_header
from rules.findings import Verdict
from store import stored_findings
from store.audit import record as audit
from store.claim_owner import ClaimOwner
from store.retry import retry_on_conflict
from store.states import InboundState
from store.tables import InboundMessage, OutboxMessage, utcnow

log = logging.getLogger(__name__)

ACTOR = "intake"
_HEADER_TEXT_MAX = 998
_HEADER_BLOCK_MAX = 256 * 1024
_BATCH_MAILS = 100
_UIDS_PER_COMMAND = 500


@dataclass(frozen=True)
class Outcome:
    """What the pipeline decided for one mail."""

    verdict: Verdict
    findings: tuple[str, ...] = ()  # finding codes, for the CLI and the row when the pipeline leaves it empty


# process(session, inbound_row, raw_bytes) -> Outcome. Runs inside the transaction that marks the
# row processed; it must not commit. For a too-large mail ``raw_bytes`` are the headers only.
ProcessHook = Callable[[Session, InboundMessage, bytes], Outcome]
# Called after a mail's processing committed and before its mailbox action (tests crash here).
AfterCommitHook = Callable[[InboundMessage], None]
# acknowledge(session, inbound_row, raw_bytes): answer a mail being quarantined ("we have it, a person
# will look"), inside the transaction that quarantines it; must not commit.
QuarantineHook = Callable[[Session, InboundMessage, bytes], None]
# Processing runs a mail may see interrupted by the death of the process before it is quarantined.
MAX_INTERRUPTIONS = 10


@dataclass(frozen=True)
class TakenMail:
    inbound_id: int
    uid: int
    sender: str | None
    subject: str | None
    state: str
    verdict: str | None
    findings: tuple[str, ...]

    def to_json(self) -> dict:
        return {
            "inbound_id": self.inbound_id,
            "uid": self.uid,
            "sender": self.sender,
            "subject": self.subject,
            "state": self.state,
            "verdict": self.verdict,
            "findings": list(self.findings),
        }


@dataclass
class PassReport:
    uidvalidity: int = 0
    recorded: int = 0  # new rows
    recognised: int = 0  # mails already known by their hash (moved, re-delivered, new UIDVALIDITY)
    taken: list[TakenMail] = field(default_factory=list)  # processed or quarantined in this pass
    # Mails found again by their hash (a second copy, a move, a new UIDVALIDITY): touched, not processed.
    recognised_mails: list[TakenMail] = field(default_factory=list)
    failures: int = 0  # processing attempts that raised
    actions: int = 0  # mails moved or flagged


@dataclass(frozen=True)
class _Fetched:
    uid: int
    data: bytes  # the whole mail, or only its headers when too large
    size: int  # RFC822.SIZE for a too-large mail
    too_large: bool


@dataclass(frozen=True)
class _Copy:
    uid: int
    original_id: int


class MailTakenElsewhere(OperationalError):
    """Another worker processed the mail first (it took our claim for a dead one's)."""


_INBOUND = InboundMessage.__table__


def _same_holder(holder: str | None):
    column = _INBOUND.c.processing_by
    return column.is_(None) if holder is None else column == holder


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
        # The pipeline answers quarantined mail too; a bare process hook may not.
        self.acknowledge = acknowledge or getattr(process, "acknowledge_quarantined", None)
        self.owner = owner

    @property
    def account(self) -> str:
        return self.mailbox.username

    def _mine(self):
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
        copies = self._record_new(conn, selected.uidvalidity, present, report)
        self._process_pending(report)
        self._act(conn, selected.uidvalidity, set(present), copies, report)
        # Mails staff decided on in the console go on from the review folder to their outcome's folder.
        report.actions += file_decided_mails(conn, self.engine, self.desk, self.mailbox)
        return report

    # -- stage 1: record -----------------------------------------------------------------------

    def _record_new(
        self, conn: MailboxConnection, uidvalidity: int, present: list[int], report: PassReport
    ) -> list[_Copy]:
        with Session(self.engine) as session:
            known = set(
                session.exec(select(InboundMessage.uid).where(*self._mine(), InboundMessage.uidvalidity == uidvalidity))
            )
        new = [uid for uid in present if uid not in known]
        copies: list[_Copy] = []
        if not new:
            return copies
        sizes: dict[int, int] = {}
        for chunk in _chunks(new):  # bounded commands: a mailbox of 10,000 mails is not one FETCH
            sizes.update(conn.sizes(chunk))
        limit = self.limits.mail_max_bytes
        fitting = {uid: size for uid, size in sizes.items() if size <= limit}
        oversize = [uid for uid, size in sizes.items() if size > limit]
        batch: list[_Fetched] = []
        batch_bytes = 0
        in_folder = set(present)
        # Recorded in batches of about a fetch chunk: one fsync per file, one per folder and
        # one commit per batch, all before any of these mails is processed.
        for uid, raw in conn.fetch_bodies(fitting, self.poll.fetch_chunk_bytes, limit):
            if raw is None:
                oversize.append(uid)  # vanished meanwhile, or larger than it claimed
                continue
            batch.append(_Fetched(uid, raw, len(raw), False))
            batch_bytes += len(raw)
            if batch_bytes >= self.poll.fetch_chunk_bytes or len(batch) >= _BATCH_MAILS:
                self._record(batch, uidvalidity, in_folder, report, copies)
                batch, batch_bytes = [], 0
        for uid in sorted(oversize):
            headers = conn.fetch_headers(uid)
            if headers is not None:  # else expunged by someone else meanwhile: nothing to take
                batch.append(_Fetched(uid, headers, sizes.get(uid, len(headers)), True))
        self._record(batch, uidvalidity, in_folder, report, copies)
        return copies

    def _record(
        self, batch: list[_Fetched], uidvalidity: int, present: set[int], report: PassReport, copies: list[_Copy]
    ) -> None:
        if not batch:
            return
        stored = self.store.put_many([item.data for item in batch])  # durable before the rows exist

        def attempt() -> tuple[int, int, list[_Copy], list[TakenMail]]:
            recorded, recognised = 0, 0
            found: list[_Copy] = []
            touched: list[TakenMail] = []
            new_rows: list[InboundMessage] = []
            with Session(self.engine) as session:
                for item, file in zip(batch, stored):
                    # The query autoflushes, so a copy earlier in this same batch is found too.
                    existing = session.exec(
                        select(InboundMessage).where(
                            InboundMessage.desk == self.desk, InboundMessage.sha256 == file.sha256
                        )
                    ).first()
                    if existing is not None:
                        recognised += 1
                        copy = self._recognise(session, existing, uidvalidity, item.uid, present)
                        found += [copy] if copy else []
                        touched.append(
                            TakenMail(
                                existing.id,
                                item.uid,
                                existing.sender,
                                existing.subject,
                                "duplicate_copy" if copy else "relocated",
                                existing.verdict,
                                (),
                            )
                        )
                        continue
                    message_id, sender, subject = header_summary(item.data)
                    inbound = InboundMessage(
                        desk=self.desk,
                        account=self.account,
                        mailbox=self.mailbox.folder,
                        uidvalidity=uidvalidity,
                        uid=item.uid,
                        sha256=file.sha256,
                        size=item.size,
                        raw_path=file.relative_path,
                        message_id=message_id,
                        sender=sender,
                        subject=subject,
                        state=InboundState.TOO_LARGE if item.too_large else InboundState.NEW,
                    )
                    session.add(inbound)
                    new_rows.append(inbound)
                    recorded += 1
                if new_rows:
                    # Every mail taken is in the audit trail with the hash of its bytes: one event per
                    # batch (one more row per commit, not per mail), naming each mail.
                    session.flush()
                    audit(
                        session,
                        self.desk,
                        ACTOR,
                        "intake.recorded",
                        f"inbound:{new_rows[0].id}-{new_rows[-1].id}",
                        {
                            "uidvalidity": uidvalidity,
                            "mails": [
                                {"inbound": row.id, "uid": row.uid, "sha256": row.sha256, "size": row.size}
                                for row in new_rows
                            ],
                        },
                    )
                session.commit()
            return recorded, recognised, found, touched

        # A concurrent writer (audit chain, the same hash) makes the commit fail: look again.
        recorded, recognised, found, touched = retry_on_conflict(attempt, what="recording new mail")
        report.recorded += recorded
        report.recognised += recognised
        report.recognised_mails.extend(touched)
        copies.extend(found)

    def _recognise(
        self, session: Session, row: InboundMessage, uidvalidity: int, uid: int, present: set[int]
    ) -> _Copy | None:
        """A mail already recorded under another identity. It is never processed again."""
        here = (row.account, row.mailbox, row.uidvalidity) == (self.account, self.mailbox.folder, uidvalidity)
        if here and row.uid in present:
            # Two copies in the folder at once: the copy gets the original's mailbox action.
            audit(
                session,
                self.desk,
                ACTOR,
                "intake.duplicate_copy",
                f"inbound:{row.id}",
                {"uid": uid, "uidvalidity": uidvalidity},
            )
            return _Copy(uid, row.id)
        old = {"mailbox": row.mailbox, "uidvalidity": row.uidvalidity, "uid": row.uid}
        row.account, row.mailbox, row.uidvalidity, row.uid = self.account, self.mailbox.folder, uidvalidity, uid
        if row.processed_at is not None or row.state == InboundState.QUARANTINED:
            row.mailbox_action_done = False  # the copy at the new place gets the action again
        session.add(row)
        audit(
            session,
            self.desk,
            ACTOR,
            "intake.relocated",
            f"inbound:{row.id}",
            {"from": old, "to": {"mailbox": row.mailbox, "uidvalidity": uidvalidity, "uid": uid}},
        )
        return None

    # -- stage 2: process ----------------------------------------------------------------------

    def process_pending(self) -> PassReport:
        """Stage 2 alone, without the mailbox: what a worker that does not hold the mailbox lock does
        with mail the lock holder recorded (the holder moves it at its next pass)."""
        report = PassReport()
        self._process_pending(report)
        return report

    def _process_pending(self, report: PassReport) -> None:
        with Session(self.engine) as session:
            pending = list(
                session.exec(
                    select(InboundMessage.id)
                    .where(
                        *self._mine(),
                        InboundMessage.processed_at.is_(None),
                        InboundMessage.state.in_((InboundState.NEW, InboundState.TOO_LARGE)),
                    )
                    .order_by(InboundMessage.id)
                )
            )
        for inbound_id in pending:
            self._process_one(inbound_id, report)

    def _process_one(self, inbound_id: int, report: PassReport) -> None:
        max_attempts = self.poll.max_attempts
        with Session(self.engine) as session:
            row = session.get(InboundMessage, inbound_id)
            if row.processed_at is not None or row.state not in (InboundState.NEW, InboundState.TOO_LARGE):
                return  # another worker finished it since the list was read
            holder = row.processing_by
            if holder is not None and self.owner is not None and self.owner.alive(holder):
                return  # another live worker has it in hand
            if row.attempts >= max_attempts:  # it failed every time
                self._quarantine(inbound_id, "gave up after repeated failures", report)
                return
            if row.interrupted >= MAX_INTERRUPTIONS:  # the process died with it in hand every time
                self._quarantine(inbound_id, f"processing was interrupted {row.interrupted} times", report)
                return
            # In flight: undone in the transaction that records the outcome, so only a run the
            # process never finished (it was killed) stays counted, and not as the mail's failure.
            # The claim is guarded by the holder we saw: of two workers, one gets the mail.
            claimed = (
                session.connection()
                .execute(
                    update(_INBOUND)
                    .where(_INBOUND.c.id == inbound_id, _INBOUND.c.processed_at.is_(None), _same_holder(holder))
                    .values(interrupted=_INBOUND.c.interrupted + 1, processing_by=self.owner.id if self.owner else None)
                )
                .rowcount
            )
            session.commit()
            if claimed != 1:
                return
        try:
            taken = self._process_transaction(inbound_id)
        except MailTakenElsewhere:
            return  # a worker that thought us dead took it over and finished it: nothing to undo
        except Exception as exc:  # noqa: BLE001 - one bad mail must not stop the others
            report.failures += 1
            error = f"{type(exc).__name__}: {exc}"[:2000]
            log.warning("processing inbound mail %s failed: %s", inbound_id, type(exc).__name__)
            with Session(self.engine) as session:
                row = session.get(InboundMessage, inbound_id)
                row.last_error = error
                row.attempts += 1
                row.interrupted = max(row.interrupted - 1, 0)
                row.processing_by = None
                session.add(row)
                session.commit()
                give_up = row.attempts >= max_attempts
            if give_up:
                self._quarantine(inbound_id, error, report)
            return
        report.taken.append(taken)
        if self.after_commit is not None:
            with Session(self.engine) as session:
                self.after_commit(session.get(InboundMessage, inbound_id))

    def _process_transaction(self, inbound_id: int) -> TakenMail:
        def attempt() -> TakenMail:
            with Session(self.engine) as session:
                row = session.get(InboundMessage, inbound_id, with_for_update=True)
                if row.processed_at is not None:
                    raise MailTakenElsewhere(inbound_id)
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
                # The verdict and the reply it queued (if any), in the same transaction as both.
                replies = session.exec(
                    select(OutboxMessage.id, OutboxMessage.message_id).where(
                        OutboxMessage.inbound_id == row.id, OutboxMessage.kind == "reply"
                    )
                ).all()
                audit(
                    session,
                    self.desk,
                    ACTOR,
                    "intake.verdict",
                    f"inbound:{row.id}",
                    {
                        "verdict": row.verdict,
                        "findings": list(outcome.findings),
                        "receipt_no": row.receipt_no,
                        "replies": [{"outbox": outbox_id, "message_id": mid} for outbox_id, mid in replies],
                    },
                )
                session.commit()
                return TakenMail(
                    row.id, row.uid, row.sender, row.subject, row.state, row.verdict, tuple(outcome.findings)
                )

        # Losing a race (the audit chain, a receipt counter) runs the whole mail again.
        return retry_on_conflict(attempt, what=f"processing inbound mail {inbound_id}")

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

    # -- stage 3: mailbox actions --------------------------------------------------------------

    def _destination(self, row) -> str | None:
        """The folder to move to, or None to flag as seen (``row``: a row, or its state and verdict columns)."""
        folders = self.mailbox.folders
        if row.state == InboundState.QUARANTINED:
            return folders.quarantine
        if self.mailbox.action == "flag":
            return None
        return getattr(folders, Verdict(row.verdict).value)

    def _act(
        self, conn: MailboxConnection, uidvalidity: int, present: set[int], copies: list[_Copy], report: PassReport
    ) -> None:
        with Session(self.engine) as session:
            # Only the columns the folder choice needs: a pass over 10,000 mails must not hold
            # 10,000 full rows (peak memory, benchmarks/scale.py).
            rows = list(
                session.exec(
                    select(InboundMessage.id, InboundMessage.uid, InboundMessage.state, InboundMessage.verdict).where(
                        *self._mine(),
                        InboundMessage.uidvalidity == uidvalidity,
                        InboundMessage.mailbox_action_done.is_(False),
                        or_(InboundMessage.processed_at.is_not(None), InboundMessage.state == InboundState.QUARANTINED),
                    )
                )
            )
            originals = {copy.original_id: session.get(InboundMessage, copy.original_id) for copy in copies}
        groups: dict[str | None, list[int]] = defaultdict(list)
        done_ids: list[int] = []
        for row in rows:
            done_ids.append(row.id)
            if row.uid in present:  # else already moved, by an earlier run or by a person
                groups[self._destination(row)].append(row.uid)
        for copy in copies:
            original = originals[copy.original_id]
            if original.processed_at is not None or original.state == InboundState.QUARANTINED:
                groups[self._destination(original)].append(copy.uid)
        for folder, uids in groups.items():
            for chunk in _chunks(uids):  # each command bounded, so none outlasts the socket timeout
                if folder is None:
                    conn.flag_seen(chunk)
                else:
                    conn.move(chunk, folder)
            report.actions += len(uids)
        if done_ids:
            with Session(self.engine) as session:
                for chunk in _chunks(done_ids):
                    session.connection().execute(
                        update(_INBOUND).where(_INBOUND.c.id.in_(chunk)).values(mailbox_action_done=True)
                    )
                session.commit()


def _chunks(uids: list[int], size: int = _UIDS_PER_COMMAND) -> list[list[int]]:
    return [uids[start : start + size] for start in range(0, len(uids), size)]


def header_summary(data: bytes) -> tuple[str | None, str | None, str | None]:
    """Message-ID, From and Subject for the row, best effort: hostile headers never raise here.

    The MIME walker decodes Japanese headers properly; this is only what staff see in listings.
    It runs before a mail is processed, so it must be cheap whatever the mail holds: the header
    block is parsed without the library's structured header classes (which re-parse a header on
    every access, in time that grows faster than its length), and each value is cut before decoding.
    """
    end = min((i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0), default=len(data))
    try:
        parsed = BytesHeaderParser(policy=compat32).parsebytes(data[: min(end, _HEADER_BLOCK_MAX)])
    except Exception:  # noqa: BLE001 - malformed beyond parsing: nothing to show
        return None, None, None

    def text(name: str) -> str | None:
        raw = raw_value(parsed, name)
        if raw is None:
            return None
        try:
            value = decode_header(raw[: _HEADER_TEXT_MAX * 4])
        except Exception:  # noqa: BLE001 - malformed encoded words and the like
            return None
        # 8-bit header bytes may come back as surrogates, which a database refuses.
        return value.encode("utf-8", errors="replace").decode("utf-8")[:_HEADER_TEXT_MAX] or None

    return text("Message-ID"), text("From"), text("Subject")
