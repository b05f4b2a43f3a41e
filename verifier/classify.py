"""What kind of document an attachment is, from its text alone.

Decided by phrases and field evidence from ``[documents]`` in config/rules.toml, never by the
producer: the same key notice may arrive as the guarantor's own PDF, printed again through a
browser, or re-saved by Ghostscript with half its digits garbled. Each configured kind scores its
title (strong near the top of a page, weak elsewhere), markers, marker patterns and field labels;
a key notice also scores a printed 認証キー, and the kinds that never show a key (the STEP3
screen, fee documents) are ruled out by one. The best score wins if it reaches ``min_score``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from rules.signatures import DocumentKind, DocumentSignatures, KindSignature, phrase_key
from verifier.normalise import fold_dashes, unspace
from verifier.pdf_text import TextResult, TextStatus


@dataclass(frozen=True)
class Classification:
    kind: DocumentKind
    score: int = 0  # the winning kind's score (0 for derived kinds)
    evidence: tuple[str, ...] = ()  # what counted, for staff ("title: 電子証書の内容", …)
    scores: tuple[tuple[DocumentKind, int], ...] = ()  # every configured kind, best first


@dataclass(frozen=True)
class PreparedPage:
    """One page's text in the two forms matching needs."""

    lines: tuple[str, ...]  # each line without whitespace: titles (a heading starts a line)
    compact: str  # the whole page without whitespace: phrases
    flowing: str  # letter-spaced runs joined, dashes folded: patterns

    @classmethod
    def of(cls, text: str) -> PreparedPage:
        lines = tuple(key for key in (phrase_key(line) for line in text.splitlines()) if key)
        return cls(lines=lines, compact="".join(lines), flowing=fold_dashes(unspace(text)))

    def head_lines(self, chars: int) -> list[str]:
        """The lines that start within the first ``chars`` characters of the page."""
        head, seen = [], 0
        for line in self.lines:
            if seen >= chars:
                break
            head.append(line)
            seen += len(line)
        return head


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def find_access_keys(page: PreparedPage, signatures: DocumentSignatures) -> list[str]:
    """Every string on the page shaped like an access key (check symbol not verified here)."""
    return [match.group(0) for match in _compiled(signatures.patterns.access_key).finditer(page.flowing)]


def _mask_longer_titles(texts: list[str], title: str, signatures: DocumentSignatures) -> list[str]:
    """The texts with every longer title that contains ``title`` blanked out, so that 「電子証書」
    (the STEP3 screen) is not found inside 「電子証書閲覧用「認証キー」等のお知らせ」."""
    key = phrase_key(title)
    longer = sorted(
        {
            phrase_key(other)
            for sig in signatures.kinds.values()
            for other in sig.titles
            if key in phrase_key(other) and phrase_key(other) != key
        },
        key=len,
        reverse=True,
    )
    masked = []
    for text in texts:
        hidden = text
        for other in longer:
            hidden = hidden.replace(other, "□" * len(other))
        masked.append(hidden)
    return masked


def _score_kind(
    pages: list[PreparedPage], signature: KindSignature, has_key: bool, signatures: DocumentSignatures
) -> tuple[int, list[str]]:
    if has_key and signature.excluded_by_access_key:
        return 0, ["ruled out: a 認証キー is printed"]
    weights = signatures.weights
    heads = [line for page in pages for line in page.head_lines(signatures.title_head_chars)]
    bodies = [page.compact for page in pages]
    score, evidence = 0, []
    for title in signature.titles:
        key = phrase_key(title)
        if any(line.startswith(key) for line in _mask_longer_titles(heads, title, signatures)):
            score += weights.title
            evidence.append(f"title: {title}")
            break
    else:
        for title in signature.titles:
            if any(phrase_key(title) in text for text in _mask_longer_titles(bodies, title, signatures)):
                score += weights.title_elsewhere
                evidence.append(f"title (not at the top): {title}")
                break
    for marker in signature.markers:
        if any(phrase_key(marker) in page.compact for page in pages):
            score += weights.marker
            evidence.append(f"marker: {marker}")
    for pattern in signature.marker_patterns:
        for page in pages:
            match = _compiled(pattern).search(page.flowing)
            if match:
                score += weights.marker
                evidence.append(f"pattern: {match.group(0)[:60]}")
                break
    for label in signature.labels:
        if any(phrase_key(label) in page.compact for page in pages):
            score += weights.label
            evidence.append(f"label: {label}")
    if has_key and signature.scores_access_key:
        score += weights.access_key
        evidence.append("a 認証キー is printed")
    return score, evidence


def _rank(pages: list[PreparedPage], signatures: DocumentSignatures) -> list[tuple[int, DocumentKind, list[str]]]:
    has_key = any(find_access_keys(page, signatures) for page in pages)
    ranked = []
    for kind, signature in signatures.kinds.items():
        score, evidence = _score_kind(pages, signature, has_key, signatures)
        ranked.append((score, kind, evidence))
    # Highest score first; on a tie, the order of the kinds in the config decides.
    order = {kind: position for position, kind in enumerate(signatures.kinds)}
    ranked.sort(key=lambda item: (-item[0], order[item[1]]))
    return ranked


def _letters(text: str) -> int:
    return sum(1 for char in text if char.isalnum())


def classify(result: TextResult, signatures: DocumentSignatures) -> Classification:
    """The kind of one extracted document, with the evidence that decided it."""
    if result.status is TextStatus.ENCRYPTED:
        return Classification(DocumentKind.ENCRYPTED, evidence=(result.reason or "password-protected",))
    if result.status is not TextStatus.OK:
        return Classification(DocumentKind.BROKEN, evidence=(result.reason or "unreadable",))
    pages = list(result.text) or [""]
    letters = sum(_letters(page) for page in pages)
    if letters < signatures.min_chars_per_page * len(pages):
        return Classification(
            DocumentKind.NO_TEXT, evidence=(f"{letters} letters on {len(pages)} page(s): no text layer",)
        )
    prepared = [PreparedPage.of(page) for page in pages]
    ranked = _rank(prepared, signatures)
    scores = tuple((kind, score) for score, kind, _ in ranked)
    best_score, best_kind, evidence = ranked[0]
    if best_kind is not DocumentKind.KEY_NOTICE and len(prepared) > 1:
        # A key notice bundled with other pages (a receipt, a cover letter) is still a key notice.
        for page in prepared:
            score, kind, page_evidence = _rank([page], signatures)[0]
            if kind is DocumentKind.KEY_NOTICE and score >= signatures.min_score:
                return Classification(kind, score, tuple(page_evidence), scores)
    if best_score < signatures.min_score:
        verdict = f"no kind reached {signatures.min_score}: best was {best_kind.value} with {best_score}"
        return Classification(DocumentKind.OTHER, best_score, (verdict, *evidence), scores)
    return Classification(best_kind, best_score, tuple(evidence), scores)
