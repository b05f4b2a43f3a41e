"""`keydesk verify PATH`: a key notice PDF or a whole mail (.eml) on disk, read into what the
verifier judges, with the intake's own limits and walk (nothing is recorded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from foundation.errors import UserFacingError
from intake.mime import MailDocument, MailLimits, WalkedMail, is_pdf, walk_headers
from intake.settings import Limits
from intake.verify_inputs import (
    PdfReader,
    input_document,
    key_patterns,
    preview_reply,
    too_large_context,
    verify_inputs,
)
from intake.walk_worker import walk_bounded
from rules.signatures import Patterns
from verifier.verify import InputDocument, MailContext, MailVerdict

_HEADER_READ_BYTES = 256 * 1024

# The documents, the mail's context, and (raw headers or mail, walked mail); None for a bare PDF.
FileInputs = tuple[list[InputDocument], MailContext, tuple[bytes, WalkedMail] | None]


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The file's bytes, refused (worded for staff) when it is larger than ``limit``."""
    size = path.stat().st_size
    if size > limit:
        raise UserFacingError(f"{path}: {what}が大きすぎます({size} バイト、上限 {limit} バイト)")
    return path.read_bytes()


def file_inputs(
    path: Path, *, desk_id: str, limits: Limits, authserv_id: str, patterns: Patterns, read_pdf: PdfReader
) -> FileInputs:
    """What the verifier needs for ``path`` (.pdf or .eml), read as the intake would read it."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        data = read_bounded(path, limits.mail_max_bytes, "ファイル")
        document = MailDocument(
            display_name=path.name,
            content=data,
            sha256="",
            declared_type="application/pdf",
            is_pdf=is_pdf(data),
            path=(path.name,),
        )
        return [input_document(document, read_pdf)], MailContext(desk=desk_id), None
    if suffix == ".eml":
        if path.stat().st_size > limits.mail_max_bytes:
            with path.open("rb") as handle:
                head = handle.read(_HEADER_READ_BYTES)
            walked = walk_headers(head, authserv_id=authserv_id)
            if walked.automatic:  # automatic mail is recognised from its headers, whatever its size
                return (*verify_inputs(walked, desk_id, read_pdf), (head, walked))
            return [], too_large_context(desk_id, limits.mail_max_bytes), (head, walked)
        raw = path.read_bytes()
        walked = walk_headers(raw, authserv_id=authserv_id)
        if not walked.automatic:
            walked = walk_bounded(
                raw,
                authserv_id=authserv_id,
                limits=MailLimits.from_settings(limits),
                key_patterns=key_patterns(patterns),
            )
        return (*verify_inputs(walked, desk_id, read_pdf), (raw, walked))
    raise UserFacingError(f"{path}: .pdf または .eml のファイルを指定してください")


def reply_preview(
    mail: tuple[bytes, WalkedMail] | None, result: MailVerdict, *, desk_address: str, policy: str
) -> dict[str, Any]:
    """`keydesk verify`'s ``"reply"`` object: whether the desk would answer, to whom, and why (rate limits aside)."""
    if mail is None:
        return {"send": False, "to": None, "reason": "a PDF file alone has no sender to answer"}
    raw, walked = mail
    return preview_reply(raw, walked, result, desk_address=desk_address, policy=policy).to_json()
