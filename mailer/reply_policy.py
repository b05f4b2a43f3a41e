"""Whether keydesk answers a mail at all, to which address, and in full or in short.

Nothing is answered that is automatic (the intake decides that from RFC 3834 headers, delivery
reports and the like, and passes its flag and reason) or keydesk's own (a reply answering a reply
would loop between two robots). The rest depends on the desk's ``reply_to`` policy:

- ``authenticated``: only a sender whose From domain our own server authenticated (DMARC pass, or
  an aligned SPF/DKIM pass: ``intake.authentication_results.authenticated_for``);
- ``submissions`` (default): also an unauthenticated mail that plausibly is a submission (a PDF by
  content, in an archive or winmail.dat too, or the words of the trade) gets a *short* reply that
  quotes nothing the sender wrote, sent only to the From address. Anything else gets no reply, so
  the town's domain never carries a forger's text to a third party (backscatter);
- ``all``: every sender, in full.

A Reply-To in another domain than From is used only for authenticated mail. Two limits hold a
reply back (it stays in the outbox as ``suppressed``, visible to staff, never silently dropped):
``replies_per_sender_per_hour`` counts only replies to mails that carried no new guarantee (an
ordinary submission is always answered), ``replies_per_desk_per_hour`` counts every reply.

``decide`` is pure; ``recent_reply_count`` and ``recent_desk_reply_count`` are the database
queries it needs; ``should_reply`` puts them together for the intake.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import Message
from email.utils import getaddresses

from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, select

from mailer.message import MessageError, check_address
from store.tables import OutboxMessage, Submission

# Every mail keydesk sends carries this header (value: "<kind>; desk=<desk id>"), so a copy that
# comes back to a desk mailbox, forwarded with its headers or bounced by a relay, is recognised.
MARKER_HEADER = "X-Keydesk-Mail"
REPLY_KIND = "reply"
# The outbox state of a reply a limit held back: kept and listed, never sent by the delivery loop.
SUPPRESSED = "suppressed"
REPLY_POLICIES = ("authenticated", "submissions", "all")
# Words of the trade that make an unauthenticated mail a plausible submission (subject or body).
TRADE_WORDS = ("電子保証", "認証キー", "保証契約番号", "電子証書", "保証証書", "前払金保証", "契約保証")
_WINDOW = timedelta(hours=1)
_MSG_ID_DOMAIN = re.compile(r"@([^<>@\s]+)>\s*$")


def mark(message: Message, *, kind: str, desk: str) -> None:
    """Add keydesk's marker header (replacing any) to a message keydesk is about to send."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", kind) or not re.fullmatch(r"[A-Za-z0-9_-]+", desk):
        raise ValueError(f"marker values are ASCII identifiers, got kind={kind!r} desk={desk!r}")
    del message[MARKER_HEADER]
    message[MARKER_HEADER] = f"{kind}; desk={desk}"


@dataclass(frozen=True)
class ReplyDecision:
    reply: bool
    address: str | None  # where the reply goes (set when reply is True, or when it is suppressed)
    reason: str  # for logs, the audit trail and `keydesk verify --json`, in English: why (not)
    short: bool = False  # the short reply that quotes nothing the sender wrote
    suppressed: bool = False  # a limit held it back: it is built and kept in the outbox, not sent

    def to_json(self) -> dict:
        """The ``"reply"`` object of `keydesk verify --json`."""
        return {"send": self.reply, "to": self.address if self.reply else None, "reason": self.reason,
                **({"short": True} if self.reply and self.short else {})}


def _header_text(message: Message, name: str) -> str:
    try:
        values = message.get_all(name) or []
        return " ".join(str(v) for v in values)
    except Exception:  # noqa: BLE001 - a malformed header is treated as absent, never a crash
        return ""


def _domain(address: str) -> str:
    return address.rpartition("@")[2].casefold()


def valid_address(raw: str) -> str | None:
    """A plain, deliverable-looking ASCII address, or None.

    IDN domains come back in their ASCII (punycode) form; non-ASCII local parts are refused
    because answering them would need SMTPUTF8, which the desk's relay may not offer.
    """
    raw = (raw or "").strip()
    if not raw or any(c in raw for c in "\r\n\0<>,;\"\\ "):
        return None
    try:
        result = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except (EmailNotValidError, UnicodeError, ValueError):
        return None
    address = result.ascii_email or result.normalized
    try:  # the message builder must accept it, too
        return check_address(address)
    except MessageError:
        return None


def header_addresses(message: Message, name: str) -> list[str]:
    """The addr-specs of an address header, never raising on hostile syntax.

    A header parsed with the modern email policy offers its structured ``addresses``; that is
    used rather than re-parsing decoded text, in which an encoded display name could smuggle in
    a second ``<address>``. A compat32 header is parsed from its raw, still encoded, text.
    """
    try:
        values = message.get_all(name) or []
    except Exception:  # noqa: BLE001 - a malformed header is treated as absent, never a crash
        return []
    found: list[str] = []
    for value in values:
        try:
            structured = getattr(value, "addresses", None)
            if structured is not None:
                found += [address.addr_spec for address in structured]
            else:
                found += [addr for _name, addr in getaddresses([str(value)])]
        except Exception:  # noqa: BLE001
            continue
    return found


def _first_valid(message: Message, header: str) -> str | None:
    for candidate in header_addresses(message, header):
        checked = valid_address(candidate)
        if checked:
            return checked
    return None


def from_address(message: Message) -> str | None:
    """The first valid From address (where a short reply to an unauthenticated sender goes)."""
    return _first_valid(message, "From")


def reply_address(message: Message, *, authenticated: bool = True) -> str | None:
    """The address a reply goes to: the first valid Reply-To address, else the first valid From.

    Unauthenticated mail keeps a Reply-To only in the From address's own domain: anyone can write
    a From and a Reply-To pointing at a third party."""
    sender = from_address(message)
    reply_to = _first_valid(message, "Reply-To")
    if reply_to and (authenticated or (sender and _domain(reply_to) == _domain(sender))):
        return reply_to
    return sender


def plausible_submission(*, has_pdf: bool, subject: str, body: str = "") -> bool:
    """Whether an unauthenticated mail plausibly is a submission: a PDF by content (also inside an
    archive or winmail.dat), or a word of the trade in its subject or body."""
    if has_pdf:
        return True
    text = f"{subject}\n{body[:20000]}"
    return any(word in text for word in TRADE_WORDS)


def own_mail_reason(message: Message, *, own_addresses: list[str]) -> str | None:
    """Why this mail is keydesk's own (a reply to it would loop), or None.

    ``own_addresses`` are the desk addresses of the deployment; a Message-ID in one of their
    domains is one keydesk (or the town's own server) made.
    """
    marker = _header_text(message, MARKER_HEADER)
    if marker:
        return f"carries keydesk's {MARKER_HEADER} header ({marker[:60]!r})"
    own = {a.casefold() for a in own_addresses}
    own_domains = {_domain(a) for a in own_addresses}
    message_id = _header_text(message, "Message-ID")
    found = _MSG_ID_DOMAIN.search(message_id)
    if found and found.group(1).casefold() in own_domains:
        return f"its Message-ID is in the desk's own domain {found.group(1)!r}"
    for header in ("From", "Sender", "Reply-To"):
        if any(addr.strip().casefold() in own for addr in header_addresses(message, header)):
            return f"{header} is the desk's own address"
    return None


def decide(
    *,
    automatic: bool,
    automatic_reason: str | None,
    own_reason: str | None,
    address: str | None,
    own_addresses: list[str],
    recent_replies: int,
    limit: int,
    policy: str = "all",
    authenticated: bool = True,
    submission: bool = True,
    sender_address: str | None = None,
    new_guarantee: bool = False,
    desk_recent_replies: int = 0,
    desk_limit: int | None = None,
) -> ReplyDecision:
    """Pure: the decision from what the intake and the database know.

    ``address`` is ``reply_address(message, authenticated=…)``; ``sender_address`` the From
    address (for the short reply); ``submission`` whether the mail plausibly is a submission;
    ``new_guarantee`` whether it carried a guarantee not submitted before (the sender limit then
    does not apply); ``recent_replies`` counts only replies to mails without one."""
    if policy not in REPLY_POLICIES:
        raise ValueError(f"reply policy is one of {REPLY_POLICIES}, got {policy!r}")
    if automatic:
        return ReplyDecision(False, None, f"automatic mail: {automatic_reason or 'no reason given'}")
    if own_reason:
        return ReplyDecision(False, None, f"keydesk's own mail: {own_reason}")
    short = False
    if not authenticated and policy != "all":
        if policy == "authenticated":
            return ReplyDecision(False, None, "sender not authenticated (reply_to = authenticated)")
        if not submission:
            return ReplyDecision(False, None, "sender not authenticated and the mail is no submission")
        short, address = True, sender_address if sender_address is not None else address
    if address is None:
        return ReplyDecision(False, None, "no valid address to reply to (Reply-To and From)")
    if address.casefold() in {a.casefold() for a in own_addresses}:
        return ReplyDecision(False, None, "the reply address is the desk's own address")
    if desk_limit is not None and desk_recent_replies >= desk_limit:
        return ReplyDecision(False, address, f"desk rate limit: {desk_recent_replies} replies in the last hour "
                                             f"(limit {desk_limit})", short, suppressed=True)
    if not new_guarantee and recent_replies >= limit:
        return ReplyDecision(
            False, address, f"rate limit: {recent_replies} replies to {address} in the last hour (limit {limit})",
            short, suppressed=True,
        )
    reason = "short reply: sender not authenticated, plausibly a submission" if short else "reply"
    return ReplyDecision(True, address, reason, short)


def _recent_replies(session: Session, desk: str, now: datetime):
    return select(OutboxMessage.recipients_json, OutboxMessage.inbound_id).where(
        OutboxMessage.desk == desk,
        OutboxMessage.kind == REPLY_KIND,
        OutboxMessage.state != SUPPRESSED,
        OutboxMessage.created_at > now - _WINDOW,
    )


def recent_desk_reply_count(session: Session, *, desk: str, now: datetime) -> int:
    """Replies this desk enqueued (held ones not counted) within the hour before ``now``."""
    return len(session.exec(_recent_replies(session, desk, now)).all())


def _with_new_guarantee(session: Session, inbound_ids: set[int]) -> set[int]:
    """The mails among ``inbound_ids`` that carried a guarantee not submitted before."""
    if not inbound_ids:
        return set()
    rows = session.exec(select(Submission.inbound_id, Submission.findings_json).where(
        Submission.inbound_id.in_(inbound_ids), Submission.guarantee_no.is_not(None))).all()
    return {inbound_id for inbound_id, findings in rows if '"submission.duplicate"' not in (findings or "")}


def recent_reply_count(session: Session, *, desk: str, address: str, now: datetime) -> int:
    """Replies enqueued for ``address`` by this desk within the hour before ``now``, counting only
    those that answered a mail without a new guarantee (questions, empty or repeated mails)."""
    rows = session.exec(_recent_replies(session, desk, now)).all()
    wanted = address.casefold()
    matching: list[int | None] = []
    for recipients_json, inbound_id in rows:
        try:
            recipients = json.loads(recipients_json)
        except ValueError:
            continue
        if isinstance(recipients, list) and any(isinstance(r, str) and r.casefold() == wanted for r in recipients):
            matching.append(inbound_id)
    exempt = _with_new_guarantee(session, {i for i in matching if i is not None})
    return sum(1 for inbound_id in matching if inbound_id is None or inbound_id not in exempt)


def should_reply(
    session: Session,
    message: Message,
    *,
    desk: str,
    desk_address: str,
    limit: int,
    now: datetime,
    automatic: bool,
    automatic_reason: str | None = None,
    other_own_addresses: list[str] | None = None,
    policy: str = "all",
    authenticated: bool = True,
    submission: bool = True,
    new_guarantee: bool = False,
    desk_limit: int | None = None,
) -> ReplyDecision:
    """The intake's one call: the reply decision for ``message`` (headers of the original mail)."""
    own_addresses = [desk_address, *(other_own_addresses or [])]
    sender = from_address(message)
    address = reply_address(message, authenticated=authenticated)
    target = address if authenticated or policy == "all" else sender
    own_reason = own_mail_reason(message, own_addresses=own_addresses)
    recent = recent_reply_count(session, desk=desk, address=target, now=now) if target else 0
    desk_recent = recent_desk_reply_count(session, desk=desk, now=now) if desk_limit is not None else 0
    return decide(
        automatic=automatic,
        automatic_reason=automatic_reason,
        own_reason=own_reason,
        address=address,
        own_addresses=own_addresses,
        recent_replies=recent,
        limit=limit,
        policy=policy,
        authenticated=authenticated,
        submission=submission,
        sender_address=sender,
        new_guarantee=new_guarantee,
        desk_recent_replies=desk_recent,
        desk_limit=desk_limit,
    )
