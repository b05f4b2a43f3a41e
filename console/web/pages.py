"""The HTML pages: sign-in, inbox, a submission's page, decisions, key reveal, the register."""

from __future__ import annotations

import secrets
import urllib.parse
from datetime import date, timedelta

from fastapi import FastAPI
from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from console.accounts import authenticate
from console.decisions import AlreadyDecided, BadDecision, NotFound, acknowledge_revocation, decide, reveal_key
from console.inbox import STATE_LABELS, STATES, VERDICT_NAMES, InboxFilter, list_inbox
from console.manual import FACT_LABELS, record_lookup
from console.register_view import TYPES, register_csv, register_rows
from console.submission_page import document_for_download, mail_page
from console.web.app import Console

_PDF_MAGIC = b"%PDF-"


def register(app: FastAPI, console: Console) -> None:
    context = console.context

    def signed_in(request: Request):
        member = console.member(request)
        if member is None:
            return None, RedirectResponse(f"/login?next={urllib.parse.quote(request.url.path)}", status_code=303)
        return member, None

    def forbidden(request: Request) -> Response:
        return console.render(
            request,
            "message.html",
            status=403,
            title="操作を受け付けられませんでした",
            message="画面の有効期限が切れたか、正しくない送信です。画面を開き直してから、もう一度操作してください。",
        )

    async def posted(request: Request):
        """A state-changing form: its fields and the signed-in member, or the response refusing it
        (sign in first, or 403 without a valid CSRF token)."""
        form = await request.form()
        member, redirect = signed_in(request)
        if redirect:
            return form, None, redirect
        if not console.csrf_valid(request, form.get("csrf_token")):
            return form, None, forbidden(request)
        return form, member, None

    def already_done(request: Request, receipt_no: str, title: str, exc: Exception) -> Response:
        """409: someone decided or recorded this first; the message names who and when."""
        return console.render(
            request, "message.html", status=409, title=title, message=str(exc), back=f"/submissions/{receipt_no}"
        )

    def not_found(request: Request, text: str = "お探しのページは見つかりません。") -> Response:
        return console.render(request, "message.html", status=404, title="見つかりません", message=text)

    # -- signing in ---------------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> Response:
        return console.render(request, "login.html", next=_safe_next(next), error=None)

    @app.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        form = await request.form()
        if not console.csrf_valid(request, form.get("csrf_token")):
            return forbidden(request)
        if console.settings.auth != "password":
            return console.render(
                request,
                "message.html",
                status=400,
                title="ログイン",
                message="この窓口では、庁内の認証基盤からログインします。",
            )
        login_name = str(form.get("login") or "").strip()
        password = str(form.get("password") or "")
        next_path = _safe_next(str(form.get("next") or "/"))
        if not login_name or not password:
            return console.render(
                request, "login.html", status=400, next=next_path, error="ログイン名とパスワードを入力してください。"
            )
        with Session(context.engine) as db:
            result = authenticate(
                db,
                login_name,
                password,
                now=context.clock(),
                max_failures=console.settings.lockout_failures,
                lockout=timedelta(minutes=console.settings.lockout_minutes),
            )
            db.commit()
        if result.member is None:
            error = (
                "ログインに続けて失敗したため、しばらくログインできません。時間をおいてお試しください。"
                if result.locked
                else "ログイン名またはパスワードが違います。"
            )
            return console.render(
                request, "login.html", status=400 if not result.locked else 429, next=next_path, error=error
            )
        session = console.session(request)
        session.login = result.member.login
        session.csrf = secrets.token_urlsafe(24)  # a new token with the new privilege
        session.changed = True
        return RedirectResponse(next_path, status_code=303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        form = await request.form()
        if not console.csrf_valid(request, form.get("csrf_token")):
            return forbidden(request)
        session = console.session(request)
        session.login = None
        session.csrf = secrets.token_urlsafe(24)
        session.changed = True
        return RedirectResponse("/login", status_code=303)

    # -- the inbox ------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def inbox(
        request: Request,
        verdict: str = "",
        state: str = "",
        department: str = "",
        date_from: str = "",
        date_to: str = "",
        q: str = "",
        partial: str = "",
        revoked: str = "",
    ) -> Response:
        member, redirect = signed_in(request)
        if redirect:
            return redirect
        errors = []
        parsed_from, parsed_to = _date(date_from, errors), _date(date_to, errors)
        if verdict and verdict not in VERDICT_NAMES:
            errors.append("判定の値が正しくありません。")
        if state and state not in STATES:
            errors.append("状態の値が正しくありません。")
        if department and department not in context.departments:
            errors.append("担当課の値が正しくありません。")
        wanted = InboxFilter(
            verdict or None,
            state or None,
            department or None,
            parsed_from,
            parsed_to,
            q[:100] or None,
            revoked=bool(revoked),
        )
        with Session(context.engine) as db:
            page = list_inbox(db, context, member, wanted if not errors else InboxFilter())
        values = dict(
            page=page,
            wanted=wanted,
            errors=errors,
            verdicts=VERDICT_NAMES,
            states=STATE_LABELS,
            raw={"date_from": date_from, "date_to": date_to, "q": q},
        )
        if partial:
            return console.render(request, "inbox_rows.html", **values)
        return console.render(request, "inbox.html", status=400 if errors else 200, **values)

    # -- one mail -------------------------------------------------------------------------------

    def show(request: Request, receipt_no: str, status: int = 200, **extra) -> Response:
        member, redirect = signed_in(request)
        if redirect:
            return redirect
        try:
            with Session(context.engine) as db:
                page = mail_page(db, context, member, receipt_no)
        except NotFound as exc:
            return not_found(request, str(exc))
        extra.setdefault("revealed", {})
        extra.setdefault("error", None)
        extra.setdefault("form", {})
        extra.setdefault("lookup_form", {})
        return console.render(
            request, "submission.html", status=status, page=page, request_key=secrets.token_urlsafe(16), **extra
        )

    @app.get("/submissions/{receipt_no}", response_class=HTMLResponse)
    def submission(request: Request, receipt_no: str) -> Response:
        return show(request, receipt_no)

    @app.get("/submissions/{receipt_no}/documents/{document_id}")
    def document(request: Request, receipt_no: str, document_id: int) -> Response:
        member, redirect = signed_in(request)
        if redirect:
            return redirect
        try:
            with Session(context.engine) as db:
                row, content = document_for_download(db, context, member, receipt_no, document_id)
        except NotFound as exc:
            return not_found(request, str(exc))
        is_pdf = content[:1024].find(_PDF_MAGIC) >= 0
        # Never HTML: a PDF opens in the browser's viewer, anything else only downloads; the sandbox
        # CSP stops any script even if a browser guessed otherwise.
        disposition = "inline" if is_pdf else "attachment"
        fallback = "document.pdf" if is_pdf else "document.bin"
        filename = urllib.parse.quote(row.display_name, safe="")
        return Response(
            content,
            media_type="application/pdf" if is_pdf else "application/octet-stream",
            headers={
                "Content-Disposition": f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{filename}",
                "Content-Security-Policy": "sandbox; default-src 'none'; object-src 'self'; plugin-types application/pdf",
            },
        )

    @app.post("/submissions/{receipt_no}/reveal", response_class=HTMLResponse)
    async def reveal(request: Request, receipt_no: str) -> Response:
        form, member, refusal = await posted(request)
        if refusal:
            return refusal
        try:
            submission_id = int(str(form.get("submission_id") or ""))
            key = reveal_key(context, member, receipt_no, submission_id)
        except ValueError:
            return show(request, receipt_no, status=400, error="表示する保証を指定してください。")
        except NotFound as exc:
            return not_found(request, str(exc))
        return show(request, receipt_no, revealed={submission_id: key})

    @app.post("/submissions/{receipt_no}/decision", response_class=HTMLResponse)
    async def decision(request: Request, receipt_no: str) -> Response:
        form, member, refusal = await posted(request)
        if refusal:
            return refusal
        values = {
            "decision": str(form.get("decision") or ""),
            "reasons": [str(r) for r in form.getlist("reasons")],
            "note": str(form.get("note") or ""),
        }
        try:
            submission_id = int(str(form.get("submission_id") or "0")) or None
            decide(
                context,
                member,
                receipt_no,
                submission_id=submission_id,
                request_key=str(form.get("request_key") or ""),
                **values,
            )
        except NotFound as exc:
            return not_found(request, str(exc))
        except BadDecision as exc:
            return show(
                request, receipt_no, status=400, error=str(exc), form={**values, "submission_id": submission_id}
            )
        except AlreadyDecided as exc:
            return already_done(request, receipt_no, "判断済みです", exc)
        except ValueError:
            return show(request, receipt_no, status=400, error="判断する保証を指定してください。")
        return RedirectResponse(f"/submissions/{urllib.parse.quote(receipt_no)}?decided=1", status_code=303)

    @app.post("/submissions/{receipt_no}/lookup", response_class=HTMLResponse)
    async def lookup(request: Request, receipt_no: str) -> Response:
        """What a clerk read on the guarantor's site: the rules run, the contractor gets the result."""
        form, member, refusal = await posted(request)
        if refusal:
            return refusal
        values = {name: str(form.get(name) or "") for name in FACT_LABELS}
        try:
            submission_id = int(str(form.get("submission_id") or ""))
        except ValueError:
            return show(request, receipt_no, status=400, error="照会結果を記録する保証を指定してください。")
        try:
            record_lookup(
                context,
                member,
                receipt_no,
                submission_id=submission_id,
                form=values,
                request_key=str(form.get("request_key") or ""),
            )
        except NotFound as exc:
            return not_found(request, str(exc))
        except BadDecision as exc:
            return show(
                request, receipt_no, status=400, error=str(exc), lookup_form={**values, "submission_id": submission_id}
            )
        except AlreadyDecided as exc:
            return already_done(request, receipt_no, "記録済みです", exc)
        return RedirectResponse(f"/submissions/{urllib.parse.quote(receipt_no)}?recorded=1", status_code=303)

    @app.post("/submissions/{receipt_no}/revocation", response_class=HTMLResponse)
    async def revocation_seen(request: Request, receipt_no: str) -> Response:
        form, member, refusal = await posted(request)
        if refusal:
            return refusal
        try:
            acknowledge_revocation(context, member, receipt_no, int(str(form.get("submission_id") or "")))
        except ValueError:
            return show(request, receipt_no, status=400, error="保証を指定してください。")
        except NotFound as exc:
            return not_found(request, str(exc))
        return RedirectResponse(f"/submissions/{urllib.parse.quote(receipt_no)}", status_code=303)

    # -- the register ---------------------------------------------------------------------------

    @app.get("/register", response_class=HTMLResponse)
    def register_page(request: Request, missing: str = "") -> Response:
        member, redirect = signed_in(request)
        if redirect:
            return redirect
        with Session(context.engine) as db:
            rows = register_rows(db, context, member, missing_only=bool(missing))
        return console.render(
            request, "register.html", rows=rows, types=[t.value for t in TYPES], missing=bool(missing)
        )

    @app.get("/register.csv")
    def register_download(request: Request, missing: str = "") -> Response:
        member, redirect = signed_in(request)
        if redirect:
            return redirect
        with Session(context.engine) as db:
            rows = register_rows(db, context, member, missing_only=bool(missing))
        name = f"keydesk-register-{context.clock().date().isoformat()}.csv"
        return Response(
            register_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )


def _safe_next(value: str) -> str:
    """Only a path on this site (never //host or a scheme): no open redirect after sign-in."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _date(text: str, errors: list[str]) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors.append(f"日付は 2026-04-01 の形で入力してください({text[:20]})。")
        return None
