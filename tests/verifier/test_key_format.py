"""The 認証キー format in rules.toml [documents.access_key]: this project's check, or none at all."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rules.findings import Finding, Verdict
from formats.access_key import AccessKeyFormat
from tests.support.verify import (
    ADVANCE_CERT,
    SIGNATURES,
    Desk,
    FakeAccepted,
    FakeLookup,
    FakeRegister,
    REGISTER_ROW,
    codes,
    notice,
    sign,
)
from formats import access_key as keys
from verifier.lookup import LookupResult, LookupStatus

NO_CHECK = AccessKeyFormat(check="none")
HEX = AccessKeyFormat(length=16, alphabet="0123456789ABCDEF", check="none")


def mistyped(key: str) -> str:
    """The key with its last symbol changed: this project's check catches it."""
    canonical = keys.parse(key)
    return canonical[:15] + ("0" if canonical[15] != "0" else "1")


def test_the_default_is_this_projects_check() -> None:
    assert SIGNATURES.access_key == AccessKeyFormat()
    key = keys.generate()
    assert keys.read(key) == (keys.parse(key), True)
    assert keys.read(mistyped(key)) == (mistyped(key), False)


def test_with_no_check_a_fitting_key_is_valid_and_anything_else_is_not_a_key() -> None:
    key = keys.generate()
    assert keys.read(mistyped(key), NO_CHECK) == (mistyped(key), True)
    assert keys.read("0123-4567-89ab-cdef", HEX) == ("0123456789ABCDEF", True)
    with pytest.raises(keys.AccessKeyError):
        keys.read("0123-4567-89AB-CDEG", HEX)
    with pytest.raises(keys.AccessKeyError):
        keys.read("0123-4567-89AB", HEX)


@pytest.mark.parametrize(
    "values, problem",
    [
        ({"length": 12}, 'check = "none"'),
        ({"alphabet": "abc", "check": "none"}, "upper-case"),
        ({"alphabet": "AAB", "check": "none"}, "distinct"),
    ],
)
def test_inconsistent_formats_are_refused(values: dict, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        AccessKeyFormat(**values)


def desk_with(key_format: AccessKeyFormat) -> tuple[Desk, object]:
    signatures = SIGNATURES.model_copy(update={"access_key": key_format})
    desk = Desk(FakeLookup(), FakeRegister(REGISTER_ROW), FakeAccepted())
    return desk, signatures


def test_with_check_none_a_key_is_never_returned_as_a_typo_but_looked_up(monkeypatch) -> None:
    import tests.support.verify as helpers

    key = mistyped(keys.generate())
    desk, signatures = desk_with(NO_CHECK)
    desk.lookup.answers[(ADVANCE_CERT.guarantee_no, key)] = LookupResult(LookupStatus.FOUND, sign(ADVANCE_CERT))
    monkeypatch.setattr(helpers, "SIGNATURES", signatures)
    result = desk.verify(notice(ADVANCE_CERT, key))
    assert result.verdict is Verdict.ACCEPTED and "key.checksum" not in codes(result.all_findings)
    assert desk.lookup.calls[0][:2] == (ADVANCE_CERT.guarantee_no, key)

    monkeypatch.setattr(helpers, "SIGNATURES", SIGNATURES)
    returned = Desk(FakeLookup(), FakeRegister(REGISTER_ROW), FakeAccepted()).verify(notice(ADVANCE_CERT, key))
    assert codes(returned.all_findings) == ["key.checksum"]


def test_keys_are_shown_in_the_configured_grouping() -> None:
    assert keys.display("0123456789ABCDEF", HEX) == "0123-4567-89AB-CDEF"
    assert keys.display("0123456789ABCDEF", HEX.model_copy(update={"group_size": 0})) == "0123456789ABCDEF"


def test_keys_of_another_format_are_masked_by_that_format_or_whole() -> None:
    lowercase_free = AccessKeyFormat(length=20, alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", group_size=5, check="none")
    # Only the last 4 symbols, as for this project's keys (issue 12: enough to tell keys apart).
    assert keys.mask("ILOUA-BCDEF-GHIJK-LMNOP", lowercase_free) == "****-****-****-MNOP"
    assert keys.mask("ILOUA-BCDEF-GHIJK-LMNOP") == "****-****-****-****"  # not knowing the format: all hidden
    assert keys.mask("ILOUA-BCDEF", lowercase_free) == "****-****-****-****"


def test_the_result_note_accepts() -> None:
    assert Finding("lookup.completed").verdict is Verdict.ACCEPTED
    assert Finding("lookup.manual", params={"guarantee_no": "26-000123-4"}).verdict is Verdict.NEEDS_REVIEW


def test_a_key_that_does_not_fit_a_configured_format_says_why() -> None:
    with pytest.raises(keys.AccessKeyError) as short:
        keys.read("0123-4567-89AB", HEX)
    assert short.value.reason == "an access key has 16 characters, got 12"
    with pytest.raises(keys.AccessKeyError) as foreign:
        keys.read("0123-4567-89AB-CDEG", HEX)
    assert foreign.value.reason == "'G' is not a character used in access keys"


def test_only_keys_of_12_symbols_or_more_show_their_last_4_when_masked() -> None:
    # Four symbols of a shorter key would be a third of it or more: too much help to a guesser.
    twelve = AccessKeyFormat(length=12, alphabet="0123456789ABCDEF", check="none")
    eleven = AccessKeyFormat(length=11, alphabet="0123456789ABCDEF", check="none")
    assert keys.mask("0123-4567-89AB", twelve) == "****-****-****-89AB"
    assert keys.mask("0123-4567-89A", eleven) == "****-****-****-****"
