"""Sessions over real HTTP: Secure cookies over TLS, the idle timeout, SSO via a trusted proxy's
header, lockout, and a disabled account's session ending at once."""

from __future__ import annotations

import re
import ssl
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlmodel import Session

from console.accounts import disable_staff
from console.settings import ConsoleSettings
from console.web.app import create_app
from tests.support.console import PASSWORD, build_desk
from tests.support.tls_certs import self_signed
from web.server import Listen, ServedApp

SECRET = "a-test-session-secret-of-enough-length"


@pytest.fixture
def desk(issued: dict) -> dict:
    return build_desk(issued)


def serve(desk: dict, listen: Listen | None = None, **settings) -> ServedApp:
    context = desk["context"]
    if settings:
        context.settings = ConsoleSettings(**settings)
    return ServedApp(create_app(context, SECRET), listen or Listen("127.0.0.1", 0, what="console")).start()


def login(client: httpx.Client, login_name: str = "tanaka", password: str = PASSWORD) -> httpx.Response:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return client.post("/login", data={"login": login_name, "password": password, "csrf_token": token})


def test_over_tls_the_cookie_is_secure(desk: dict, tmp_path) -> None:
    tls = self_signed(tmp_path, "console")
    server = serve(desk, Listen("127.0.0.1", 0, tls.cert, tls.key, what="console"))
    try:
        with httpx.Client(base_url=server.url, verify=ssl.create_default_context(cafile=str(tls.ca_file))) as client:
            response = login(client)
        assert response.status_code == 303
        assert "secure" in response.headers["set-cookie"].lower()
    finally:
        server.stop()


def test_plain_loopback_cookie_is_not_marked_secure_and_the_idle_timeout_signs_out(desk: dict) -> None:
    now = [datetime(2026, 11, 25, 1, 0, tzinfo=timezone.utc)]
    desk["context"].clock = lambda: now[0]
    server = serve(desk, idle_timeout_minutes=30)
    try:
        with httpx.Client(base_url=server.url) as client:
            response = login(client)
            assert "secure" not in response.headers["set-cookie"].lower()
            now[0] += timedelta(minutes=29)
            assert client.get("/").status_code == 200  # renews the session
            now[0] += timedelta(minutes=29)
            assert client.get("/").status_code == 200
            now[0] += timedelta(minutes=31)
            assert client.get("/").status_code == 303
    finally:
        server.stop()


def test_remote_user_from_a_trusted_proxy_only(desk: dict) -> None:
    server = serve(desk, auth="remote_user", trusted_proxies=["127.0.0.1"])
    try:
        assert "田中 一郎" in httpx.get(f"{server.url}/", headers={"X-Remote-User": "tanaka"}).text
        assert httpx.get(f"{server.url}/", headers={"X-Remote-User": "nobody"}).status_code == 303
    finally:
        server.stop()
    server = serve(desk, auth="remote_user", trusted_proxies=["192.0.2.1"])
    try:
        assert httpx.get(f"{server.url}/", headers={"X-Remote-User": "tanaka"}).status_code == 303
    finally:
        server.stop()


def test_repeated_failures_lock_the_account_and_a_disabled_account_is_signed_out(desk: dict) -> None:
    server = serve(desk, lockout_failures=3, lockout_minutes=15)
    try:
        with httpx.Client(base_url=server.url) as client:
            assert login(client, "sato").status_code == 303
            assert client.get("/").status_code == 200
            with Session(desk["context"].engine) as session:
                disable_staff(session, "sato", "misato")
                session.commit()
            assert client.get("/").status_code == 303
        with httpx.Client(base_url=server.url) as client:
            for _ in range(2):
                assert login(client, "tanaka", "wrong-password").status_code == 400
            assert login(client, "tanaka", "wrong-password").status_code == 429  # the third locks it
            locked = login(client, "tanaka")  # the right password does not help while locked
            assert locked.status_code == 429 and "しばらくログインできません" in locked.text
    finally:
        server.stop()
