"""`keydesk status [--json]` (exit 0 healthy, 1 degraded) and the /metrics endpoint of `keydesk run`,
against real pymap IMAP and aiosmtpd SMTP."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import httpx
from sqlmodel import Session

from keydesk import daemon
from keydesk.runtime import Runtime
from keydesk.status import record_pass
from store.tables import DeskStatus
from tests.support.cli import invoke, wait_until
from tests.support.deployment import edit_section, use_smtp
from tests.support.smtp_servers import Recorder, running
from tests.support.servers import deployment_for, free_port, make_mail, use_stand_in_pipeline


def _status(config, *args):
    result = invoke(config, "status", "--json", *args)
    return result.exit_code, json.loads(result.stdout)


def test_status_is_healthy_after_a_pass_and_degraded_when_smtp_is_down(pymap_server, tmp_path, monkeypatch):
    use_stand_in_pipeline(monkeypatch)
    config = deployment_for(tmp_path, pymap_server)
    code, report = _status(config, "--no-connect")
    assert code == 1 and report["desks"]["misato"]["problems"] == ["no intake pass has completed yet"]

    handler = Recorder()
    with running(handler) as port:
        use_smtp(config, port)
        pymap_server.append(make_mail(1))
        assert invoke(config, "poll", "--once").exit_code == 0
        code, report = _status(config)
        text = invoke(config, "status")
    assert code == 0, report
    desk = report["desks"]["misato"]
    assert report["healthy"] and report["smtp"]["ok"] and desk["mailbox"]["ok"]
    assert desk["outbox"] == {"pending": 0, "held": 0, "failed": 0, "unconfirmed": 0, "stuck": 0}
    assert desk["last_poll_at"] and desk["next_digest_at"]
    assert text.exit_code == 0 and "美郷町 契約窓口 (misato): 正常" in text.stdout

    # The SMTP server is gone: degraded, and the line says why.
    code, report = _status(config)
    assert code == 1 and not report["smtp"]["ok"]
    assert any(problem.startswith("smtp: connection refused") for problem in report["desks"]["misato"]["problems"])


def test_a_stale_last_pass_and_a_quarantined_mail_make_the_desk_degraded(pymap_server, tmp_path, monkeypatch):
    use_stand_in_pipeline(monkeypatch)
    config = deployment_for(tmp_path, pymap_server)
    runtime = Runtime(config)
    record_pass(runtime.engine, "misato", 0, now=datetime.now(timezone.utc) - timedelta(hours=3))
    code, report = _status(config, "--no-connect")
    assert code == 1 and report["desks"]["misato"]["problems"][0].startswith("the last intake pass was 3 h ago")

    pymap_server.append(make_mail(2, body="[boom]"))
    for _ in range(3):  # max_attempts: the third failure quarantines it
        invoke(config, "poll", "--once", "--no-send")
    code, report = _status(config, "--no-connect")
    desk = report["desks"]["misato"]
    assert code == 1 and desk["quarantined"] == 1
    assert any("quarantined" in problem for problem in desk["problems"])


def test_keydesk_run_serves_the_same_figures_as_prometheus_metrics(pymap_server, tmp_path, monkeypatch):
    use_stand_in_pipeline(monkeypatch)
    monkeypatch.setattr(daemon, "companions", lambda: ())
    config = deployment_for(tmp_path, pymap_server)
    metrics_port = free_port()
    edit_section(config, "[metrics]", enabled="true", port=str(metrics_port), cache_seconds="0")
    runtime = Runtime(config)
    stop, ready, failures = threading.Event(), threading.Event(), []

    def serve():
        try:
            daemon.serve(runtime, stop, ready=ready.set)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
            ready.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert ready.wait(30) and not failures, failures
        pymap_server.append(make_mail(3))

        def scraped():
            with Session(runtime.engine) as session:
                status = session.get(DeskStatus, "misato")
                if status is None or status.last_poll_mails < 1:
                    return None
            return httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=15)

        response = wait_until(scraped, timeout=20, what="a pass that took the mail, then a scrape")
    finally:
        stop.set()
        thread.join(30)
    assert not failures and response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    body = response.text
    assert 'keydesk_last_poll_timestamp_seconds{desk="misato"}' in body
    assert 'keydesk_mailbox_reachable{desk="misato"} 1.0' in body
    assert 'keydesk_outbox_messages{desk="misato",state="pending"} 1.0' in body  # no deliverer in this test
    assert "keydesk_smtp_reachable 0.0" in body  # nothing listens on the configured SMTP port
    assert 'keydesk_healthy{desk="misato"} 0.0' in body


def test_metrics_refuses_plain_http_off_loopback(pymap_server, tmp_path):
    config = deployment_for(tmp_path, pymap_server)
    edit_section(config, "[metrics]", enabled="true", host='"0.0.0.0"')
    result = invoke_run_once(config)
    assert "metrics: plain HTTP is allowed only on a loopback address" in result


def invoke_run_once(config) -> str:
    from foundation.errors import ConfigProblem

    runtime = Runtime(config)
    stop = threading.Event()
    stop.set()
    try:
        daemon.serve(runtime, stop)
    except ConfigProblem as exc:
        return str(exc)
    return ""
