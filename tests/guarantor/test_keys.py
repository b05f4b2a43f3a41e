from __future__ import annotations

import logging
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from guarantor.errors import GuarantorError
from guarantor.keys import (
    create_signing_key,
    load_signing_key,
    load_trusted_keys,
    publish_public_key,
    retire_signing_key,
)
from verifier.certificate_signature import key_id


def test_signing_key_is_created_private_and_loads_back(tmp_path):
    path = tmp_path / "var" / "guarantor" / "signing-key.pem"
    created = create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = load_signing_key(path)
    assert key_id(loaded.public_key()) == key_id(created.public_key())


def test_an_existing_key_is_never_overwritten(tmp_path):
    path = tmp_path / "key.pem"
    create_signing_key(path)
    before = path.read_bytes()
    with pytest.raises(GuarantorError, match="すでに"):
        create_signing_key(path)
    assert path.read_bytes() == before


def test_a_missing_key_points_at_init(tmp_path):
    with pytest.raises(GuarantorError, match="keydesk guarantor init"):
        load_signing_key(tmp_path / "nope.pem")


def test_a_key_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "key.pem"
    create_signing_key(path)
    path.chmod(0o644)
    with pytest.raises(GuarantorError, match="chmod 600"):
        load_signing_key(path)


def test_garbage_is_not_a_key(tmp_path):
    path = tmp_path / "key.pem"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    path.chmod(0o600)
    with pytest.raises(GuarantorError, match="PEM"):
        load_signing_key(path)


def test_public_keys_are_trusted_by_key_id_through_a_rotation(tmp_path):
    path = tmp_path / "key.pem"
    trust = tmp_path / "trust"
    first = create_signing_key(path)
    publish_public_key(first.public_key(), trust)
    retired = retire_signing_key(path)
    assert retired.name == f"key.pem.{key_id(first.public_key())}.retired"
    assert stat.S_IMODE(retired.stat().st_mode) == 0o600
    second = create_signing_key(path)
    published = publish_public_key(second.public_key(), trust)
    assert published.name == f"{key_id(second.public_key())}.pem"
    assert publish_public_key(second.public_key(), trust) == published  # idempotent
    trusted = load_trusted_keys(trust)
    assert set(trusted) == {key_id(first.public_key()), key_id(second.public_key())}


def test_trust_ids_come_from_the_key_not_the_file_name(tmp_path, caplog):
    trust = tmp_path / "trust"
    trust.mkdir()
    key = Ed25519PrivateKey.generate().public_key()
    (trust / "0000000000000000.pem").write_bytes(key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    (trust / "junk.pem").write_text("hello")
    with caplog.at_level(logging.WARNING):
        trusted = load_trusted_keys(trust)
    assert list(trusted) == [key_id(key)]
    assert "junk.pem" in caplog.text


def test_a_missing_trust_folder_trusts_nothing(tmp_path):
    assert load_trusted_keys(tmp_path / "absent") == {}
