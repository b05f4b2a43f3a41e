"""The embedded look-up service and its brute-force guard (time passed in, never slept)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from sqlmodel import Session, select

from guarantor import registry
from guarantor.csv_input import GuaranteeRequest, read_requests
from guarantor.errors import GuarantorError
from guarantor.issue import issue_request
from guarantor.lookup_service import RegistryLookup
from store.audit import verify_chain
from store.tables import AuditEvent, LookupFailure
from formats import access_key as keys
from formats import guarantee_no as numbers
from verifier.lookup import CertificateLookup, LookupStatus


@pytest.fixture
def issued(engine, settings, signing_key, now, fixtures_dir, tmp_path):
    request = next(
        r for r in read_requests((fixtures_dir / "guarantees.csv").read_bytes()) if isinstance(r, GuaranteeRequest)
    )
    return issue_request(engine, request, settings=settings, signing_key=signing_key, out_dir=tmp_path / "out", now=now)


@pytest.fixture
def service(engine, settings) -> RegistryLookup:
    return RegistryLookup(engine, settings, requester="misato")


def _wrong_key(right: str) -> str:
    body = ("0" if right[0] != "0" else "1") + keys.parse(right)[1:15]
    return body + keys.check_symbol(body)


def _events(engine, action: str) -> list[AuditEvent]:
    with Session(engine) as session:
        return session.exec(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)).all()


def test_it_is_the_verifiers_port(service):
    port: CertificateLookup = service
    assert callable(port.lookup)


def test_the_right_key_finds_the_signed_certificate(service, issued, now):
    result = service.lookup(issued.guarantee_no, keys.parse(issued.access_key), now)
    assert result.status is LookupStatus.FOUND
    assert result.signed.certificate() == issued.certificate


def test_a_wrong_key_and_an_unknown_number_look_the_same(service, issued, now, engine):
    wrong = service.lookup(issued.guarantee_no, _wrong_key(issued.access_key), now)
    unknown = service.lookup(numbers.make(26, 999_999), keys.parse(issued.access_key), now)
    assert wrong.status is unknown.status is LookupStatus.NO_MATCH
    assert wrong.signed is None and unknown.signed is None and wrong.reason == unknown.reason == ""
    with Session(engine) as session:
        failures = session.exec(select(LookupFailure).order_by(LookupFailure.id)).all()
    assert [(f.guarantee_no, f.desk) for f in failures] == [
        (issued.guarantee_no, "misato"),
        (numbers.make(26, 999_999), "misato"),
    ]


def test_five_wrong_keys_lock_the_number_for_fifteen_minutes(service, issued, now, engine):
    right = keys.parse(issued.access_key)
    wrong = _wrong_key(issued.access_key)
    for minute in range(5):
        assert (
            service.lookup(issued.guarantee_no, wrong, now + timedelta(minutes=minute)).status is LookupStatus.NO_MATCH
        )
    fifth = now + timedelta(minutes=4)
    assert len(_events(engine, "lookup.locked")) == 1

    # Even the right key is refused meanwhile, and says until when.
    refused = service.lookup(issued.guarantee_no, right, fifth + timedelta(minutes=1))
    assert refused.status is LookupStatus.REFUSED and refused.signed is None
    assert datetime.fromisoformat(refused.reason) == fifth + timedelta(minutes=15)
    last_moment = service.lookup(issued.guarantee_no, right, fifth + timedelta(minutes=14, seconds=59))
    assert last_moment.status is LookupStatus.REFUSED

    refusals = _events(engine, "lookup.refused")
    assert len(refusals) == 2
    assert all(e.subject == issued.guarantee_no and e.desk == "misato" for e in refusals)
    assert datetime.fromisoformat(json.loads(refusals[0].detail_json)["until"]) == fifth + timedelta(minutes=15)
    with Session(engine) as session:
        assert len(session.exec(select(LookupFailure)).all()) == 5  # refusals are not counted as failures

    after = service.lookup(issued.guarantee_no, right, fifth + timedelta(minutes=15))
    assert after.status is LookupStatus.FOUND
    with Session(engine) as session:
        assert verify_chain(session).intact


def test_failures_spread_wider_than_the_window_do_not_lock(service, issued, now):
    wrong = _wrong_key(issued.access_key)
    times = [now + timedelta(minutes=m) for m in (0, 4, 8, 12, 16)]  # any five span 16 minutes
    for moment in times:
        assert service.lookup(issued.guarantee_no, wrong, moment).status is LookupStatus.NO_MATCH
    result = service.lookup(issued.guarantee_no, keys.parse(issued.access_key), times[-1] + timedelta(seconds=1))
    assert result.status is LookupStatus.FOUND


def test_the_lock_holds_per_number(service, issued, engine, settings, signing_key, now, fixtures_dir, tmp_path):
    requests = [
        r for r in read_requests((fixtures_dir / "guarantees.csv").read_bytes()) if isinstance(r, GuaranteeRequest)
    ]
    other = issue_request(engine, requests[1], settings=settings, signing_key=signing_key, out_dir=tmp_path, now=now)
    for _ in range(5):
        service.lookup(issued.guarantee_no, _wrong_key(issued.access_key), now)
    assert service.lookup(issued.guarantee_no, keys.parse(issued.access_key), now).status is LookupStatus.REFUSED
    assert service.lookup(other.guarantee_no, keys.parse(other.access_key), now).status is LookupStatus.FOUND


def test_the_guard_follows_the_settings(engine, settings, issued, now):
    strict = RegistryLookup(
        engine, settings.model_copy(update={"lookup_max_failures": 2, "lookup_lockout_minutes": 60})
    )
    wrong = _wrong_key(issued.access_key)
    strict.lookup(issued.guarantee_no, wrong, now)
    strict.lookup(issued.guarantee_no, wrong, now)
    refused = strict.lookup(issued.guarantee_no, keys.parse(issued.access_key), now + timedelta(minutes=59))
    assert refused.status is LookupStatus.REFUSED


def test_revoked_certificates_say_so_only_with_the_right_key(service, issued, engine, now):
    with Session(engine) as session:
        registry.revoke(session, issued.guarantee_no, "契約解除のため", now)
        session.commit()
    result = service.lookup(issued.guarantee_no, keys.parse(issued.access_key), now)
    assert result.status is LookupStatus.REVOKED and result.reason == "契約解除のため"
    assert result.signed.certificate() == issued.certificate
    wrong = service.lookup(issued.guarantee_no, _wrong_key(issued.access_key), now)
    assert wrong.status is LookupStatus.NO_MATCH
    assert [e.subject for e in _events(engine, "guarantee.revoked")] == [issued.guarantee_no]
    with Session(engine) as session, pytest.raises(GuarantorError, match="すでに失効"):
        registry.revoke(session, issued.guarantee_no, "二度目", now)
    with Session(engine) as session, pytest.raises(GuarantorError, match="登録されていません"):
        registry.revoke(session, numbers.make(26, 777), "理由", now)


def test_malformed_input_is_no_match_and_not_counted(service, issued, engine, now):
    assert service.lookup("26-000001-0", keys.parse(issued.access_key), now).status is LookupStatus.NO_MATCH
    assert service.lookup(issued.guarantee_no, "not a key", now).status is LookupStatus.NO_MATCH
    with Session(engine) as session:
        assert session.exec(select(LookupFailure)).all() == []


def test_now_must_be_aware(service, issued):
    with pytest.raises(ValueError):
        service.lookup(issued.guarantee_no, keys.parse(issued.access_key), datetime(2026, 4, 1, 10, 0))
