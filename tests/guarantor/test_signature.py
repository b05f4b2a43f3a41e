"""Certificates are signed over canonical JSON; any changed byte breaks the signature."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings as hypothesis_settings, strategies as st

from guarantor.keys import sign_certificate
from verifier.certificate_signature import (
    SignatureStatus,
    SignedCertificate,
    canonical_json,
    check_signature,
    key_id,
)


def _trusted(signing_key):
    public_key = signing_key.public_key()
    return {key_id(public_key): public_key}


def test_a_signed_certificate_verifies_and_round_trips(signing_key, certificate):
    signed = sign_certificate(certificate, signing_key)
    assert signed.payload == canonical_json(certificate)
    restored = SignedCertificate.from_json(signed.to_json())
    assert check_signature(restored, _trusted(signing_key)) is SignatureStatus.VALID
    assert restored.certificate() == certificate


def test_an_unknown_key_is_not_trusted(signing_key, certificate):
    signed = sign_certificate(certificate, signing_key)
    assert check_signature(signed, {}) is SignatureStatus.UNKNOWN_KEY


def test_a_changed_field_breaks_the_signature(signing_key, certificate):
    signed = sign_certificate(certificate, signing_key)
    forged = replace(signed, payload=canonical_json(replace(certificate, guarantee_amount=99_999_999)))
    assert check_signature(forged, _trusted(signing_key)) is SignatureStatus.INVALID


@hypothesis_settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_changed_byte_breaks_the_signature(signing_key, certificate, data):
    signed = sign_certificate(certificate, signing_key)
    blob = signed.payload + signed.signature
    position = data.draw(st.integers(0, len(blob) - 1), label="position")
    flip = data.draw(st.integers(1, 255), label="xor")
    changed = bytearray(blob)
    changed[position] ^= flip
    payload_size = len(signed.payload)
    forged = SignedCertificate(bytes(changed[:payload_size]), bytes(changed[payload_size:]), signed.key_id)
    assert check_signature(forged, _trusted(signing_key)) is SignatureStatus.INVALID
