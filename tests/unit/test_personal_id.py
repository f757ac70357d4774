import logging

import pytest

from core.personal_id import (
    PROVINCES,
    InvalidPersonalId,
    PersonalId,
    mask,
    pseudonymise,
    validate_personal_id,
)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
# printf 001090012345 | openssl dgst -sha256 -hmac kkk…k (32 times k), first 32 hex digits
PINNED = "ea6e20ebc2b316ae023f71591df6a2f9"


@pytest.mark.parametrize(
    ("value", "province", "gender", "year"),
    [
        ("001090012345", "001", "male", 1990),
        ("079185000001", "079", "female", 1985),
        ("031200123456", "031", "male", 2000),
        ("048305654321", "048", "female", 2005),
        ("092026000000", "092", "male", 1926),
        ("096100000008", "096", "female", 1900),
    ],
)
def test_valid_numbers_are_decoded(value: str, province: str, gender: str, year: int) -> None:
    pid = validate_personal_id(value)
    assert pid.value == value
    assert pid.province_code == province
    assert pid.gender == gender
    assert pid.birth_year == year


def test_province_table_is_the_63_codes() -> None:
    assert len(PROVINCES) == 63
    assert PROVINCES["001"] == "Hà Nội"
    assert PROVINCES["079"] == "Hồ Chí Minh"
    assert validate_personal_id("048090012345").province_name == "Đà Nẵng"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "exactly 12 digits, got 0"),
        ("00109001234", "exactly 12 digits, got 11"),
        ("0010900123456", "exactly 12 digits, got 13"),
        (" 01090012345", "only the digits"),
        ("00109001234a", "only the digits"),
        # Arabic-Indic digits: str.isdigit() and \d would accept them.
        ("00109001234\u0665", "only the digits"),
        ("003090012345", "003 is not a province code"),
        ("000090012345", "000 is not a province code"),
        ("097090012345", "097 is not a province code"),
    ],
)
def test_malformed_numbers_are_rejected_with_a_reason(value: str, reason: str) -> None:
    with pytest.raises(InvalidPersonalId, match=reason):
        validate_personal_id(value)


def test_birth_year_in_the_future_is_rejected() -> None:
    # Century digit 2 and "27": born 2027, valid from 2027 on.
    assert validate_personal_id("001227012345", current_year=2027).birth_year == 2027
    with pytest.raises(InvalidPersonalId, match="2027, which is in the future"):
        validate_personal_id("001227012345", current_year=2026)
    # Century digits 4-9 belong to centuries to come.
    with pytest.raises(InvalidPersonalId, match="2100"):
        validate_personal_id("001400012345", current_year=2026)


def test_rejection_never_repeats_the_number() -> None:
    with pytest.raises(InvalidPersonalId) as raised:
        validate_personal_id("003090012345")
    assert "003090012345" not in str(raised.value)
    assert "90012345" not in str(raised.value)


def test_invalid_personal_id_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="12 digits"):
        validate_personal_id("12")


def test_non_string_is_rejected() -> None:
    with pytest.raises(InvalidPersonalId, match="got int"):
        validate_personal_id(1090012345)  # type: ignore[arg-type]


def test_printing_masks_the_number(caplog: pytest.LogCaptureFixture) -> None:
    pid = validate_personal_id("001090012345")
    assert str(pid) == "0010******45"
    assert repr(pid) == "PersonalId(0010******45)"
    assert f"{pid}" == "0010******45"
    assert "001090012345" not in repr([pid, {"who": pid}])
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("citizen %s, %r", pid, pid)
    assert "001090012345" not in caplog.text
    assert "0010******45" in caplog.text


def test_mask_of_a_malformed_value_hides_everything() -> None:
    assert mask("0010900123") == "**********"


def test_personal_id_is_immutable_and_compares_by_value() -> None:
    pid = validate_personal_id("001090012345")
    assert pid == validate_personal_id("001090012345")
    assert pid != validate_personal_id("001090012346")
    assert isinstance(pid, PersonalId)
    with pytest.raises(AttributeError):
        pid.value = "079185000001"  # type: ignore[misc]


def test_pseudonym_is_stable_per_key_and_differs_across_keys_and_numbers() -> None:
    token = pseudonymise("001090012345", KEY)
    assert token == pseudonymise("001090012345", KEY)
    assert len(token) == 32
    assert all(c in "0123456789abcdef" for c in token)
    assert token != pseudonymise("001090012345", OTHER_KEY)
    assert token != pseudonymise("001090012346", KEY)
    assert "001090012345" not in token


def test_pseudonym_is_the_truncated_hmac_sha256() -> None:
    # Pinned so that a change of algorithm, which would break correlation across
    # releases, cannot pass unnoticed.
    assert pseudonymise("001090012345", KEY) == PINNED


def test_pseudonym_refuses_a_short_key() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        pseudonymise("001090012345", b"short")
