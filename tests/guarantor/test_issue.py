"""Issuing from CSV: registry rows, signed certificates, PDFs, notices, one transaction per row."""

from __future__ import annotations

import email
import io
import json
import stat
from email import policy

from pypdf import PdfReader
from sqlmodel import Session, select

from guarantor import registry
from guarantor.csv_input import RESERVATION_REASON, RowError
from guarantor.issue import IssuedGuarantee, issue_file
from store.audit import verify_chain
from store.tables import AuditEvent, CertificateRecord, Counter, OutboxMessage
from formats import guarantee_no as numbers
from verifier.certificate_signature import SignatureStatus, SignedCertificate, check_signature, key_id


def _issue(engine, settings, signing_key, now, data, out_dir):
    return issue_file(engine, data, settings=settings, signing_key=signing_key, out_dir=out_dir, now=now)


def _pdf_text(path) -> str:
    return "".join(page.extract_text() for page in PdfReader(io.BytesIO(path.read_bytes())).pages)


def test_issuing_the_fixture(engine, settings, signing_key, now, fixtures_dir, tmp_path):
    out = tmp_path / "out"
    results = _issue(engine, settings, signing_key, now, (fixtures_dir / "guarantees.csv").read_bytes(), out)
    issued = [r for r in results if isinstance(r, IssuedGuarantee)]
    assert [r.line for r in issued] == [2, 3, 4, 5, 7]
    assert [r for r in results if isinstance(r, RowError)] == [RowError(6, RESERVATION_REASON)]
    assert [r.guarantee_no for r in issued] == [numbers.make(2026, serial) for serial in range(1, 6)]
    trusted = {key_id(signing_key.public_key()): signing_key.public_key()}

    with Session(engine) as session:
        for result in issued:
            row = registry.find(session, result.guarantee_no)
            assert row.desk == result.certificate.desk
            signed = SignedCertificate.from_json(row.signed_json)
            assert check_signature(signed, trusted) is SignatureStatus.VALID
            assert signed.certificate() == result.certificate
            assert result.certificate.issued_on.isoformat() == "2026-04-01"
            canonical = result.access_key.replace("-", "")
            assert registry.key_matches(row, canonical)
            assert canonical.encode() not in row.access_key_hash
        # The key is nowhere in the database, in any spelling.
        for model in (CertificateRecord, OutboxMessage, AuditEvent):
            for stored in session.exec(select(model)):
                dump = repr(stored.model_dump())
                for result in issued:
                    assert result.access_key not in dump and result.access_key.replace("-", "") not in dump
        assert verify_chain(session).intact
        assert [e.action for e in session.exec(select(AuditEvent))] == ["guarantee.issued"] * 5

    for result in issued:
        key_notice = _pdf_text(result.files["key_notice"])
        assert result.guarantee_no in key_notice and result.access_key in key_notice
        view = _pdf_text(result.files["certificate_view"])
        assert result.guarantee_no in view and result.access_key not in view
        assert result.guarantee_no in _pdf_text(result.files["fee_receipt"])
        for path in result.files.values():
            if path is not None:
                assert path.parent == out and path.name.startswith(result.guarantee_no + "_")
                assert stat.S_IMODE(path.stat().st_mode) == 0o600
    bulk = [r for r in issued if r.files["fee_statement"] is not None]
    assert [r.line for r in bulk] == [3]


def test_notices_go_to_the_outbox_without_the_key(engine, settings, signing_key, now, fixtures_dir, tmp_path):
    results = _issue(engine, settings, signing_key, now, (fixtures_dir / "guarantees.csv").read_bytes(), tmp_path)
    issued = {r.guarantee_no: r for r in results if isinstance(r, IssuedGuarantee)}
    with Session(engine) as session:
        rows = session.exec(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        records = {r.id: r for r in session.exec(select(CertificateRecord))}
    assert len(rows) == len(issued)
    for row in rows:
        assert row.kind == "notice" and row.idempotency_key.startswith("notice:")
        record = records[int(row.idempotency_key.removeprefix("notice:"))]
        result = issued[record.guarantee_no]
        assert json.loads(row.recipients_json) == [record.contractor_email]
        assert row.desk == record.desk
        message = email.message_from_bytes(row.raw, policy=policy.default)
        assert "電子証書・認証キー登録のお知らせ" in message["Subject"]
        assert message["Message-ID"] == row.message_id
        assert message["Auto-Submitted"] == "auto-generated"
        body = message.get_body(("plain",)).get_content()
        assert record.guarantee_no in body and settings.portal_url in body
        assert result.access_key not in body and result.access_key.replace("-", "") not in row.raw.decode(
            "ascii", "replace"
        )
        names = sorted(part.get_filename() for part in message.iter_attachments())
        expected = [f"保証料領収書_{record.guarantee_no}.pdf"]
        if result.files["fee_statement"] is not None:
            expected.append(f"保証料計算書_{record.guarantee_no}.pdf")
        assert names == sorted(expected)
        for part in message.iter_attachments():
            assert part.get_content()[:5] == b"%PDF-"


def test_fee_documents_are_not_attached_when_switched_off(engine, settings, signing_key, now, fixtures_dir, tmp_path):
    settings = settings.model_copy(update={"attach_fee_documents": False})
    _issue(engine, settings, signing_key, now, (fixtures_dir / "guarantees.csv").read_bytes(), tmp_path)
    with Session(engine) as session:
        rows = list(session.exec(select(OutboxMessage)))
    assert len(rows) >= 2  # the fixture issues several notices: the loop below has mail to look at
    for row in rows:
        message = email.message_from_bytes(row.raw, policy=policy.default)
        assert list(message.iter_attachments()) == []


def test_numbers_continue_across_runs(engine, settings, signing_key, now, fixtures_dir, tmp_path):
    data = (fixtures_dir / "guarantees_bom.csv").read_bytes()
    first = _issue(engine, settings, signing_key, now, data, tmp_path / "a")
    second = _issue(engine, settings, signing_key, now, data, tmp_path / "b")
    numbers_issued = [r.guarantee_no for r in first + second if isinstance(r, IssuedGuarantee)]
    assert numbers_issued == [numbers.make(2026, serial) for serial in range(1, 5)]
    with Session(engine) as session:
        assert session.get(Counter, "guarantee:26").value == 4


def test_a_row_whose_documents_cannot_be_written_leaves_nothing_behind(
    engine, settings, signing_key, now, fixtures_dir, tmp_path
):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the output folder should be")
    results = _issue(engine, settings, signing_key, now, (fixtures_dir / "guarantees.csv").read_bytes(), blocked)
    assert all(isinstance(r, RowError) for r in results)
    assert "発行を取り消しました" in results[0].reason
    with Session(engine) as session:
        for model in (CertificateRecord, OutboxMessage, AuditEvent, Counter):
            assert session.exec(select(model)).all() == []
