"""The guarantor's Ed25519 signing key and the public keys desks trust.

The private key is a PKCS#8 PEM file created with mode 0600 (never readable by others, not even
for a moment). Its public key goes to ``<trust directory>/<key id>.pem``; desks trust every key
in that folder, so during a rotation the old and the new key are both trusted until the old
certificates have been checked.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from guarantor.errors import GuarantorError
from store.files import write_private
from rules.domain import Certificate
from verifier.certificate_signature import SignedCertificate, canonical_json, key_id

log = logging.getLogger(__name__)

# A PEM public key is a few hundred bytes; anything much larger in the trust folder is not one.
_MAX_PEM_BYTES = 16 * 1024


def create_signing_key(path: Path) -> Ed25519PrivateKey:
    """A fresh key written to ``path`` (mode 0600); GuarantorError if the file exists."""
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    if not path.parent.exists():
        # A folder we create for the key is private too; an existing one is the admin's choice.
        path.parent.mkdir(parents=True, mode=0o700)
    try:
        write_private(path, pem, replace=False)
    except FileExistsError:
        raise GuarantorError(f"{path}: 署名鍵はすでにあります(何も変更していません)") from None
    log.info("created the guarantor's signing key %s at %s", key_id(private_key.public_key()), path)
    return private_key


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise GuarantorError(f"{path}: 署名鍵がありません。`keydesk guarantor init` で作成してください") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise GuarantorError(
            f"{path}: 署名鍵がほかのユーザーから読める状態です。先に `chmod 600 {path}` を実行してください"
        )
    try:
        private_key = load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise GuarantorError(f"{path}: 暗号化されていない PEM 形式の秘密鍵ではありません") from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise GuarantorError(f"{path}: 署名鍵は Ed25519 の鍵である必要があります")
    return private_key


def retire_signing_key(path: Path) -> Path:
    """Move the current key aside as ``<name>.<key id>.retired`` (still mode 0600) before a rotation."""
    old = load_signing_key(path)
    retired = path.with_name(f"{path.name}.{key_id(old.public_key())}.retired")
    if retired.exists():
        raise GuarantorError(f"{retired}: すでに存在します(何も変更していません)")
    os.replace(path, retired)
    return retired


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def publish_public_key(public_key: Ed25519PublicKey, trust_directory: Path) -> Path:
    """Write ``<trust directory>/<key id>.pem`` (world-readable: it is public). Idempotent."""
    target = trust_directory / f"{key_id(public_key)}.pem"
    pem = public_key_pem(public_key)
    if target.is_file() and target.read_bytes() == pem:
        return target
    write_private(target, pem, replace=True, mode=0o644)
    return target


def load_trusted_keys(directory: Path) -> dict[str, Ed25519PublicKey]:
    """Every Ed25519 public key in ``directory``, by key id.

    The id is computed from the key itself, never taken from the file name, so a renamed or
    copied file cannot make a key pass for another. Files that are not Ed25519 public keys are
    skipped with a warning: one stray file must not stop the desk from checking signatures.
    """
    trusted: dict[str, Ed25519PublicKey] = {}
    if not directory.is_dir():
        return trusted
    for path in sorted(directory.glob("*.pem")):
        try:
            if path.stat().st_size > _MAX_PEM_BYTES:
                raise ValueError("too large for a public key")
            public_key = load_pem_public_key(path.read_bytes())
        except (OSError, ValueError, UnsupportedAlgorithm) as exc:
            log.warning("trust folder: skipping %s: %s", path, exc)
            continue
        if not isinstance(public_key, Ed25519PublicKey):
            log.warning("trust folder: skipping %s: not an Ed25519 key", path)
            continue
        identifier = key_id(public_key)
        if path.stem != identifier:
            log.warning("trust folder: %s holds key %s (the file name is not its key id)", path, identifier)
        trusted[identifier] = public_key
    return trusted


def sign_certificate(certificate: Certificate, private_key: Ed25519PrivateKey) -> SignedCertificate:
    payload = canonical_json(certificate)
    return SignedCertificate(
        payload=payload, signature=private_key.sign(payload), key_id=key_id(private_key.public_key())
    )
