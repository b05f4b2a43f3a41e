"""The finding table is the contract between verifier, rules, replies and digest: keep it sound."""

from __future__ import annotations

import re
import string
from pathlib import Path

from rules.findings import CODES, Finding, Request, Verdict, label_of, request_of, strongest

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


def test_automatic_mail_outranks_every_other_verdict() -> None:
    # An automatic mail is recorded, never answered, whatever else was found in it.
    assert strongest([Verdict.RETURNED, Verdict.IGNORED, Verdict.NEEDS_REVIEW]) is Verdict.IGNORED
    assert strongest([Verdict.IGNORED, Verdict.ACCEPTED]) is Verdict.IGNORED


def test_a_missing_placeholder_leaves_no_trace_in_the_sentence() -> None:
    assert Finding("lookup.revoked").message == "保証契約番号の電子証書は失効しています。保証会社へご確認ください。"
    assert (
        Finding("lookup.revoked", params={"guarantee_no": "26-000123-5"}).message
        == "保証契約番号26-000123-5の電子証書は失効しています。保証会社へご確認ください。"
    )


def test_a_code_shows_its_label_and_a_retired_one_shows_as_itself() -> None:
    assert label_of("lookup.revoked") == "失効した保証"
    assert label_of("doc.retired_code") == "doc.retired_code"


def test_a_reply_asks_for_one_thing_the_most_decisive_first() -> None:
    pdf = Finding("key.checksum")
    guarantor = Finding("lookup.revoked")
    addressee = Finding("cert.other_obligee")
    paper = Finding("cert.type_not_eligible")
    assert request_of([pdf]) is Request.PDF
    assert request_of([pdf, guarantor]) is Request.GUARANTOR
    assert request_of([guarantor, addressee, pdf]) is Request.ADDRESSEE
    assert request_of([pdf, addressee, guarantor, paper]) is Request.PAPER


def test_nothing_is_asked_when_nothing_is_returned_and_retired_codes_are_ignored() -> None:
    assert request_of([]) is Request.NONE
    assert request_of([Finding("lookup.manual"), Finding("doc.fee_receipt")]) is Request.NONE
    # A stored finding whose code was since retired must not break the reply.
    assert request_of([Finding("doc.retired_code"), Finding("key.checksum")]) is Request.PDF
    assert request_of([Finding("doc.retired_code")]) is Request.NONE
