"""Who a citizen's message goes to: the channels chosen from the applicant's details and
preference, each with a validated recipient or the reason it cannot be reached."""

from __future__ import annotations

from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from core.phones import InvalidPhone, normalise_vn_mobile

NO_CONTACT = "no email address or phone number for the applicant"


@dataclass(frozen=True)
class Recipient:
    channel: str  # "email" or "sms"
    address: str | None  # normalised address, None when it cannot be reached
    # Why nothing can be sent (recorded as a permanent failure), None when address is set.
    problem: str | None = None


def choose_channels(
    email: str | None, phone: str | None, preferred: str, *, sms_enabled: bool
) -> list[Recipient]:
    """The channels to tell the applicant through.

    A preferred channel the applicant gave details for is the only one used; a preference
    without details, or none ("" means no preference), uses every channel with details.
    Nothing at all still yields one recipient, so the notification is recorded with the
    reason instead of vanishing.
    """
    available: dict[str, str] = {}
    if email:
        available["email"] = email
    if phone and sms_enabled:
        available["sms"] = phone
    if not available:
        channel = preferred if preferred in {"email", "sms"} else "email"
        return [Recipient(channel, None, NO_CONTACT)]
    if preferred in available:
        available = {preferred: available[preferred]}
    return [_validated(channel, raw) for channel, raw in available.items()]


def _validated(channel: str, raw: str) -> Recipient:
    if channel == "sms":
        try:
            return Recipient("sms", normalise_vn_mobile(raw))
        except InvalidPhone as exc:
            return Recipient("sms", None, f"invalid phone number: {exc}")
    try:
        address = validate_email(raw, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        return Recipient("email", None, f"invalid email address {raw!r}: {exc}")
    return Recipient("email", address)
