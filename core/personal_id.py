"""Personal identification numbers (số định danh cá nhân) and how to handle them safely.

Structure, per Circular 59/2021/TT-BCA: 3 digits of the province where the birth was
registered, 1 digit for century and gender, 2 digits for the year of birth, 6 random digits.

The number identifies a citizen for life, so it must never reach logs, span attributes or
Kafka keys in clear: `PersonalId` masks itself when printed, and `pseudonymise` gives a
stable, unreadable token where records must still be correlated.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Literal

from core.clock import SYSTEM_CLOCK, VIETNAM

Gender = Literal["male", "female"]

# The 63 province codes of birth registration. A number is issued for life, so every code
# stays valid after provinces merge; only these can ever appear in digits 1-3.
PROVINCES: dict[str, str] = {
    "001": "Hà Nội",
    "002": "Hà Giang",
    "004": "Cao Bằng",
    "006": "Bắc Kạn",
    "008": "Tuyên Quang",
    "010": "Lào Cai",
    "011": "Điện Biên",
    "012": "Lai Châu",
    "014": "Sơn La",
    "015": "Yên Bái",
    "017": "Hòa Bình",
    "019": "Thái Nguyên",
    "020": "Lạng Sơn",
    "022": "Quảng Ninh",
    "024": "Bắc Giang",
    "025": "Phú Thọ",
    "026": "Vĩnh Phúc",
    "027": "Bắc Ninh",
    "030": "Hải Dương",
    "031": "Hải Phòng",
    "033": "Hưng Yên",
    "034": "Thái Bình",
    "035": "Hà Nam",
    "036": "Nam Định",
    "037": "Ninh Bình",
    "038": "Thanh Hóa",
    "040": "Nghệ An",
    "042": "Hà Tĩnh",
    "044": "Quảng Bình",
    "045": "Quảng Trị",
    "046": "Thừa Thiên Huế",
    "048": "Đà Nẵng",
    "049": "Quảng Nam",
    "051": "Quảng Ngãi",
    "052": "Bình Định",
    "054": "Phú Yên",
    "056": "Khánh Hòa",
    "058": "Ninh Thuận",
    "060": "Bình Thuận",
    "062": "Kon Tum",
    "064": "Gia Lai",
    "066": "Đắk Lắk",
    "067": "Đắk Nông",
    "068": "Lâm Đồng",
    "070": "Bình Phước",
    "072": "Tây Ninh",
    "074": "Bình Dương",
    "075": "Đồng Nai",
    "077": "Bà Rịa - Vũng Tàu",
    "079": "Hồ Chí Minh",
    "080": "Long An",
    "082": "Tiền Giang",
    "083": "Bến Tre",
    "084": "Trà Vinh",
    "086": "Vĩnh Long",
    "087": "Đồng Tháp",
    "089": "An Giang",
    "091": "Kiên Giang",
    "092": "Cần Thơ",
    "093": "Hậu Giang",
    "094": "Sóc Trăng",
    "095": "Bạc Liêu",
    "096": "Cà Mau",
}

# [0-9] rather than \d: \d also matches Arabic-Indic and other Unicode digits.
_TWELVE_DIGITS = re.compile(r"[0-9]{12}")
# The year of birth is checked against the calendar where the numbers are issued.
# A short key would let anyone holding pseudonyms brute-force it together with the
# (small, structured) space of numbers.
MIN_PSEUDONYM_KEY_BYTES = 16


class InvalidPersonalId(ValueError):
    """The value is not a personal identification number; the message says why.

    The message never repeats the value itself, since it usually ends up in a log.
    """


def mask(value: str) -> str:
    """`001090012345` → `0010******45`: enough for a person to tell two numbers apart."""
    if len(value) != 12:
        return "*" * len(value)
    return f"{value[:4]}{'*' * 6}{value[-2:]}"


@dataclass(frozen=True, repr=False)
class PersonalId:
    value: str
    province_code: str
    gender: Gender
    birth_year: int

    @property
    def province_name(self) -> str:
        return PROVINCES[self.province_code]

    @property
    def masked(self) -> str:
        return mask(self.value)

    # Printing, logging or formatting the object must never expose the number;
    # code that really needs it asks for `.value` explicitly.
    def __repr__(self) -> str:
        return f"PersonalId({self.masked})"

    def __str__(self) -> str:
        return self.masked


def validate_personal_id(value: str, *, current_year: int | None = None) -> PersonalId:
    """Parse a 12-digit personal identification number or raise `InvalidPersonalId`.

    `current_year` defaults to this year in Vietnam; nobody can be born after it.
    """
    if not isinstance(value, str):
        raise InvalidPersonalId(f"must be a string of 12 digits, got {type(value).__name__}")
    if not _TWELVE_DIGITS.fullmatch(value):
        if len(value) != 12:
            raise InvalidPersonalId(f"must be exactly 12 digits, got {len(value)} characters")
        raise InvalidPersonalId("must contain only the digits 0-9")
    province_code = value[:3]
    if province_code not in PROVINCES:
        raise InvalidPersonalId(f"{province_code} is not a province code of birth registration")
    century_gender = int(value[3])
    # 0/1 → 1900s, 2/3 → 2000s, … 8/9 → 2300s; even digits are men, odd digits women.
    birth_year = 1900 + (century_gender // 2) * 100 + int(value[4:6])
    if current_year is None:
        current_year = SYSTEM_CLOCK.now().astimezone(VIETNAM).year
    if birth_year > current_year:
        raise InvalidPersonalId(
            f"digits 4-6 give the year of birth {birth_year}, which is in the future"
        )
    gender: Gender = "female" if century_gender % 2 else "male"
    return PersonalId(value, province_code, gender, birth_year)


def pseudonymise(value: str, key: bytes) -> str:
    """Stable token for a personal ID where records must be correlated but not read.

    Keyed (HMAC-SHA256), because a plain hash of a 12-digit number is reversed by trying
    them all. 32 hex characters (128 bits) keep collisions out of reach.
    """
    if len(key) < MIN_PSEUDONYM_KEY_BYTES:
        raise ValueError(f"the pseudonym key must be at least {MIN_PSEUDONYM_KEY_BYTES} bytes")
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
