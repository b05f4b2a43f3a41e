"""What the pipeline needs around the reply: the per-mail look-up budget, whether a mail carried a
new guarantee, what it answers (threading), whether a report came through our relay, and the
findings that say why no reply went out. Kept apart from ``intake.pipeline`` so it stays small.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from email.message import Message
from typing import Sequence

from intake.mime_headers import raw_values
from rules.findings import Finding
from store.tables import InboundMessage, Submission
from verifier.lookup import CertificateLookup, LookupResult, LookupStatus
from verifier.verify import MailVerdict

_SCAN_BYTES = 256 * 1024
_MESSAGE_ID = re.compile(rb"<[!-;=?-~]{1,250}@[A-Za-z0-9.-]{1,250}>")
_REPORTING_MTA = re.compile(rb"(?m)^reporting-mta:[ \t]*dns;[ \t]*([a-z0-9.-]{1,253})[ \t]*\r?$")


class CappedLookup:
    """The look-up port with a budget per mail: past it, the remaining guarantees go to a person
    (``lookup.refused``), so one mail of a thousand key notices cannot hammer the look-up service."""

    def __init__(self, inner: CertificateLookup, limit: int) -> None:
        self.inner, self.left, self.limit = inner, limit, limit

    def lookup(self, guarantee_no: str, access_key: str, now: datetime) -> LookupResult:
        if self.left <= 0:
            return LookupResult(LookupStatus.REFUSED, reason=f"more than {self.limit} look-ups in one mail")
        self.left -= 1
        return self.inner.lookup(guarantee_no, access_key, now)


def carries_new_guarantee(verdict: MailVerdict) -> bool:
    """A guarantee read from the mail that was not accepted before (an ordinary submission)."""
    return any(g.guarantee_no and not any(f.code == "submission.duplicate" for f in g.findings)
               for g in verdict.guarantees)


def threaded_ids(headers: Message) -> set[str]:
    """Message-IDs this mail says it answers (In-Reply-To, References), in angle brackets."""
    found: set[str] = set()
    for name in ("in-reply-to", "references"):
        for value in raw_values(headers, name)[:4]:
            found.update(m.decode("ascii", "ignore") for m in _MESSAGE_ID.findall(value[:8192].encode("ascii", "ignore")))
    return found


def add_finding(row: InboundMessage, submissions: Sequence[Submission], finding: Finding) -> None:
    """Append a finding about the reply to the stored findings of the mail and its submissions."""
    entry = {"code": finding.code, "severity": finding.severity.value, "message": finding.message,
             "detail": finding.detail, "guarantee_no": finding.guarantee_no, "document": finding.document}
    for record in (row, *submissions):
        items = json.loads(record.findings_json or "[]")
        items.append(entry)
        record.findings_json = json.dumps(items, ensure_ascii=False)


def via_our_relay(raw: bytes, relay_hosts: Sequence[str]) -> bool:
    """A report whose Reporting-MTA names our relay (the desk's SMTP host): our relay wrote it."""
    hosts = [h.encode("ascii", "ignore").lower() for h in relay_hosts if h]
    if not hosts:
        return False
    head = raw[:_SCAN_BYTES].lower()
    for match in _REPORTING_MTA.finditer(head):
        if any(host == match.group(1).strip().rstrip(b".") for host in hosts):
            return True
    return False
