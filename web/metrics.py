"""The Prometheus text endpoint: the figures of `keydesk status`, rendered with prometheus-client.

``render_metrics(report)`` is the one renderer; ``metrics_app(provider)`` serves it at
``/metrics`` (for `keydesk run` with ``[metrics] enabled``); the staff console serves the same text
from its own route through ``cached_metrics`` (only to its configured scrapers), with a provider
built by the composition root.
A provider may log in to the mail servers, so its result is cached for ``cache_seconds``: a
scrape every 15 s does not become a login every 15 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from foundation.status import StatusReport

StatusProvider = Callable[[], StatusReport]


def render_metrics(report: StatusReport) -> bytes:
    """The Prometheus text exposition of one status report."""
    registry = CollectorRegistry()

    def gauge(name: str, help_text: str, labels: tuple[str, ...] = ("desk",)) -> Gauge:
        return Gauge(name, help_text, labels, registry=registry)

    healthy = gauge("keydesk_healthy", "1 when nothing at the desk needs a person (keydesk status exit 0)")
    last_poll = gauge("keydesk_last_poll_timestamp_seconds", "End of the last completed intake pass (Unix time)")
    mailbox = gauge("keydesk_mailbox_reachable", "1 when the desk's mailbox accepted a login at the last check")
    outbox = gauge("keydesk_outbox_messages", "Outgoing mails by state", ("desk", "state"))
    quarantined = gauge("keydesk_quarantined_mails", "Mails the intake gave up on, waiting for a person")
    review = gauge("keydesk_needs_review_mails", "Mails whose verdict is needs_review")
    digest = gauge("keydesk_next_digest_timestamp_seconds", "When the next staff digest is due (Unix time)")
    smtp = Gauge(
        "keydesk_smtp_reachable", "1 when the SMTP server accepted EHLO/TLS/AUTH at the last check", registry=registry
    )
    for desk in report.desks:
        healthy.labels(desk.desk).set(0 if report.problems.get(desk.desk) else 1)
        if desk.last_poll_at is not None:
            last_poll.labels(desk.desk).set(desk.last_poll_at.timestamp())
        if desk.mailbox is not None:
            mailbox.labels(desk.desk).set(1 if desk.mailbox.ok else 0)
        for state in ("pending", "held", "failed", "unconfirmed", "stuck"):
            outbox.labels(desk.desk, state).set(getattr(desk.outbox, state))
        quarantined.labels(desk.desk).set(desk.quarantined)
        review.labels(desk.desk).set(desk.needs_review)
        if desk.next_digest_at is not None:
            digest.labels(desk.desk).set(desk.next_digest_at.timestamp())
    if report.smtp is not None:
        smtp.set(1 if report.smtp.ok else 0)
    return generate_latest(registry)


class _Cached:
    def __init__(self, provider: StatusProvider, seconds: float) -> None:
        self._provider, self._seconds = provider, seconds
        self._lock = threading.Lock()
        self._value: tuple[float, bytes] | None = None

    def __call__(self) -> bytes:
        with self._lock:  # one gathering at a time; concurrent scrapes share it
            if self._value is None or time.monotonic() - self._value[0] >= self._seconds:
                self._value = (time.monotonic(), render_metrics(self._provider()))
            return self._value[1]


def cached_metrics(provider: StatusProvider, cache_seconds: float = 60.0) -> Callable[[], bytes]:
    """``render_metrics`` of the provider's report, reused for ``cache_seconds`` (for the console's route)."""
    return _Cached(provider, cache_seconds)


def metrics_app(provider: StatusProvider, cache_seconds: float = 60.0):
    """An ASGI app serving ``GET /metrics``."""
    from fastapi import FastAPI
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import Response

    cached = cached_metrics(provider, cache_seconds)
    app = FastAPI(title="keydesk metrics", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(await run_in_threadpool(cached), media_type=CONTENT_TYPE_LATEST)

    return app
