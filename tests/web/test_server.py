"""web.server: a real uvicorn on a free port; the TLS-or-loopback rule."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from foundation.errors import ConfigProblem
from foundation.net import is_loopback
from web.server import Listen, ServedApp


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def test_served_app_answers_on_a_free_port_and_stops() -> None:
    served = ServedApp(_app(), Listen("127.0.0.1", 0, what="test")).start()
    try:
        assert served.port > 0
        assert httpx.get(f"{served.url}/healthz").json() == {"status": "ok"}
    finally:
        served.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{served.url}/healthz", timeout=2)


def test_plain_http_off_loopback_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigProblem, match="plain HTTP is allowed only on a loopback address"):
        Listen("0.0.0.0", 8080, what="console").check()


def test_cert_without_key_is_refused(tmp_path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigProblem, match="go together"):
        Listen("127.0.0.1", 8080, tls_cert_file=cert).check()


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("10.0.0.1", False),
        ("mail.example.jp", False),
        ("0.0.0.0", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected
