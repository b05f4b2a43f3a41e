"""The JSON API over the same service layer, for the town's other systems and scripts.

Signed in with a staff API token (``Authorization: Bearer …``, made by ``keydesk staff token``) or a
console session (then ``X-CSRF-Token`` must carry the token of ``<meta name="csrf-token">``).
"""

from __future__ import annotations

from datetime import date

from fastapi import FastAPI
from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import JSONResponse

from console.decisions import AlreadyDecided, BadDecision, NotFound, decide
from console.inbox import STATES, VERDICT_NAMES, InboxFilter, list_inbox
from console.web.app import Console


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def register(app: FastAPI, console: Console) -> None:
    context = console.context

    @app.get("/api/v1/submissions")
    def submissions(
        request: Request,
        verdict: str = "",
        state: str = "",
        department: str = "",
        q: str = "",
        date_from: str = "",
        date_to: str = "",
    ) -> JSONResponse:
        member = console.member(request)
        if member is None:
            return _error(401, "ログインしていないか、APIトークンが正しくありません")
        if verdict and verdict not in VERDICT_NAMES:
            return _error(400, f"verdict は {', '.join(VERDICT_NAMES)} のいずれかです")
        if state and state not in STATES:
            return _error(400, f"state は {', '.join(STATES)} のいずれかです")
        try:
            dates = [date.fromisoformat(d) if d else None for d in (date_from, date_to)]
        except ValueError:
            return _error(400, "日付は 2026-04-01 の形で指定してください")
        wanted = InboxFilter(verdict or None, state or None, department or None, dates[0], dates[1], q[:100] or None)
        with Session(context.engine) as db:
            page = list_inbox(db, context, member, wanted)
        return JSONResponse(
            {
                "submissions": [item.to_json() for item in page.items],
                "counts": page.counts,
                "latest_id": page.latest_submission_id,
            }
        )

    @app.post("/api/v1/submissions/{receipt_no}/decision")
    async def decision(request: Request, receipt_no: str) -> JSONResponse:
        member = console.member(request)
        if member is None:
            return _error(401, "ログインしていないか、APIトークンが正しくありません")
        if not console.csrf_valid(request, request.headers.get("x-csrf-token")):
            return _error(403, "CSRFトークンがないか、古くなっています")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "本文は JSON にしてください")
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("reasons", []), list)
            or not isinstance(body.get("note", ""), str)
            or not isinstance(body.get("decision"), str)
        ):
            return _error(
                400, '{"decision": "accept"|"return"|"handled", "reasons": [...], "note": "..."} の形で送ってください'
            )
        try:
            outcome = decide(
                context,
                member,
                receipt_no,
                decision=body["decision"],
                reasons=[str(r) for r in body.get("reasons", [])],
                note=body.get("note", ""),
                guarantee_no=body.get("guarantee_no") if isinstance(body.get("guarantee_no"), str) else None,
                request_key=request.headers.get("idempotency-key"),
            )
        except NotFound as exc:
            return _error(404, str(exc))
        except BadDecision as exc:
            return _error(400, str(exc))
        except AlreadyDecided as exc:
            return _error(409, str(exc))
        row = outcome.decision
        return JSONResponse(
            {
                "receipt_no": receipt_no,
                "decision": row.decision,
                "verdict": row.verdict,
                "decided_by": row.staff_name,
                "decided_at": row.decided_at.isoformat(),
                "reply_outbox_id": row.outbox_id,
                "replayed": outcome.replayed,
            },
            status_code=200 if outcome.replayed else 201,
        )
