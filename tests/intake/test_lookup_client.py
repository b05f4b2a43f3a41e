"""The desk's http adapter against misbehaving services (real uvicorn, no mocked HTTP): 5xx, a hang,
a redirect; bounded tries with doubling pauses; and the answer parser."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, RedirectResponse

from intake.lookup_client import HttpLookup, parse_answer
from verifier.lookup import LookupStatus
from web.server import Listen, ServedApp

NOW = datetime(2026, 4, 15, 1, 0, tzinfo=timezone.utc)


@pytest.fixture
def service():
    """A service whose behaviour the test chooses; counts the calls it got."""
    state = {"calls": 0, "mode": "503", "release": threading.Event()}
    app = FastAPI()

    @app.post("/api/v1/lookups")
    def lookups():
        state["calls"] += 1
        if state["mode"] == "503":
            return JSONResponse({"error": "maintenance"}, status_code=503)
        if state["mode"] == "hang":
            state["release"].wait(30)  # answers only when the test lets it (never within the desk's timeout)
            return {"status": "no_match"}
        if state["mode"] == "redirect":
            return RedirectResponse("http://198.51.100.1/steal", status_code=307)
        return {"status": "no_match"}

    with ServedApp(app, Listen("127.0.0.1", 0, what="test service")) as served:
        state["url"] = served.url
        yield state
        state["release"].set()


def test_5xx_is_tried_a_bounded_number_of_times_with_doubling_pauses(service) -> None:
    pauses: list[float] = []
    lookup = HttpLookup(service["url"], "kdt_x", attempts=3, backoff_seconds=0.25, sleep=pauses.append)
    result = lookup.lookup("26-000123-5", "0" * 16, NOW)
    assert result.status is LookupStatus.UNAVAILABLE and "503" in result.reason
    assert service["calls"] == 3 and pauses == [0.25, 0.5]


def test_a_service_that_hangs_is_given_up_after_the_read_timeout(service) -> None:
    service["mode"] = "hang"
    lookup = HttpLookup(service["url"], "kdt_x", attempts=1, read_timeout=0.5)
    result = lookup.lookup("26-000123-5", "0" * 16, NOW)
    assert result.status is LookupStatus.UNAVAILABLE and "in time" in result.reason


def test_redirects_are_not_followed(service) -> None:
    service["mode"] = "redirect"
    result = HttpLookup(service["url"], "kdt_x", attempts=1).lookup("26-000123-5", "0" * 16, NOW)
    assert result.status is LookupStatus.UNAVAILABLE and "307" in result.reason


def test_an_answer_that_says_nothing_known_is_not_an_answer() -> None:
    with pytest.raises(ValueError):
        parse_answer({"status": "maybe"})
    with pytest.raises(ValueError):
        parse_answer(["found"])
    found = parse_answer({"status": "found", "certificate": {"payload": "{}", "signature": "!!", "key_id": 7}})
    assert found.status is LookupStatus.FOUND and found.signed.signature == b"" and found.signed.key_id == ""
    assert parse_answer({"status": "refused", "reason": "2026-04-15T10:30:00+09:00"}).reason.startswith("2026")
