"""Stage 3 of an intake pass: only after a mail's processing committed is it moved (or flagged).

Mails are grouped by destination folder: one UID MOVE (bounded chunks) per folder, then one
commit sets ``mailbox_action_done`` for all of them. A crash in between only repeats the move of
mails that are, by then, no longer in the folder (their UIDs are skipped). ``BatchMover`` moves
each batch while the next one is processed; ``act`` then does the rest and marks all done.
"""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlmodel import Session, or_, select

from intake.pass_report import PassReport
from intake.poller import MailboxConnection
from intake.recording import Copy, chunks
from rules.findings import Verdict
from store.states import InboundState
from store.tables import InboundMessage

if TYPE_CHECKING:
    from intake.intake_service import IntakeService

_INBOUND = InboundMessage.__table__


def destination(service: IntakeService, row) -> str | None:
    """The folder to move to, or None to flag as seen (``row``: a row, or its state and verdict columns)."""
    folders = service.mailbox.folders
    if row.state == InboundState.QUARANTINED:
        return folders.quarantine
    if service.mailbox.action == "flag":
        return None
    return getattr(folders, Verdict(row.verdict).value)


def act(
    service: IntakeService,
    conn: MailboxConnection,
    uidvalidity: int,
    present: set[int],
    copies: list[Copy],
    report: PassReport,
    moved: frozenset[int] = frozenset(),
) -> None:
    """Move (or flag) every processed mail of the folder that is not yet done; ``moved``: inbound ids
    a ``BatchMover`` already moved in this pass (only marked done here)."""
    with Session(service.engine) as session:
        rows = _rows_to_act_on(service, session, uidvalidity)
        originals = {copy.original_id: session.get(InboundMessage, copy.original_id) for copy in copies}
    groups = _by_destination(service, [row for row in rows if row.id not in moved], present)
    for copy in copies:
        original = originals[copy.original_id]
        if original.processed_at is not None or original.state == InboundState.QUARANTINED:
            groups[destination(service, original)].append(copy.uid)
    report.actions += _carry_out(conn, groups)
    _mark_done(service, [row.id for row in rows])


class BatchMover:
    """Stage 3 for each batch as soon as it commits, while the next batch is processed.

    Processing needs only the database, so during stage 2 the IMAP connection is idle: a thread of
    its own moves each committed batch's mails meanwhile, and the pass no longer waits for the
    server's MOVE after it has processed everything. It only moves; the main thread marks the rows
    done in ``act`` (SQLite has one writer, and a crash between a move and its mark only repeats
    the move, as in ``act``). After an error it moves nothing more: the rest waits for ``act``
    or the next pass. The connection is the mover's alone from ``start`` until ``finish``.
    """

    def __init__(self, service: IntakeService, conn: MailboxConnection, uidvalidity: int, present: set[int]) -> None:
        self.service, self.conn, self.uidvalidity, self.present = service, conn, uidvalidity, present
        self.moved: set[int] = set()
        self.actions = 0
        self._batches: queue.SimpleQueue[list[int] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"intake-move-{service.desk}", daemon=True)

    def start(self) -> BatchMover:
        self._thread.start()
        return self

    def hand(self, inbound_ids: list[int]) -> None:
        """Mails whose processing has committed: move them when the thread gets to them."""
        self._batches.put(inbound_ids)

    def finish(self, *, raise_error: bool = True) -> None:
        """Wait for the batches handed so far; the mover's error (a lost connection) is raised here."""
        self._batches.put(None)
        self._thread.join()
        if self._error is not None and raise_error:
            raise self._error

    def _run(self) -> None:
        while (inbound_ids := self._batches.get()) is not None:
            if self._error is not None:
                continue
            try:
                with Session(self.service.engine) as session:
                    rows = _rows_to_act_on(self.service, session, self.uidvalidity, inbound_ids)
                self.actions += _carry_out(self.conn, _by_destination(self.service, rows, self.present))
                self.moved.update(row.id for row in rows)
            except BaseException as exc:  # noqa: BLE001 - raised by finish(), in the pass's thread
                self._error = exc


def _rows_to_act_on(service: IntakeService, session: Session, uidvalidity: int, among: list[int] | None = None) -> list:
    """Processed or quarantined mails of this folder (and UIDVALIDITY) whose action is not yet done.

    Only the columns the folder choice needs: a pass over 10,000 mails must not hold 10,000 full
    rows (peak memory, benchmarks/scale.py).
    """
    query = select(InboundMessage.id, InboundMessage.uid, InboundMessage.state, InboundMessage.verdict).where(
        *service.mine(),
        InboundMessage.uidvalidity == uidvalidity,
        InboundMessage.mailbox_action_done.is_(False),
        or_(InboundMessage.processed_at.is_not(None), InboundMessage.state == InboundState.QUARANTINED),
    )
    if among is not None:
        query = query.where(InboundMessage.id.in_(among))
    return list(session.exec(query))


def _by_destination(service: IntakeService, rows: list, present: set[int]) -> dict[str | None, list[int]]:
    groups: dict[str | None, list[int]] = defaultdict(list)
    for row in rows:
        if row.uid in present:  # else already moved, by an earlier run or by a person
            groups[destination(service, row)].append(row.uid)
    return groups


def _carry_out(conn: MailboxConnection, groups: dict[str | None, list[int]]) -> int:
    """Move or flag each group; the number of mails acted on."""
    for folder, uids in groups.items():
        for chunk in chunks(uids):  # each command bounded, so none outlasts the socket timeout
            if folder is None:
                conn.flag_seen(chunk)
            else:
                conn.move(chunk, folder)
    return sum(len(uids) for uids in groups.values())


def _mark_done(service: IntakeService, inbound_ids: list[int]) -> None:
    if not inbound_ids:
        return
    with Session(service.engine) as session:
        for chunk in chunks(inbound_ids):
            session.connection().execute(
                update(_INBOUND).where(_INBOUND.c.id.in_(chunk)).values(mailbox_action_done=True)
            )
        session.commit()
