"""The desk in http mode against the guarantor's service (uvicorn, TLS from a throw-away CA):
found, the service gone in the middle of a run and back, a tampered answer."""

from __future__ import annotations

import json
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlmodel import Session, select

from guarantor import registry
from guarantor.keys import load_trusted_keys
from guarantor.service.app import create_app
from guarantor.service.tokens import add_token
from keydesk.composition import retry_held_lookups
from keydesk.runtime import Runtime
from rules.findings import Verdict
from store.tables import AuditEvent, OutboxMessage, Submission
from tests.desk_mail import NOW, mail, take, use_lookup
from tests.servers import pymap_server  # noqa: F401 - a fixture
from tests.tls_certs import private_ca
from web.server import Listen, ServedApp


def key_notice(issued: dict, index: int) -> bytes:
    return Path(issued["rows"][index]["files"]["key_notice"]).read_bytes()


def use_http_lookup(config: Path, url: str, token: str, ca_file: Path) -> None:
    token_file = config.parent / "var" / "secrets" / "lookup.token"
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    use_lookup(config, f'mode = "http"\nurl = "{url}"\ntoken_file = "{token_file}"\nca_file = "{ca_file}"\n'
                       f'attempts = 2\nbackoff_seconds = 0\nconnect_timeout_seconds = 2\ntimeout_seconds = 5\n'
                       f'hold_retry_minutes = [1, 5]\nhold_hourly_for_hours = 0')


@pytest.fixture
def deployment(deployment: Path, database_url: str) -> Path:
    """The suite's fresh deployment, on SQLite and on PostgreSQL (when available)."""
    path = deployment / "keydesk.toml"
    path.write_text(path.read_text(encoding="utf-8").replace('url = "sqlite:///var/keydesk.db"', f'url = "{database_url}"'),
                    encoding="utf-8")
    return deployment


@pytest.fixture
def http_desk(issued: dict, tmp_path: Path):
    """The deployment of ``issued`` in http mode against its guarantor's service, served over TLS."""
    config = issued["config"]
    runtime = Runtime(config)
    tls = private_ca(tmp_path, "lookup")
    with Session(runtime.engine) as session:
        token = add_token(session, "misato", NOW)
        session.commit()
    app = create_app(runtime.engine, runtime.settings.guarantor, load_trusted_keys(runtime.settings.guarantor.trust_directory))
    listen = Listen("127.0.0.1", 0, tls.cert, tls.key, what="guarantor.service")
    served = ServedApp(app, listen).start()
    use_http_lookup(config, served.url, token, tls.ca_file)
    state = {"runtime": Runtime(config), "served": served, "app": app, "tls": tls, "port": served.port}
    yield state
    state["served"].stop()


def replies(runtime: Runtime, inbound_id: int) -> list:
    with Session(runtime.engine) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.inbound_id == inbound_id)
                            .order_by(OutboxMessage.id)).all()
    return [(row.idempotency_key, message_from_bytes(row.raw, policy=policy.default)) for row in rows]


def body(message) -> str:
    return message.get_body(("plain",)).get_content()


def test_a_key_notice_is_looked_up_over_https_and_accepted(issued: dict, http_desk) -> None:
    row, outcome = take(http_desk["runtime"], mail([("お知らせ.pdf", key_notice(issued, 0))]), uid=1)
    assert outcome.verdict is Verdict.ACCEPTED, outcome.findings


def test_the_service_gone_holds_the_submission_and_its_return_sends_one_result(issued: dict, http_desk) -> None:
    runtime = http_desk["runtime"]
    http_desk["served"].stop()  # the guarantor's service goes away in the middle of the run
    row, outcome = take(runtime, mail([("お知らせ.pdf", key_notice(issued, 0))]), uid=1)
    assert outcome.verdict is Verdict.NEEDS_REVIEW and "lookup.unavailable" in outcome.findings
    with Session(runtime.engine) as session:
        submission = session.exec(select(Submission).where(Submission.inbound_id == row.id)).one()
    assert submission.lookup_state == "held" and submission.next_lookup_at == NOW + timedelta(minutes=1)
    [(key, first)] = replies(runtime, row.id)
    assert key == f"reply:{row.id}" and "照会ができ次第" in body(first) and "再送の必要はありません" in body(first)

    # Not yet due: nothing happens. Due but the service is still gone: the next pause of the schedule.
    assert not retry_held_lookups(runtime, "misato", now=NOW + timedelta(seconds=30)).anything
    report = retry_held_lookups(runtime, "misato", now=NOW + timedelta(minutes=2))
    assert report.still_held == [row.receipt_no]
    with Session(runtime.engine) as session:
        submission = session.exec(select(Submission).where(Submission.inbound_id == row.id)).one()
    assert submission.lookup_attempts == 1 and submission.next_lookup_at == NOW + timedelta(minutes=7)

    # The service comes back on the same address: the held submission is decided, one result mail goes out.
    listen = Listen("127.0.0.1", http_desk["port"], http_desk["tls"].cert, http_desk["tls"].key, what="guarantor.service")
    http_desk["served"] = ServedApp(http_desk["app"], listen).start()
    report = retry_held_lookups(runtime, "misato", now=NOW + timedelta(minutes=8))
    assert report.decided == [row.receipt_no]
    assert not retry_held_lookups(runtime, "misato", now=NOW + timedelta(hours=3)).anything
    with Session(runtime.engine) as session:
        submission = session.exec(select(Submission).where(Submission.inbound_id == row.id)).one()
        completed = session.exec(select(AuditEvent).where(AuditEvent.action == "lookup.completed")).all()
    assert (submission.verdict, submission.lookup_state) == ("accepted", "done")
    assert submission.certificate_json and submission.contractor_name == "株式会社美郷建設"
    assert len(completed) == 1
    sent = replies(runtime, row.id)
    assert [key for key, _ in sent] == [f"reply:{row.id}", f"result:{row.id}"]
    result = sent[1][1]
    assert "受け付けました" in result["Subject"] and row.receipt_no in result["Subject"]
    assert "照会と確認が済みました" in body(result)
    assert result["In-Reply-To"] and result["To"].addresses[0].addr_spec == first["To"].addresses[0].addr_spec


def digest_reasons(runtime: Runtime) -> list[str]:
    from mailer.digest_rows import collect_lines

    with Session(runtime.engine) as session:
        lines = collect_lines(session, desk="misato", rules=runtime.settings.rules.desks["misato"],
                              since=NOW - timedelta(days=1), until=NOW + timedelta(days=1))
    return [reason for line in lines if line.section == "needs_review" for reason in line.reasons]


def test_held_too_long_goes_to_staff(issued: dict, http_desk) -> None:
    runtime = http_desk["runtime"]
    http_desk["served"].stop()
    row, _ = take(runtime, mail([("お知らせ.pdf", key_notice(issued, 0))]), uid=1)
    assert "自動で再照会します" in " ".join(digest_reasons(runtime))  # staff see it held
    retry_held_lookups(runtime, "misato", now=NOW + timedelta(minutes=2))
    report = retry_held_lookups(runtime, "misato", now=NOW + timedelta(minutes=10))
    reasons = " ".join(digest_reasons(runtime))
    assert "再試行を終えました" in reasons and f"keydesk manual reveal {row.receipt_no}" in reasons
    assert report.given_up == [row.receipt_no]
    with Session(runtime.engine) as session:
        submission = session.exec(select(Submission).where(Submission.inbound_id == row.id)).one()
    assert submission.lookup_state == "staff" and submission.verdict == "needs_review"
    assert len(replies(runtime, row.id)) == 1


def tampering_service(runtime: Runtime, guarantee_no: str, change) -> FastAPI:
    """A service answering with the registry's real signed certificate, changed by ``change``."""
    with Session(runtime.engine) as session:
        signed = json.loads(registry.find(session, guarantee_no).signed_json)
    answer = change(signed)
    app = FastAPI()

    @app.post("/api/v1/lookups")
    def lookups() -> dict:
        return answer

    return app


@pytest.mark.parametrize("change", [
    lambda s: {"status": "found", "certificate": {**s, "payload": s["payload"].replace("12345000", "99999999")}},
    lambda s: {"status": "found", "certificate": {**s, "signature": ""}},
    lambda s: {"status": "found"},
], ids=["tampered", "unsigned", "no-certificate"])
def test_a_tampered_or_unsigned_answer_is_never_accepted(issued: dict, http_desk, change) -> None:
    runtime = http_desk["runtime"]
    http_desk["served"].stop()
    fake = tampering_service(runtime, issued["rows"][0]["guarantee_no"], change)
    listen = Listen("127.0.0.1", http_desk["port"], http_desk["tls"].cert, http_desk["tls"].key, what="tamperer")
    http_desk["served"] = ServedApp(fake, listen).start()
    row, outcome = take(runtime, mail([("お知らせ.pdf", key_notice(issued, 0))]), uid=1)
    assert outcome.verdict is Verdict.NEEDS_REVIEW
    assert "cert.signature" in outcome.findings and "lookup.unavailable" not in outcome.findings
    with Session(runtime.engine) as session:
        submission = session.exec(select(Submission).where(Submission.inbound_id == row.id)).one()
    assert submission.certificate_json is None and submission.lookup_state is None


def test_poll_once_looks_held_submissions_up_again(pymap_server, tmp_path: Path) -> None:
    """The same story through the real commands: `keydesk poll --once` takes the mail while the
    service is down, and a later `poll --once` answers it once the service is back."""
    import json as json_module

    from tests.conftest import CONTRACTS, GUARANTEES, invoke
    from tests.servers import deployment_for

    config = deployment_for(tmp_path, pymap_server)
    assert invoke(config, "guarantor", "init").exit_code == 0
    (tmp_path / "g.csv").write_text(GUARANTEES, encoding="utf-8")
    rows = [json_module.loads(line) for line in invoke(config, "guarantor", "issue", str(tmp_path / "g.csv"), "--out",
                                                        str(tmp_path / "docs"), "--json").stdout.splitlines()]
    (tmp_path / "c.csv").write_bytes(CONTRACTS.encode("cp932"))
    assert invoke(config, "contracts", "import", str(tmp_path / "c.csv")).exit_code == 0
    token = invoke(config, "guarantor", "token", "add", "misato").stdout.splitlines()[-1]
    runtime = Runtime(config)
    tls = private_ca(tmp_path, "lookup")
    app = create_app(runtime.engine, runtime.settings.guarantor, load_trusted_keys(runtime.settings.guarantor.trust_directory))
    served = ServedApp(app, Listen("127.0.0.1", 0, tls.cert, tls.key, what="guarantor.service")).start()
    port = served.port
    use_lookup_file = tmp_path / "token"
    use_lookup_file.write_text(token)
    use_lookup_file.chmod(0o600)
    use_lookup(config, f'mode = "http"\nurl = "{served.url}"\ntoken_file = "{use_lookup_file}"\nca_file = "{tls.ca_file}"\n'
                       f'attempts = 1')
    served.stop()

    pymap_server.append(mail([("お知らせ.pdf", Path(rows[0]["files"]["key_notice"]).read_bytes())]))
    first = invoke(config, "poll", "--once", "--json")
    assert json_module.loads(first.stdout.splitlines()[0])["findings"] == ["lookup.unavailable"]

    served = ServedApp(app, Listen("127.0.0.1", port, tls.cert, tls.key, what="guarantor.service")).start()
    try:
        with Session(runtime.engine) as session:  # the pause is over
            submission = session.exec(select(Submission)).one()
            submission.next_lookup_at = NOW
            session.add(submission)
            session.commit()
        second = invoke(config, "poll", "--once")
        assert "照会待ちだった 1 通の結果を返信し" in second.output
    finally:
        served.stop()
    with Session(runtime.engine) as session:
        submission = session.exec(select(Submission)).one()
        keys_sent = [r.idempotency_key for r in session.exec(select(OutboxMessage).where(OutboxMessage.kind == "reply"))]
    assert (submission.verdict, submission.lookup_state) == ("accepted", "done") and sorted(keys_sent) == sorted(
        [f"reply:{submission.inbound_id}", f"result:{submission.inbound_id}"])


def test_keydesk_runs_companion_looks_held_submissions_up_by_itself(issued: dict, http_desk, monkeypatch) -> None:
    import threading

    from keydesk import companions
    from tests.conftest import wait_until

    runtime = http_desk["runtime"]
    http_desk["served"].stop()
    row, _ = take(runtime, mail([("お知らせ.pdf", key_notice(issued, 0))]), uid=1)  # held; its pause is long over
    listen = Listen("127.0.0.1", http_desk["port"], http_desk["tls"].cert, http_desk["tls"].key, what="guarantor.service")
    http_desk["served"] = ServedApp(http_desk["app"], listen).start()
    monkeypatch.setattr(companions, "HELD_LOOKUP_INTERVAL_SECONDS", 0.05)
    stop = threading.Event()
    stopper = companions.held_lookup_companion(runtime, stop)
    try:
        def decided() -> bool:
            with Session(runtime.engine) as session:
                return session.exec(select(Submission).where(Submission.inbound_id == row.id)).one().lookup_state == "done"

        wait_until(decided, timeout=30, what="the held look-up answered by keydesk run's companion")
    finally:
        stopper()
    assert [key for key, _ in replies(runtime, row.id)] == [f"reply:{row.id}", f"result:{row.id}"]
