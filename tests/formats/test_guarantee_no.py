"""The 保証契約番号 format: known answers for its Luhn check digit, worked by hand."""

from __future__ import annotations

import pytest

from formats import guarantee_no as numbers


def test_the_luhn_digit_of_the_textbook_example() -> None:
    assert numbers.luhn_digit("7992739871") == 3  # the usual worked example of the Luhn algorithm


@pytest.mark.parametrize(
    ("year", "serial", "number"),
    [
        # 26000123 read from the right: 3·2=6, 2, 1·2=2, 0, 0, 0, 6·2=12→3, 2; total 15 → check 5.
        (2026, 123, "26-000123-5"),
        (2026, 0, "26-000000-5"),  # 6·2=12→3, 2: total 5
        (2026, 999_999, "26-999999-1"),  # six 9s (doubled 18→9) + 3 + 2 = 59 → 1
        (2125, 1, "25-000001-5"),  # the western year's last two digits; 1·2=2, 5·2=10→1, 2: total 5
    ],
)
def test_known_numbers(year, serial, number) -> None:
    assert numbers.make(year, serial) == number
    assert numbers.is_well_formed(number)


@pytest.mark.parametrize("serial", [-1, 1_000_000])
def test_a_serial_outside_six_digits_is_refused(serial) -> None:
    with pytest.raises(ValueError, match=f"serial out of range: {serial}"):
        numbers.make(2026, serial)


@pytest.mark.parametrize("text", ["26-000123-4", "26-00012-5", "26000123-5", "126-000123-5", "", "26-000123-5x"])
def test_malformed_or_mistyped_numbers_are_not_well_formed(text) -> None:
    assert not numbers.is_well_formed(text)


def test_full_width_digits_and_dash_look_alikes_are_read() -> None:
    assert numbers.is_well_formed("２６ー０００１２３ー５")
    assert numbers.normalise(" 26‐000123−5 ") == "26-000123-5"
