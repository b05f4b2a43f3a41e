"""The guarantor's registry of issued certificates (the ``certificate`` table).

The 認証キー is never stored: only a salted scrypt hash of its canonical 16 symbols. A stolen
database therefore does not open any certificate; guessing a key costs one scrypt per try on top
of the 75 random bits, and the look-up service limits tries per number.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timezone

from sqlalchemy import update
from sqlmodel import Session, select

from guarantor.errors import GuarantorError
from rules.domain import Certificate
from store.audit import record as audit
from store.tables import CertificateRecord, Counter
from formats import guarantee_no as numbers
from verifier.certificate_signature import SignedCertificate

# scrypt parameters: 16 MiB and ~50 ms per hash, far too slow to try 2^75 keys.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_HASH_BYTES = 32
SALT_BYTES = 16

ACTIVE = "active"
REVOKED = "revoked"
_MAX_REASON_CHARS = 500


def hash_access_key(access_key: str, salt: bytes) -> bytes:
    """``access_key`` in canonical form (``formats.access_key.parse``)."""
    return hashlib.scrypt(
        access_key.encode("ascii"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=_HASH_BYTES
    )


def key_matches(record: CertificateRecord, access_key: str) -> bool:
    return hmac.compare_digest(hash_access_key(access_key, record.access_key_salt), record.access_key_hash)


def spend_one_hash() -> None:
    """Cost the same time as checking a key, so an unknown number cannot be told apart by timing."""
    hash_access_key("0" * 16, b"\0" * SALT_BYTES)


def next_guarantee_no(session: Session, year: int) -> str:
    """The next 保証契約番号 of ``year`` from the ``guarantee:<yy>`` counter (in the caller's transaction).

    The UPDATE takes the row lock (the write lock on SQLite) before the value is read, so two
    issuing processes never get the same serial; the unique number column backs that up.
    """
    name = f"guarantee:{year % 100:02d}"
    bumped = session.execute(update(Counter).where(Counter.name == name).values(value=Counter.value + 1))
    if bumped.rowcount == 0:
        session.add(Counter(name=name, value=1))
        session.flush()
        serial = 1
    else:
        serial = session.exec(select(Counter.value).where(Counter.name == name)).one()
    if serial > 999_999:
        raise GuarantorError(f"{2000 + year % 100}年の保証契約番号を使い切りました(連番が999999を超えます)")
    return numbers.make(year, serial)


def register(
    session: Session,
    *,
    certificate: Certificate,
    signed: SignedCertificate,
    contractor_email: str,
    access_key: str,
    issued_at: datetime,
) -> CertificateRecord:
    """Add the registry row (flushed, so it has its id). ``access_key`` is canonical."""
    salt = secrets.token_bytes(SALT_BYTES)
    row = CertificateRecord(
        desk=certificate.desk,
        guarantee_no=certificate.guarantee_no,
        guarantee_type=certificate.guarantee_type.value,
        contractor_name=certificate.contractor_name,
        contractor_email=contractor_email,
        signed_json=signed.to_json(),
        key_id=signed.key_id,
        access_key_hash=hash_access_key(access_key, salt),
        access_key_salt=salt,
        status=ACTIVE,
        issued_at=issued_at,
    )
    session.add(row)
    session.flush()
    return row


def find(session: Session, guarantee_no: str) -> CertificateRecord | None:
    number = numbers.normalise(guarantee_no)
    return session.exec(select(CertificateRecord).where(CertificateRecord.guarantee_no == number)).first()


def check_reason(reason: str) -> str:
    cleaned = " ".join(reason.split())
    if not cleaned:
        raise GuarantorError("失効の理由を入力してください(--reason)")
    if len(cleaned) > _MAX_REASON_CHARS:
        raise GuarantorError(f"理由が長すぎます({len(cleaned)}文字。{_MAX_REASON_CHARS}文字以内にしてください)")
    return cleaned


def revoke(
    session: Session, guarantee_no: str, reason: str, now: datetime, actor: str = "guarantor"
) -> CertificateRecord:
    """Mark the certificate revoked and record why (in the caller's transaction)."""
    reason = check_reason(reason)
    row = find(session, guarantee_no)
    if row is None:
        raise GuarantorError(f"保証契約番号 {numbers.normalise(guarantee_no)} は登録されていません")
    if row.status == REVOKED:
        raise GuarantorError(f"保証契約番号 {row.guarantee_no} はすでに失効しています(理由: {row.revoked_reason})")
    row.status = REVOKED
    row.revoked_reason = reason
    at = now.astimezone(timezone.utc)
    row.revoked_at = at
    session.add(row)
    audit(session, row.desk, actor, "guarantee.revoked", row.guarantee_no, {"reason": reason}, at=at)
    return row
