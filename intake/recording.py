"""Stage 1 of an intake pass: every new mail stored durably and recorded before anything else.

For every UID not yet recorded under the folder's current UIDVALIDITY, the raw mail is stored
(fsync, or the database blob's commit) and its ``InboundMessage`` row committed before any of
these mails is processed. A mail whose SHA-256 is already known (a UIDVALIDITY reset, a second
delivery) is recognised and never becomes a second row: the existing row follows it to its new
place. Mails are recorded in batches of about a fetch chunk: one commit per batch, and the files
of a batch fsync'ed side by side (intake/raw_store.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlmodel import Session, select

from foundation.read_ahead import read_ahead
from intake.mime_headers import raw_value
from intake.pass_report import PassReport, TakenMail
from intake.poller import MailboxConnection
from intake.text_decoding import decode_header
from store.audit import record as audit
from store.claim_owner import is_postgres
from store.retry import retry_on_conflict
from store.states import InboundState
from store.tables import InboundMessage

if TYPE_CHECKING:
    from intake.intake_service import IntakeService

ACTOR = "intake"
_HEADER_TEXT_MAX = 998
_HEADER_BLOCK_MAX = 256 * 1024
_BATCH_MAILS = 100
_UIDS_PER_COMMAND = 500
# PostgreSQL NOTIFY channel (payload: the desk) of "new mail recorded", for standby workers.
RECORDED_CHANNEL = "keydesk_intake_recorded"


@dataclass(frozen=True)
class _Fetched:
    uid: int
    data: bytes  # the whole mail, or only its headers when too large
    size: int  # RFC822.SIZE for a too-large mail
    too_large: bool


@dataclass(frozen=True)
class Copy:
    """A second copy of a recorded mail in the folder: it gets the original's mailbox action."""

    uid: int
    original_id: int


# -- stage 1: record -----------------------------------------------------------------------


def record_new(
    service: IntakeService, conn: MailboxConnection, uidvalidity: int, present: list[int], report: PassReport
) -> list[Copy]:
    copies: list[Copy] = []
    if not present:
        return copies
    with Session(service.engine) as session:
        # Only the folder's current UID range: the rows of mails moved out long ago (UIDs below
        # it, a desk's whole history) are not loaded at every pass.
        known = set(
            session.exec(
                select(InboundMessage.uid).where(
                    *service.mine(), InboundMessage.uidvalidity == uidvalidity, InboundMessage.uid >= present[0]
                )
            )
        )
    new = [uid for uid in present if uid not in known]
    if len(new) > service.poll.mails_per_pass:
        new, report.more = new[: service.poll.mails_per_pass], True
    if not new:
        return copies
    limit = service.limits.mail_max_bytes
    oversize: list[tuple[int, int]] = []  # (uid, RFC822.SIZE)
    batch: list[_Fetched] = []
    batch_bytes = 0
    in_folder = set(present)
    chunk_bytes = service.poll.fetch_chunk_bytes
    # Recorded in batches of about a fetch chunk: one fsync per file, one per folder and one
    # commit per batch, all before any of these mails is processed. The next mails download
    # meanwhile (at most two chunks ahead), so the pass waits on the server or the disk, not both.
    with read_ahead(
        conn.fetch_mails(new, chunk_bytes, limit),
        weigh=lambda fetched: len(fetched[2] or b""),
        budget=2 * chunk_bytes,
        name=f"intake-fetch-{service.desk}",
    ) as downloaded:
        for uid, size, raw in downloaded:
            if raw is None:
                oversize.append((uid, size))  # too large, vanished meanwhile, or larger than it claimed
                continue
            batch.append(_Fetched(uid, raw, len(raw), False))
            batch_bytes += len(raw)
            if batch_bytes >= chunk_bytes or len(batch) >= _BATCH_MAILS:
                _record(service, batch, uidvalidity, in_folder, report, copies)
                batch, batch_bytes = [], 0
    for uid, size in oversize:  # in UID order, as fetch_mails gave them
        headers = conn.fetch_headers(uid)
        if headers is not None:  # else expunged by someone else meanwhile: nothing to take
            batch.append(_Fetched(uid, headers, size, True))
    _record(service, batch, uidvalidity, in_folder, report, copies)
    return copies


def _record(
    service: IntakeService,
    batch: list[_Fetched],
    uidvalidity: int,
    present: set[int],
    report: PassReport,
    copies: list[Copy],
) -> None:
    if not batch:
        return
    stored = service.store.put_many([item.data for item in batch])  # durable before the rows exist

    def attempt() -> tuple[int, int, list[Copy], list[TakenMail]]:
        recorded, recognised = 0, 0
        found: list[Copy] = []
        touched: list[TakenMail] = []
        new_rows: list[InboundMessage] = []
        with Session(service.engine) as session:
            # The batch's known mails in one query; a copy of a mail earlier in this same batch is
            # found in the dictionary, which each new row joins.
            # (One row per desk and hash: a unique constraint.)
            known: dict[str, InboundMessage] = {
                row.sha256: row
                for row in session.exec(
                    select(InboundMessage).where(
                        InboundMessage.desk == service.desk,
                        InboundMessage.sha256.in_(sorted({f.sha256 for f in stored})),
                    )
                )
            }
            for item, file in zip(batch, stored):
                existing = known.get(file.sha256)
                if existing is not None:
                    if existing.id is None:
                        session.flush()  # a copy of a mail of this batch: its row needs its id
                    recognised += 1
                    copy = _recognise(service, session, existing, uidvalidity, item.uid, present)
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
                    desk=service.desk,
                    account=service.account,
                    mailbox=service.mailbox.folder,
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
                known[file.sha256] = inbound
                new_rows.append(inbound)
                recorded += 1
            if new_rows:
                # Every mail taken is in the audit trail with the hash of its bytes: one event per
                # batch (one more row per commit, not per mail), naming each mail.
                session.flush()
                audit(
                    session,
                    service.desk,
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
                if is_postgres(service.engine):
                    # Delivered at the commit: standby workers start on these mails at once.
                    session.connection().execute(
                        text("SELECT pg_notify(:channel, :desk)"), {"channel": RECORDED_CHANNEL, "desk": service.desk}
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
    service: IntakeService, session: Session, row: InboundMessage, uidvalidity: int, uid: int, present: set[int]
) -> Copy | None:
    """A mail already recorded under another identity. It is never processed again."""
    here = (row.account, row.mailbox, row.uidvalidity) == (service.account, service.mailbox.folder, uidvalidity)
    if here and row.uid in present:
        # Two copies in the folder at once: the copy gets the original's mailbox action.
        audit(
            session,
            service.desk,
            ACTOR,
            "intake.duplicate_copy",
            f"inbound:{row.id}",
            {"uid": uid, "uidvalidity": uidvalidity},
        )
        return Copy(uid, row.id)
    old = {"mailbox": row.mailbox, "uidvalidity": row.uidvalidity, "uid": row.uid}
    row.account, row.mailbox, row.uidvalidity, row.uid = service.account, service.mailbox.folder, uidvalidity, uid
    if row.processed_at is not None or row.state == InboundState.QUARANTINED:
        row.mailbox_action_done = False  # the copy at the new place gets the action again
    session.add(row)
    audit(
        session,
        service.desk,
        ACTOR,
        "intake.relocated",
        f"inbound:{row.id}",
        {"from": old, "to": {"mailbox": row.mailbox, "uidvalidity": uidvalidity, "uid": uid}},
    )
    return None


def chunks(uids: list[int], size: int = _UIDS_PER_COMMAND) -> list[list[int]]:
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
