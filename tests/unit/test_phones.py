"""Vietnamese mobile numbers as citizens type them, normalised to E.164 or refused with a reason."""

from __future__ import annotations

import re

import pytest

from core.phones import InvalidPhone, normalise_vn_mobile


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("0912 345 678", "+84912345678"),
        ("0912345678", "+84912345678"),
        ("0912.345.678", "+84912345678"),
        ("84912345678", "+84912345678"),
        ("+84912345678", "+84912345678"),
        ("+84 91-234-5678", "+84912345678"),
        ("(091) 234 5678", "+84912345678"),
        ("0084 912 345 678", "+84912345678"),
        # A trunk zero kept after the country code is a common slip, and harmless.
        ("+84 0912 345 678", "+84912345678"),
        ("  0912345678\n", "+84912345678"),
        # Post-2018 ranges of the other networks.
        ("0868 123 456", "+84868123456"),
        ("070 123 4567", "+84701234567"),
        ("0388 123 456", "+84388123456"),
    ],
)
def test_accepts_common_forms_of_a_mobile_number(raw: str, e164: str) -> None:
    assert normalise_vn_mobile(raw) == e164


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "no phone number given"),
        ("   ", "no phone number given"),
        ("không có", "is not a phone number"),
        ("024 3825 3525", "is a landline"),
        ("+84 24 3825 3525", "is a landline"),
        ("1900 1234", "is a premium-rate number"),
        ("1800 1234", "is a toll-free number"),
        ("113", "is a short code"),
        ("115", "is a short code"),
        ("091234567", "not in the Vietnamese numbering plan"),
        ("09123456789", "not in the Vietnamese numbering plan"),
        ("0123 456 7890", "old 11-digit mobile"),
        ("09", "too short"),
        ("+84 912 345 678 ext 12", "has an extension"),
        ("+33 6 12 34 56 78", "not a Vietnamese number (+33, FR)"),
        ("0033 6 12 34 56 78", "not a Vietnamese number (+33, FR)"),
        ("+1 650 253 0000", "not a Vietnamese number (+1, US)"),
        # Full-width (as some input methods produce) and Arabic-Indic digits: refused, not
        # silently read as 0-9 (libphonenumber would).
        ("＋８４９１２３４５６７８", "has digits other than 0-9"),
        ("０９１２３４５６７８", "has digits other than 0-9"),
        ("٠٩١٢٣٤٥٦٧٨", "has digits other than 0-9"),
        ("0912 ３４５ 678", "has digits other than 0-9"),
    ],
)
def test_refuses_what_an_sms_cannot_reach_and_says_why(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhone, match=re.escape(reason)) as info:
        normalise_vn_mobile(raw)
    assert isinstance(info.value, ValueError)
