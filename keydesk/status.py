"""`keydesk status` and the figures behind the metrics endpoint: gathered from the database and,
unless asked not to, from a login to every server (see keydesk/connection_check.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from foundation.status import DeskHealth, OutboxCounts, Reachability, StatusReport
from keydesk.settings import Settings
from mailer import delivery
from store.tables import AuditEvent, DeskStatus, InboundMessage, OutboxMessage

# Failures older than this no longer make the desk "degraded" (staff have seen them in digests).
RECENT = timedelta(days=7)
# A due mail still pending after this long means delivery is not happening.
STUCK_AFTER = timedelta(minutes=15)


def stale_after(settings: Settings) -> timedelta:
    """An intake pass runs at least every IDLE renewal or poll interval; two missed ones are a problem."""
    poll = settings.poll
    return timedelta(seconds=2 * max(poll.idle_renew_seconds, poll.poll_interval_seconds) + 60)


def record_pass(engine: Engine, desk: str, mails: int, now: datetime | None = None) -> None:
    """A pass over ``desk``'s mailbox completed (called by `poll --once` and `keydesk run`)."""
    now = now or datetime.now(timezone.utc)
    with Session(engine) as session:
        row = session.get(DeskStatus, desk) or DeskStatus(desk=desk)
        row.last_poll_at, row.last_poll_mails = now, mails
        session.add(row)
        session.commit()


def bounced_outbox_ids(session: Session, desk: str | None = None, since: datetime | None = None) -> set[int]:
    """Outbox rows a delivery report answered (the intake records ``outbox.bounced``)."""
    query = select(AuditEvent.subject).where(AuditEvent.action == "outbox.bounced")
    if desk is not None:
        query = query.where(AuditEvent.desk == desk)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    return {int(subject.split(":", 1)[1]) for subject in session.exec(query) if subject.startswith("outbox:")}


def failed_condition(bounced: set[int]):
    """Outbox rows that need a person: failed, a recipient failed or unconfirmed, or bounced."""
    return or_(
        OutboxMessage.state == delivery.FAILED,
        col(OutboxMessage.recipient_states_json).contains(f'"{delivery.R_FAILED}"'),
        col(OutboxMessage.recipient_states_json).contains(f'"{delivery.R_UNCONFIRMED}"'),
        col(OutboxMessage.id).in_(bounced or {-1}),
    )


def _count(session: Session, *conditions) -> int:
    return session.exec(select(func.count()).select_from(OutboxMessage).where(*conditions)).one()


def _outbox(session: Session, desk: str, now: datetime) -> tuple[OutboxCounts, int]:
    mine = OutboxMessage.desk == desk
    pending = OutboxMessage.state == delivery.PENDING
    bounced = bounced_outbox_ids(session, desk)
    recent_bounced = bounced_outbox_ids(session, desk, since=now - RECENT)
    failed = _count(session, mine, or_(OutboxMessage.state == delivery.FAILED,
                                       col(OutboxMessage.recipient_states_json).contains(f'"{delivery.R_FAILED}"'),
                                       col(OutboxMessage.id).in_(bounced or {-1})))
    unconfirmed = _count(session, mine, col(OutboxMessage.recipient_states_json).contains(
        f'"{delivery.R_UNCONFIRMED}"'))
    counts = OutboxCounts(
        pending=_count(session, mine, pending, OutboxMessage.next_attempt_at <= now),
        held=_count(session, mine, pending, OutboxMessage.next_attempt_at > now),
        failed=failed, unconfirmed=unconfirmed,
        stuck=_count(session, mine, pending, OutboxMessage.next_attempt_at <= now - STUCK_AFTER),
    )
    recent = _count(session, mine, OutboxMessage.created_at >= now - RECENT, failed_condition(recent_bounced))
    return counts, recent


def _next_digest(settings: Settings, now: datetime) -> datetime | None:
    from apscheduler.triggers.cron import CronTrigger

    trigger = CronTrigger.from_crontab(settings.digest.schedule, timezone=ZoneInfo(settings.digest.timezone))
    return trigger.get_next_fire_time(None, now.astimezone(ZoneInfo(settings.digest.timezone)))


def gather(settings: Settings, engine: Engine, *, connect: bool = True, now: datetime | None = None) -> StatusReport:
    now = now or datetime.now(timezone.utc)
    smtp: Reachability | None = None
    mailboxes: dict[str, Reachability] = {}
    if connect:
        from keydesk.connection_check import check_all

        for result in check_all(settings):
            if result.name == "smtp":
                smtp = Reachability(result.ok, result.message)
            else:
                mailboxes[result.name.split(".")[1]] = Reachability(result.ok, result.message)
    next_digest = _next_digest(settings, now)
    desks = []
    with Session(engine) as session:
        for desk_id, desk in settings.desks.items():
            status = session.get(DeskStatus, desk_id)
            last = status.last_poll_at if status else None
            if last is not None and last.tzinfo is None:
                last = last.replace(tzinfo=timezone.utc)
            counts, recent_outbox = _outbox(session, desk_id, now)
            inbound = (InboundMessage.desk == desk_id, InboundMessage.purged_at.is_(None))
            quarantined = session.exec(select(func.count()).select_from(InboundMessage).where(
                *inbound, InboundMessage.state == "quarantined")).one()
            recent_quarantined = session.exec(select(func.count()).select_from(InboundMessage).where(
                *inbound, InboundMessage.state == "quarantined", InboundMessage.received_at >= now - RECENT)).one()
            needs_review = session.exec(select(func.count()).select_from(InboundMessage).where(
                *inbound, InboundMessage.verdict == "needs_review")).one()
            desks.append(DeskHealth(
                desk=desk_id, name=desk.name, last_poll_at=last, mailbox=mailboxes.get(desk_id), outbox=counts,
                quarantined=quarantined, needs_review=needs_review, next_digest_at=next_digest,
                recent_failures=recent_outbox + recent_quarantined,
            ))
    return StatusReport.judge(now, desks, smtp, stale_after(settings))
