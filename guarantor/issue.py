"""Issuing guarantees: CSV rows → signed certificates, registry rows, PDFs and notices.

Each row is issued in one transaction: number, registry row (key hash only), audit event and the
notice in the outbox commit together. The PDFs are written before the commit and removed again
if it fails, so a committed guarantee always has its key notice on disk and the 認証キー, which
is stored nowhere else, is never lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine
from sqlmodel import Session

from guarantor import pdf, registry
from guarantor.csv_input import GuaranteeRequest, RowError, read_requests
from guarantor.keys import sign_certificate
from guarantor.notices import enqueue_notice
from guarantor.settings import GuarantorSettings
from rules.domain import Certificate
from store.audit import record as audit
from store.files import write_private
from store.retry import retry_on_conflict
from formats import access_key as keys

log = logging.getLogger(__name__)

DOCUMENT_KINDS = ("key_notice", "certificate_view", "fee_receipt", "fee_statement")


@dataclass(frozen=True)
class IssuedGuarantee:
    line: int
    certificate: Certificate
    access_key: str  # formatted (7K3M-Q9TX-2HVB-R4NC); shown once, stored nowhere
    files: dict[str, Path | None]  # DOCUMENT_KINDS → path (fee_statement None unless bulk payment)

    @property
    def guarantee_no(self) -> str:
        return self.certificate.guarantee_no


def document_path(out_dir: Path, guarantee_no: str, kind: str) -> Path:
    """Named by the validated guarantee number only, never by anything else from the CSV."""
    return out_dir / f"{guarantee_no}_{kind}.pdf"


def certificate_url(settings: GuarantorSettings, guarantee_no: str) -> str:
    return f"{settings.portal_url.rstrip('/')}/certificates/{guarantee_no}"


def issue_file(
    engine: Engine,
    data: bytes,
    *,
    settings: GuarantorSettings,
    signing_key: Ed25519PrivateKey,
    out_dir: Path,
    now: datetime,
) -> list[IssuedGuarantee | RowError]:
    """Issue every good row of a CSV file; bad rows come back as RowError, in file order."""
    return list(iter_issue(engine, data, settings=settings, signing_key=signing_key, out_dir=out_dir, now=now))


def iter_issue(
    engine: Engine,
    data: bytes,
    *,
    settings: GuarantorSettings,
    signing_key: Ed25519PrivateKey,
    out_dir: Path,
    now: datetime,
) -> Iterator[IssuedGuarantee | RowError]:
    """Like ``issue_file``, one row at a time, so a caller can report each committed row at once
    (should a later row fail unexpectedly, the earlier keys have been shown already).

    The whole file is read and validated before the first guarantee is issued.
    """
    for item in read_requests(data):
        if isinstance(item, RowError):
            yield item
            continue
        try:
            yield issue_request(engine, item, settings=settings, signing_key=signing_key, out_dir=out_dir, now=now)
        except OSError as exc:
            log.error("line %d: could not write the documents: %s", item.line, exc)
            yield RowError(item.line, f"書類を保存できなかったため発行を取り消しました: {exc.strerror or exc}")


def issue_request(
    engine: Engine,
    request: GuaranteeRequest,
    *,
    settings: GuarantorSettings,
    signing_key: Ed25519PrivateKey,
    out_dir: Path,
    now: datetime,
) -> IssuedGuarantee:
    """Issue one guarantee. ``now`` is aware; its local date becomes the date of issue."""
    if now.tzinfo is None:
        raise ValueError("now must carry its time zone")
    # Another issuing process may take the same number first: the whole issue runs again.
    return retry_on_conflict(
        lambda: _issue_once(engine, request, settings, signing_key, out_dir, now),
        what=f"line {request.line}: issuing a guarantee number",
    )


def _issue_once(
    engine: Engine,
    request: GuaranteeRequest,
    settings: GuarantorSettings,
    signing_key: Ed25519PrivateKey,
    out_dir: Path,
    now: datetime,
) -> IssuedGuarantee:
    access_key = keys.generate()
    written: list[Path] = []
    with Session(engine) as session:
        try:
            certificate = _certificate(request, registry.next_guarantee_no(session, now.year), settings, now)
            signed = sign_certificate(certificate, signing_key)
            record = registry.register(
                session,
                certificate=certificate,
                signed=signed,
                contractor_email=request.contractor_email,
                access_key=keys.parse(access_key),
                issued_at=now.astimezone(timezone.utc),
            )
            documents = _render(certificate, access_key, settings, now, request.bulk_fee_payment)
            enqueue_notice(
                session,
                record=record,
                certificate=certificate,
                settings=settings,
                now=now,
                fee_documents={kind: documents[kind] for kind in ("fee_receipt", "fee_statement")},
            )
            audit(
                session,
                certificate.desk,
                "guarantor",
                "guarantee.issued",
                certificate.guarantee_no,
                {
                    "guarantee_type": certificate.guarantee_type.value,
                    "contract_no": certificate.contract_no,
                    "key_id": signed.key_id,
                    "access_key": keys.mask(access_key),
                    "csv_line": request.line,
                },
                at=now.astimezone(timezone.utc),
            )
            files = _write_documents(out_dir, certificate.guarantee_no, documents, written)
            session.commit()
        except BaseException:
            session.rollback()
            for path in written:
                path.unlink(missing_ok=True)
            raise
    log.info("issued %s (%s) for desk %s", certificate.guarantee_no, certificate.guarantee_type.value, certificate.desk)
    return IssuedGuarantee(request.line, certificate, access_key, files)


def _certificate(
    request: GuaranteeRequest, guarantee_no: str, settings: GuarantorSettings, now: datetime
) -> Certificate:
    return Certificate(
        guarantee_no=guarantee_no,
        guarantee_type=request.guarantee_type,
        guarantor=settings.name,
        contractor_name=request.contractor_name,
        obligee=request.obligee,
        desk=request.desk,
        contract_no=request.contract_no,
        work_name=request.work_name,
        work_category=request.work_category,
        contract_amount=request.contract_amount,
        guarantee_amount=request.guarantee_amount,
        fee=request.fee,
        contract_date=request.contract_date,
        completion_date=request.completion_date,
        period_start=request.period_start,
        period_end=request.period_end,
        issued_on=now.date(),
    )


def _render(
    certificate: Certificate, access_key: str, settings: GuarantorSettings, now: datetime, bulk_fee_payment: bool
) -> dict[str, bytes | None]:
    return {
        "key_notice": pdf.render_key_notice(certificate, access_key, now, lookup_url=settings.lookup_url),
        "certificate_view": pdf.render_certificate_view(
            certificate, now, certificate_url(settings, certificate.guarantee_no)
        ),
        "fee_receipt": pdf.render_fee_receipt(certificate, now),
        "fee_statement": pdf.render_fee_statement(certificate, now) if bulk_fee_payment else None,
    }


def _write_documents(
    out_dir: Path, guarantee_no: str, documents: dict[str, bytes | None], written: list[Path]
) -> dict[str, Path | None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path | None] = {}
    for kind in DOCUMENT_KINDS:
        data = documents[kind]
        if data is None:
            files[kind] = None
            continue
        target = document_path(out_dir, guarantee_no, kind)
        write_private(target, data, replace=True)
        written.append(target)
        files[kind] = target
    return files
