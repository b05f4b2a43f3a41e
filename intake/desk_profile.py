"""What the intake, the replies and the console know about one desk (keydesk.toml's [desks.<id>])."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeskProfile:
    """What the pipeline needs to know about its desk (from keydesk.toml's [desks.<id>])."""

    desk_id: str
    name: str
    address: str
    contact: tuple[str, ...]
    authserv_id: str | None
    reply_charset: str
    receipt_prefix: str
    timezone: str
    reply_to: str = "submissions"  # who gets a reply: authenticated | submissions | all
