"""Vietnamese mobile numbers for SMS: whatever a citizen typed, to E.164, or a reason why not.

The numbering plan (prefixes, lengths, which ranges are mobile) comes from Google's
libphonenumber metadata through `phonenumbers`: Vietnam renumbered its mobiles in 2018 and
keeps opening ranges, and a maintained library follows that where a hand-written regex rots.
The reasons end up in a notification's status and in intake's answer to a submission, so
they are written for the agency officer who reads them, not for a developer. Intake checks an
applicant's phone with these rules when the dossier is filed; notify when it sends.
"""

from __future__ import annotations

import phonenumbers
from phonenumbers import PhoneNumberType, ValidationResult, shortnumberinfo

REGION = "VN"
COUNTRY_CODE = 84
ASCII_DIGITS = frozenset("0123456789")

_NOT_MOBILE = {
    PhoneNumberType.FIXED_LINE: "a landline",
    PhoneNumberType.TOLL_FREE: "a toll-free number",
    PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    PhoneNumberType.SHARED_COST: "a shared-cost number",
    PhoneNumberType.VOIP: "a VoIP number",
    PhoneNumberType.PAGER: "a pager number",
    PhoneNumberType.UAN: "a company number",
    PhoneNumberType.VOICEMAIL: "a voicemail number",
}

_IMPOSSIBLE = {
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "of the wrong length",
    ValidationResult.INVALID_COUNTRY_CODE: "of an unknown country code",
}


class InvalidPhone(ValueError):
    """The number cannot receive an SMS; str(exc) is the reason, fit for a status record."""


def normalise_vn_mobile(raw: str) -> str:
    """E.164 form (+84…) of a Vietnamese mobile number written in any usual way.

    Accepts national (0912 345 678, (091) 234 5678), international (+84 91-234-5678,
    0084…) and bare country-code (84912345678) forms. Raises InvalidPhone for anything an
    SMS cannot reach: unparseable text, extensions, foreign numbers, landlines, short
    codes, numbers outside the plan (the pre-2018 11-digit mobiles included) and digits other
    than ASCII 0-9.
    """
    text = raw.strip()
    if not text:
        raise InvalidPhone("no phone number given")
    # libphonenumber reads full-width, Arabic-Indic and other digits as 0-9; a number that
    # reaches an agency written so is refused instead of being silently rewritten.
    if any(c.isdigit() and c not in ASCII_DIGITS for c in text):
        raise InvalidPhone(f"{raw!r} has digits other than 0-9; write it with the digits 0-9")
    try:
        number = phonenumbers.parse(text, REGION)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"{raw!r} is not a phone number") from exc
    if number.extension:
        raise InvalidPhone(f"{raw!r} has an extension, which an SMS cannot reach")
    if number.country_code != COUNTRY_CODE:
        region = phonenumbers.region_code_for_number(number) or "unknown country"
        raise InvalidPhone(
            f"{raw!r} is not a Vietnamese number (+{number.country_code}, {region}); "
            "SMS is sent to Vietnamese mobiles only"
        )
    # Short codes (113, 1080…) are checked first: as full numbers they only read "too short".
    if shortnumberinfo.is_valid_short_number_for_region(number, REGION):
        raise InvalidPhone(f"{raw!r} is a short code, not a mobile number")
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible != ValidationResult.IS_POSSIBLE:
        problem = _IMPOSSIBLE.get(possible, "not possible")
        raise InvalidPhone(f"{raw!r} is {problem} for a Vietnamese number")
    if not phonenumbers.is_valid_number(number):
        national = str(number.national_number)
        # 01xx-xxx-xxxx mobiles were moved to 03x/05x/07x/08x in 2018; people still type them.
        hint = (
            " (an old 11-digit mobile: use its new 10-digit number)"
            if (len(national) == 10 and national.startswith("1"))
            else ""
        )
        raise InvalidPhone(f"{raw!r} is not in the Vietnamese numbering plan{hint}")
    kind = phonenumbers.number_type(number)
    if kind != PhoneNumberType.MOBILE:
        what = _NOT_MOBILE.get(kind, "not a mobile number")
        raise InvalidPhone(f"{raw!r} is {what}; SMS needs a mobile number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
