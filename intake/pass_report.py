"""What one intake pass (or one standby round) did, for the CLI, the daemon's log and `keydesk status`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TakenMail:
    inbound_id: int
    uid: int
    sender: str | None
    subject: str | None
    state: str
    verdict: str | None
    findings: tuple[str, ...]

    def to_json(self) -> dict:
        return {
            "inbound_id": self.inbound_id,
            "uid": self.uid,
            "sender": self.sender,
            "subject": self.subject,
            "state": self.state,
            "verdict": self.verdict,
            "findings": list(self.findings),
        }


@dataclass
class PassReport:
    uidvalidity: int = 0
    recorded: int = 0  # new rows
    recognised: int = 0  # mails already known by their hash (moved, re-delivered, new UIDVALIDITY)
    taken: list[TakenMail] = field(default_factory=list)  # processed or quarantined in this pass
    # Mails found again by their hash (a second copy, a move, a new UIDVALIDITY): touched, not processed.
    recognised_mails: list[TakenMail] = field(default_factory=list)
    failures: int = 0  # processing attempts that raised
    actions: int = 0  # mails moved or flagged
    more: bool = False  # new mails beyond this pass's window (``mails_per_pass``) are waiting
