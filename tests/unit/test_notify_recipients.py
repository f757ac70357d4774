import pytest

from services.notify.recipients import NO_CONTACT, Recipient, choose_channels

EMAIL, PHONE = "lan@example.vn", "0912 345 678"


@pytest.mark.parametrize(
    ("preferred", "channels"),
    [("", ["email", "sms"]), ("email", ["email"]), ("sms", ["sms"])],
)
def test_preference_with_both_details(preferred: str, channels: list[str]) -> None:
    chosen = choose_channels(EMAIL, PHONE, preferred, sms_enabled=True)
    assert [r.channel for r in chosen] == channels


def test_addresses_are_normalised() -> None:
    chosen = choose_channels(EMAIL, PHONE, "", sms_enabled=True)
    assert chosen == [Recipient("email", EMAIL), Recipient("sms", "+84912345678")]


def test_a_preference_without_details_falls_back_to_what_there_is() -> None:
    assert choose_channels(EMAIL, None, "sms", sms_enabled=True) == [Recipient("email", EMAIL)]
    assert [r.channel for r in choose_channels(None, PHONE, "email", sms_enabled=True)] == ["sms"]


def test_sms_disabled_leaves_email_only() -> None:
    assert [r.channel for r in choose_channels(EMAIL, PHONE, "sms", sms_enabled=False)] == ["email"]


def test_no_contact_is_one_recipient_with_the_reason() -> None:
    assert choose_channels(None, None, "", sms_enabled=True) == [
        Recipient("email", None, NO_CONTACT)
    ]
    assert choose_channels(None, None, "sms", sms_enabled=True)[0].channel == "sms"


def test_invalid_phone_and_email_carry_their_reason() -> None:
    phone = choose_channels(None, "024 3825 3525", "", sms_enabled=True)[0]
    assert phone.address is None
    assert phone.problem is not None
    assert "invalid phone number" in phone.problem
    assert "landline" in phone.problem
    email = choose_channels("lan@@example", None, "", sms_enabled=True)[0]
    assert email.address is None
    assert email.problem is not None
    assert "invalid email address" in email.problem
