"""The console's ASGI app: sessions, CSRF and sign-in around the pages and the JSON API.

Every state-changing request carries a CSRF token (form field ``csrf_token`` or header
``X-CSRF-Token``) matching the session's, except API calls signed in with a staff API token
(a bearer token is not sent by a browser on its own). Pages are never cached.
"""

from __future__ import annotations

import ipaddress
import logging
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from console.accounts import StaffMember, member_by_login, member_by_token
from console.context import ConsoleContext
from console.decisions import local_time
from console.web.sessions import (
    SessionCodec,
    SessionData,
    csrf_ok,
    from_trusted_proxy,
    is_https,
    load_session,
    store_session,
)

log = logging.getLogger(__name__)
PACKAGE = Path(__file__).resolve().parent.parent
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
}


class Console:
    """What the routes share: the service context, the session codec, the templates."""

    def __init__(self, context: ConsoleContext, session_secret: str, refresh_seconds: int = 15) -> None:
        self.context = context
        self.settings = context.settings
        self.codec = SessionCodec(session_secret)
        self.templates = Jinja2Templates(directory=str(PACKAGE / "templates"))
        self.templates.env.globals["departments"] = context.departments
        self.templates.env.globals["refresh_seconds"] = refresh_seconds
        self.templates.env.filters["local_time"] = lambda moment: local_time(context, moment)

    @property
    def idle(self) -> timedelta:
        return timedelta(minutes=self.settings.idle_timeout_minutes)

    def session(self, request: Request) -> SessionData:
        return request.state.session

    def member(self, request: Request) -> StaffMember | None:
        """Who is asking: the SSO header from a trusted proxy, an API token, or the session."""
        if hasattr(request.state, "member"):
            return request.state.member
        member = None
        with Session(self.context.engine) as db:
            authorization = request.headers.get("authorization", "")
            if authorization.lower().startswith("bearer "):
                member = member_by_token(db, authorization[7:].strip())
                request.state.by_token = member is not None
            elif self.settings.auth == "remote_user":
                login = request.headers.get(self.settings.remote_user_header, "").strip()
                if login and from_trusted_proxy(request, self.settings.trusted_proxies):
                    member = member_by_login(db, login)
            else:
                login = self.session(request).login
                member = member_by_login(db, login) if login else None
                if login and member is None:  # disabled meanwhile: the session ends now
                    self.session(request).login = None
                    self.session(request).changed = True
        request.state.member = member
        return member

    def may_scrape(self, request: Request) -> bool:
        """/metrics: the connection's own address in ``metrics_scrapers``, or an admin's API token."""
        peer = request.client.host if request.client else ""
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            address = None
        if address is not None and any(
            address in ipaddress.ip_network(entry, strict=False) for entry in self.settings.metrics_scrapers
        ):
            return True
        if request.headers.get("authorization", "").lower().startswith("bearer "):
            member = self.member(request)
            return member is not None and member.is_admin
        return False

    def csrf_valid(self, request: Request, presented: str | None) -> bool:
        if getattr(request.state, "by_token", False):
            return True
        return csrf_ok(self.session(request), presented)

    def render(self, request: Request, name: str, status: int = 200, **values) -> Response:
        values.setdefault("member", getattr(request.state, "member", None))
        values.setdefault("csrf_token", self.session(request).csrf)
        values.setdefault("password_login", self.settings.auth == "password")
        return self.templates.TemplateResponse(request, name, values, status_code=status)


def create_app(context: ConsoleContext, session_secret: str, *, refresh_seconds: int = 15) -> FastAPI:
    """The console app; ``refresh_seconds``: how often the inbox looks for new items."""
    from console.web import api, pages  # the routes, registered on the app below

    app = FastAPI(title="keydesk console", docs_url=None, redoc_url=None, openapi_url=None)
    console = Console(context, session_secret, refresh_seconds)
    app.state.console = console
    app.mount("/static", StaticFiles(directory=str(PACKAGE / "static")), name="static")

    @app.middleware("http")
    async def sessions(request: Request, call_next):
        now = context.clock()
        request.state.session = load_session(request, console.codec, now, int(console.idle.total_seconds()))
        response = await call_next(request)
        session: SessionData = request.state.session
        if session.login:  # a sliding idle timeout: every request of a signed-in person renews it
            session.last_seen = now.timestamp()
            session.changed = True
        if session.changed:
            store_session(response, console.codec, session, secure=is_https(request, context.settings.trusted_proxies))
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    if context.metrics is not None:
        from fastapi.concurrency import run_in_threadpool
        from prometheus_client import CONTENT_TYPE_LATEST

        @app.get("/metrics")
        async def metrics(request: Request) -> Response:
            """The Prometheus text (web/metrics.py) for the configured scrapers or an admin's API token."""
            if not console.may_scrape(request):
                return Response("forbidden\n", status_code=403, media_type="text/plain")
            return Response(await run_in_threadpool(context.metrics), media_type=CONTENT_TYPE_LATEST)

    pages.register(app, console)
    api.register(app, console)
    return app
