"""Which exceptions are the user's to fix, how they are worded, and the exit codes."""

from __future__ import annotations

from keydesk.database import SchemaOutdated
from rules.config_base import ConfigError
from store.key_vault import KeyVaultError

EXIT_FAILURE = 1  # the command ran into a problem the user can fix
EXIT_CONFIG = 2  # configuration is invalid
EXIT_USAGE = 2  # wrong arguments (click's convention)
EXIT_SCHEMA = 3  # the database needs `keydesk db upgrade`


class UserError(Exception):
    """A problem worded for the person at the terminal (no traceback)."""

    # Exception types whose message is already fit for the user.
    handled: tuple[type[BaseException], ...] = ()


UserError.handled = (UserError, ConfigError, SchemaOutdated, KeyVaultError, FileNotFoundError, PermissionError)


def message_for(exc: BaseException) -> str:
    if isinstance(exc, ConfigError):
        return "\n".join(exc.lines)
    if isinstance(exc, (FileNotFoundError, PermissionError)) and exc.filename:
        return f"keydesk: {exc.filename}: {exc.strerror}"
    return f"keydesk: {exc}"


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, SchemaOutdated):
        return EXIT_SCHEMA
    return EXIT_FAILURE
