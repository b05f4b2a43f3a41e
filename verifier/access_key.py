"""The 認証キー (access key) format this project defines.

A key is 16 symbols of Crockford Base32 shown in four groups of four (``7K3M-Q9TX-2HVB-R4NC``).
The first 15 symbols are random (75 bits); the 16th is a check symbol.

Why not Crockford's own mod-37 check: its check alphabet adds ``*~$=U``, which do not belong in
a key people type. Instead every symbol is read as an element of GF(32) and weighted by a
distinct power of a primitive element; the check symbol makes the weighted sum zero. Because
the field has no zero divisors and all weights differ, every single-symbol substitution and
every transposition of two adjacent symbols (the check symbol included) changes the sum, so
such a typo is caught before any look-up.
"""

from __future__ import annotations

import secrets
import unicodedata

from rules.signatures import PROJECT_KEY_ALPHABET, PROJECT_KEY_LENGTH, AccessKeyFormat

ALPHABET = PROJECT_KEY_ALPHABET
KEY_LENGTH = PROJECT_KEY_LENGTH
PROJECT_FORMAT = AccessKeyFormat()
_SEPARATORS = " -‐‑‒–—―ー−"
GROUP = 4
_VALUE = {symbol: value for value, symbol in enumerate(ALPHABET)}
# Crockford decoding is forgiving about letters people confuse with digits.
_VALUE.update({"O": 0, "I": 1, "L": 1})

# GF(2^5) with the primitive polynomial x^5 + x^2 + 1.
_POLY = 0b100101


def _gf_mul(a: int, b: int) -> int:
    product = 0
    while b:
        if b & 1:
            product ^= a
        b >>= 1
        a <<= 1
        if a & 0b100000:
            a ^= _POLY
    return product


def _gf_inverse(a: int) -> int:
    # The multiplicative group has order 31, so a^30 = a^-1.
    result = 1
    for _ in range(30):
        result = _gf_mul(result, a)
    return result


_WEIGHTS: list[int] = []
_w = 1
for _ in range(KEY_LENGTH):
    _WEIGHTS.append(_w)
    _w = _gf_mul(_w, 2)
_CHECK_WEIGHT_INVERSE = _gf_inverse(_WEIGHTS[-1])


class AccessKeyError(ValueError):
    """A string that is not a well-formed access key; ``reason`` says which way."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _weighted_sum(values: list[int]) -> int:
    total = 0
    for weight, value in zip(_WEIGHTS, values):
        total ^= _gf_mul(weight, value)
    return total


def check_symbol(body: str) -> str:
    """The check symbol for the first 15 symbols of a key (already canonical)."""
    values = [_VALUE[s] for s in body]
    if len(values) != KEY_LENGTH - 1:
        raise AccessKeyError(f"expected {KEY_LENGTH - 1} symbols, got {len(values)}")
    return ALPHABET[_gf_mul(_weighted_sum(values), _CHECK_WEIGHT_INVERSE)]


def generate(randbelow=secrets.randbelow) -> str:
    """A fresh key, formatted for display."""
    body = "".join(ALPHABET[randbelow(32)] for _ in range(KEY_LENGTH - 1))
    return format_key(body + check_symbol(body))


def canonical(text: str) -> str:
    """The 16 symbols of a key without separators, upper case; raises AccessKeyError.

    Accepts full-width characters, lower case, spaces and any dash, as people type them.
    Does not verify the check symbol: see ``parse``.
    """
    folded = unicodedata.normalize("NFKC", text).upper()
    symbols = [c for c in folded if c not in _SEPARATORS]
    if len(symbols) != KEY_LENGTH:
        raise AccessKeyError(f"an access key has {KEY_LENGTH} characters, got {len(symbols)}")
    out = []
    for c in symbols:
        if c not in _VALUE:
            raise AccessKeyError(f"{c!r} is not a character used in access keys")
        out.append(ALPHABET[_VALUE[c]])
    return "".join(out)


def is_valid(text: str) -> bool:
    try:
        parse(text)
    except AccessKeyError:
        return False
    return True


def parse(text: str) -> str:
    """The canonical 16 symbols of a well-formed key whose check symbol is right."""
    key = canonical(text)
    if _weighted_sum([_VALUE[c] for c in key]) != 0:
        raise AccessKeyError("the check character does not match: the key was probably mistyped")
    return key


def read(text: str, key_format: AccessKeyFormat = PROJECT_FORMAT) -> tuple[str, bool]:
    """(the canonical key, whether its check passes) in the configured format; raises AccessKeyError
    when the text does not fit the format at all. With ``check = "none"`` every fitting key passes."""
    if key_format.check == "keydesk":
        key = canonical(text)
        return key, _weighted_sum([_VALUE[c] for c in key]) == 0
    folded = unicodedata.normalize("NFKC", text).upper()
    symbols = [c for c in folded if c not in _SEPARATORS]
    if len(symbols) != key_format.length:
        raise AccessKeyError(f"an access key has {key_format.length} characters, got {len(symbols)}")
    for c in symbols:
        if c not in key_format.alphabet:
            raise AccessKeyError(f"{c!r} is not a character used in access keys")
    return "".join(symbols), True


def display(key: str, key_format: AccessKeyFormat = PROJECT_FORMAT) -> str:
    """A canonical key in the configured grouping (``group_size`` 0: as one run of symbols)."""
    size = key_format.group_size
    return "-".join(key[i : i + size] for i in range(0, len(key), size)) if size else key


def format_key(key: str) -> str:
    """``7K3MQ9TX2HVBR4NC`` → ``7K3M-Q9TX-2HVB-R4NC``."""
    key = canonical(key)
    return "-".join(key[i : i + GROUP] for i in range(0, KEY_LENGTH, GROUP))


def mask(text: str, key_format: AccessKeyFormat | None = None) -> str:
    """The form shown everywhere but an explicit staff reveal: ``****-****-****-R4NC``.

    Only the last 4 symbols: enough to tell two keys apart, too few to help guess one.

    Anything that is not a well-formed key is masked whole, so a garbled value never leaks.
    """
    try:
        key = canonical(text)
    except AccessKeyError:
        key = _other_format_key(text, key_format)
        if key is None:
            return "****-****-****-****"
    return f"****-****-****-{key[-GROUP:]}"


def _other_format_key(text: str, key_format: AccessKeyFormat | None) -> str | None:
    """A key that fits a configured format other than this project's, long enough to show its ends."""
    if key_format is None or key_format.check == "keydesk" or key_format.length < 12:
        return None
    try:
        return read(text, key_format)[0]
    except AccessKeyError:
        return None
