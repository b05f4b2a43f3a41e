"""The guarantor's section of keydesk.toml (the embedded e-Net保証 / D-Sure stand-in)."""

from __future__ import annotations

from pydantic import Field

from rules.config_base import HomePath, StrictModel


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
