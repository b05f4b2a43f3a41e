"""`keydesk guarantor token …`, `keydesk guarantor serve` refusals, `[desks.<id>.lookup]` validation,
and `keydesk verify` recording nothing."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlmodel import Session, select

from guarantor import registry
from guarantor.pdf import render_key_notice
from guarantor.service.tokens import desk_for_token
from keydesk.runtime import Runtime
from foundation.config import ConfigError
from store.tables import AuditEvent, LookupFailure, LookupToken
from tests.support.cli import invoke
from tests.support.desk_mail import use_lookup
from formats import access_key as keys
from verifier.certificate_signature import SignedCertificate


def test_token_add_prints_the_token_once_as_the_last_line_and_keeps_a_hash(issued: dict) -> None:
    config = issued["config"]
    added = invoke(config, "guarantor", "token", "add", "misato")
    assert added.exit_code == 0
    token = added.stdout.splitlines()[-1]
    runtime = Runtime(config)
    with Session(runtime.engine) as session:
        assert desk_for_token(session, token) == "misato"
        row = session.exec(select(LookupToken)).one()
        assert token not in (row.token_hash, row.hint)
        assert [
            e.action for e in session.exec(select(AuditEvent).where(AuditEvent.action.startswith("lookup_token")))
        ] == ["lookup_token.added"]
    listed = invoke(config, "guarantor", "token", "list")
    assert row.hint in listed.output and "有効" in listed.output and token not in listed.output
    assert invoke(config, "guarantor", "token", "revoke", "misato").exit_code == 0
    assert "失効" in invoke(config, "guarantor", "token", "list").output
    with Session(runtime.engine) as session:
        assert desk_for_token(session, token) is None
    assert invoke(config, "guarantor", "token", "revoke", "misato").refused_with(
        "窓口 misato の有効なトークンはありません"
    )


def test_serve_refuses_plain_http_off_loopback(issued: dict) -> None:
    assert invoke(issued["config"], "guarantor", "serve", "--host", "0.0.0.0", "--port", "0").refused_with("loopback")


@pytest.mark.parametrize(
    "table, problem",
    [
        ('mode = "http"', "needs url"),
        ('mode = "http"\nurl = "https://lookup.example"', "token_env or token_file"),
        ('mode = "http"\nurl = "http://lookup.example"\ntoken_env = "T"', "loopback"),
        ('mode = "http"\nurl = "https://lookup.example"\ntoken = "abc"', "secrets never go in the TOML"),
        ('mode = "carrier-pigeon"', "mode"),
    ],
)
def test_lookup_settings_are_checked(deployment: Path, table: str, problem: str) -> None:
    use_lookup(deployment, table)
    with pytest.raises(ConfigError) as raised:
        _ = Runtime(deployment).settings
    assert problem in "\n".join(raised.value.lines)
    assert "desks.misato.lookup" in "\n".join(raised.value.lines)


def test_the_default_stays_embedded(deployment: Path) -> None:
    assert Runtime(deployment).settings.desks["misato"].lookup.mode == "embedded"


def test_verify_records_nothing_not_even_lookup_failures(issued: dict, tmp_path: Path) -> None:
    config = issued["config"]
    runtime = Runtime(config)
    number = issued["rows"][0]["guarantee_no"]
    with Session(runtime.engine) as session:
        certificate = SignedCertificate.from_json(registry.find(session, number).signed_json).certificate()
    right = keys.parse(issued["rows"][0]["access_key"])
    body = ("0" if right[0] != "0" else "1") + right[1:15]
    wrong = tmp_path / "wrong-key.pdf"
    wrong.write_bytes(render_key_notice(certificate, body + keys.check_symbol(body), datetime.now(timezone.utc)))
    for _ in range(6):  # more than the guard allows: nothing may count
        result = invoke(config, "verify", str(wrong))
        assert "lookup.no_match" in result.output
    with Session(runtime.engine) as session:
        assert session.exec(select(LookupFailure)).all() == []
    right_pdf = issued["rows"][0]["files"]["key_notice"]
    assert "受付済 (accepted)" in invoke(config, "verify", right_pdf).output


def test_guarantor_serve_runs_the_service_until_stopped(issued: dict) -> None:
    import os
    import signal
    import subprocess
    import sys

    import httpx

    from tests.support.cli import wait_until
    from tests.support.servers import free_port

    config = issued["config"]
    token = invoke(config, "guarantor", "token", "add", "misato").stdout.splitlines()[-1]
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keydesk", "guarantor", "serve", "--port", str(port)],
        env={**os.environ, "KEYDESK_CONFIG": str(config)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(url + "/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return process.poll() is not None  # ended early: the assertion below says why

    try:
        wait_until(healthy, timeout=60, what="keydesk guarantor serve")
        assert process.poll() is None, process.stderr.read()
        row = issued["rows"][0]
        answer = httpx.post(
            url + "/api/v1/lookups",
            headers={"Authorization": f"Bearer {token}"},
            json={"guarantee_no": row["guarantee_no"], "access_key": row["access_key"]},
            timeout=30,
        )
        assert answer.status_code == 200 and answer.json()["status"] == "found"
        assert "STEP1" in httpx.get(url + "/", timeout=5).text
    finally:
        process.send_signal(signal.SIGTERM)
        out, _err = process.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught: the exit status says SIGTERM.
    assert process.returncode in (0, -signal.SIGTERM) and "照会サービスを http://127.0.0.1:" in out
