"""The one table of verdict labels (rules.findings.WORDING) and the finding table's layout."""

from __future__ import annotations

from rules.findings import CODES, SENDER_STATES, VERDICT_LABELS, WORDING, Request, Verdict


def test_every_verdict_has_one_staff_label_from_the_table() -> None:
    assert set(VERDICT_LABELS) == set(Verdict)
    assert {verdict: WORDING[verdict].staff for verdict in Verdict} == VERDICT_LABELS
    assert VERDICT_LABELS[Verdict.ACCEPTED] == "受付済"
    assert len(set(VERDICT_LABELS.values())) == len(Verdict)  # no two verdicts read alike


def test_answered_verdicts_have_a_label_for_every_use() -> None:
    for verdict in (Verdict.ACCEPTED, Verdict.NEEDS_REVIEW, Verdict.RETURNED):
        wording = WORDING[verdict]
        assert wording.staff and wording.section and wording.tally, verdict
    # The reply names an accepted or reviewed guarantee from the table; a returned one by its request.
    assert SENDER_STATES[Verdict.ACCEPTED] == WORDING[Verdict.ACCEPTED].sender == "受付済み"
    assert SENDER_STATES[Verdict.NEEDS_REVIEW] == WORDING[Verdict.NEEDS_REVIEW].sender
    assert WORDING[Verdict.RETURNED].sender == ""
    assert all(SENDER_STATES[request] for request in Request if request is not Request.NONE)


def test_the_digest_takes_its_section_titles_and_tallies_from_the_table() -> None:
    from mailer.digest import SECTION_SHORT, SECTION_TITLES
    from mailer.digest_rows import SECTIONS

    assert {section: WORDING[section].section for section in SECTIONS} == SECTION_TITLES
    assert {section: WORDING[section].tally for section in SECTIONS} == SECTION_SHORT
    assert all(SECTION_TITLES.values()) and all(SECTION_SHORT.values())


def test_the_finding_table_is_grouped_by_prefix() -> None:
    prefixes = [code.split(".")[0] for code in CODES]
    runs = [prefix for index, prefix in enumerate(prefixes) if index == 0 or prefixes[index - 1] != prefix]
    assert len(runs) == len(set(runs)), runs  # each prefix in one block
    assert runs[0] == "mail" and "reply" in runs
