"""Sessions in a signed cookie, CSRF tokens, and who is asking (password session, SSO header, API token).

The cookie holds only the login, the CSRF token and the time of the last request, signed with
HMAC-SHA256 under the deployment's session secret; it is HttpOnly, SameSite=Strict, and Secure when
the console is reached over TLS. A session idle longer than the timeout no longer signs anyone in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "keydesk_console"
COOKIE_MAX_BYTES = 2048


@dataclass
class SessionData:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    login: str | None = None
    last_seen: float = 0.0
    changed: bool = True


class SessionCodec:
    def __init__(self, secret: str) -> None:
        if len(secret) < 16:
            raise ValueError("the console session secret must be at least 16 characters")
        self._key = hashlib.sha256(b"keydesk-console-session:" + secret.encode("utf-8")).digest()

    def _sign(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._key, payload, hashlib.sha256).digest()).decode().rstrip("=")

    def dumps(self, session: SessionData) -> str:
        payload = base64.urlsafe_b64encode(
            json.dumps({"c": session.csrf, "l": session.login, "t": session.last_seen}, separators=(",", ":")).encode()
        ).decode()
        return f"{payload.rstrip('=')}.{self._sign(payload.rstrip('=').encode())}"

    def loads(self, value: str | None) -> SessionData | None:
        if not value or len(value) > COOKIE_MAX_BYTES or "." not in value:
            return None
        payload, signature = value.rsplit(".", 1)
        if not hmac.compare_digest(signature, self._sign(payload.encode())):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            return SessionData(
                csrf=str(data["c"]), login=data.get("l"), last_seen=float(data.get("t") or 0), changed=False
            )
        except (ValueError, KeyError, TypeError):
            return None


def load_session(request: Request, codec: SessionCodec, now: datetime, idle_seconds: int) -> SessionData:
    """The request's session; a stale one keeps its CSRF token but signs nobody in."""
    session = codec.loads(request.cookies.get(COOKIE))
    if session is None:
        return SessionData()
    if session.login and now.timestamp() - session.last_seen > idle_seconds:
        session.login = None
        session.changed = True
    return session


def store_session(response: Response, codec: SessionCodec, session: SessionData, *, secure: bool) -> None:
    response.set_cookie(COOKIE, codec.dumps(session), httponly=True, samesite="strict", secure=secure, path="/")


def csrf_ok(session: SessionData, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf.encode(), str(presented).encode())


def from_trusted_proxy(request: Request, trusted: list[str]) -> bool:
    return request.client is not None and request.client.host in trusted


def is_https(request: Request, trusted: list[str]) -> bool:
    if request.url.scheme == "https":
        return True
    return from_trusted_proxy(request, trusted) and request.headers.get("x-forwarded-proto", "").lower() == "https"
