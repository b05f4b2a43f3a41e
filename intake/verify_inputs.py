"""From a walked mail to what ``verifier.verify.verify_mail`` takes: documents read within limits
and the mail's context. Shared by the intake pipeline and ``keydesk verify`` so both judge a mail
the same way.
"""

from __future__ import annotations

import re
from typing import Callable

from intake.authentication_results import Authentication, authenticated_for
from intake.mime import MailDocument, WalkedMail, parse_headers
from mailer.reply_policy import (ReplyDecision, decide, from_address, own_mail_reason, plausible_submission,
                                 reply_address)
from rules.findings import Finding
from rules.signatures import Patterns
from verifier.pdf_text import TextResult
from rules.findings import Verdict
from verifier.verify import InputDocument, MailContext, MailVerdict, SenderAuthentication

PdfReader = Callable[[bytes], TextResult]


def sender_authentication(authentication: Authentication, from_domain: str | None = None) -> SenderAuthentication:
    """What our own server's SPF/DKIM/DMARC results say about the sender, in one word.

    DMARC decides when present (it already combines SPF and DKIM with alignment); without it a
    passing DKIM signature or SPF check counts as passed, and a failing SPF with no passing DKIM as
    failed. No trusted results at all is "unknown".
    """
    if not authentication.results:
        return SenderAuthentication.UNKNOWN
    if from_domain is not None:
        # A pass counts only when aligned with the From domain; anyone can pass SPF for their own.
        if authenticated_for(authentication, from_domain):
            return SenderAuthentication.PASSED
        if authentication.dmarc == "fail" or (authentication.dkim != "pass" and authentication.spf in ("fail", "softfail")):
            return SenderAuthentication.FAILED
        return SenderAuthentication.UNKNOWN
    dmarc = authentication.dmarc
    if dmarc == "pass":
        return SenderAuthentication.PASSED
    if dmarc == "fail":
        return SenderAuthentication.FAILED
    if dmarc is None:
        if authentication.dkim == "pass" or authentication.spf == "pass":
            return SenderAuthentication.PASSED
        if authentication.spf in ("fail", "softfail") or authentication.dkim == "fail":
            return SenderAuthentication.FAILED
    return SenderAuthentication.UNKNOWN


def input_document(document: MailDocument, read_pdf: PdfReader) -> InputDocument:
    """A PDF (by content) is read with the bounded reader; anything else is passed on unread."""
    return InputDocument(document.display_name, read_pdf(document.content) if document.is_pdf else None)


def key_patterns(patterns: Patterns) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The configured (保証契約番号, 認証キー) patterns, compiled, for ``walk_mail(key_patterns=…)``."""
    return re.compile(patterns.guarantee_no), re.compile(patterns.access_key)


def from_domain(walked: WalkedMail) -> str:
    """The domain of the one valid From address ("" when there is none or several)."""
    author = walked.sender.address
    if author is None or not author.valid:
        return ""
    return (author.normalized or author.address).rpartition("@")[2].lower()


def verify_inputs(walked: WalkedMail, desk: str, read_pdf: PdfReader) -> tuple[list[InputDocument], MailContext]:
    documents = [input_document(d, read_pdf) for d in walked.documents]
    context = MailContext(
        desk=desk,
        automatic=walked.automatic,
        authentication=sender_authentication(walked.authentication, from_domain(walked)),
        typed_keys=tuple(walked.typed_keys),
        problems=tuple(walked.problems),
        automatic_reason="; ".join(walked.automatic_reasons),
    )
    return documents, context


def too_large_context(desk: str, limit_bytes: int) -> MailContext:
    """The context of a mail over the size limit: answered from its headers, nothing else read."""
    limit = f"{limit_bytes // (1024 * 1024)}MB" if limit_bytes >= 1024 * 1024 else f"{limit_bytes}バイト"
    return MailContext(desk=desk, problems=(
        Finding("mail.too_large", detail=f"the mail is over {limit_bytes} bytes", params={"limit": limit}),
    ))


def preview_reply(raw_headers: bytes, walked: WalkedMail, verdict: MailVerdict, *, desk_address: str,
                  policy: str) -> ReplyDecision:
    """What the desk would answer (`keydesk verify --json`): the intake's decision without the rate
    limits, which depend on what was sent in the last hour."""
    headers = parse_headers(raw_headers)
    authenticated = authenticated_for(walked.authentication, from_domain(walked))
    return decide(
        automatic=verdict.verdict is Verdict.IGNORED,
        automatic_reason="; ".join(walked.automatic_reasons) or None,
        own_reason=own_mail_reason(headers, own_addresses=[desk_address]),
        address=reply_address(headers, authenticated=authenticated),
        own_addresses=[desk_address],
        recent_replies=0,
        limit=1,
        policy=policy,
        authenticated=authenticated,
        submission=plausible_submission(has_pdf=any(d.is_pdf for d in walked.documents), subject=walked.subject,
                                        body=walked.body_text),
        sender_address=from_address(headers),
    )
