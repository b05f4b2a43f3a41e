"""Putting mail into the durable outbox. Delivery is in ``mailer/delivery.py``.

A message is enqueued inside the caller's transaction, so a reply commits together with the
submission it answers, or not at all. The idempotency key makes a second enqueue of the same
thing a no-op (a mail processed twice never gets two replies).
"""

from __future__ import annotations

import json
from email.message import EmailMessage
from email.utils import make_msgid

from sqlmodel import Session, select

from store.states import RecipientState
from store.tables import OutboxMessage


def new_message_id(domain: str) -> str:
    return make_msgid(domain=domain.rpartition("@")[2] or domain)


def enqueue(
    session: Session,
    *,
    desk: str,
    idempotency_key: str,
    kind: str,
    message: EmailMessage,
    envelope_from: str,
    recipients: list[str],
    inbound_id: int | None = None,
) -> tuple[OutboxMessage, bool]:
    """Add ``message`` unless the key is already there; returns (row, created).

    ``message`` must already carry its Message-ID: it is kept across every retry.
    """
    existing = session.exec(select(OutboxMessage).where(OutboxMessage.idempotency_key == idempotency_key)).first()
    if existing is not None:
        return existing, False
    if not message["Message-ID"]:
        raise ValueError("an outbox message needs its Message-ID before it is enqueued")
    row = OutboxMessage(
        desk=desk,
        idempotency_key=idempotency_key,
        kind=kind,
        message_id=message["Message-ID"],
        envelope_from=envelope_from,
        recipients_json=json.dumps(recipients, ensure_ascii=False),
        raw=message.as_bytes(),
        inbound_id=inbound_id,
        recipient_states_json=json.dumps(dict.fromkeys(recipients, RecipientState.PENDING), ensure_ascii=False),
    )
    session.add(row)
    session.flush()
    return row, True
