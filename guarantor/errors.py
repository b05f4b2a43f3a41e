"""The guarantor's one error type: a problem worded for the person running the command."""

from __future__ import annotations

from foundation.errors import UserFacingError


class GuarantorError(UserFacingError):
    """Something the admin can fix (a missing signing key, an unreadable CSV, an unknown number).

    The CLI shows the message as one line; nothing else in it is secret or a traceback.
    """
