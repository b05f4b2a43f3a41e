"""Throwaway TLS certificates for test servers on 127.0.0.1 / localhost, made with ``cryptography``.

``self_signed`` makes one certificate that is its own CA; ``private_ca`` makes a CA and a server
certificate it signed, as a town's private CA would, so a client can be given the CA alone
(``ca_file``) and a second CA can play the untrusted one.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    """A server's certificate and key, and the CA (file and PEM) a client must trust for it."""

    cert: Path
    key: Path
    pem: str
    ca_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.pem)


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, issuer, public_key, signing_key, *, ca: bool, server: bool):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    return builder.sign(signing_key, hashes.SHA256())


def _write(directory: Path, prefix: str, cert, key=None) -> tuple[Path, Path, str]:
    """``prefix``-cert.pem, and ``prefix``-key.pem when a key is given (a CA's key stays in memory)."""
    from cryptography.hazmat.primitives import serialization

    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_path, key_path = directory / f"{prefix}-cert.pem", directory / f"{prefix}-key.pem"
    cert_path.write_text(pem)
    if key is not None:
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert_path, key_path, pem


def self_signed(directory: Path, prefix: str = "smtp") -> TlsFiles:
    """One certificate for 127.0.0.1 / localhost that is its own CA."""
    key = _new_key()
    name = _name(f"keydesk test {prefix}")
    cert = _certificate(name, name, key.public_key(), key, ca=True, server=True)
    cert_path, key_path, pem = _write(directory, prefix, cert, key)
    return TlsFiles(cert_path, key_path, pem, cert_path)


def private_ca(directory: Path, prefix: str = "imap") -> TlsFiles:
    """A CA (``ca_file``, ``pem``) and a server certificate for 127.0.0.1 / localhost it signed."""
    ca_key, server_key = _new_key(), _new_key()
    ca_name = _name(f"keydesk test private CA ({prefix})")
    ca_cert = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True, server=False)
    server_cert = _certificate(
        _name(f"keydesk test {prefix} server"), ca_name, server_key.public_key(), ca_key, ca=False, server=True
    )
    ca_path, _unused, ca_pem = _write(directory, f"{prefix}-ca", ca_cert)
    cert_path, key_path, _pem = _write(directory, prefix, server_cert, server_key)
    return TlsFiles(cert_path, key_path, ca_pem, ca_path)
