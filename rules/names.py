"""Comparing names the way a clerk reads them: spacing, full-width letters, legal forms, honorifics,
and the obligee written with or without its prefecture and the mayor's name.

Pure string functions shared by the rules (obligee, contractor, work name) and the verifier
(notice against certificate).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Callable, Iterable

# Legal-form markers that registers and certificates write differently for the same firm
# (株式会社美郷建設 / ㈱美郷建設 / 美郷建設(株)). ㈱ becomes (株) under NFKC.
_LEGAL_FORMS = re.compile(r"株式会社|有限会社|合同会社|\(株\)|\(有\)|\(同\)")
# Honorifics a document may put after the obligee (美郷町長 殿).
_HONORIFICS = re.compile(r"(殿|様|御中)$")
# A prefecture written in front of the town (島根県美郷町長).
_PREFECTURE = re.compile(r"^(北海道|東京都|京都府|大阪府|[^都道府県]{2,3}県)")
# What may follow 「…町長」: the mayor's name (山田太郎), in kanji or kana, nothing else.
_PERSON = re.compile(r"^[\u3040-\u30ff\u3400-\u9fff々〆ヵヶ・]{1,12}$")


def plain_key(text: str) -> str:
    """NFKC without any white space: PDFs and spreadsheets space words differently."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def obligee_key(text: str) -> str:
    return _HONORIFICS.sub("", plain_key(text))


def company_key(text: str) -> str:
    """A firm's name without spaces and legal-form markers (株式会社 / (株) / ㈱)."""
    return _LEGAL_FORMS.sub("", plain_key(text))


def names_match_any(name: str, candidates: Iterable[str], key: Callable[[str], str]) -> bool:
    wanted = key(name)
    return bool(wanted) and any(key(candidate) == wanted for candidate in candidates)


def split_prefecture(text: str) -> tuple[str, str]:
    """(prefecture or "", the rest) of an NFKC key: 島根県美郷町長 → (島根県, 美郷町長)."""
    match = _PREFECTURE.match(text)
    if match is None:
        return "", text
    return match.group(1), text[match.end():]


def obligee_matches(obligee: str, names: Iterable[str], prefecture: str = "") -> bool:
    """Is the certificate's obligee this town?

    Accepted: one of ``names`` (美郷町長, 美郷町), with or without the prefecture in front, with or
    without the mayor's name after a title ending in 長 (美郷町長 山田太郎), with or without 殿/様.
    Refused: another prefecture than ``prefecture`` (when it is set), anything else after the name.
    """
    written_prefecture, rest = split_prefecture(obligee_key(obligee))
    if not rest or (prefecture and written_prefecture and written_prefecture != plain_key(prefecture)):
        return False
    # Longest first, so 美郷町長山田太郎 is read as 美郷町長 + 山田太郎, not 美郷町 + 長山田太郎.
    for name in sorted((split_prefecture(obligee_key(n))[1] for n in names), key=len, reverse=True):
        if not name or not rest.startswith(name):
            continue
        remainder = rest[len(name):]
        if not remainder or (name.endswith("長") and _PERSON.match(remainder)):
            return True
    return False
