"""Delivery reports, feedback reports and auto-replies recognised from the mail's structure and body.

``mail_context.automatic`` decides from headers alone, before the body is walked (so an over-size
bounce is never answered). This module looks inside a mail that passed that check and was walked
within its limits: report parts of RFC 3464 (DSN), RFC 6522 / RFC 5965 (ARF feedback) and RFC 8098
(read receipts) wherever they sit, not only under a multipart/report top (some providers and
Japanese carriers wrap them in multipart/mixed or send them as plain text), and the detectors of
flufl.bounce (Mailman's bounce library: Exim, qmail, Postfix, Exchange, Yahoo, AOL, GroupWise and
other non-standard formats) rather than a hand-grown list of phrases.

A mail that carries a PDF is never called automatic by the body heuristics: a person forwarding a
bounce together with the key notice still gets an answer.
"""

from __future__ import annotations

import logging
from email.message import Message

from intake.mime_headers import content_type

log = logging.getLogger(__name__)

_REPORT_PARTS = {
    "message/delivery-status": "delivery status notification (RFC 3464)",
    "message/global-delivery-status": "delivery status notification (RFC 6533)",
    "message/feedback-report": "abuse feedback report (RFC 5965)",
    "message/disposition-notification": "read receipt (RFC 8098)",
    "message/global-disposition-notification": "read receipt (RFC 6533)",
}
_PARTS_SCANNED = 200
_DETECTOR_BYTES = 64 * 1024
# flufl.bounce logs every detector it runs at INFO and a detector's crash with a traceback.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)


def report_part_reasons(message: Message) -> tuple[str, ...]:
    """Report parts (DSN, ARF, MDN) anywhere in the first parts of the mail."""
    reasons: list[str] = []
    try:
        for index, part in enumerate(message.walk()):
            if index >= _PARTS_SCANNED:
                break
            declared = content_type(part).value
            if declared in _REPORT_PARTS and _REPORT_PARTS[declared] not in reasons:
                reasons.append(_REPORT_PARTS[declared])
    except Exception:  # noqa: BLE001 - a broken structure is simply not a report
        return tuple(reasons)
    return tuple(reasons)


def bounce_detector_reasons(raw: bytes) -> tuple[str, ...]:
    """What flufl.bounce's detectors find: bounced recipients, temporary or permanent.

    The detectors read every body line with many patterns, so they get only the head of the mail
    (a report says what failed at its top); a mail of megabytes cannot make them slow."""
    try:
        from email import message_from_bytes
        from email.policy import compat32

        from flufl.bounce import all_failures

        temporary, permanent = all_failures(message_from_bytes(raw[:_DETECTOR_BYTES], policy=compat32))
    except Exception:  # noqa: BLE001 - a detector that trips over hostile input finds nothing
        return ()
    if permanent:
        return (f"bounce (permanent failure for {len(permanent)} recipient(s), flufl.bounce)",)
    if temporary:
        return (f"bounce (delivery delayed for {len(temporary)} recipient(s), flufl.bounce)",)
    return ()


def machine_reasons(message: Message, raw: bytes, *, has_pdf: bool) -> tuple[str, ...]:
    """Why the walked mail is a report or bounce, from its structure and body; () for a person's mail."""
    reasons = report_part_reasons(message)
    if reasons or has_pdf:
        return reasons
    return bounce_detector_reasons(raw)
