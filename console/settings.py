"""The ``[console]`` section of keydesk.toml: where the staff console listens and how staff sign in."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, model_validator

from foundation.config import HomePath, StrictModel


class ConsoleSettings(StrictModel):
    # `keydesk run` starts the console beside the desk when true; `keydesk console` runs it alone.
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Off loopback the console speaks TLS: a certificate and its key from files.
    tls_cert_file: HomePath | None = None
    tls_key_file: HomePath | None = None
    # Addresses of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto / remote-user header
    # are believed; nobody else's.
    trusted_proxies: list[str] = Field(default_factory=list)
    # "password": staff sign in with keydesk's own accounts. "remote_user": a town's SSO proxy signs
    # them in and names the login in `remote_user_header` (only from trusted_proxies).
    auth: Literal["password", "remote_user"] = "password"
    remote_user_header: str = "X-Remote-User"
    idle_timeout_minutes: int = Field(default=30, ge=1, le=24 * 60)
    # Failed logins in a row before an account is locked, and for how long.
    lockout_failures: int = Field(default=5, ge=1)
    lockout_minutes: int = Field(default=15, ge=1)
    # The address staff open, for links in the digest, e.g. "https://keydesk.town.example/".
    public_url: str | None = None
    # The key that signs session cookies: from the environment, else this file (created when missing).
    session_secret_env: str = "KEYDESK_CONSOLE_SESSION_SECRET"
    session_secret_file: HomePath = "var/secrets/console-session.key"
    # Who may read /metrics here (served when [metrics] enabled = true): addresses or networks of the
    # Prometheus servers, as seen on the connection itself (never taken from X-Forwarded-For); an
    # admin's API token (Authorization: Bearer) may read it from anywhere. Everyone else gets 403.
    metrics_scrapers: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])

    @model_validator(mode="after")
    def _consistent(self) -> ConsoleSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.auth == "remote_user" and not self.trusted_proxies:
            raise ValueError('auth = "remote_user" needs trusted_proxies (the SSO proxy\'s addresses)')
        for entry in self.metrics_scrapers:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"metrics_scrapers: {entry!r} is not an IP address or network") from None
        if self.public_url is not None and not self.public_url.startswith(("https://", "http://")):
            raise ValueError(f"public_url must start with https:// or http://, got {self.public_url!r}")
        return self
