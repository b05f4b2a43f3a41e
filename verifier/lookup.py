"""The certificate look-up port (D-Sure's role): (保証契約番号, 認証キー) → certificate.

D-Sure has no public API, so the verifier depends only on this protocol. The embedded adapter
in ``guarantor/`` answers from the project's own registry; ``intake/lookup_client.py`` asks a
guarantor's service over HTTPS; ``intake/lookup_client.ManualLookup`` leaves the look-up to a clerk.
Whatever the adapter, the desk checks the certificate's signature itself (``verifier.verify``).
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
    MANUAL = "manual"  # no API: a clerk looks it up on the guarantor's site and records what it says


@dataclass(frozen=True)
class LookupResult:
    status: LookupStatus
    signed: SignedCertificate | None = None
    reason: str = ""  # e.g. the revocation reason, or until when look-ups are refused


class CertificateLookup(Protocol):
    def lookup(self, guarantee_no: str, access_key: str, now: datetime) -> LookupResult:
        """``access_key`` is canonical in the configured format (for this project's format: 16 symbols,
        check symbol verified). An adapter that cannot reach its service answers UNAVAILABLE, never
        raises for it."""
        ...
