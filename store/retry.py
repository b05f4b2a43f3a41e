"""One helper for a transaction that lost a race.

Two writers can collide on a unique key (the audit chain's ``prev_hash``, an idempotency key, a
guarantee number). The loser's transaction is rolled back and simply run again: it will read the
winner's row the second time. Every such loop in keydesk goes through :func:`retry_on_conflict`,
so the attempt count and the ending are the same everywhere.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError, OperationalError as SqlOperationalError

from foundation.errors import ContentionError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_ATTEMPTS = 8


def is_conflict(exc: BaseException) -> bool:
    if isinstance(exc, IntegrityError):
        return True
    # SQLite answers a concurrent writer with "database is locked"; PostgreSQL a serialization
    # failure (40001) or a deadlock (40P01). All mean: run the whole transaction again.
    if isinstance(exc, SqlOperationalError):
        text = str(exc.orig) if exc.orig is not None else str(exc)
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return "database is locked" in text or code in {"40001", "40P01"}
    return False


def retry_on_conflict(
    attempt: Callable[[], T],
    *,
    what: str,
    attempts: int = DEFAULT_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``attempt`` (one whole transaction, opening its own session) until it does not lose a
    race; raise :class:`ContentionError` naming ``what`` after ``attempts`` tries.

    ``attempt`` must be safe to run again: it opens, commits or rolls back its own session. The
    pause between tries is short and jittered so two losers do not collide again in lockstep.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for number in range(1, attempts + 1):
        try:
            return attempt()
        except Exception as exc:  # filtered by is_conflict, re-raised otherwise
            if not is_conflict(exc):
                raise
            if number == attempts:
                raise ContentionError(f"{what}: still conflicting after {attempts} attempts") from exc
            log.debug("%s: lost a race (attempt %d of %d); running it again", what, number, attempts)
            sleep(random.uniform(0, 0.005 * number))
    raise AssertionError("unreachable")
