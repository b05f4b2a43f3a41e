"""The fields of a key notice (「電子証書閲覧用「認証キー」等のお知らせ」), read from its text.

Labels and patterns come from ``[documents]`` in config/rules.toml. A label counts where it starts
a line and is followed by a space, a colon or the end of the line (so 「発注者用保証確認サービス」
is not the 発注者 field); its value is the rest of the line, cut at the next label, or the next
line when the label stands alone (reportlab and table layouts put them on separate lines).

Nothing is dropped silently: a missing field, a value that cannot be read, or a 認証キー whose
check symbol is wrong each becomes a ``FieldProblem`` next to what could be read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from rules.domain import GuaranteeType
from rules.signatures import DocumentKind, DocumentSignatures, phrase_key
from formats.access_key import AccessKeyFormat
from formats import access_key
from verifier.classify import PreparedPage
from verifier.normalise import find_amount, find_dates, fold_dashes, unspace
from verifier.pdf_text import TextResult, TextStatus


class ProblemKind(StrEnum):
    MISSING = "missing"  # no label, no value
    UNREADABLE = "unreadable"  # a label with a value that is not what the field holds
    CHECKSUM = "checksum"  # an access key whose check symbol does not match (finding key.checksum)
    AMBIGUOUS = "ambiguous"  # several different values where one is expected


@dataclass(frozen=True)
class FieldProblem:
    field: str  # the KeyNoticeFields attribute it is about
    kind: ProblemKind
    detail: str  # for staff, in English; never holds a full access key


@dataclass(frozen=True)
class KeyNoticeFields:
    pages: tuple[int, ...]  # the notice's pages in the PDF, from 0
    guarantee_no: str | None = None
    # The key as 16 canonical symbols when it is well-formed, even if its check symbol is wrong
    # (then access_key_valid is False and a CHECKSUM problem says so).
    access_key: str | None = None
    access_key_valid: bool = False
    guarantee_type: GuaranteeType | None = None
    obligee: str | None = None
    contractor: str | None = None
    work_name: str | None = None
    guarantee_amount: int | None = None
    contract_amount: int | None = None
    period_start: date | None = None
    period_end: date | None = None
    issued_on: date | None = None
    problems: tuple[FieldProblem, ...] = ()

    def problem(self, field: str) -> FieldProblem | None:
        return next((p for p in self.problems if p.field == field), None)


# Read when printed, but their absence is no problem (a key notice need not carry them).
_OPTIONAL = frozenset({"contractor", "contract_amount"})
# Longest first, so 中間前払金保証 is not read as 前払金保証 nor 契約保証予約 as 契約保証.
_TYPES = sorted(GuaranteeType, key=lambda t: len(t.value), reverse=True)
_HONORIFIC = re.compile(r"\s*(様|殿|御中)$")
# A bracketed note right after a label: 保証債権者(発注者)：美郷町長.
_QUALIFIER = re.compile(r"^\s?\([^()]{1,20}\)")


class _Labels:
    """Where each configured label sits in a notice's lines."""

    def __init__(self, lines: list[str], signatures: DocumentSignatures) -> None:
        self.lines = lines
        self.by_field = {name: list(labels) for name, labels in signatures.key_notice_labels}
        every = {label for labels in self.by_field.values() for label in labels}
        self._all = sorted(every, key=len, reverse=True)

    def _label_at(self, line: str, label: str) -> str | None:
        """The text after ``label`` when the line starts with it as a label, else None."""
        stripped = line.lstrip(" ・*■□●○◆◇-")
        compact_line = phrase_key(stripped)
        key = phrase_key(label)
        if not compact_line.startswith(key):
            return None
        # Walk the original line past the label's characters (spaces inside the label allowed).
        position, matched = 0, 0
        while matched < len(key) and position < len(stripped):
            if not stripped[position].isspace():
                matched += 1
            position += 1
        rest = _QUALIFIER.sub("", stripped[position:], count=1)
        if rest and not (rest[0].isspace() or rest[0] in ":："):
            return None  # 発注者用… is a sentence, not the 発注者 label
        return rest.lstrip(" :：\t")

    def _label_inside(self, line: str, label: str) -> str | None:
        """The text after ``label`` where it follows a space inside the line (two fields a line)."""
        for match in re.finditer(rf"\s{re.escape(label)}", line):
            rest = self._label_at(line[match.start() + 1 :], label)
            if rest is not None:
                return rest
        return None

    def value(self, field: str) -> tuple[bool, str]:
        """(label found, its value); the value may be empty when nothing follows the label."""
        labels = sorted(self.by_field[field], key=len, reverse=True)
        for finder in (self._label_at, self._label_inside):  # a label starting a line wins
            for index, line in enumerate(self.lines):
                for label in labels:
                    rest = finder(line, label)
                    if rest is None:
                        continue
                    rest = self._cut_at_next_label(rest)
                    following = self.lines[index + 1] if index + 1 < len(self.lines) else ""
                    if not rest and not self._starts_with_label(following):
                        rest = self._cut_at_next_label(following.strip())
                    return True, rest.strip()
        return False, ""

    def following_line(self, field: str) -> str:
        """The line after the field's value line, when it is not another label (for wrapped values)."""
        for index, line in enumerate(self.lines):
            if any(self._label_at(line, label) is not None for label in self.by_field[field]):
                for candidate in self.lines[index + 1 : index + 3]:
                    if self._starts_with_label(candidate):
                        return ""
                    if candidate.strip():
                        return candidate.strip()
        return ""

    def _starts_with_label(self, line: str) -> bool:
        return any(self._label_at(line, label) is not None for label in self._all)

    def _cut_at_next_label(self, rest: str) -> str:
        # Two fields on one line ("契約金額 1円 保証金額 2円"): stop before the next label.
        end = len(rest)
        for label in self._all:
            match = re.search(rf"\s{re.escape(label)}(?=\s|[:：]|$)", rest)
            if match:
                end = min(end, match.start())
        return rest[:end]


def _split_notices(result: TextResult, signatures: DocumentSignatures) -> list[tuple[int, ...]]:
    """Pages grouped by notice: a page whose top carries a key-notice title starts a new one."""
    titles = [phrase_key(t) for t in signatures.kinds[DocumentKind.KEY_NOTICE].titles]
    starts = []
    for number, text in enumerate(result.text):
        head = PreparedPage.of(text).head_lines(signatures.title_head_chars)
        if any(line.startswith(title) for line in head for title in titles):
            starts.append(number)
    if not starts:
        return [tuple(range(len(result.text)))] if result.text else []
    bounds = starts + [len(result.text)]
    return [tuple(range(bounds[i], bounds[i + 1])) for i in range(len(starts))]


def extract_key_notices(result: TextResult, signatures: DocumentSignatures) -> list[KeyNoticeFields]:
    """One ``KeyNoticeFields`` per key notice in the PDF (several pages may hold one each)."""
    if result.status is not TextStatus.OK:
        return []
    return [
        extract_fields("\n".join(result.text[page] for page in pages), signatures, pages)
        for pages in _split_notices(result, signatures)
    ]


# note(field, kind, detail): records a problem with one field of the notice.
_Note = Callable[[str, ProblemKind, str], None]


def extract_fields(text: str, signatures: DocumentSignatures, pages: tuple[int, ...] = (0,)) -> KeyNoticeFields:
    """The fields of one key notice's text (already cleaned by ``normalise.clean_text``)."""
    flowing = fold_dashes(unspace(text))
    labels = _Labels(flowing.splitlines(), signatures)
    problems: list[FieldProblem] = []
    values: dict[str, Any] = {}

    def note(field: str, kind: ProblemKind, detail: str) -> None:
        problems.append(FieldProblem(field, kind, detail))

    values["guarantee_no"] = _pattern_field(
        "guarantee_no", signatures.patterns.guarantee_no, labels, flowing, note, show=True
    )
    raw_key = _pattern_field("access_key", signatures.patterns.access_key, labels, flowing, note, show=False)
    if raw_key is not None:
        values["access_key"], values["access_key_valid"] = _check_key(raw_key, note, signatures.access_key)

    found, text_value = labels.value("guarantee_type")
    if found:
        guarantee_type = next((t for t in _TYPES if t.value in phrase_key(text_value)), None)
        if guarantee_type is None:
            note("guarantee_type", ProblemKind.UNREADABLE, f"not a known guarantee type: {text_value[:40]!r}")
        values["guarantee_type"] = guarantee_type
    else:
        note("guarantee_type", ProblemKind.MISSING, "no 保証の種類 label")

    for field in ("obligee", "contractor", "work_name"):
        found, text_value = labels.value(field)
        text_value = _HONORIFIC.sub("", " ".join(text_value.split()))
        if text_value:
            values[field] = text_value
        elif field not in _OPTIONAL:
            note(field, ProblemKind.MISSING if not found else ProblemKind.UNREADABLE, f"no value for {field}")

    for field in ("guarantee_amount", "contract_amount"):
        found, text_value = labels.value(field)
        amount = find_amount(text_value) if text_value else None
        if amount is not None:
            values[field] = amount
        elif found:
            note(field, ProblemKind.UNREADABLE, f"not an amount: {text_value[:40]!r}")
        elif field not in _OPTIONAL:
            note(field, ProblemKind.MISSING, f"no label for {field}")

    found, text_value = labels.value("period")
    # 「令和8年4月1日(2026年4月1日)から令和9年3月31日(2027年3月31日)まで」 gives each date twice:
    # distinct dates are counted, so a first line holding only the start twice still reads the next.
    dates = list(dict.fromkeys(find_dates(text_value)))
    if len(dates) < 2:
        dates = list(dict.fromkeys(find_dates(text_value + " " + labels.following_line("period"))))
    if len(dates) >= 2:
        values["period_start"], values["period_end"] = dates[0], dates[-1]
        if dates[-1] < dates[0]:
            note("period_end", ProblemKind.UNREADABLE, f"the period ends ({dates[-1]}) before it starts ({dates[0]})")
    else:
        kind = ProblemKind.UNREADABLE if found else ProblemKind.MISSING
        note("period_start", kind, f"no start and end dates in the period: {text_value[:40]!r}")

    found, text_value = labels.value("issue_date")
    issued = find_dates(text_value)
    if issued:
        values["issued_on"] = issued[0]
    else:
        note("issued_on", ProblemKind.UNREADABLE if found else ProblemKind.MISSING, "no issue date")

    return KeyNoticeFields(pages=tuple(pages), problems=tuple(problems), **values)


def _pattern_field(field: str, pattern: str, labels: _Labels, flowing: str, note: _Note, *, show: bool) -> str | None:
    """A value found with the configured pattern: after its label, else alone on the notice."""
    regex = re.compile(pattern)
    found, text_value = labels.value(field)
    match = regex.search(text_value) if text_value else None
    if match:
        return "".join(match.group(0).split())
    candidates = {"".join(m.group(0).split()) for m in regex.finditer(flowing)}
    if len(candidates) == 1:
        return candidates.pop()
    if len(candidates) > 1:
        note(field, ProblemKind.AMBIGUOUS, f"{len(candidates)} different values and none after the label")
    elif found:
        shown = text_value[:40] if show else access_key.mask(text_value)
        note(field, ProblemKind.UNREADABLE, f"the value after the label does not match the pattern: {shown!r}")
    else:
        note(field, ProblemKind.MISSING, f"no {field} label and no value matching the pattern")
    return None


def _check_key(raw: str, note: _Note, key_format: AccessKeyFormat) -> tuple[str | None, bool]:
    """The key in the configured format, and whether its check (if the format has one) passes."""
    try:
        key, valid = access_key.read(raw, key_format)
    except access_key.AccessKeyError as error:
        note("access_key", ProblemKind.UNREADABLE, f"not an access key: {error.reason}")
        return None, False
    if not valid:
        note(
            "access_key",
            ProblemKind.CHECKSUM,
            f"{access_key.mask(key)}: the check character does not match: the key was probably mistyped",
        )
    return key, valid
