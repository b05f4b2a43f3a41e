"""The guarantor's look-up service under uvicorn with TLS from a throw-away CA, called as a desk calls it."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import httpx
import pytest
from sqlmodel import Session, select

from guarantor import registry
from guarantor.csv_input import GuaranteeRequest, read_requests
from guarantor.issue import issue_request
from guarantor.service.app import create_app
from guarantor.service.tokens import add_token, desk_for_token, revoke_tokens
from intake.lookup_client import HttpLookup
from store.tables import AuditEvent, LookupFailure, LookupToken
from store.tls import client_ssl_context
from tests.tls_certs import private_ca
from verifier import access_key as keys
from verifier import guarantee_no as numbers
from verifier.certificate_signature import SignatureStatus, check_signature, key_id
from verifier.lookup import LookupStatus
from web.server import Listen, ServedApp


@pytest.fixture
def world(engine, settings, signing_key, now, fixtures_dir, tmp_path):
    """Two issued guarantees, tokens for two desks, and the service on a free port over TLS."""
    requests = [r for r in read_requests((fixtures_dir / "guarantees.csv").read_bytes()) if isinstance(r, GuaranteeRequest)]
    issued = [issue_request(engine, r, settings=settings, signing_key=signing_key, out_dir=tmp_path / "out", now=now)
              for r in requests[:2]]
    with Session(engine) as session:
        tokens = {desk: add_token(session, desk, now) for desk in ("misato", "kitayama")}
        session.commit()
    tuned = settings.model_copy(update={"service": settings.service.model_copy(update={"rate_per_minute": 30})})
    trusted = {key_id(signing_key.public_key()): signing_key.public_key()}
    tls = private_ca(tmp_path, "lookup")
    app = create_app(engine, tuned, trusted)
    with ServedApp(app, Listen("127.0.0.1", 0, tls.cert, tls.key, what="guarantor.service")) as served:
        yield {"issued": issued, "tokens": tokens, "url": served.url, "tls": tls, "engine": engine, "trusted": trusted,
               "context": client_ssl_context(tls.ca_file)}


def client(world) -> httpx.Client:
    return httpx.Client(base_url=world["url"], verify=world["context"], timeout=10)


def desk_lookup(world, desk: str = "misato", **options) -> HttpLookup:
    return HttpLookup(world["url"], world["tokens"][desk], ssl_context=world["context"], attempts=1, **options)


def wrong_key(right: str) -> str:
    body = ("0" if keys.parse(right)[0] != "0" else "1") + keys.parse(right)[1:15]
    return body + keys.check_symbol(body)


def test_health_and_the_published_protocol(world) -> None:
    with client(world) as http:
        assert http.get("/healthz").status_code == 200
        schema = http.get("/openapi.json").json()
        page = http.get("/")
    assert page.headers["Cache-Control"] == "no-store" and "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert "保証契約番号" in page.text
    operation = schema["paths"]["/api/v1/lookups"]["post"]
    assert set(operation["responses"]) >= {"200", "400", "401", "413", "429"}
    assert "access_key" in json.dumps(operation["requestBody"])


def test_only_a_ca_the_desk_trusts_opens_the_connection(world, tmp_path) -> None:
    stranger = private_ca(tmp_path, "stranger")
    lookup = HttpLookup(world["url"], world["tokens"]["misato"], ssl_context=client_ssl_context(stranger.ca_file),
                        attempts=1)
    issued = world["issued"][0]
    assert lookup.lookup(issued.guarantee_no, keys.parse(issued.access_key), datetime.now(timezone.utc)).status \
        is LookupStatus.UNAVAILABLE


def test_found_no_match_revoked_and_refused(world, now) -> None:
    first, second = world["issued"]
    lookup = desk_lookup(world)
    found = lookup.lookup(first.guarantee_no, keys.parse(first.access_key), now)
    assert found.status is LookupStatus.FOUND
    assert check_signature(found.signed, world["trusted"]) is SignatureStatus.VALID
    assert found.signed.certificate() == first.certificate
    with Session(world["engine"]) as session:
        stored = registry.find(session, first.guarantee_no).signed_json
    assert json.loads(stored)["payload"].encode() == found.signed.payload  # exactly as signed

    assert lookup.lookup(first.guarantee_no, wrong_key(first.access_key), now).status is LookupStatus.NO_MATCH
    assert lookup.lookup(numbers.make(26, 999_999), keys.parse(first.access_key), now).status is LookupStatus.NO_MATCH

    with Session(world["engine"]) as session:
        registry.revoke(session, second.guarantee_no, "契約解除のため", now)
        session.commit()
    revoked = lookup.lookup(second.guarantee_no, keys.parse(second.access_key), now)
    assert revoked.status is LookupStatus.REVOKED and "契約解除" in revoked.reason

    for _ in range(4):
        lookup.lookup(first.guarantee_no, wrong_key(first.access_key), now)
    refused = lookup.lookup(first.guarantee_no, keys.parse(first.access_key), now)
    assert refused.status is LookupStatus.REFUSED and refused.signed is None
    with Session(world["engine"]) as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.action == "lookup.refused")).all()
    assert events and json.loads(events[-1].detail_json)["requester"] == "misato"


def test_one_desks_wrong_keys_do_not_lock_the_number_for_another(world, now) -> None:
    first, _ = world["issued"]
    misato, kitayama = desk_lookup(world, "misato"), desk_lookup(world, "kitayama")
    for _ in range(5):
        misato.lookup(first.guarantee_no, wrong_key(first.access_key), now)
    assert misato.lookup(first.guarantee_no, keys.parse(first.access_key), now).status is LookupStatus.REFUSED
    assert kitayama.lookup(first.guarantee_no, keys.parse(first.access_key), now).status is LookupStatus.FOUND


def test_a_requester_guessing_across_numbers_is_refused_everywhere(engine, settings, world, now) -> None:
    from guarantor.lookup_service import RegistryLookup

    strict = settings.model_copy(update={"lookup_max_failures_per_requester": 3})
    guesser = RegistryLookup(engine, strict, requester="web:198.51.100.7")
    first, second = world["issued"]
    for number in (numbers.make(26, serial) for serial in (901, 902, 903)):
        guesser.lookup(number, wrong_key(first.access_key), now)
    assert guesser.lookup(second.guarantee_no, keys.parse(second.access_key), now).status is LookupStatus.REFUSED
    honest = RegistryLookup(engine, strict, requester="misato")
    assert honest.lookup(second.guarantee_no, keys.parse(second.access_key), now).status is LookupStatus.FOUND
    with Session(engine) as session:
        assert {f.requester for f in session.exec(select(LookupFailure))} == {"web:198.51.100.7"}


def test_without_a_valid_token_nothing_is_said(world, now) -> None:
    first, _ = world["issued"]
    body = {"guarantee_no": first.guarantee_no, "access_key": first.access_key}
    with client(world) as http:
        for headers in ({}, {"Authorization": "Bearer kdt_not-a-token"}, {"Authorization": "Basic abc"}):
            answer = http.post("/api/v1/lookups", json=body, headers=headers)
            assert answer.status_code == 401 and answer.json() == {"error": "unauthorized"}
            assert answer.headers["WWW-Authenticate"] == "Bearer"
        with Session(world["engine"]) as session:
            revoke_tokens(session, "kitayama", now)
            session.commit()
        answer = http.post("/api/v1/lookups", json=body, headers={"Authorization": f"Bearer {world['tokens']['kitayama']}"})
        assert answer.status_code == 401


def test_malformed_and_oversized_requests_get_one_line_reasons(world) -> None:
    headers = {"Authorization": f"Bearer {world['tokens']['misato']}", "Content-Type": "application/json"}
    with client(world) as http:
        broken = http.post("/api/v1/lookups", content=b'{"guarantee_no": ', headers=headers)
        assert broken.status_code == 400 and broken.json()["error"].startswith("malformed JSON")
        missing = http.post("/api/v1/lookups", json={"guarantee_no": "26-000123-5"}, headers=headers)
        assert missing.status_code == 400 and "access_key" in missing.json()["error"]
        huge = http.post("/api/v1/lookups", content=b"{" + b" " * 10_000 + b"}", headers=headers)
        assert huge.status_code == 413 and "\n" not in huge.json()["error"]


def test_over_the_rate_a_token_gets_429_with_retry_after(world) -> None:
    headers = {"Authorization": f"Bearer {world['tokens']['kitayama']}"}
    body = {"guarantee_no": "26-000123-5", "access_key": "not a key"}
    with client(world) as http:
        statuses = [http.post("/api/v1/lookups", json=body, headers=headers) for _ in range(31)]
    assert [r.status_code for r in statuses[:30]] == [200] * 30
    assert statuses[30].status_code == 429 and int(statuses[30].headers["Retry-After"]) >= 1
    # The desk's adapter takes 429 as "try later", never as an answer.
    lookup = desk_lookup(world, "kitayama")
    assert lookup.lookup("26-000123-5", "0" * 16, datetime.now(timezone.utc)).status is LookupStatus.UNAVAILABLE


def test_tokens_are_stored_as_hashes_and_can_be_revoked(engine, now) -> None:
    with Session(engine) as session:
        token = add_token(session, "misato", now)
        session.commit()
        rows = session.exec(select(LookupToken)).all()
        assert token.startswith("kdt_") and all(token not in (r.token_hash, r.hint) for r in rows)
        assert desk_for_token(session, token) == "misato"
        revoke_tokens(session, "misato", now)
        session.commit()
        assert desk_for_token(session, token) is None
