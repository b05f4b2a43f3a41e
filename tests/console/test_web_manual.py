"""Manual look-ups, revocations and /metrics on the console over real HTTP (uvicorn + httpx)."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlmodel import Session, select

from console.accounts import new_api_token
from console.web.app import create_app
from intake.revocations import mark_revoked
from keydesk.composition import build_context
from keydesk.demo.run import set_toml_value
from keydesk.runtime import Runtime
from store.tables import InboundMessage, OutboxMessage, Submission
from tests.support.console import SITE, manual_desk, manual_form
from tests.support.console import signed_in
from tests.support.desk_mail import NOW
from web.server import Listen, ServedApp


def serve(context):
    return ServedApp(
        create_app(context, "a-test-session-secret-of-enough-length"), Listen("127.0.0.1", 0, what="console")
    ).start()


@pytest.fixture
def served(issued: dict):
    desk = manual_desk(issued)
    server = serve(desk["context"])
    try:
        yield desk, server.url
    finally:
        server.stop()


def submission_id(page_html: str) -> str:
    return re.search(r'action="/submissions/[^"]+/lookup".*?name="submission_id" value="(\d+)"', page_html, re.S).group(
        1
    )


def test_the_lookup_form_over_http(served) -> None:
    desk, url = served
    receipt = desk["waiting"].receipt_no
    client, csrf = signed_in(url)
    inbox = client.get("/", params={"state": "held"})
    assert receipt in inbox.text and "照会待ち" in inbox.text
    page = client.get(f"/submissions/{receipt}")
    assert page.status_code == 200 and "照会結果の記録" in page.text and f'href="{SITE}"' in page.text
    assert 'name="reveal"' in page.text and 'name="contract_amount"' in page.text
    sid = submission_id(page.text)
    path = f"/submissions/{receipt}/lookup"

    assert client.post(path, data={**manual_form(), "submission_id": sid}).status_code == 403  # no CSRF token
    bad = client.post(path, data={**manual_form(contract_amount="三千万円"), "submission_id": sid, "csrf_token": csrf})
    assert bad.status_code == 400 and "請負代金額" in bad.text and 'role="alert"' in bad.text
    assert 'value="株式会社美郷建設"' in bad.text  # the form again, with what was typed
    assert (
        client.post(
            f"/submissions/{receipt}/lookup", data={**manual_form(), "submission_id": "x", "csrf_token": csrf}
        ).status_code
        == 400
    )
    assert (
        client.post(
            "/submissions/K-2026-999999/lookup", data={**manual_form(), "submission_id": sid, "csrf_token": csrf}
        ).status_code
        == 404
    )

    form = {**manual_form(), "submission_id": sid, "csrf_token": csrf, "request_key": "r1"}
    done = client.post(path, data=form)
    assert done.status_code == 303 and "recorded=1" in done.headers["location"]
    assert client.post(path, data=form).status_code == 303  # a double click: answered, nothing new
    other, other_csrf = signed_in(url, "admin")
    late = other.post(path, data={**form, "csrf_token": other_csrf, "request_key": "r2"})
    assert late.status_code == 409 and "田中 一郎" in late.text
    with Session(desk["context"].engine) as session:
        keys = [
            r.idempotency_key
            for r in session.exec(select(OutboxMessage).where(OutboxMessage.inbound_id == desk["waiting"].id))
        ]
    assert sorted(keys) == sorted([f"reply:{desk['waiting'].id}", f"result:{desk['waiting'].id}"])
    after = client.get(f"/submissions/{receipt}")
    assert "照会結果の記録" in after.text and 'action="/submissions/' + receipt + '/lookup"' not in after.text


def test_a_revoked_guarantee_is_flagged_and_taken_on_over_http(served) -> None:
    desk, url = served
    with Session(desk["context"].engine) as session:
        accepted = session.exec(
            select(Submission)
            .join(InboundMessage, Submission.inbound_id == InboundMessage.id)
            .where(InboundMessage.receipt_no == desk["accepted"])
        ).one()
        [revoked_id] = mark_revoked(session, accepted.guarantee_no, "保証委託契約の解除", NOW, actor="guarantor")
        session.commit()
    client, csrf = signed_in(url)
    inbox = client.get("/")
    assert "受付後に失効 <strong>1</strong> 件" in inbox.text and "受付後に失効(要対応)" in inbox.text
    page = client.get(f"/submissions/{desk['accepted']}")
    assert 'class="revoked-banner"' in page.text and "保証委託契約の解除" in page.text
    path = f"/submissions/{desk['accepted']}/revocation"
    assert client.post(path, data={"submission_id": str(revoked_id)}).status_code == 403
    assert client.post(path, data={"submission_id": str(revoked_id), "csrf_token": csrf}).status_code == 303
    page = client.get(f"/submissions/{desk['accepted']}")
    assert "田中 一郎 さんが対応を引き受けました" in page.text and "失効を確認" in page.text
    assert "受付後に失効(確認済)" in client.get("/").text


def test_metrics_on_the_console_for_configured_scrapers_or_an_admin_token(issued: dict) -> None:
    config = issued["config"]
    path = config / "keydesk.toml"
    path.write_text(set_toml_value(path.read_text(encoding="utf-8"), "metrics", "enabled", "true"), encoding="utf-8")
    desk = manual_desk(issued)  # builds the accounts
    runtime = Runtime(config)
    server = serve(build_context(runtime))
    try:
        response = httpx.get(f"{server.url}/metrics")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        assert 'keydesk_needs_review_mails{desk="misato"}' in response.text
    finally:
        server.stop()

    # Scrapers elsewhere: loopback is refused, an admin's token is let in, a clerk's is not.
    path.write_text(
        set_toml_value(path.read_text(encoding="utf-8"), "console", "metrics_scrapers", '["192.0.2.0/24"]'),
        encoding="utf-8",
    )
    runtime = Runtime(config)
    with Session(runtime.engine) as session:
        admin, clerk = new_api_token(session, "admin", "misato"), new_api_token(session, "tanaka", "misato")
        session.commit()
    server = serve(build_context(runtime))
    try:
        assert httpx.get(f"{server.url}/metrics").status_code == 403
        assert httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {clerk}"}).status_code == 403
        assert httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
    finally:
        server.stop()
    assert desk["waiting"].receipt_no


def test_no_metrics_on_the_console_unless_enabled(served) -> None:
    _desk, url = served
    assert httpx.get(f"{url}/metrics").status_code == 404
