"""One mail in, one decision out: what was sent, and whether the town can accept it.

Pure orchestration. The shell reads each PDF with the bounded reader (``verifier.pdf_text``) and
walks the mail; this module gets those text results, a ``MailContext`` and the ports (look-up,
contract register, accepted index, trusted keys), and ``now``. Per document: classify; for a key
notice extract its fields, check the key's check symbol, look the guarantee up, check the
certificate's signature, compare notice and certificate, then apply the desk's rules
(``rules.evaluate``). The mail's verdict is the strongest of its guarantees' and its own findings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Mapping, Protocol, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from rules.domain import Certificate, Contract, GuaranteeType
from rules.evaluate import company_key, obligee_key, plain_key
from rules.findings import Finding, Severity, Verdict, strongest
from rules.schema import DeskRules
from rules.signatures import DocumentKind, DocumentSignatures
from verifier import access_key as keys
from verifier import guarantee_no as numbers
from verifier.certificate_signature import SignatureStatus, SignedCertificate, check_signature
from verifier.classify import classify
from verifier.extract import KeyNoticeFields, extract_key_notices
from verifier.lookup import CertificateLookup, LookupStatus
from verifier.judge import department_for, judge_certificate
from verifier.pdf_text import TextResult
from verifier.register import AcceptedIndex, ContractRegister, find_contract

BODY = "メール本文"  # where a typed key came from, in place of a document name

# The finding a document of each kind gets on its own (key notices are judged per guarantee).
_DOCUMENT_CODES = {
    DocumentKind.CERTIFICATE_VIEW: "doc.certificate_view",
    DocumentKind.FEE_RECEIPT: "doc.fee_receipt",
    DocumentKind.FEE_STATEMENT: "doc.fee_statement",
    DocumentKind.ADVANCE_CLAIM: "doc.advance_claim",
    DocumentKind.INSURER_BOND: "doc.insurer_bond",
    DocumentKind.NO_TEXT: "doc.no_text",
    DocumentKind.ENCRYPTED: "doc.encrypted",
    DocumentKind.BROKEN: "doc.broken",
    DocumentKind.OTHER: "doc.other",
}
_LOOKUP_CODES = {
    LookupStatus.NO_MATCH: "lookup.no_match",
    LookupStatus.REVOKED: "lookup.revoked",
    LookupStatus.REFUSED: "lookup.refused",
    LookupStatus.UNAVAILABLE: "lookup.unavailable",
    LookupStatus.MANUAL: "lookup.manual",
}
_ADVANCES = (GuaranteeType.ADVANCE, GuaranteeType.INTERMEDIATE_ADVANCE)


# ------------------------------------------------------------------------------------------
# Input
# ------------------------------------------------------------------------------------------


class SenderAuthentication(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    UNKNOWN = "unknown"  # no trusted Authentication-Results


class TypedKey(Protocol):
    """A key typed into the body (``intake.mail_context.TypedKey`` fits)."""

    guarantee_no: str | None
    access_key: str | None  # canonical 16 symbols, check symbol not necessarily right


@dataclass(frozen=True)
class MailContext:
    desk: str
    automatic: bool = False
    authentication: SenderAuthentication = SenderAuthentication.UNKNOWN
    typed_keys: tuple[TypedKey, ...] = ()
    # Found while walking the mail (doc.encrypted_archive, mail.too_large, …), as findings.
    problems: tuple[Finding, ...] = ()
    automatic_reason: str = ""


@dataclass(frozen=True)
class InputDocument:
    name: str  # display name: safe to show
    text: TextResult | None  # None: not a PDF (by content)


@dataclass(frozen=True)
class Ports:
    lookup: CertificateLookup
    register: ContractRegister
    accepted: AcceptedIndex
    trusted_keys: Mapping[str, Ed25519PublicKey]


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuaranteeVerdict:
    guarantee_no: str | None  # None when the notice did not show one that could be read
    access_key_masked: str | None
    access_key: str | None = field(repr=False)  # canonical; for the caller to encrypt, never to show
    certificate: Certificate | None  # only when its signature was verified
    signed: SignedCertificate | None = field(repr=False)
    guarantee_type: GuaranteeType | None
    contract_no: str | None
    department: str | None
    verdict: Verdict
    findings: tuple[Finding, ...]
    document: str  # the key notice's name, or BODY


@dataclass(frozen=True)
class DocumentResult:
    name: str
    kind: DocumentKind
    findings: tuple[Finding, ...] = ()
    guarantee_nos: tuple[str | None, ...] = ()  # one per key notice in the document
    access_keys_masked: tuple[str | None, ...] = ()
    evidence: tuple[str, ...] = ()  # why this kind, for staff


@dataclass(frozen=True)
class MailVerdict:
    verdict: Verdict
    findings: tuple[Finding, ...]  # about the mail and its documents (not one guarantee)
    guarantees: tuple[GuaranteeVerdict, ...]
    documents: tuple[DocumentResult, ...]

    @property
    def all_findings(self) -> tuple[Finding, ...]:
        return self.findings + tuple(f for g in self.guarantees for f in g.findings)


# ------------------------------------------------------------------------------------------
# The decision
# ------------------------------------------------------------------------------------------


@dataclass
class _Candidate:
    """One (number, key) to judge, from a notice or typed into the body."""

    document: str
    guarantee_no: str | None
    access_key: str | None
    key_valid: bool
    notice: KeyNoticeFields | None = None
    findings: list[Finding] = field(default_factory=list)
    signed: SignedCertificate | None = None
    certificate: Certificate | None = None
    contract: Contract | None = None  # the register entry, by number or by work name and contractor

    @property
    def contract_no(self) -> str:
        """The register's number when the certificate was matched, else the certificate's own."""
        if self.contract is not None:
            return self.contract.contract_no
        return self.certificate.contract_no if self.certificate else ""


def verify_mail(
    documents: Sequence[InputDocument],
    context: MailContext,
    rules: DeskRules,
    signatures: DocumentSignatures,
    ports: Ports,
    now: datetime,
) -> MailVerdict:
    read = [_read(document, signatures) for document in documents]
    if context.automatic:
        # Recorded, never answered: nothing else about it matters.
        finding = Finding("mail.automatic", detail=context.automatic_reason)
        results = tuple(DocumentResult(d.name, kind, evidence=evidence) for d, kind, evidence, _ in read)
        return MailVerdict(Verdict.IGNORED, (finding,), (), results)

    candidates: list[_Candidate] = []
    for document, kind, _evidence, notices in read:
        if kind is DocumentKind.KEY_NOTICE:
            candidates += [_from_notice(document.name, notice) for notice in notices] or [
                _Candidate(document.name, None, None, False)
            ]
    has_notice = bool(candidates)

    mail_findings: list[Finding] = list(context.problems)
    results = []
    for document, kind, evidence, notices in read:
        findings = _document_findings(document.name, kind, has_notice)
        mail_findings += findings
        results.append(DocumentResult(
            document.name, kind, tuple(findings),
            tuple(n.guarantee_no for n in notices), tuple(_masked(n.access_key, signatures) for n in notices), evidence,
        ))

    mail_findings += _typed_keys(context, rules, candidates, signatures)
    explained = any(f.severity is not Severity.INFO for f in mail_findings)
    if not candidates and not explained:
        mail_findings.append(Finding("key.missing", detail="no key notice among the documents"))
    if rules.sender.require_authentication and context.authentication is not SenderAuthentication.PASSED:
        mail_findings.append(Finding(
            "sender.not_authenticated", detail=f"SPF/DKIM/DMARC: {context.authentication.value}"
        ))

    guarantees = _judge(candidates, context.desk, rules, ports, now, signatures)
    verdict = strongest([f.verdict for f in mail_findings] + [g.verdict for g in guarantees])
    return MailVerdict(verdict, tuple(mail_findings), tuple(guarantees), tuple(results))


def _read(document: InputDocument, signatures: DocumentSignatures):
    if document.text is None:
        return document, DocumentKind.OTHER, ("not a PDF",), []
    classification = classify(document.text, signatures)
    notices = []
    if classification.kind is DocumentKind.KEY_NOTICE:
        notices = extract_key_notices(document.text, signatures)
    return document, classification.kind, classification.evidence, notices


def _document_findings(name: str, kind: DocumentKind, has_notice: bool) -> list[Finding]:
    code = _DOCUMENT_CODES.get(kind)
    if code is None:
        return []
    if kind is DocumentKind.CERTIFICATE_VIEW and has_notice:
        # The key notice is there: the STEP3 screen beside it is harmless, not a reason to return.
        code = "doc.certificate_view_extra"
    return [Finding(code, detail=f"{name}: {kind.value}", params={"document": name}, document=name)]


def _masked(key: str | None, signatures: DocumentSignatures | None = None) -> str | None:
    return keys.mask(key, signatures.access_key if signatures else None) if key else None


def _from_notice(name: str, notice: KeyNoticeFields) -> _Candidate:
    number = numbers.normalise(notice.guarantee_no) if notice.guarantee_no else None
    return _Candidate(name, number, notice.access_key, notice.access_key_valid, notice)


def _typed_keys(context: MailContext, rules: DeskRules, candidates: list[_Candidate],
                signatures: DocumentSignatures) -> list[Finding]:
    """Keys typed into the body: verified like a notice, or answered with a request for the PDF."""
    in_notices = {c.guarantee_no for c in candidates if c.guarantee_no}
    findings: list[Finding] = []
    for typed in context.typed_keys:
        if not typed.access_key:
            continue  # a number alone is how people name the guarantee in the body: fine
        number = numbers.normalise(typed.guarantee_no) if typed.guarantee_no else None
        if number in in_notices:
            continue  # the PDF is there; the typed copy adds nothing
        if rules.sender.key_in_body == "accept" and number:
            key, valid = _read_key(typed.access_key, signatures)
            candidates.append(_Candidate(BODY, number, key, valid))
            in_notices.add(number)
        elif not any(f.code == "key.in_body" for f in findings):
            findings.append(Finding("key.in_body", detail=f"typed key {keys.mask(typed.access_key)} for {number or '?'}"))
    return findings


def _read_key(text: str, signatures: DocumentSignatures) -> tuple[str | None, bool]:
    try:
        return keys.read(text, signatures.access_key)
    except keys.AccessKeyError:
        return None, False


# ------------------------------------------------------------------------------------------
# Per guarantee
# ------------------------------------------------------------------------------------------


def _judge(candidates: list[_Candidate], desk: str, rules: DeskRules, ports: Ports, now: datetime,
           signatures: DocumentSignatures) -> list[GuaranteeVerdict]:
    judged: dict[str, _Candidate] = {}
    order: list[_Candidate] = []
    for candidate in candidates:
        if candidate.guarantee_no and candidate.guarantee_no in judged:
            continue  # the same notice twice (attached again, or inside a ZIP as well)
        if candidate.guarantee_no:
            judged[candidate.guarantee_no] = candidate
        order.append(candidate)
        if not _printed_type_refused(candidate, rules):
            _check(candidate, ports, now)
            _already_accepted_without_lookup(candidate, desk, ports)

    for candidate in order:
        if candidate.certificate is not None:
            candidate.contract = find_contract(ports.register, desk, candidate.certificate)

    # Advances in this mail count towards the 前払金 + 中間前払金 total of the same contract.
    in_mail: dict[str, dict[GuaranteeType, int]] = {}
    for candidate in order:
        cert = candidate.certificate
        if cert is not None and cert.guarantee_type in _ADVANCES:
            in_mail.setdefault(candidate.contract_no, {})[cert.guarantee_type] = cert.guarantee_amount

    verdicts = []
    for candidate in order:
        cert = candidate.certificate
        contract = candidate.contract
        if cert is not None:
            findings, contract = judge_certificate(cert, desk, rules, ports.register, ports.accepted,
                                                   in_mail.get(candidate.contract_no, {}))
            candidate.findings += findings
        verdicts.append(_verdict(candidate, rules, contract, signatures))
    return verdicts


def _already_accepted_without_lookup(candidate: _Candidate, desk: str, ports: Ports) -> None:
    """Manual mode: a number the town already accepted needs no clerk; the sender hears it at once,
    as a looked-up duplicate would be answered."""
    manual = [f for f in candidate.findings if f.code == "lookup.manual"]
    previous = ports.accepted.receipt_for(desk, candidate.guarantee_no) if manual and candidate.guarantee_no else None
    if previous is None:
        return
    candidate.findings.remove(manual[0])
    candidate.findings.append(Finding(
        "submission.duplicate", detail=f"already accepted as {previous} (manual mode: not looked up again)",
        params={"guarantee_no": candidate.guarantee_no or "", "previous_receipt": previous},
        guarantee_no=candidate.guarantee_no, document=candidate.document,
    ))


def _printed_type_refused(candidate: _Candidate, rules: DeskRules) -> bool:
    """A notice that itself names a type the town does not take (契約保証予約) is refused as such,
    without a look-up: the look-up could only answer "no match", and the reply would send the
    contractor after a key notice that cannot exist."""
    printed = candidate.notice.guarantee_type if candidate.notice else None
    if printed is None or (printed is not GuaranteeType.CONTRACT_RESERVATION
                           and printed in rules.eligible_guarantee_types):
        return False
    candidate.findings.append(Finding(
        "cert.type_not_eligible", detail=f"the key notice names the guarantee type {printed.value}",
        params={"guarantee_no": candidate.guarantee_no or "", "guarantee_type": printed.value},
        guarantee_no=candidate.guarantee_no, document=candidate.document,
    ))
    return True


def _check(candidate: _Candidate, ports: Ports, now: datetime) -> None:
    """Key check symbol, look-up, signature and notice-vs-certificate agreement."""
    no = candidate.guarantee_no

    def add(code: str, detail: str, **params: str) -> None:
        candidate.findings.append(Finding(code, detail=detail, params={"guarantee_no": no or "", **params},
                                          guarantee_no=no, document=candidate.document))

    if candidate.access_key and not candidate.key_valid:
        add("key.checksum", f"{keys.mask(candidate.access_key)}: the check symbol does not match")
        return
    if not no or not candidate.access_key:
        add("key.unreadable", _unreadable_detail(candidate))
        return
    result = ports.lookup.lookup(no, candidate.access_key, now)
    if result.status is not LookupStatus.FOUND or result.signed is None:
        code = _LOOKUP_CODES.get(result.status, "lookup.unavailable")
        add(code, f"look-up: {result.status.value}" + (f" ({result.reason})" if result.reason else ""))
        return
    candidate.signed = result.signed
    status = check_signature(result.signed, ports.trusted_keys)
    if status is not SignatureStatus.VALID:
        add("cert.signature", f"signature {status.value} (key id {result.signed.key_id})")
        return
    try:
        certificate = result.signed.certificate()
    except ValueError as error:
        add("cert.signature", f"the signed certificate cannot be read: {error}")
        return
    if numbers.normalise(certificate.guarantee_no) != no:
        add("cert.notice_mismatch", f"the look-up of {no} returned certificate {certificate.guarantee_no}")
        return
    candidate.certificate = certificate
    if candidate.notice is not None:
        differences = notice_differences(candidate.notice, certificate)
        if differences:
            add("cert.notice_mismatch", "; ".join(differences))


def _unreadable_detail(candidate: _Candidate) -> str:
    if candidate.notice is None:
        return "no 保証契約番号 or 認証キー could be read"
    problems = [p for p in candidate.notice.problems if p.field in ("guarantee_no", "access_key")]
    return "; ".join(f"{p.field} {p.kind.value}: {p.detail}" for p in problems) or "no 保証契約番号 or 認証キー"


def notice_differences(notice: KeyNoticeFields, certificate: Certificate) -> list[str]:
    """What the key notice says differently from the certificate (fields it does not show are skipped)."""
    found: list[str] = []

    def differ(label: str, shown, actual, same) -> None:
        if shown is not None and not same(shown, actual):
            found.append(f"{label}: notice {shown} / certificate {actual}")

    def equal(a, b) -> bool:
        return a == b

    differ("guarantee_no", notice.guarantee_no, certificate.guarantee_no,
           lambda a, b: numbers.normalise(a) == numbers.normalise(b))
    differ("guarantee_type", notice.guarantee_type, certificate.guarantee_type, equal)
    differ("obligee", notice.obligee, certificate.obligee, lambda a, b: obligee_key(a) == obligee_key(b))
    differ("contractor", notice.contractor, certificate.contractor_name, lambda a, b: company_key(a) == company_key(b))
    differ("work_name", notice.work_name, certificate.work_name, _same_work)
    differ("guarantee_amount", notice.guarantee_amount, certificate.guarantee_amount, equal)
    differ("contract_amount", notice.contract_amount, certificate.contract_amount, equal)
    differ("period_start", notice.period_start, certificate.period_start, equal)
    differ("period_end", notice.period_end, certificate.period_end, equal)
    return found


def _same_work(shown: str, actual: str) -> bool:
    # A long work name may wrap onto a line the reader does not take: the start must agree.
    shown_key, actual_key = plain_key(shown), plain_key(actual)
    return bool(shown_key) and (shown_key == actual_key or actual_key.startswith(shown_key) and len(shown_key) >= 8)


def _verdict(candidate: _Candidate, rules: DeskRules, contract: Contract | None,
             signatures: DocumentSignatures) -> GuaranteeVerdict:
    cert = candidate.certificate
    guarantee_type = cert.guarantee_type if cert else (candidate.notice.guarantee_type if candidate.notice else None)
    department = department_for(rules, guarantee_type, contract)
    findings = tuple(candidate.findings)
    return GuaranteeVerdict(
        guarantee_no=candidate.guarantee_no,
        access_key_masked=_masked(candidate.access_key, signatures),
        access_key=candidate.access_key,
        certificate=cert,
        signed=candidate.signed,
        guarantee_type=guarantee_type,
        contract_no=candidate.contract_no or None,
        department=department,
        verdict=strongest(f.verdict for f in findings),
        findings=findings,
        document=candidate.document,
    )

