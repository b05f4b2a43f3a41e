"""A desk's health as `keydesk status` and the metrics endpoint report it (pure: time passed in).

The figures are gathered by the shell (database, a login to each server); this module only holds
them and says whether anything needs a person: ``healthy`` is what the exit code and the
``keydesk_healthy`` gauge show.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Reachability:
    ok: bool
    message: str


@dataclass(frozen=True)
class OutboxCounts:
    pending: int = 0  # due now (or overdue)
    held: int = 0  # waiting for a retry after a temporary refusal (4xx) or a dropped connection
    failed: int = 0  # a recipient was refused for good, or a delivery report came back
    unconfirmed: int = 0  # the server's answer to the final dot never came (see mailer/delivery.py)
    stuck: int = 0  # pending for longer than a delivery round should ever take


@dataclass(frozen=True)
class DeskHealth:
    desk: str
    name: str
    last_poll_at: datetime | None
    mailbox: Reachability | None  # None: not checked (status --no-connect)
    outbox: OutboxCounts
    quarantined: int
    needs_review: int
    next_digest_at: datetime | None
    recent_failures: int = 0  # failed + unconfirmed + quarantined within the recent window

    def problems(self, now: datetime, stale_after: timedelta, smtp: Reachability | None) -> list[str]:
        found = []
        if self.last_poll_at is None:
            found.append("no intake pass has completed yet")
        elif now - self.last_poll_at > stale_after:
            found.append(f"the last intake pass was {_minutes(now - self.last_poll_at)} ago")
        if self.mailbox is not None and not self.mailbox.ok:
            found.append(f"mailbox: {self.mailbox.message}")
        if smtp is not None and not smtp.ok:
            found.append(f"smtp: {smtp.message}")
        if self.outbox.stuck:
            found.append(f"{self.outbox.stuck} outgoing mail(s) overdue")
        if self.recent_failures:
            found.append(f"{self.recent_failures} failed, unconfirmed or quarantined mail(s) need a person")
        return found


@dataclass(frozen=True)
class StatusReport:
    at: datetime
    desks: list[DeskHealth]
    smtp: Reachability | None
    stale_after: timedelta
    problems: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def judge(cls, at: datetime, desks: list[DeskHealth], smtp: Reachability | None,
              stale_after: timedelta) -> "StatusReport":
        return cls(at, desks, smtp, stale_after, {d.desk: d.problems(at, stale_after, smtp) for d in desks})

    @property
    def healthy(self) -> bool:
        return not any(self.problems.values())

    def to_json(self) -> dict:
        def when(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {
            "at": when(self.at), "healthy": self.healthy,
            "smtp": asdict(self.smtp) if self.smtp else None,
            "desks": {d.desk: {
                "name": d.name, "healthy": not self.problems[d.desk], "problems": self.problems[d.desk],
                "last_poll_at": when(d.last_poll_at), "mailbox": asdict(d.mailbox) if d.mailbox else None,
                "outbox": asdict(d.outbox), "quarantined": d.quarantined, "needs_review": d.needs_review,
                "next_digest_at": when(d.next_digest_at),
            } for d in self.desks},
        }


def _minutes(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h"
