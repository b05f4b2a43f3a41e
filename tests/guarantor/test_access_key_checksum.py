"""The 認証キー's check symbol catches every single substitution and adjacent transposition."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from verifier import access_key

_BODIES = st.text(alphabet=access_key.ALPHABET, min_size=15, max_size=15)


def _key(body: str) -> str:
    return body + access_key.check_symbol(body)


@hypothesis_settings(max_examples=100, deadline=None)
@given(body=_BODIES)
def test_every_single_substitution_is_caught(body):
    key = _key(body)
    assert access_key.parse(key) == key
    for position in range(access_key.KEY_LENGTH):
        for symbol in access_key.ALPHABET:
            if symbol == key[position]:
                continue
            typo = key[:position] + symbol + key[position + 1:]
            with pytest.raises(access_key.AccessKeyError):
                access_key.parse(typo)


@hypothesis_settings(max_examples=300, deadline=None)
@given(body=_BODIES)
def test_every_adjacent_transposition_is_caught(body):
    key = _key(body)
    for position in range(access_key.KEY_LENGTH - 1):
        a, b = key[position], key[position + 1]
        if a == b:
            continue
        typo = key[:position] + b + a + key[position + 2:]
        with pytest.raises(access_key.AccessKeyError):
            access_key.parse(typo)


@hypothesis_settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_generated_keys_parse_and_mask(seed):
    rng = random.Random(seed)
    key = access_key.generate(randbelow=rng.randrange)
    assert len(key) == 19 and key.count("-") == 3
    canonical = access_key.parse(key)
    assert access_key.format_key(canonical) == key
    masked = access_key.mask(key)
    assert masked == f"****-****-****-{key[-4:]}"
    # People type keys in full-width and lower case; they still parse.
    wide = "".join(chr(ord(c) + 0xFEE0) if c != "-" else "ー" for c in key.lower())
    assert access_key.parse(wide) == canonical
