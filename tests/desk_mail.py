"""Mail a contractor sends, and the desk's pipeline taking it in (without IMAP): shared by the
pipeline tests and the replay tests of `keydesk rules check`."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from email.message import EmailMessage

from sqlmodel import Session

from intake.intake_service import Outcome
from keydesk.composition import build_pipeline
from keydesk.runtime import Runtime
from store.tables import InboundMessage

NOW = datetime(2026, 11, 25, 1, 30, tzinfo=timezone.utc)  # 10:30 in Tokyo
SENDER = "info@misato-kensetsu.example"
AUTHSERV_ID = "mx.town.misato.example"  # the default config's authserv_id


def mail(attachments: list[tuple[str, bytes]], *, sender: str = SENDER, subject: str = "【電子保証】認証キー等の提出",
         headers: dict[str, str] | None = None, body: str = "美郷町 契約係 御中\n\n認証キー等のお知らせを提出します。\n",
         authenticated: bool = True) -> bytes:
    """``authenticated``: the header our receiving server adds when the sender's domain passed DMARC."""
    message = EmailMessage()
    if authenticated:
        domain = sender.rpartition("@")[2]
        message["Authentication-Results"] = f"{AUTHSERV_ID}; dmarc=pass (p=none) header.from={domain}"
    message["From"] = f"美郷建設 工務部 <{sender}>"
    message["To"] = "keiyaku@town.misato.example"
    message["Subject"] = subject
    message["Message-ID"] = f"<{hashlib.sha1(repr((attachments, subject, body)).encode()).hexdigest()}@misato-kensetsu.example>"
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    for name, content in attachments:
        message.add_attachment(content, maintype="application", subtype="pdf", filename=name)
    return message.as_bytes()


def take(runtime: Runtime, raw: bytes, uid: int) -> tuple[InboundMessage, Outcome]:
    pipeline = build_pipeline(runtime, "misato", clock=lambda: NOW)
    stored = pipeline.store.put(raw)  # as the poller stores it: a held look-up reads the mail again
    with Session(runtime.engine) as session:
        row = InboundMessage(desk="misato", account="keiyaku", mailbox="INBOX", uidvalidity=1, uid=uid,
                             sha256=hashlib.sha256(raw).hexdigest(), size=len(raw), received_at=NOW,
                             raw_path=stored.relative_path)
        session.add(row)
        session.flush()
        outcome = pipeline(session, row, raw)
        session.commit()
        session.refresh(row)
        return row, outcome


def use_lookup(config, lines: str) -> None:
    """Replace the default ``[desks.misato.lookup]`` (mode = "embedded") with ``lines``."""
    path = config / "keydesk.toml"
    text = path.read_text(encoding="utf-8")
    default = '[desks.misato.lookup]\nmode = "embedded"\n'
    assert default in text, "the default config has no [desks.misato.lookup] table"
    path.write_text(text.replace(default, f"[desks.misato.lookup]\n{lines.strip()}\n"), encoding="utf-8")
