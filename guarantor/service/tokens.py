"""Bearer tokens for desks: made once, shown once, kept only as a SHA-256.

A token is 32 random bytes (URL-safe Base64) behind the prefix ``kdt_``: far too many to guess,
so a plain hash (no salt, no slow hash) is enough and lets a request be matched with one indexed
query. Every issue and revocation is an audit event.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timezone

from sqlmodel import Session, select

from guarantor.errors import GuarantorError
from store.audit import record as audit
from store.tables import LookupToken

PREFIX = "kdt_"
_MAX_TOKEN_CHARS = 200


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_token(session: Session, desk: str, now: datetime, actor: str = "cli") -> str:
    """A new token for ``desk`` (in the caller's transaction); the plain token is returned once."""
    desk = desk.strip()
    if not desk or not desk.isascii() or not desk.replace("-", "").replace("_", "").isalnum():
        raise GuarantorError(f"窓口の ID は英数字・'-'・'_' で指定してください: {desk!r}")
    token = PREFIX + secrets.token_urlsafe(32)
    row = LookupToken(desk=desk, token_hash=token_hash(token), hint=token[:10], created_at=now.astimezone(timezone.utc))
    session.add(row)
    session.flush()
    audit(session, desk, actor, "lookup_token.added", f"lookup_token:{row.id}", {"hint": row.hint}, at=row.created_at)
    return token


def list_tokens(session: Session) -> list[LookupToken]:
    return list(session.exec(select(LookupToken).order_by(LookupToken.desk, LookupToken.id)))


def revoke_tokens(session: Session, desk: str, now: datetime, hint: str | None = None, actor: str = "cli") -> list[LookupToken]:
    """Revoke the desk's active tokens (only the one starting with ``hint`` when given)."""
    rows = [row for row in session.exec(select(LookupToken).where(LookupToken.desk == desk,
                                                                  LookupToken.revoked_at.is_(None)))
            if hint is None or row.hint.startswith(hint) or hint.startswith(row.hint)]
    if not rows:
        raise GuarantorError(f"窓口 {desk} の有効なトークンはありません" + (f"(指定: {hint})" if hint else ""))
    at = now.astimezone(timezone.utc)
    for row in rows:
        row.revoked_at = at
        session.add(row)
        audit(session, desk, actor, "lookup_token.revoked", f"lookup_token:{row.id}", {"hint": row.hint}, at=at)
    return rows


def desk_for_token(session: Session, token: str) -> str | None:
    """The desk an active token belongs to, or None."""
    if not token or len(token) > _MAX_TOKEN_CHARS or not token.startswith(PREFIX):
        return None
    row = session.exec(select(LookupToken).where(LookupToken.token_hash == token_hash(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    return row.desk
