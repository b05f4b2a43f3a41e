"""The states a stored row moves through, as enums (their values are what the database holds).

- :class:`InboundState` (``InboundMessage.state``): ``new`` → ``processed`` | ``quarantined``; a
  mail over the size limit is recorded ``too_large``, keeps that state and gets ``processed_at``
  when it has been answered.
- :class:`OutboxState` (``OutboxMessage.state``): ``pending`` → ``sending`` → ``data_sent`` →
  ``sent`` | ``failed`` (``mailer/delivery.py`` explains every arrow).
  A reply a rate limit held back is ``suppressed``: kept and listed, never sent.
- :class:`RecipientState` (per recipient, in ``OutboxMessage.recipient_states_json``).
- :class:`LookupState` (``Submission.lookup_state``): a look-up still to do after the mail came in
  (``None`` when it was decided at once): ``held`` → ``done`` | ``staff``; ``manual`` → ``done``; any of them → ``decided``
  (a person decided in the staff console).

They are ``StrEnum`` members, so a member equals its stored string and can be written as is.
"""

from __future__ import annotations

from enum import StrEnum


class InboundState(StrEnum):
    NEW = "new"  # recorded, not processed yet
    TOO_LARGE = "too_large"  # over the size limit: only the headers were taken; answered, not verified
    PROCESSED = "processed"  # verified and answered (its verdict is on the row)
    QUARANTINED = "quarantined"  # processing failed every attempt; moved aside for staff


class OutboxState(StrEnum):
    PENDING = "pending"  # to send (again) at next_attempt_at
    SENDING = "sending"  # claimed by a deliverer; the final dot is not written yet
    DATA_SENT = "data_sent"  # the final dot may be on the wire: never sent again automatically
    SENT = "sent"  # at least one recipient got it (or may have: unconfirmed)
    FAILED = "failed"  # no recipient will get it
    SUPPRESSED = "suppressed"  # a reply held back by a rate limit: kept, never sent by the delivery loop


class RecipientState(StrEnum):
    PENDING = "pending"  # to send; a 4xx answer keeps the recipient here
    IN_DATA = "in_data"  # accepted at RCPT, in the transaction running now
    SENT = "sent"
    UNCONFIRMED = "unconfirmed"  # the connection ended after the final dot, before the answer
    FAILED = "failed"  # 5xx, or still 4xx after give_up_after_hours
    SUPPRESSED = "suppressed"  # the reply was held back by a rate limit: never sent


class LookupState(StrEnum):
    HELD = "held"  # the service was unreachable: looked up again at next_lookup_at
    MANUAL = "manual"  # a clerk looks it up on the guarantor's site and records what it shows
    STAFF = "staff"  # held too long: a person decides (listed in the digest)
    DONE = "done"  # answered later; the result mail went out
    DECIDED = "decided"  # a person decided in the staff console without the look-up
