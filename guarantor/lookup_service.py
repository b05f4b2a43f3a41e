"""The embedded look-up service (D-Sure's role) over the guarantor's registry.

Implements ``verifier.lookup.CertificateLookup``. The brute-force guard counts wrong keys per
(number, requester) and per requester, so one party's wrong keys never lock a number for everyone
else: after ``lookup_max_failures`` wrong keys for one number from one requester within
``lookup_window_minutes``, that requester's look-ups of that number are refused for
``lookup_lockout_minutes`` after the last of them; after ``lookup_max_failures_per_requester`` wrong
keys from one requester (any numbers) within the window, all its look-ups are refused as long. The
key is not even checked meanwhile, so guessing gains nothing, and each refusal is an audit event.

An unknown number and a wrong key are answered alike (NO_MATCH, same scrypt cost, counted by the
guard alike), so the service does not tell which numbers exist. A revoked certificate says so
only to someone holding its key. With ``record=False`` (``keydesk verify``) nothing is written.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from guarantor import registry
from guarantor.settings import GuarantorSettings
from store.audit import record as audit
from store.tables import LookupFailure
from verifier import access_key as keys
from verifier import guarantee_no as numbers
from verifier.certificate_signature import SignedCertificate
from verifier.lookup import LookupResult, LookupStatus

log = logging.getLogger(__name__)
_ATTEMPTS = 3  # another writer extending the audit chain at the same moment is retried


class RegistryLookup:
    """``lookup(guarantee_no, access_key, now)``; ``requester`` names who asks (a desk, or
    ``web:<address>``): the guard counts its failures apart from everyone else's."""

    def __init__(self, engine: Engine, settings: GuarantorSettings, *, requester: str = "guarantor",
                 actor: str = "lookup", record: bool = True) -> None:
        self._engine = engine
        self._settings = settings
        self._requester = requester
        self._actor = actor
        self._record = record

    def lookup(self, guarantee_no: str, access_key: str, now: datetime) -> LookupResult:
        if now.tzinfo is None:
            raise ValueError("now must carry its time zone")
        number = numbers.normalise(guarantee_no)
        try:
            key = keys.parse(access_key)
        except keys.AccessKeyError:
            key = None
        if not numbers.is_well_formed(number) or key is None:
            # Nothing to count against: a malformed number or key never reaches the registry.
            return LookupResult(LookupStatus.NO_MATCH)
        for attempt in range(1, _ATTEMPTS + 1):
            with Session(self._engine) as session:
                try:
                    result = self._lookup(session, number, key, now)
                    if self._record:
                        session.commit()
                    else:
                        session.rollback()
                    return result
                except IntegrityError:
                    session.rollback()
                    if attempt == _ATTEMPTS:
                        raise
        raise AssertionError("unreachable")

    def locked_until(self, session: Session, guarantee_no: str, now: datetime) -> datetime | None:
        """When the guard holds for this number and this requester at ``now``, the (UTC) end of the lockout."""
        return self._locked_until(session, now, self._settings.lookup_max_failures,
                                  LookupFailure.guarantee_no == guarantee_no, LookupFailure.requester == self._requester)

    def requester_locked_until(self, session: Session, now: datetime) -> datetime | None:
        """When the guard holds for every number this requester asks about, the (UTC) end of the lockout."""
        return self._locked_until(session, now, self._settings.lookup_max_failures_per_requester,
                                  LookupFailure.requester == self._requester)

    def _locked_until(self, session: Session, now: datetime, needed: int, *where) -> datetime | None:
        window = timedelta(minutes=self._settings.lookup_window_minutes)
        lockout = timedelta(minutes=self._settings.lookup_lockout_minutes)
        horizon = now - window - lockout  # older failures cannot hold a lock any more
        # The column type stores UTC and hands back aware datetimes on every database.
        times = session.exec(
            select(LookupFailure.at)
            .where(*where)
            .where(LookupFailure.at > horizon)
            .where(LookupFailure.at <= now)
            .order_by(LookupFailure.at.desc())
        ).all()
        # Newest first: the first run of `needed` failures inside one window gives the latest end.
        for newest, oldest in zip(times, times[needed - 1:]):
            if newest - oldest <= window:
                until = newest + lockout
                return until if until > now else None
        return None

    def _lookup(self, session: Session, number: str, key: str, now: datetime) -> LookupResult:
        now_utc = now.astimezone(timezone.utc)
        row = registry.find(session, number)
        desk = row.desk if row is not None else self._requester
        until = self.locked_until(session, number, now_utc)
        scope = "number"
        if until is None:
            until, scope = self.requester_locked_until(session, now_utc), "requester"
        if until is not None:
            if self._record:
                audit(session, desk, self._actor, "lookup.refused", number,
                      {"until": until.isoformat(), "requester": self._requester, "scope": scope}, at=now_utc)
            log.warning("look-up of %s by %s refused until %s (too many wrong keys)", number, self._requester,
                        until.isoformat())
            return LookupResult(LookupStatus.REFUSED, reason=until.astimezone(now.tzinfo).isoformat(timespec="seconds"))

        if row is None:
            registry.spend_one_hash()
            matches = False
        else:
            matches = registry.key_matches(row, key)
        if not matches:
            if self._record:
                session.add(LookupFailure(desk=desk, guarantee_no=number, at=now_utc, requester=self._requester))
                session.flush()
                locked = self.locked_until(session, number, now_utc)
                if locked is not None:
                    audit(session, desk, self._actor, "lookup.locked", number,
                          {"until": locked.isoformat(), "failures": self._settings.lookup_max_failures,
                           "requester": self._requester}, at=now_utc)
            return LookupResult(LookupStatus.NO_MATCH)

        signed = SignedCertificate.from_json(row.signed_json)
        if row.status == registry.REVOKED:
            return LookupResult(LookupStatus.REVOKED, signed=signed, reason=row.revoked_reason or "")
        return LookupResult(LookupStatus.FOUND, signed=signed)
