"""Staff accounts: argon2 password hashes, lockout after failed logins, API tokens.

Everything here takes the time as a parameter where it matters, so tests need no clock tricks.
A login that fails says the same thing whether the account exists or not.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from foundation.errors import UsageProblem, UserFacingError
from store.audit import record as audit
from store.tables import StaffAccount

ROLES = ("clerk", "admin")
LOGIN_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MIN_PASSWORD_LENGTH = 10
_HASHER = PasswordHasher()
# Checked against when the login is unknown, so a miss costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))
TOKEN_PREFIX = "kdt_"


class AccountProblem(UserFacingError):
    """A staff account command that cannot be done as asked (the message says why)."""


@dataclass(frozen=True)
class StaffMember:
    """Who is signed in: what the web layer and the service functions need to know."""

    login: str
    name: str
    role: str
    departments: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def actor(self) -> str:
        """The audit actor: ``staff:<login>``; the detail carries the name."""
        return f"staff:{self.login}"

    def sees(self, department: str | None) -> bool:
        return self.is_admin or (department is not None and department in self.departments)


def member_of(account: StaffAccount) -> StaffMember:
    return StaffMember(account.login, account.name, account.role, tuple(json.loads(account.departments_json or "[]")))


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)  # SQLite hands datetimes back naive
    return moment


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UsageProblem(f"パスワードは{MIN_PASSWORD_LENGTH}文字以上にしてください")


def add_staff(
    session: Session,
    *,
    login: str,
    name: str,
    role: str,
    departments: list[str],
    password: str | None,
    known_departments: set[str],
    desk: str,
) -> StaffAccount:
    if not LOGIN_PATTERN.match(login):
        raise UsageProblem(f"ログイン名 {login!r} は使えません(半角英小文字・数字・. _ - で64文字まで)")
    if role not in ROLES:
        raise UsageProblem(f"役割は clerk か admin です: {role!r}")
    if not name.strip():
        raise UsageProblem("氏名(--name)を入れてください")
    unknown = [d for d in departments if d not in known_departments]
    if unknown:
        raise UsageProblem(
            f"rules.toml にない課です: {', '.join(unknown)}(あるもの: {', '.join(sorted(known_departments))})"
        )
    if role == "clerk" and not departments:
        raise UsageProblem("担当者(clerk)には --department で担当課を1つ以上指定してください")
    if password is not None:
        check_password_strength(password)
    account = StaffAccount(
        login=login,
        name=name.strip(),
        role=role,
        departments_json=json.dumps(departments),
        password_hash=_HASHER.hash(password) if password is not None else None,
    )
    session.add(account)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise AccountProblem(f"ログイン名 {login} はすでに登録されています") from None
    audit(
        session,
        desk,
        "cli",
        "staff.added",
        f"staff:{login}",
        {"name": account.name, "role": role, "departments": departments},
    )
    return account


def get_account(session: Session, login: str) -> StaffAccount:
    account = session.exec(select(StaffAccount).where(StaffAccount.login == login)).first()
    if account is None:
        raise AccountProblem(f"ログイン名 {login} の職員は登録されていません")
    return account


def list_staff(session: Session) -> list[StaffAccount]:
    return list(session.exec(select(StaffAccount).order_by(StaffAccount.login)))


def disable_staff(session: Session, login: str, desk: str) -> StaffAccount:
    account = get_account(session, login)
    account.disabled = True
    account.api_token_hash = None
    session.add(account)
    audit(session, desk, "cli", "staff.disabled", f"staff:{login}", {"name": account.name})
    return account


def set_password(session: Session, login: str, password: str, desk: str) -> StaffAccount:
    check_password_strength(password)
    account = get_account(session, login)
    account.password_hash = _HASHER.hash(password)
    account.failed_logins = 0
    account.locked_until = None
    session.add(account)
    audit(session, desk, "cli", "staff.password_set", f"staff:{login}", {"name": account.name})
    return account


def new_api_token(session: Session, login: str, desk: str) -> str:
    """A fresh token for scripts (shown once); it replaces the previous one."""
    account = get_account(session, login)
    token = f"{TOKEN_PREFIX}{account.id}_{secrets.token_urlsafe(32)}"
    account.api_token_hash = _HASHER.hash(token)
    session.add(account)
    audit(session, desk, "cli", "staff.api_token_issued", f"staff:{login}", {"name": account.name})
    return token


@dataclass(frozen=True)
class LoginResult:
    member: StaffMember | None
    locked: bool = False  # the account is locked for now (said to the person only in general words)


def authenticate(
    session: Session, login: str, password: str, *, now: datetime, max_failures: int, lockout: timedelta
) -> LoginResult:
    """Check a login; counts failures and locks the account after ``max_failures`` in a row.

    The caller commits (the failure count must stick even when the login fails).
    """
    account = session.exec(select(StaffAccount).where(StaffAccount.login == login)).first()
    if account is None or account.password_hash is None:
        _verify(_DUMMY_HASH, password)
        return LoginResult(None)
    locked_until = _aware(account.locked_until)
    if locked_until is not None and locked_until > now:
        _verify(_DUMMY_HASH, password)
        return LoginResult(None, locked=True)
    if account.disabled or not _verify(account.password_hash, password):
        account.failed_logins += 1
        if account.failed_logins >= max_failures:
            account.locked_until = now + lockout
            account.failed_logins = 0
        session.add(account)
        return LoginResult(None, locked=account.locked_until is not None and _aware(account.locked_until) > now)
    account.failed_logins = 0
    account.locked_until = None
    account.last_login_at = now
    if _HASHER.check_needs_rehash(account.password_hash):
        account.password_hash = _HASHER.hash(password)
    session.add(account)
    return LoginResult(member_of(account))


def member_by_login(session: Session, login: str) -> StaffMember | None:
    """An enabled account by its login (for a session or a trusted SSO header)."""
    account = session.exec(select(StaffAccount).where(StaffAccount.login == login)).first()
    if account is None or account.disabled:
        return None
    return member_of(account)


def member_by_token(session: Session, token: str) -> StaffMember | None:
    match = re.fullmatch(rf"{TOKEN_PREFIX}(\d+)_[A-Za-z0-9_-]{{20,}}", token or "")
    if match is None:
        return None
    account = session.get(StaffAccount, int(match.group(1)))
    if account is None or account.disabled or not account.api_token_hash:
        return None
    return member_of(account) if _verify(account.api_token_hash, token) else None


def _verify(hashed: str, password: str) -> bool:
    try:
        return _HASHER.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
