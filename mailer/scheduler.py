"""The digest on a schedule: APScheduler 3 with a cron trigger in the digest's time zone.

``keydesk run`` builds the job with ``digest_job`` and starts it with ``start_digest_scheduler``;
tests check ``digest_trigger`` by asking it for its next fire times (no sleeping).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from collections.abc import Callable, Sequence
from zoneinfo import ZoneInfo

import jinja2
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailer.digest import DigestOutcome, DigestTarget, enqueue_digests
from mailer.settings import DigestSettings

log = logging.getLogger(__name__)
JOB_ID = "keydesk-digest"


def digest_trigger(settings: DigestSettings) -> CronTrigger:
    """``schedule`` (crontab fields, e.g. ``30 8 * * mon-fri``) read in ``timezone``."""
    return CronTrigger.from_crontab(settings.schedule, timezone=ZoneInfo(settings.timezone))


def next_fire_times(settings: DigestSettings, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` times the digest will go out after ``after`` (for tests and `--help` texts)."""
    trigger = digest_trigger(settings)
    times: list[datetime] = []
    previous = None
    moment = after
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None:
            break
        times.append(fire)
        previous, moment = fire, fire
    return times


def enqueue_all(
    engine: Engine, targets: Sequence[DigestTarget], env: jinja2.Environment, *, zone: str, now: datetime
) -> dict[str, list[DigestOutcome]]:
    """Every desk's digests in its own transaction, so one desk's problem does not stop another's."""
    results: dict[str, list[DigestOutcome]] = {}
    for target in targets:
        try:
            with Session(engine) as session:
                results[target.desk] = enqueue_digests(session, target, env, now=now, zone=zone)
                session.commit()
        except Exception:  # logged; the next scheduled run tries again
            log.exception("digest for desk %s could not be enqueued", target.desk)
    return results


def digest_job(
    engine: Engine,
    targets: Sequence[DigestTarget],
    env: jinja2.Environment,
    *,
    zone: str,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> Callable[[], None]:
    """The function the scheduler calls: enqueue the digests as of now (delivery sends them)."""

    def run() -> None:
        enqueue_all(engine, targets, env, zone=zone, now=clock())

    return run


def add_digest_job(scheduler, settings: DigestSettings, job: Callable[[], None]):
    """Add (or replace) the digest job on an APScheduler 3 scheduler; returns the Job."""
    return scheduler.add_job(
        job,
        trigger=digest_trigger(settings),
        id=JOB_ID,
        name="staff digest",
        replace_existing=True,
        # A daemon that was down at 08:30 still sends the morning's digest when it comes back
        # within the hour; several missed runs collapse into one.
        misfire_grace_time=3600,
        coalesce=True,
        max_instances=1,
    )


def start_digest_scheduler(settings: DigestSettings, job: Callable[[], None]) -> BackgroundScheduler:
    """A running background scheduler with the digest job; the daemon calls ``shutdown()`` on exit."""
    scheduler = BackgroundScheduler(timezone=ZoneInfo(settings.timezone))
    add_digest_job(scheduler, settings, job)
    scheduler.start()
    return scheduler
