"""Every table keydesk keeps. Each row carries the ``desk`` (town) it belongs to.

The database is the source of truth for what was processed; IMAP flags and folders are only a
courtesy to humans. Schema changes go through an Alembic migration in keydesk/migrations.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from store.states import InboundState, OutboxState


_IMAP_NUMBER = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class InboundMessage(SQLModel, table=True):
    """One mail taken from a desk's mailbox, stored raw before anything else happens."""

    __tablename__ = "inbound_message"
    __table_args__ = (
        UniqueConstraint("desk", "account", "mailbox", "uidvalidity", "uid", name="uq_inbound_imap_identity"),
        UniqueConstraint("desk", "sha256", name="uq_inbound_sha256"),
    )

    id: int | None = Field(default=None, primary_key=True)
    desk: str = Field(index=True, max_length=64)
    account: str = Field(max_length=320)
    mailbox: str = Field(max_length=255)
    # IMAP's UIDVALIDITY and UID are unsigned 32-bit (up to 4294967295): above PostgreSQL's signed
    # integer (pymap picks large UIDVALIDITY values), so both are BIGINT there (migration 0002);
    # SQLite's INTEGER holds 64 bits already, and rebuilding its table would trip the foreign keys.
    uidvalidity: int = Field(sa_column=Column(_IMAP_NUMBER, nullable=False))
    uid: int = Field(sa_column=Column(_IMAP_NUMBER, nullable=False))
    sha256: str = Field(max_length=64)
    size: int
    # Relative to the storage directory; for a too_large mail it holds the headers only.
    raw_path: str | None = Field(default=None, max_length=255)
    message_id: str | None = Field(default=None, sa_column=Column(Text))
    sender: str | None = Field(default=None, sa_column=Column(Text))
    subject: str | None = Field(default=None, sa_column=Column(Text))
    received_at: datetime = Field(default_factory=utcnow)
    # new → processed | quarantined; a too_large mail keeps state too_large and gets processed_at when answered.
    state: str = Field(default=InboundState.NEW, index=True, max_length=32)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    receipt_no: str | None = Field(default=None, unique=True, max_length=32)
    verdict: str | None = Field(default=None, max_length=32)
    findings_json: str | None = Field(default=None, sa_column=Column(Text))
    automatic: bool = False
    # Set after the mailbox action (move/flag) succeeded; a crash before it only repeats the action.
    mailbox_action_done: bool = False
    processed_at: datetime | None = None
    # Processing runs begun and never finished (the process died meanwhile); not the mail's fault,
    # so not counted in ``attempts``, but bounded so a mail that kills the daemon cannot loop forever.
    interrupted: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # The claim owner (store/claim_owner.py) processing it now: another worker leaves it alone while that owner lives.
    processing_by: str | None = Field(default=None, max_length=32)
    # Set when `keydesk purge` removed the raw mail and its documents after the retention period.
    purged_at: datetime | None = None


class Document(SQLModel, table=True):
    """A file found in a mail (attachment, archive member, forwarded part), stored by content hash."""

    __tablename__ = "document"

    id: int | None = Field(default=None, primary_key=True)
    desk: str = Field(index=True, max_length=64)
    inbound_id: int = Field(foreign_key="inbound_message.id", index=True)
    display_name: str = Field(sa_column=Column(Text, nullable=False))
    origin: str = Field(default="", sa_column=Column(Text, nullable=False))  # e.g. "転送メール / a.zip"
    sha256: str = Field(max_length=64)
    size: int
    stored_path: str = Field(max_length=255)
    kind: str = Field(max_length=32)  # key_notice, certificate_view, …
    guarantee_no: str | None = Field(default=None, max_length=64)
    access_key_encrypted: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    access_key_masked: str | None = Field(default=None, max_length=32)


class Submission(SQLModel, table=True):
    """One guarantee submitted in one mail, with its verdict."""

    __tablename__ = "submission"

    id: int | None = Field(default=None, primary_key=True)
    desk: str = Field(index=True, max_length=64)
    inbound_id: int = Field(foreign_key="inbound_message.id", index=True)
    document_id: int | None = Field(default=None, foreign_key="document.id")
    guarantee_no: str | None = Field(default=None, index=True, max_length=64)
    guarantee_type: str | None = Field(default=None, max_length=32)
    contract_no: str | None = Field(default=None, max_length=64)
    contractor_name: str | None = Field(default=None, sa_column=Column(Text))
    work_name: str | None = Field(default=None, sa_column=Column(Text))
    department: str | None = Field(default=None, max_length=64)
    access_key_encrypted: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    access_key_masked: str | None = Field(default=None, max_length=32)
    verdict: str = Field(max_length=32, index=True)
    findings_json: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    # The signed certificate as the look-up returned it (SignedCertificate.to_json()), when its
    # signature verified: the desk's own record for replays and advance totals.
    certificate_json: str | None = Field(default=None, sa_column=Column(Text))
    # A resend that answers a returned mail points at the submission it replaces.
    resend_of_id: int | None = Field(default=None, foreign_key="submission.id")
    created_at: datetime = Field(default_factory=utcnow, index=True)
    # Added with issue 14: the guarantor revoked this guarantee after the desk accepted it. Staff are
    # told in the digest (and the console flags it); the audit event submission.revoked_after_acceptance
    # records when keydesk noticed.
    revoked_at: datetime | None = Field(default=None, index=True)
    revoked_reason: str | None = Field(default=None, sa_column=Column(Text))
    # The look-up still to do (issue 10): "held" (the service was unreachable: looked up again at
    # next_lookup_at), "manual" (a clerk looks it up), "staff" (held too long: a person decides),
    # "done" (answered later; the result mail went out), "decided" (a person decided in the staff
    # console without the look-up). None: decided when the mail came in.
    lookup_state: str | None = Field(default=None, index=True, max_length=16)
    lookup_attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    next_lookup_at: datetime | None = Field(default=None)
    # What a clerk read on the guarantor's site (manual mode): {"status", "staff", "at", "certificate":
    # canonical certificate JSON or null}.
    lookup_facts_json: str | None = Field(default=None, sa_column=Column(Text))


class Contract(SQLModel, table=True):
    """The town's contract register (契約台帳), imported from CSV."""

    __tablename__ = "contract"
    __table_args__ = (UniqueConstraint("desk", "contract_no", name="uq_contract_no"),)

    id: int | None = Field(default=None, primary_key=True)
    desk: str = Field(index=True, max_length=64)
    contract_no: str = Field(max_length=64)
    work_name: str = Field(sa_column=Column(Text, nullable=False))
    work_category: str = Field(max_length=64)
    contractor_name: str = Field(sa_column=Column(Text, nullable=False))
    contract_amount: int
    contract_date: date
    completion_date: date
    advance_amount: int | None = None
    intermediate_advance_amount: int | None = None
    department: str = Field(max_length=64)
    updated_at: datetime = Field(default_factory=utcnow)
    # Added with issue 14: 低入札, and the town's 認定 for 中間前払金 (a date, or only that it was given).
    low_bid: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})
    intermediate_certified_on: date | None = None
    intermediate_certified: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})


class CertificateRecord(SQLModel, table=True):
    """The guarantor's registry: one issued certificate. The 認証キー is kept only as a salted hash."""

    __tablename__ = "certificate"

    id: int | None = Field(default=None, primary_key=True)
    desk: str = Field(index=True, max_length=64)
    guarantee_no: str = Field(unique=True, max_length=64)
    guarantee_type: str = Field(max_length=32)
    contractor_name: str = Field(sa_column=Column(Text, nullable=False))
    contractor_email: str = Field(max_length=320)
    signed_json: str = Field(sa_column=Column(Text, nullable=False))  # SignedCertificate.to_json()
    key_id: str = Field(max_length=32)
    access_key_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    access_key_salt: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status: str = Field(default="active", max_length=16)  # active | revoked
    revoked_reason: str | None = Field(default=None, sa_column=Column(Text))
    revoked_at: datetime | None = None
    issued_at: datetime = Field(default_factory=utcnow)


class LookupFailure(SQLModel, table=True):
    """A wrong key for a guarantee number: the brute-force guard counts these."""

    __tablename__ = "lookup_failure"

    id: int | None = Field(default=None, primary_key=True)
    desk: str = Field(index=True, max_length=64)
    guarantee_no: str = Field(index=True, max_length=64)
    at: datetime = Field(default_factory=utcnow, index=True)
    # Who tried the key (a desk's token name, or web:<address>): the guard counts per (number,
    # requester) and per requester, so one party's wrong keys do not lock a number for everyone.
    requester: str | None = Field(default=None, index=True, max_length=128)


class LookupToken(SQLModel, table=True):
    """A desk's bearer token for the guarantor's look-up API; only its SHA-256 is kept."""

    __tablename__ = "lookup_token"

    id: int | None = Field(default=None, primary_key=True)
    desk: str = Field(index=True, max_length=64)  # the desk (town) the token was issued to
    token_hash: str = Field(unique=True, max_length=64)
    hint: str = Field(max_length=16)  # the first characters, to tell tokens apart in listings
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class OutboxMessage(SQLModel, table=True):
    """A mail to send. One Message-ID for its whole life, so retries never look like new mail."""

    __tablename__ = "outbox_message"

    id: int | None = Field(default=None, primary_key=True)
    desk: str = Field(index=True, max_length=64)
    # reply:<inbound id>, digest:<desk>:<dept>:<date>, notice:<certificate id>
    idempotency_key: str = Field(unique=True, max_length=255)
    kind: str = Field(max_length=16)  # reply | digest | notice
    message_id: str = Field(max_length=255)
    envelope_from: str = Field(max_length=320)
    recipients_json: str = Field(sa_column=Column(Text, nullable=False))
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # pending → sending → data_sent → sent | failed (see mailer/delivery.py); per recipient in recipient_states_json.
    state: str = Field(default=OutboxState.PENDING, index=True, max_length=16)
    recipient_states_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, index=True)
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    inbound_id: int | None = Field(default=None, foreign_key="inbound_message.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None
    # The claim owner (store/claim_owner.py) of a row in sending/data_sent: a dead owner's rows are recovered at once.
    claimed_by: str | None = Field(default=None, max_length=32)


class AuditEvent(SQLModel, table=True):
    """Append-only and hash-chained (one chain per desk): each row's hash covers the previous row's hash."""

    __tablename__ = "audit_event"
    # Every append reads its desk's newest event: (desk, id) finds it without scanning the trail.
    __table_args__ = (Index("ix_audit_event_desk_id", "desk", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    desk: str = Field(index=True, max_length=64)
    at: datetime = Field(default_factory=utcnow)
    actor: str = Field(max_length=64)  # intake, mailer, guarantor, staff:<name>, cli
    action: str = Field(max_length=64)
    subject: str = Field(default="", sa_column=Column(Text, nullable=False))
    detail_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    # Unique, so two writers racing to extend the chain cannot fork it: one of them retries.
    prev_hash: str = Field(unique=True, max_length=64)
    hash: str = Field(unique=True, max_length=64)


class StoredBlob(SQLModel, table=True):
    """A raw mail or document kept in the database, so every worker reaches it (intake/raw_store.py)."""

    __tablename__ = "stored_blob"

    # The same content-addressed name the file store uses (mail/ab/<sha256>.eml).
    name: str = Field(primary_key=True, max_length=255)
    size: int
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Counter(SQLModel, table=True):
    """Named sequences, e.g. receipt numbers per desk and year (receipt:misato:2026)."""

    __tablename__ = "counter"

    name: str = Field(primary_key=True, max_length=128)
    value: int = 0


class StaffAccount(SQLModel, table=True):
    """A person who signs in to the staff console. Passwords and API tokens are kept as argon2 hashes."""

    __tablename__ = "staff_account"

    id: int | None = Field(default=None, primary_key=True)
    login: str = Field(unique=True, max_length=64)
    name: str = Field(sa_column=Column(Text, nullable=False))
    role: str = Field(max_length=16)  # clerk | admin
    # Department ids (rules.toml) a clerk may see; an admin sees every department.
    departments_json: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    password_hash: str | None = Field(default=None, sa_column=Column(Text))
    api_token_hash: str | None = Field(default=None, sa_column=Column(Text))
    disabled: bool = False
    failed_logins: int = 0
    locked_until: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    last_login_at: datetime | None = None


class StaffDecision(SQLModel, table=True):
    """What a person decided for a submission that waited for people: one per submission, ever.

    The unique submission id is what makes a double click or a retried request harmless: the second
    insert fails, and the request is answered from the row that won.
    """

    __tablename__ = "staff_decision"

    id: int | None = Field(default=None, primary_key=True)
    desk: str = Field(index=True, max_length=64)
    submission_id: int = Field(foreign_key="submission.id", unique=True)
    inbound_id: int = Field(foreign_key="inbound_message.id", index=True)
    # accept | return | handled, or lookup: a clerk recorded what the guarantor's site shows and the
    # rules gave the verdict (console/manual.py)
    decision: str = Field(max_length=16)
    verdict: str = Field(max_length=32)  # the verdict it gives: accepted | returned | handled
    # the reasons given, in the one stored-findings shape (store/stored_findings.py)
    reasons_json: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    note: str = Field(default="", sa_column=Column(Text, nullable=False))
    staff_login: str = Field(max_length=64)
    staff_name: str = Field(sa_column=Column(Text, nullable=False))
    # The form's or client's request key: the same key again is a replay, answered, not refused.
    request_key: str | None = Field(default=None, max_length=64)
    decided_at: datetime = Field(default_factory=utcnow, index=True)
    outbox_id: int | None = Field(default=None, foreign_key="outbox_message.id")
    # Set once the mail was moved from the review folder to the decision's folder.
    mailbox_action_done: bool = False


class DeskStatus(SQLModel, table=True):
    """What `keydesk status` and the metrics report about a desk's intake: its last good pass."""

    __tablename__ = "desk_status"

    desk: str = Field(primary_key=True, max_length=64)
    last_poll_at: datetime | None = None
    last_poll_mails: int = 0
