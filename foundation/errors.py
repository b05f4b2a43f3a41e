"""The one exception hierarchy of keydesk.

Every exception the project raises on purpose derives from :class:`KeydeskError`. Two branches:

- :class:`UserFacingError`: a problem worded for the person at the terminal or the admin reading a
  log; the CLI prints its message as one line (or several, for config errors) with its
  ``exit_code`` and no traceback. :class:`ConfigProblem` (2), :class:`UsageProblem` (2) and
  :class:`SchemaProblem` (3) fix the exit codes the README promises; anything else is 1.
- :class:`OperationalError`: something went wrong in the running system (a server, the network,
  contention). Code catches these to retry, hold or report; the CLI still prints them as one line.

The CLI translates errors once, in ``keydesk.cli.main``; nowhere else turns an exception into an
exit code.
"""

from __future__ import annotations

EXIT_FAILURE = 1  # the command ran into a problem the user can fix
EXIT_CONFIG = 2  # configuration is invalid
EXIT_USAGE = 2  # wrong arguments (click's convention)
EXIT_SCHEMA = 3  # the database needs `keydesk db upgrade`


class KeydeskError(Exception):
    """Base of every exception keydesk raises on purpose."""

    exit_code: int = EXIT_FAILURE

    def user_lines(self) -> list[str]:
        """The message as the CLI prints it: one line per problem, prefixed with ``keydesk:``."""
        return [f"keydesk: {self}"]


class UserFacingError(KeydeskError):
    """A problem the person at the terminal can fix; its message is already fit to print."""


class ConfigProblem(UserFacingError):
    """The configuration (TOML, templates, secrets named by it) is invalid."""

    exit_code = EXIT_CONFIG


class UsageProblem(UserFacingError):
    """The command was called with arguments that cannot work."""

    exit_code = EXIT_USAGE


class SchemaProblem(UserFacingError):
    """The database schema is not the one this version needs."""

    exit_code = EXIT_SCHEMA


class OperationalError(KeydeskError):
    """A failure of the running system (server, network, contention), not of the user's input."""


class ContentionError(OperationalError):
    """A transaction kept losing a race (audit chain, unique key) after every retry."""
