"""The 保証契約番号 (guarantee number) format this project's guarantor issues.

``26-000123-4``: two digits of the western year the guarantee was concluded, a six-digit serial,
and a Luhn check digit over the eight digits before it. The desk reads numbers with the pattern
in ``config/rules.toml``, so a real guarantor's format needs no code change; this module is what
the embedded guarantor issues and what the default pattern matches.
"""

from __future__ import annotations

import re
import unicodedata

PATTERN = re.compile(r"(?<!\d)(\d{2})-(\d{6})-(\d)(?!\d)")


def luhn_digit(digits: str) -> int:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return (10 - total % 10) % 10


def make(year: int, serial: int) -> str:
    if not 0 <= serial <= 999_999:
        raise ValueError(f"serial out of range: {serial}")
    body = f"{year % 100:02d}{serial:06d}"
    return f"{body[:2]}-{body[2:]}-{luhn_digit(body)}"


def normalise(text: str) -> str:
    """NFKC and the usual dash look-alikes folded to ``-``."""
    folded = unicodedata.normalize("NFKC", text).strip()
    return re.sub(r"[‐‑‒–—―ー−]", "-", folded)


def is_well_formed(text: str) -> bool:
    match = PATTERN.fullmatch(normalise(text))
    if not match:
        return False
    body = match.group(1) + match.group(2)
    return luhn_digit(body) == int(match.group(3))
