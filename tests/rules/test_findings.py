"""The finding table is the contract between verifier, rules, replies and digest: keep it sound."""

from __future__ import annotations

import re
import string
from pathlib import Path

from rules.findings import CODES, Finding, Verdict, strongest

TESTS = Path(__file__).resolve().parents[1]


def test_every_code_is_well_formed_and_speaks_to_the_sender() -> None:
    for code, spec in CODES.items():
        assert re.fullmatch(r"[a-z]+\.[a-z_]+", code), code
        assert spec.label, code
        if spec.verdict is not Verdict.IGNORED:
            # Automatic mail is never answered; everything else is a sentence a contractor reads.
            assert spec.message.endswith("。"), code
            words = re.sub(r"\{[a-z_]+\}|PDF|STEP|ZIP|e-Net", "", spec.message)
            assert not re.search(r"[A-Za-z]{4,}", words), (code, words)


def test_placeholders_are_filled_or_dropped_never_shown() -> None:
    for code, spec in CODES.items():
        names = {name for _, name, _, _ in string.Formatter().parse(spec.message) if name}
        finding = Finding(code, params=dict.fromkeys(names, "X"))
        assert "{" not in finding.message and "}" not in finding.message, code
        assert "{" not in Finding(code).message, code


def test_every_code_is_exercised_somewhere_in_the_suite() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in TESTS.rglob("test_*.py") if p.name != "test_findings.py")
    assert [code for code in CODES if f'"{code}"' not in text and f"'{code}'" not in text] == []


def test_returned_beats_review_beats_accepted() -> None:
    assert strongest([Verdict.ACCEPTED, Verdict.RETURNED, Verdict.NEEDS_REVIEW]) is Verdict.RETURNED
    assert strongest([Verdict.ACCEPTED, Verdict.NEEDS_REVIEW]) is Verdict.NEEDS_REVIEW
    assert strongest([]) is Verdict.ACCEPTED
