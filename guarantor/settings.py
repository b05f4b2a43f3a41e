"""The guarantor's section of keydesk.toml (the embedded e-Net保証 / D-Sure stand-in)."""

from __future__ import annotations

from pydantic import Field

from rules.config_base import HomePath, StrictModel


class GuarantorServiceSettings(StrictModel):
    """``[guarantor.service]``: the look-up service over HTTP (`keydesk guarantor serve`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=0, le=65535)
    # TLS from these files; without them plain HTTP is allowed on loopback only.
    tls_cert_file: HomePath | None = None
    tls_key_file: HomePath | None = None
    # Look-ups per minute and token (API) or per client address (pages); more get 429 + Retry-After.
    rate_per_minute: int = Field(default=60, ge=1)
    # Request bodies larger than this get 413.
    max_body_bytes: int = Field(default=4096, ge=256)
    # `keydesk run` serves it beside the desk (one machine playing both organisations).
    start_with_run: bool = False


class GuarantorSettings(StrictModel):
    name: str = "西日本建設業保証株式会社"
    # The Ed25519 signing key (PEM, mode 0600), created by `keydesk guarantor init`.
    signing_key: HomePath = "var/guarantor/signing-key.pem"
    # Where desks find the public keys they trust, one file per key id.
    trust_directory: HomePath = "config/trust"
    # Where `keydesk guarantor issue` writes PDFs unless --out is given.
    output_directory: HomePath = "var/guarantor/documents"
    portal_url: str = "https://portal.guarantor.example/"
    lookup_url: str = "https://lookup.guarantor.example/"
    notice_sender: str = "e-net@guarantor.example"
    # Attach the fee receipt (and fee statement) to the registration notice.
    attach_fee_documents: bool = True
    # Brute-force guard of the look-up service.
    lookup_max_failures: int = Field(default=5, ge=1)
    lookup_window_minutes: int = Field(default=15, ge=1)
    lookup_lockout_minutes: int = Field(default=15, ge=1)
    # Wrong keys from one requester (any numbers) within the window before all its look-ups are refused.
    lookup_max_failures_per_requester: int = Field(default=20, ge=1)
    service: GuarantorServiceSettings = GuarantorServiceSettings()
