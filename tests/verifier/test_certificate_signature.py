"""The signed certificate's wire format: the canonical bytes the guarantor signs, the stored JSON,
the key names in config/trust, and the desk's refusal of anything malformed or forged."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.verify import ADVANCE_CERT, SIGNING_KEY, TRUSTED, sign
from verifier.certificate_signature import (
    SignatureStatus,
    SignedCertificate,
    canonical_json,
    certificate_from_json,
    check_signature,
    key_id,
)

# Known answer: every issued signature is over exactly these bytes, so any drift (key order, white
# space, escaping, the format field, date form) breaks every certificate already issued.
ADVANCE_CANONICAL = (
    '{"completion_date":"2027-03-15","contract_amount":12345000,"contract_date":"2026-04-10",'
    '"contract_no":"R8-001","contractor_name":"株式会社美郷建設","desk":"misato","fee":30000,"format":1,'
    '"guarantee_amount":4938000,"guarantee_no":"26-000123-4","guarantee_type":"前払金保証",'
    '"guarantor":"西日本建設業保証株式会社","issued_on":"2026-04-12","obligee":"美郷町長",'
    '"period_end":"2027-03-15","period_start":"2026-04-10","work_category":"工事",'
    '"work_name":"町道美郷線 道路改良工事"}'
).encode()


def payload_with(**changes: object) -> bytes:
    data = json.loads(ADVANCE_CANONICAL)
    data.update(changes)
    return json.dumps(data, ensure_ascii=False).encode("utf-8")


def test_the_canonical_bytes_of_a_certificate_are_fixed() -> None:
    assert canonical_json(ADVANCE_CERT) == ADVANCE_CANONICAL


def test_canonical_bytes_read_back_to_the_same_certificate() -> None:
    assert certificate_from_json(ADVANCE_CANONICAL) == ADVANCE_CERT
    # Key order and white space are the signer's business, not the reader's.
    assert certificate_from_json(json.dumps(json.loads(ADVANCE_CANONICAL), indent=2).encode()) == ADVANCE_CERT


def test_a_value_json_cannot_carry_is_refused_naming_its_type() -> None:
    with pytest.raises(TypeError, match=r"^not serialisable: Decimal$"):
        canonical_json(replace(ADVANCE_CERT, fee=Decimal("30000")))


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (payload_with(format=2), "^unknown certificate format$"),
        (payload_with(contract_amount="12345000"), "^contract_amount must be an integer$"),
        (payload_with(fee=True), "^fee must be an integer$"),
        (payload_with(guarantor=7), "^guarantor must be a string$"),
        (payload_with(guarantee_type="保証"), "保証"),
        (payload_with(period_end="2027/03/15"), "2027/03/15"),
        (ADVANCE_CANONICAL.replace(b'"format":1,', b""), "^malformed certificate: 'format'$"),
        (ADVANCE_CANONICAL.replace(b'"fee":30000,', b""), "^malformed certificate: 'fee'$"),
        (ADVANCE_CANONICAL[:-1], "^malformed certificate: "),
        ("前払金".encode("cp932"), "^malformed certificate: 'utf-8' codec"),
    ],
)
def test_a_malformed_payload_is_refused_saying_what_is_wrong(payload: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        certificate_from_json(payload)


def test_the_stored_form_keeps_the_payload_readable_and_round_trips() -> None:
    signed = sign(ADVANCE_CERT)
    stored = signed.to_json()
    assert "美郷町長" in stored  # staff reading a stored row see Japanese, not \\u escapes
    assert json.loads(stored) == {
        "payload": ADVANCE_CANONICAL.decode("utf-8"),
        "signature": base64.b64encode(signed.signature).decode("ascii"),
        "key_id": key_id(SIGNING_KEY.public_key()),
    }
    restored = SignedCertificate.from_json(stored)
    assert restored == signed
    assert restored.certificate() == ADVANCE_CERT
    assert check_signature(restored, TRUSTED) is SignatureStatus.VALID


def test_a_key_is_named_by_16_hex_digits_that_never_change() -> None:
    # Pinned: config/trust/<key id>.pem files are named by this; a change orphans every trusted key.
    public_key = Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
    assert key_id(public_key) == "56475aa75463474c"
    assert key_id(SIGNING_KEY.public_key()) != key_id(public_key)


def test_only_a_trusted_key_over_the_very_bytes_is_valid() -> None:
    signed = sign(ADVANCE_CERT)
    assert check_signature(signed, TRUSTED) is SignatureStatus.VALID
    assert check_signature(signed, {}) is SignatureStatus.UNKNOWN_KEY
    other = Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key()
    assert check_signature(signed, {signed.key_id: other}) is SignatureStatus.INVALID
    forged = replace(signed, payload=canonical_json(replace(ADVANCE_CERT, guarantee_amount=99_999_999)))
    assert check_signature(forged, TRUSTED) is SignatureStatus.INVALID
