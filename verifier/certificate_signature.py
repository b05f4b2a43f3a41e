"""Canonical JSON for a certificate and the Ed25519 signature check the desk performs.

The guarantor signs the canonical bytes; the desk checks them against the public keys it trusts
(``config/trust/<key id>.pem``). Canonical means: UTF-8, keys sorted, no insignificant white
space, dates as ISO strings, so the same certificate always yields the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from datetime import date
from enum import StrEnum
from typing import Any
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from rules.domain import Certificate, GuaranteeType

FORMAT_VERSION = 1


def canonical_json(certificate: Certificate) -> bytes:
    data = {"format": FORMAT_VERSION, **asdict(certificate)}
    return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=_json_default).encode(
        "utf-8"
    )


def _json_default(value: object) -> str:
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"not serialisable: {type(value).__name__}")


def certificate_from_json(payload: bytes) -> Certificate:
    """Parse canonical bytes back; raises ValueError on anything malformed."""
    try:
        data = json.loads(payload.decode("utf-8"))
        if data.pop("format") != FORMAT_VERSION:
            raise ValueError("unknown certificate format")
        values: dict[str, Any] = {}
        for field in fields(Certificate):
            raw = data[field.name]
            if field.name == "guarantee_type":
                values[field.name] = GuaranteeType(raw)
            elif field.type in ("date", date):
                values[field.name] = date.fromisoformat(raw)
            elif field.type in ("int", int):
                if not isinstance(raw, int) or isinstance(raw, bool):
                    raise ValueError(f"{field.name} must be an integer")
                values[field.name] = raw
            else:
                if not isinstance(raw, str):
                    raise ValueError(f"{field.name} must be a string")
                values[field.name] = raw
        return Certificate(**values)
    except (KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed certificate: {exc}") from exc


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 16 hex digits of its SHA-256."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class SignedCertificate:
    payload: bytes  # canonical JSON
    signature: bytes  # 64 bytes of Ed25519
    key_id: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "payload": self.payload.decode("utf-8"),
                "signature": base64.b64encode(self.signature).decode("ascii"),
                "key_id": self.key_id,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> SignedCertificate:
        data = json.loads(text)
        return cls(
            payload=data["payload"].encode("utf-8"),
            signature=base64.b64decode(data["signature"]),
            key_id=data["key_id"],
        )

    def certificate(self) -> Certificate:
        return certificate_from_json(self.payload)


class SignatureStatus(StrEnum):
    VALID = "valid"
    UNKNOWN_KEY = "unknown_key"
    INVALID = "invalid"


def check_signature(signed: SignedCertificate, trusted: Mapping[str, Ed25519PublicKey]) -> SignatureStatus:
    public_key = trusted.get(signed.key_id)
    if public_key is None:
        return SignatureStatus.UNKNOWN_KEY
    try:
        public_key.verify(signed.signature, signed.payload)
    except InvalidSignature:
        return SignatureStatus.INVALID
    return SignatureStatus.VALID
