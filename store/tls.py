"""The one way keydesk builds a client TLS context (IMAP and SMTP alike).

Certificates are always verified against the system's CAs; a deployment whose mail server has a
certificate from a private CA names a PEM bundle (``ca_file``) trusted in addition. It lives in
``store/`` because both ``intake`` and ``mailer`` may import it and ``rules/`` must stay pure.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from foundation.config import ConfigError


def client_ssl_context(ca_file: Path | None, what: str = "ca_file") -> ssl.SSLContext:
    """A verifying client context; ``ca_file`` adds CAs. ``what`` names the key in errors.

    A file that cannot be read or holds no certificate is a ConfigError (one line naming the key),
    so the admin learns it at connection time instead of from a traceback.
    """
    context = ssl.create_default_context()
    if ca_file is None:
        return context
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except FileNotFoundError:
        raise ConfigError([f"{what}: {ca_file} does not exist"]) from None
    except PermissionError:
        raise ConfigError([f"{what}: {ca_file} is not readable by keydesk"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{what}: {ca_file} is a folder, not a PEM file of CA certificates"]) from None
    except ssl.SSLError:
        raise ConfigError(
            [(f"{what}: {ca_file} holds no PEM certificate (a bundle of CA certificates in PEM format is needed)")]
        ) from None
    except OSError as exc:
        raise ConfigError([f"{what}: cannot read {ca_file}: {exc.strerror or exc}"]) from None
    return context
