"""Whether keydesk answers a mail at all, and to which address.

Three things stop a reply: the mail is automatic (the intake decides that from RFC 3834 headers,
delivery reports and the like, and passes its flag and reason), the mail is keydesk's own (a
reply answering a reply would loop between two robots), or the sender already received
``Limits.replies_per_sender_per_hour`` replies in the last hour (someone, or a broken
auto-responder that the intake did not recognise, mailing the desk in a tight loop).

``decide`` is pure; ``recent_reply_count`` is the one database query it needs; ``should_reply``
puts them together for the intake.
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
from store.tables import OutboxMessage

# Every mail keydesk sends carries this header (value: "<kind>; desk=<desk id>"), so a copy that
# comes back to a desk mailbox, forwarded with its headers or bounced by a relay, is recognised.
MARKER_HEADER = "X-Keydesk-Mail"
REPLY_KIND = "reply"
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
    address: str | None  # where the reply goes (set when reply is True)
    reason: str  # for logs and the audit trail, in English: why (not)


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


def reply_address(message: Message) -> str | None:
    """The address a reply goes to: the first valid Reply-To address, else the first valid From."""
    for header in ("Reply-To", "From"):
        for candidate in header_addresses(message, header):
            checked = valid_address(candidate)
            if checked:
                return checked
    return None


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
) -> ReplyDecision:
    """Pure: the decision from what the intake and the database know."""
    if automatic:
        return ReplyDecision(False, None, f"automatic mail: {automatic_reason or 'no reason given'}")
    if own_reason:
        return ReplyDecision(False, None, f"keydesk's own mail: {own_reason}")
    if address is None:
        return ReplyDecision(False, None, "no valid address to reply to (Reply-To and From)")
    if address.casefold() in {a.casefold() for a in own_addresses}:
        return ReplyDecision(False, None, "the reply address is the desk's own address")
    if recent_replies >= limit:
        return ReplyDecision(
            False, None, f"rate limit: {recent_replies} replies to {address} in the last hour (limit {limit})"
        )
    return ReplyDecision(True, address, "reply")


def recent_reply_count(session: Session, *, desk: str, address: str, now: datetime) -> int:
    """Replies enqueued for ``address`` by this desk within the hour before ``now``."""
    rows = session.exec(
        select(OutboxMessage.recipients_json).where(
            OutboxMessage.desk == desk,
            OutboxMessage.kind == REPLY_KIND,
            OutboxMessage.created_at > now - _WINDOW,
        )
    ).all()
    wanted = address.casefold()
    count = 0
    for recipients_json in rows:
        try:
            recipients = json.loads(recipients_json)
        except ValueError:
            continue
        if any(isinstance(r, str) and r.casefold() == wanted for r in recipients):
            count += 1
    return count


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
) -> ReplyDecision:
    """The intake's one call: the reply decision for ``message`` (headers of the original mail)."""
    own_addresses = [desk_address, *(other_own_addresses or [])]
    address = reply_address(message)
    own_reason = own_mail_reason(message, own_addresses=own_addresses)
    recent = recent_reply_count(session, desk=desk, address=address, now=now) if address else 0
    return decide(
        automatic=automatic,
        automatic_reason=automatic_reason,
        own_reason=own_reason,
        address=address,
        own_addresses=own_addresses,
        recent_replies=recent,
        limit=limit,
    )
