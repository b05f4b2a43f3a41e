"""How documents are recognised: the ``[documents]`` section of config/rules.toml.

The real e-Net保証 layout is not public, so what identifies each kind of document — title phrases,
marker phrases, the labels printed next to fields, the patterns of 保証契約番号 and 認証キー — is
configuration an admin adapts to the PDFs the desk actually receives. Every key is required: the
TOML carries the values, the code carries none, so what the admin reads is what runs.

Phrases are compared after NFKC and with all whitespace removed (PDF text extraction puts spaces
and line breaks inside words); patterns run on NFKC text whose dashes are folded to ``-``.
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from rules.config_base import StrictModel


class DocumentKind(StrEnum):
    """What an attachment is. The first six are configured; the last four are derived."""

    KEY_NOTICE = "key_notice"  # 電子証書閲覧用「認証キー」等のお知らせ: the one the desk needs
    CERTIFICATE_VIEW = "certificate_view"  # the STEP3 screen, printed or saved: not a submission
    FEE_RECEIPT = "fee_receipt"  # 保証料領収書
    FEE_STATEMENT = "fee_statement"  # 保証料計算書
    ADVANCE_CLAIM = "advance_claim"  # 前払金請求書
    INSURER_BOND = "insurer_bond"  # 履行保証保険, 公共工事履行保証証券: another system
    NO_TEXT = "no_text"  # an image-only scan
    ENCRYPTED = "encrypted"
    BROKEN = "broken"
    OTHER = "other"


CONFIGURED_KINDS = (
    DocumentKind.KEY_NOTICE, DocumentKind.CERTIFICATE_VIEW, DocumentKind.FEE_RECEIPT,
    DocumentKind.FEE_STATEMENT, DocumentKind.ADVANCE_CLAIM, DocumentKind.INSURER_BOND,
)


def _compile(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"is not a valid regular expression ({error}): {pattern!r}") from None
    return pattern


def _phrase(value: str) -> str:
    folded = "".join(unicodedata.normalize("NFKC", value).split())
    if not folded:
        raise ValueError("phrases must not be empty")
    return value


Regex = Annotated[str, AfterValidator(_compile)]
Phrase = Annotated[str, AfterValidator(_phrase)]


def phrase_key(value: str) -> str:
    """How phrases and text are compared: NFKC, no whitespace."""
    return "".join(unicodedata.normalize("NFKC", value).split())


class Weights(StrictModel):
    """How much each piece of evidence counts towards a kind."""

    title: int = Field(ge=0)  # a title phrase near the top of a page
    title_elsewhere: int = Field(ge=0)  # a title phrase further down (a cover letter quoting it)
    marker: int = Field(ge=0)
    label: int = Field(ge=0)
    access_key: int = Field(ge=0)  # text matching patterns.access_key (key_notice only)


class Patterns(StrictModel):
    guarantee_no: Regex
    access_key: Regex


# This project's 認証キー: Crockford Base32 without I, L, O, U (see verifier/access_key.py).
PROJECT_KEY_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
PROJECT_KEY_LENGTH = 16


class AccessKeyFormat(StrictModel):
    """What a 認証キー looks like. The real format is not public: with ``check = "none"`` a key that
    fits length and alphabet goes to the look-up as it is, and nothing is ever returned as a typo
    on a check symbol the real format may not have."""

    length: int = Field(default=PROJECT_KEY_LENGTH, ge=4, le=128)
    alphabet: str = Field(default=PROJECT_KEY_ALPHABET, min_length=2)
    # Symbols per group when a key is shown (7K3M-Q9TX-…); 0 shows it ungrouped.
    group_size: int = Field(default=4, ge=0)
    # "keydesk": this project's check symbol (the last one); "none": no check is known.
    check: Literal["keydesk", "none"] = "keydesk"

    @model_validator(mode="after")
    def _consistent(self) -> "AccessKeyFormat":
        if len(set(self.alphabet)) != len(self.alphabet) or not self.alphabet.isascii() \
                or not self.alphabet.isalnum() or self.alphabet != self.alphabet.upper():
            raise ValueError("alphabet: distinct upper-case ASCII letters and digits, e.g. \"0123456789ABCDEF\"")
        if self.check == "keydesk" and (self.length, self.alphabet) != (PROJECT_KEY_LENGTH, PROJECT_KEY_ALPHABET):
            raise ValueError(f'check = "keydesk" needs length = {PROJECT_KEY_LENGTH} and this project\'s alphabet; '
                             'use check = "none" for another format')
        return self


class KindSignature(StrictModel):
    titles: list[Phrase]
    markers: list[Phrase]
    marker_patterns: list[Regex]
    labels: list[Phrase]
    # The STEP3 screen never shows the key: text with a key cannot be this kind.
    excluded_by_access_key: bool
    # Only key notices score the access key weight.
    scores_access_key: bool


class KeyNoticeLabels(StrictModel):
    """The labels printed before each field of a key notice (any one of each list may be used)."""

    guarantee_no: list[Phrase] = Field(min_length=1)
    access_key: list[Phrase] = Field(min_length=1)
    guarantee_type: list[Phrase] = Field(min_length=1)
    obligee: list[Phrase] = Field(min_length=1)
    contractor: list[Phrase] = Field(min_length=1)
    work_name: list[Phrase] = Field(min_length=1)
    guarantee_amount: list[Phrase] = Field(min_length=1)
    contract_amount: list[Phrase] = Field(min_length=1)
    period: list[Phrase] = Field(min_length=1)
    issue_date: list[Phrase] = Field(min_length=1)


class DocumentSignatures(StrictModel):
    # Pages with fewer letters than this on average are taken as scans (no text layer).
    min_chars_per_page: int = Field(ge=0)
    # How many characters from the top of a page count as "the top" for titles.
    title_head_chars: int = Field(ge=1)
    # The best kind must score at least this, else the document is "other".
    min_score: int = Field(ge=1)
    weights: Weights
    patterns: Patterns
    kinds: dict[DocumentKind, KindSignature]
    key_notice_labels: KeyNoticeLabels
    # The one section with a default: this project's own key format.
    access_key: AccessKeyFormat = AccessKeyFormat()

    @model_validator(mode="after")
    def _every_kind_configured(self) -> "DocumentSignatures":
        missing = [kind.value for kind in CONFIGURED_KINDS if kind not in self.kinds]
        derived = [kind.value for kind in self.kinds if kind not in CONFIGURED_KINDS]
        if missing:
            raise ValueError(f"kinds: add a signature for {', '.join(missing)}")
        if derived:
            raise ValueError(f"kinds: {', '.join(derived)} are decided by the reader and cannot be configured")
        if not self.kinds[DocumentKind.KEY_NOTICE].titles:
            raise ValueError("kinds.key_notice: needs at least one title")
        return self
