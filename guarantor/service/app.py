"""The look-up service as an ASGI app (FastAPI): pages for obligees, a JSON API for desks.

Pages (Japanese, server-side Jinja2, no JavaScript): ``/`` STEP1 asks for the 保証契約番号, STEP2
for the 認証キー, STEP3 shows the certificate (every field, the signature status, printable, with
its PDF). Whether a number exists is never shown: any well-formed number leads to STEP2, and an
unknown number and a wrong key get the same answer. Each client address is a requester of its own
for the brute-force guard and the rate limit.

API: ``POST /api/v1/lookups`` with ``Authorization: Bearer <token>`` (see docs/lookup-protocol.md).
The answer carries the signed certificate exactly as signed; the desk verifies the signature.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, Mapping
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import jinja2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from guarantor.formatting import certificate_fields
from guarantor.lookup_service import RegistryLookup
from guarantor.pdf import render_certificate_view
from guarantor.service.rate import RateLimit
from guarantor.service.tokens import desk_for_token, token_hash
from guarantor.settings import GuarantorSettings
from verifier import access_key as keys
from verifier import guarantee_no as numbers
from verifier.certificate_signature import SignatureStatus, check_signature
from verifier.lookup import LookupResult, LookupStatus

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).parent / "templates"
API_PATH = "/api/v1/lookups"
_MAX_FIELD_CHARS = 200


class LookupRequest(BaseModel):
    guarantee_no: str = Field(description="保証契約番号, e.g. 26-000123-4", max_length=_MAX_FIELD_CHARS)
    access_key: str = Field(description="認証キー, e.g. 7K3M-Q9TX-2HVB-R4NC", max_length=_MAX_FIELD_CHARS)


class SignedCertificateBody(BaseModel):
    payload: str = Field(description="The canonical certificate JSON, exactly the signed bytes (UTF-8)")
    signature: str = Field(description="Ed25519 signature of payload, Base64")
    key_id: str = Field(description="First 16 hex digits of the SHA-256 of the raw public key")


class LookupAnswer(BaseModel):
    status: Literal["found", "no_match", "revoked", "refused"]
    certificate: SignedCertificateBody | None = None
    reason: str = Field(default="", description="revoked: the reason; refused: until when (ISO 8601)")


class ProblemBody(BaseModel):
    error: str


def create_app(engine: Engine, settings: GuarantorSettings, trusted_keys: Mapping[str, Ed25519PublicKey], *,
               clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
               zone: str = "Asia/Tokyo") -> FastAPI:
    service = settings.service
    api_rate = RateLimit(service.rate_per_minute)
    page_rate = RateLimit(service.rate_per_minute)
    pages = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                               undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    app = FastAPI(title="keydesk look-up service", version="1",
                  description="電子証書の照会サービス (保証契約番号 + 認証キー → 署名付き電子証書)",
                  docs_url=None, redoc_url=None)

    def lookup(requester: str, actor: str, number: str, key: str) -> LookupResult:
        return RegistryLookup(engine, settings, requester=requester, actor=actor).lookup(number, key, _aware(clock(), zone))

    @app.middleware("http")
    async def safe_headers(request: Request, call_next):
        # Pages carry a key and a certificate: never cached, framed or sent on as a referrer.
        response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; " \
                                                      "form-action 'self'; frame-ancestors 'none'"
        return response

    # -- health ---------------------------------------------------------------------------------

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # -- API ------------------------------------------------------------------------------------

    @app.post(API_PATH, response_model=LookupAnswer, summary="Look a certificate up",
              responses={400: {"model": ProblemBody}, 401: {"model": ProblemBody}, 413: {"model": ProblemBody},
                         429: {"model": ProblemBody}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": LookupRequest.model_json_schema()}}}})
    async def api_lookup(request: Request) -> Response:
        token = _bearer(request.headers.get("authorization", ""))
        desk = await run_in_threadpool(_desk_for, engine, token) if token else None
        if desk is None:
            return JSONResponse({"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        wait = api_rate.hit(f"token:{token_hash(token)}")
        if wait:
            return JSONResponse({"error": f"too many look-ups: at most {service.rate_per_minute} per minute"},
                                status_code=429, headers={"Retry-After": str(wait)})
        body = await _bounded_body(request, service.max_body_bytes)
        if body is None:
            return JSONResponse({"error": f"request body larger than {service.max_body_bytes} bytes"}, status_code=413)
        try:
            asked = _parse_request(body)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        result = await run_in_threadpool(lookup, desk, f"api:{desk}", asked.guarantee_no, _api_key(asked.access_key))
        return JSONResponse(_answer(result).model_dump())

    # -- pages ----------------------------------------------------------------------------------

    def page(name: str, status_code: int = 200, headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
        return HTMLResponse(pages.get_template(name).render(guarantor=settings.name, **context),
                            status_code=status_code, headers=headers)

    def page_limited(request: Request) -> HTMLResponse | None:
        wait = page_rate.hit(f"web:{_client(request)}")
        if not wait:
            return None
        return page("error.html.j2", 429, {"Retry-After": str(wait)},
                    message=f"照会が集中しています。{wait}秒ほどおいてから、もう一度お試しください。")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def step1() -> HTMLResponse:
        return page("step1.html.j2", guarantee_no="", error="")

    @app.post("/step2", response_class=HTMLResponse, include_in_schema=False)
    async def step2(request: Request) -> HTMLResponse:
        form = await _bounded_form(request, service.max_body_bytes)
        if form is None:
            return page("error.html.j2", 413, message="送信された内容が大きすぎます。")
        number = numbers.normalise(form.get("guarantee_no", "")[:_MAX_FIELD_CHARS])
        if not numbers.is_well_formed(number):
            return page("step1.html.j2", 400, guarantee_no=form.get("guarantee_no", "")[:_MAX_FIELD_CHARS],
                        error="保証契約番号の形式が正しくありません(例: 26-000123-4)。")
        return page("step2.html.j2", guarantee_no=number, error="")

    @app.post("/step3", response_class=HTMLResponse, include_in_schema=False)
    async def step3(request: Request) -> Response:
        limited = page_limited(request)
        if limited is not None:
            return limited
        form = await _bounded_form(request, service.max_body_bytes)
        if form is None:
            return page("error.html.j2", 413, message="送信された内容が大きすぎます。")
        number = numbers.normalise(form.get("guarantee_no", "")[:_MAX_FIELD_CHARS])
        if not numbers.is_well_formed(number):
            return page("step1.html.j2", 400, guarantee_no="", error="保証契約番号の形式が正しくありません(例: 26-000123-4)。")
        key = _page_key(form.get("access_key", "")[:_MAX_FIELD_CHARS])
        if key is None:
            return page("step2.html.j2", 400, guarantee_no=number,
                        error="認証キーは英数字16文字(4文字×4組、例: 7K3M-Q9TX-2HVB-R4NC)です。入力内容をご確認ください。")
        requester = f"web:{_client(request)}"
        result = await run_in_threadpool(lookup, requester, requester, number, key)
        if result.status is LookupStatus.REFUSED:
            return page("step2.html.j2", 429, guarantee_no=number,
                        error="認証キーの誤りが続いたため、この保証契約番号の照会を一時的に停止しています。"
                              "しばらくしてから、もう一度お試しください。")
        if result.status not in (LookupStatus.FOUND, LookupStatus.REVOKED) or result.signed is None:
            return page("step2.html.j2", 200, guarantee_no=number,
                        error="該当する電子証書がありません。保証契約番号と認証キーをご確認ください。")
        certificate = result.signed.certificate()
        status = check_signature(result.signed, trusted_keys)
        return page("step3.html.j2", guarantee_no=number, access_key=keys.format_key(key),
                    fields=certificate_fields(certificate), revoked=result.status is LookupStatus.REVOKED,
                    revoked_reason=result.reason, signature=status.value, key_id=result.signed.key_id,
                    signature_valid=status is SignatureStatus.VALID)

    @app.post("/certificate.pdf", include_in_schema=False)
    async def certificate_pdf(request: Request) -> Response:
        limited = page_limited(request)
        if limited is not None:
            return limited
        form = await _bounded_form(request, service.max_body_bytes)
        number = numbers.normalise((form or {}).get("guarantee_no", "")[:_MAX_FIELD_CHARS])
        key = _page_key((form or {}).get("access_key", "")[:_MAX_FIELD_CHARS])
        if form is None or key is None or not numbers.is_well_formed(number):
            return page("error.html.j2", 400, message="電子証書を表示できませんでした。最初からやり直してください。")
        requester = f"web:{_client(request)}"
        result = await run_in_threadpool(lookup, requester, requester, number, key)
        if result.status not in (LookupStatus.FOUND, LookupStatus.REVOKED) or result.signed is None:
            return page("error.html.j2", 404, message="該当する電子証書がありません。最初からやり直してください。")
        pdf = render_certificate_view(result.signed.certificate(), _aware(clock(), zone), str(request.url))
        return Response(pdf, media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="certificate-{number}.pdf"'})

    return app


def _aware(moment: datetime, zone: str) -> datetime:
    return moment.astimezone(ZoneInfo(zone)) if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))


def _desk_for(engine: Engine, token: str) -> str | None:
    with Session(engine) as session:
        return desk_for_token(session, token)


def _bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _bounded_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` (declared or streamed)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _bounded_form(request: Request, limit: int) -> dict[str, str] | None:
    body = await _bounded_body(request, limit)
    if body is None:
        return None
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items() if values}


def _parse_request(body: bytes) -> LookupRequest:
    """The request, or ValueError with a one-line reason."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object with guarantee_no and access_key")
    for name in ("guarantee_no", "access_key"):
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string")
        if len(value) > _MAX_FIELD_CHARS:
            raise ValueError(f"{name} is longer than {_MAX_FIELD_CHARS} characters")
    return LookupRequest(guarantee_no=data["guarantee_no"], access_key=data["access_key"])


def _api_key(text: str) -> str:
    """The key as the registry compares it; anything malformed stays as it is and finds nothing."""
    try:
        return keys.canonical(text)
    except keys.AccessKeyError:
        return text


def _page_key(text: str) -> str | None:
    try:
        return keys.parse(text)
    except keys.AccessKeyError:
        return None


def _answer(result: LookupResult) -> LookupAnswer:
    certificate = None
    if result.signed is not None and result.status in (LookupStatus.FOUND, LookupStatus.REVOKED):
        certificate = SignedCertificateBody(**json.loads(result.signed.to_json()))
    status = result.status.value if result.status.value in ("found", "no_match", "revoked", "refused") else "refused"
    return LookupAnswer(status=status, certificate=certificate, reason=result.reason)
