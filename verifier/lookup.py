"""The certificate look-up port (D-Sure's role): (保証契約番号, 認証キー) → certificate.

D-Sure has no public API, so the verifier depends only on this protocol. The embedded adapter
in ``guarantor/`` answers from the project's own registry; a remote adapter can follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from verifier.certificate_signature import SignedCertificate


class LookupStatus(StrEnum):
    FOUND = "found"
    NO_MATCH = "no_match"  # unknown number, or the key does not open it
    REVOKED = "revoked"
    REFUSED = "refused"  # too many wrong keys for this number: the brute-force guard holds
    UNAVAILABLE = "unavailable"  # the service could not be reached; try later


@dataclass(frozen=True)
class LookupResult:
    status: LookupStatus
    signed: SignedCertificate | None = None
    reason: str = ""  # e.g. the revocation reason, or until when look-ups are refused


class CertificateLookup(Protocol):
    def lookup(self, guarantee_no: str, access_key: str, now: datetime) -> LookupResult:
        """``access_key`` is canonical (16 symbols, check symbol verified)."""
        ...
