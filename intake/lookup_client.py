"""Look-up adapters of the desk: the guarantor's service over HTTPS, and the manual mode.

``HttpLookup`` implements ``verifier.lookup.CertificateLookup`` with httpx: connect and read
timeouts, a few tries with doubling pauses for what may pass (refused, timeout, 5xx, 429), then
UNAVAILABLE. It hands back the signed certificate exactly as received: the desk verifies the
Ed25519 signature itself (``verifier.verify``), so a tampered or unsigned answer is never accepted.
``ManualLookup`` answers MANUAL: a clerk looks the key up and records what the certificate says.
"""

from __future__ import annotations

import base64
import binascii
import logging
import ssl
import time
from datetime import datetime
from typing import Callable

import httpx

from verifier.certificate_signature import SignedCertificate
from verifier.lookup import LookupResult, LookupStatus

log = logging.getLogger(__name__)
API_PATH = "/api/v1/lookups"
_ANSWERS = {"found": LookupStatus.FOUND, "no_match": LookupStatus.NO_MATCH, "revoked": LookupStatus.REVOKED,
            "refused": LookupStatus.REFUSED}
_MAX_ANSWER_BYTES = 1024 * 1024


class HttpLookup:
    def __init__(self, url: str, token: str, *, ssl_context: ssl.SSLContext | None = None,
                 connect_timeout: float = 5, read_timeout: float = 15, attempts: int = 3,
                 backoff_seconds: float = 0.5, sleep: Callable[[float], None] = time.sleep,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._endpoint = url.rstrip("/") + API_PATH
        self._token = token
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._sleep = sleep
        self._client = httpx.Client(
            verify=ssl_context if ssl_context is not None else True,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            follow_redirects=False, transport=transport,
            headers={"User-Agent": "keydesk-desk/1"},
        )

    def close(self) -> None:
        self._client.close()

    def lookup(self, guarantee_no: str, access_key: str, now: datetime) -> LookupResult:
        for attempt in range(1, self._attempts + 1):
            reason = self._try(guarantee_no, access_key)
            if isinstance(reason, LookupResult):
                return reason
            log.warning("look-up of %s: %s (try %d of %d)", guarantee_no, reason, attempt, self._attempts)
            if attempt < self._attempts:
                self._sleep(self._backoff * 2 ** (attempt - 1))
        return LookupResult(LookupStatus.UNAVAILABLE, reason=reason)

    def _try(self, guarantee_no: str, access_key: str) -> LookupResult | str:
        """The answer, or why this try failed (to be tried again)."""
        try:
            response = self._client.post(self._endpoint, json={"guarantee_no": guarantee_no, "access_key": access_key},
                                         headers={"Authorization": f"Bearer {self._token}"})
        except httpx.TimeoutException:
            return "the look-up service did not answer in time"
        except httpx.TransportError as exc:
            return f"cannot reach the look-up service: {type(exc).__name__}"
        if response.status_code == 401:
            log.error("the look-up service refused the desk's token (401): check token_env / token_file")
            return "the look-up service refused the desk's token (401)"
        if response.status_code != 200:
            return f"the look-up service answered HTTP {response.status_code}"
        if len(response.content) > _MAX_ANSWER_BYTES:
            return "the look-up service's answer is too large"
        try:
            return parse_answer(response.json())
        except ValueError as exc:
            return f"the look-up service's answer is malformed: {exc}"


def parse_answer(data: object) -> LookupResult:
    """The service's JSON as a LookupResult; ValueError for an answer that says nothing usable.

    A found or revoked answer whose certificate part is missing or garbled still comes back with a
    SignedCertificate (empty signature), so the signature check refuses it rather than the desk
    holding it as "unavailable".
    """
    if not isinstance(data, dict) or data.get("status") not in _ANSWERS:
        raise ValueError("no known status")
    status = _ANSWERS[data["status"]]
    reason = data.get("reason") if isinstance(data.get("reason"), str) else ""
    if status not in (LookupStatus.FOUND, LookupStatus.REVOKED):
        return LookupResult(status, reason=reason[:500])
    return LookupResult(status, signed=_signed(data.get("certificate")), reason=reason[:500])


def _signed(part: object) -> SignedCertificate:
    if not isinstance(part, dict):
        return SignedCertificate(payload=b"", signature=b"", key_id="")
    payload, signature, key_id = part.get("payload"), part.get("signature"), part.get("key_id")
    try:
        raw_signature = base64.b64decode(signature, validate=True) if isinstance(signature, str) else b""
    except (binascii.Error, ValueError):
        raw_signature = b""
    return SignedCertificate(
        payload=payload.encode("utf-8") if isinstance(payload, str) else b"",
        signature=raw_signature,
        key_id=key_id if isinstance(key_id, str) else "",
    )


class ManualLookup:
    """The manual mode's port: every look-up is left to a clerk (``intake.manual_lookup``)."""

    def lookup(self, guarantee_no: str, access_key: str, now: datetime) -> LookupResult:
        return LookupResult(LookupStatus.MANUAL)
