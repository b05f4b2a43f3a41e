"""The console over real HTTP (uvicorn on a free port, httpx): sign-in, CSRF, 404/400/409, escaping,
PDF headers, the JSON API with a session and with a token."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlmodel import Session

from console.accounts import new_api_token
from console.web.app import create_app
from tests.support.console import PASSWORD, build_desk, csrf_of, signed_in
from web.server import Listen, ServedApp


@pytest.fixture
def served(issued: dict):
    desk = build_desk(issued)
    app = create_app(desk["context"], "a-test-session-secret-of-enough-length")
    server = ServedApp(app, Listen("127.0.0.1", 0, what="console")).start()
    try:
        yield desk, server.url
    finally:
        server.stop()


def test_healthz_and_sign_in_is_required(served) -> None:
    _desk, url = served
    assert httpx.get(f"{url}/healthz").status_code == 200
    response = httpx.get(f"{url}/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    assert httpx.get(f"{url}/api/v1/submissions").status_code == 401


def test_a_wrong_password_gets_the_form_again_in_japanese(served) -> None:
    _desk, url = served
    client = httpx.Client(base_url=url)
    page = client.get("/login")
    response = client.post(
        "/login", data={"login": "tanaka", "password": "nope-nope-nope", "csrf_token": csrf_of(page.text)}
    )
    assert response.status_code == 400 and "ログイン名またはパスワードが違います" in response.text


def test_csrf_missing_or_stale_is_403(served) -> None:
    desk, url = served
    client, _csrf = signed_in(url)
    path = f"/submissions/{desk['review']}/decision"
    assert client.post(path, data={"decision": "accept"}).status_code == 403
    assert client.post(path, data={"decision": "accept", "csrf_token": "stale"}).status_code == 403
    assert client.post(f"/api/v1/submissions/{desk['review']}/decision", json={"decision": "accept"}).status_code == 403
    assert client.post("/login", data={"login": "tanaka", "password": PASSWORD}).status_code == 403


def test_contractor_text_is_escaped_and_pdfs_are_never_html(served) -> None:
    desk, url = served
    client, _csrf = signed_in(url)
    page = client.get(f"/submissions/{desk['review']}")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(" in page.text
    document = re.search(r'href="(/submissions/[^"]+/documents/\d+)"', page.text).group(1)
    pdf = client.get(document)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert (
        pdf.headers["content-disposition"].startswith("inline;") and pdf.headers["x-content-type-options"] == "nosniff"
    )
    assert "sandbox" in pdf.headers["content-security-policy"]
    assert client.get(f"/submissions/{desk['review']}/documents/999999").status_code == 404


def test_unknown_ids_are_404_and_another_department_is_404(served) -> None:
    desk, url = served
    client, _csrf = signed_in(url, "sato")
    assert client.get("/submissions/K-2026-999999").status_code == 404
    assert client.get(f"/submissions/{desk['review']}").status_code == 404
    assert desk["review"] not in client.get("/").text


def test_a_bad_form_value_is_400_with_a_japanese_message_and_a_second_decision_is_409(served) -> None:
    desk, url = served
    client, csrf = signed_in(url)
    path = f"/submissions/{desk['review']}/decision"
    bad = client.post(path, data={"decision": "return", "csrf_token": csrf})
    assert bad.status_code == 400 and "理由を1つ以上選んでください" in bad.text
    assert client.get("/?date_from=yesterday").status_code == 400
    ok = client.post(path, data={"decision": "accept", "csrf_token": csrf, "request_key": "k1"})
    assert ok.status_code == 303
    replay = client.post(path, data={"decision": "accept", "csrf_token": csrf, "request_key": "k1"})
    assert replay.status_code == 303  # the same click again: answered, nothing new
    other, other_csrf = signed_in(url, "admin")
    conflict = other.post(path, data={"decision": "handled", "csrf_token": other_csrf, "request_key": "k2"})
    assert conflict.status_code == 409 and "田中 一郎 さん" in conflict.text


def test_the_json_api_with_a_token_lists_and_decides(served) -> None:
    desk, url = served
    with Session(desk["context"].engine) as session:
        token = new_api_token(session, "tanaka", "misato")
        session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    listed = httpx.get(f"{url}/api/v1/submissions", params={"verdict": "needs_review"}, headers=headers).json()
    item = listed["submissions"][0]
    assert {"receipt_no", "verdict", "state", "contractor", "guarantee_no"} <= set(item)
    assert item["receipt_no"] == desk["review"] and item["state"] == "open"
    assert httpx.get(f"{url}/api/v1/submissions", params={"state": "nonsense"}, headers=headers).status_code == 400
    decision = f"{url}/api/v1/submissions/{desk['review']}/decision"
    assert httpx.post(decision, json={"decision": "return", "reasons": []}, headers=headers).status_code == 400
    first = httpx.post(decision, json={"decision": "accept"}, headers={**headers, "Idempotency-Key": "a1"})
    again = httpx.post(decision, json={"decision": "accept"}, headers={**headers, "Idempotency-Key": "a1"})
    assert first.status_code == 201 and again.status_code == 200 and again.json()["replayed"]
    late = httpx.post(decision, json={"decision": "accept"}, headers=headers)
    assert late.status_code == 409 and "田中 一郎" in late.json()["error"]
    assert (
        httpx.post(
            f"{url}/api/v1/submissions/K-2026-999999/decision", json={"decision": "accept"}, headers=headers
        ).status_code
        == 404
    )
    assert (
        httpx.get(f"{url}/api/v1/submissions", headers={"Authorization": "Bearer kdt_1_" + "x" * 40}).status_code == 401
    )


def test_the_register_csv_is_utf8_with_bom(served) -> None:
    _desk, url = served
    client, _csrf = signed_in(url, "admin")
    response = client.get("/register.csv")
    assert response.status_code == 200 and response.content.startswith(b"\xef\xbb\xbf")
    assert "契約番号" in response.content.decode("utf-8-sig")


def test_the_json_api_with_a_session_needs_the_meta_csrf_token(served) -> None:
    desk, url = served
    client, csrf = signed_in(url)
    listed = client.get("/api/v1/submissions", params={"state": "open"}).json()
    assert [s["receipt_no"] for s in listed["submissions"]] == [desk["review"]]
    path = f"/api/v1/submissions/{desk['review']}/decision"
    assert client.post(path, json={"decision": "handled"}, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    done = client.post(path, json={"decision": "handled", "note": "電話で確認"}, headers={"X-CSRF-Token": csrf})
    assert done.status_code == 201 and done.json()["decided_by"] == "田中 一郎"


def test_an_attachment_that_is_not_a_pdf_only_downloads_and_never_renders(served) -> None:
    from tests.support.console import take_stored
    from tests.support.desk_mail import mail

    desk, url = served
    evil = take_stored(
        desk["runtime"], mail([("請求書.pdf", b"<html><script>alert(document.cookie)</script></html>")]), uid=11
    )
    client, _csrf = signed_in(url, "admin")
    page = client.get(f"/submissions/{evil.receipt_no}")
    assert page.status_code == 200
    document = re.search(r'href="(/submissions/[^"]+/documents/\d+)"', page.text).group(1)
    response = client.get(document)
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert "filename*=UTF-8''%E8%AB%8B%E6%B1%82%E6%9B%B8.pdf" in response.headers["content-disposition"]
    assert "sandbox" in response.headers["content-security-policy"]
