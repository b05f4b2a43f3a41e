"""Claims: which worker processes which pending mail, and how a batch of them is taken.

A claim writes the claimer's owner id (store/claim_owner.py) on the rows and counts an
interruption, in one short committed transaction; the transaction that records a mail's outcome
undoes both. On PostgreSQL the candidate rows are read ``FOR UPDATE SKIP LOCKED``: two workers
claiming at the same moment take different rows instead of queueing on the same ones. Rows held
by a live owner are left alone; those of an owner that is gone (or our own, left by a pass that
failed) are taken over at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import or_, update
from sqlmodel import Session, select

from store.claim_owner import is_postgres
from store.states import InboundState
from store.tables import InboundMessage

if TYPE_CHECKING:
    from intake.intake_service import IntakeService

_INBOUND = InboundMessage.__table__
PENDING_STATES = (InboundState.NEW, InboundState.TOO_LARGE)


@dataclass
class Claim:
    process: list[int] = field(default_factory=list)  # claimed for processing (an interruption counted)
    exhausted: list[tuple[int, str]] = field(default_factory=list)  # claimed to be quarantined, and why
    last_id: int = 0


def _claimable_holders(service: IntakeService, session: Session, after: int) -> list[str] | None:
    """The claim holders of pending rows that may be taken over: owners that are gone, and this
    process itself (a claim of ours left by a pass that failed). None: every holder (without an
    owner the caller is the only one processing)."""
    if service.owner is None:
        return None
    owner = service.owner
    return [h for h in holders_in_hand(service, session, after) if h == owner.id or not owner.alive(h)]


def holders_in_hand(service: IntakeService, session: Session, after: int) -> list[str]:
    """The claim owners of the desk's pending mails above id ``after``."""
    return list(
        session.exec(
            select(InboundMessage.processing_by)
            .where(*pending(service, after), InboundMessage.processing_by.is_not(None))
            .distinct()
        ).all()
    )


def pending(service: IntakeService, after: int) -> tuple:
    """The WHERE clause of the desk's mails not yet processed, above id ``after``."""
    return (
        *service.mine(),
        InboundMessage.id > after,
        InboundMessage.processed_at.is_(None),
        InboundMessage.state.in_(PENDING_STATES),
    )


def claim_batch(service: IntakeService, after: int, max_interruptions: int, size: int) -> Claim:
    """Claim the next batch of (at most ``size``) pending mails above id ``after``, in one committed
    transaction; mails out of attempts or interruptions are claimed to be quarantined."""
    max_attempts = service.poll.max_attempts
    claim = Claim(last_id=after)
    with Session(service.engine) as session:
        takeable = _claimable_holders(service, session, after)
        query = select(InboundMessage.id, InboundMessage.attempts, InboundMessage.interrupted).where(
            *pending(service, after)
        )
        if takeable is not None:
            column = InboundMessage.processing_by
            query = query.where(or_(column.is_(None), column.in_(takeable)) if takeable else column.is_(None))
        query = query.order_by(InboundMessage.id).limit(size)
        if is_postgres(service.engine):
            # Rows another worker is claiming at this moment are skipped, not waited for.
            query = query.with_for_update(skip_locked=True)
        for inbound_id, attempts, interrupted in session.exec(query).all():
            if attempts >= max_attempts:  # it failed every time
                claim.exhausted.append((inbound_id, "gave up after repeated failures"))
            elif interrupted >= max_interruptions:  # the process died with it in hand every time
                claim.exhausted.append((inbound_id, f"processing was interrupted {interrupted} times"))
            elif interrupted and claim.process:
                break  # interrupted before: processed alone, in a batch of its own
            else:
                claim.process.append(inbound_id)
                if interrupted:
                    claim.last_id = inbound_id
                    break
            claim.last_id = inbound_id
        holder = service.owner.id if service.owner else None
        if claim.exhausted:
            ids = [inbound_id for inbound_id, _ in claim.exhausted]
            session.connection().execute(update(_INBOUND).where(_INBOUND.c.id.in_(ids)).values(processing_by=holder))
        if claim.process:
            # In flight: undone in the transaction that records the outcome, so only a run the
            # process never finished (it was killed) stays counted, and not as the mail's failure.
            session.connection().execute(
                update(_INBOUND)
                .where(_INBOUND.c.id.in_(claim.process))
                .values(interrupted=_INBOUND.c.interrupted + 1, processing_by=holder)
            )
            reserve = getattr(service.process, "reserve_receipt_nos", None)
            if reserve is not None:
                reserve(
                    session,
                    session.exec(
                        select(InboundMessage).where(InboundMessage.id.in_(claim.process)).order_by(InboundMessage.id)
                    ).all(),
                )
        session.commit()
    return claim
