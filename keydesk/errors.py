"""Kept for branches written before ``foundation.errors``: ``UserError`` is ``UserFacingError``.

New code raises the classes of :mod:`foundation.errors` directly; the CLI translates every
:class:`~foundation.errors.KeydeskError` once, in ``keydesk.cli.main``.
"""

from __future__ import annotations

from foundation.errors import UserFacingError

UserError = UserFacingError
