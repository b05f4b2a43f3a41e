"""Running the configured OAuth token command (XOAUTH2 for IMAP and SMTP alike).

The command runs without a shell, with a timeout; neither the token nor the command's output is
ever logged or put into an error message.
"""

from __future__ import annotations

import subprocess

from foundation.errors import OperationalError

TOKEN_COMMAND_TIMEOUT = 30


class TokenCommandError(OperationalError):
    """The token command could not give an access token (message names the command only)."""


def run_token_command(command: list[str], timeout: float = TOKEN_COMMAND_TIMEOUT) -> str:
    """Return the single-line access token the command printed."""
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise TokenCommandError(f"token command not found: {command[0]}") from None
    except subprocess.TimeoutExpired:
        raise TokenCommandError(f"token command {command[0]} did not finish within {timeout:.0f} s") from None
    if result.returncode != 0:
        raise TokenCommandError(f"token command {command[0]} failed with exit code {result.returncode}")
    token = result.stdout.strip()
    if not token or not all(33 <= byte < 127 for byte in token):
        raise TokenCommandError(f"token command {command[0]} did not print a single-line access token")
    return token.decode("ascii")
