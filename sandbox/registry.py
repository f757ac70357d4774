"""Stand-in of the national population registry: `PopulationRegistry` over real gRPC.

Every citizen is synthetic and derived from a hash of the personal ID, so the same number
gets the same person on every run, machine and Python version, without any stored data.
Conventions that let tests reach each answer:
- any 12-digit number is well-formed (INVALID_ARGUMENT otherwise); nothing more is
  checked, as the real registry decides by looking the number up;
- numbers ending in 9, with an unknown province code or born in the future are not
  registered (NOT_FOUND), since nobody can hold them.

Like every stand-in, this never imports the product (`core`): only the contract.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from types import TracebackType
from typing import TypeVar
from zoneinfo import ZoneInfo

import grpc

from gateway.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger("sandbox.registry")

_ID = re.compile(r"[0-9]{12}")
# Any 12-digit run in free text (a purpose, a dossier code) is masked before it is logged.
_ID_IN_TEXT = re.compile(r"(?<![0-9])[0-9]{12}(?![0-9])")
_VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")

# Province codes of birth registration, as a compact table: code, space, name.
_PROVINCE_TABLE = (
    "001 Hà Nội|002 Hà Giang|004 Cao Bằng|006 Bắc Kạn|008 Tuyên Quang|010 Lào Cai|"
    "011 Điện Biên|012 Lai Châu|014 Sơn La|015 Yên Bái|017 Hòa Bình|019 Thái Nguyên|"
    "020 Lạng Sơn|022 Quảng Ninh|024 Bắc Giang|025 Phú Thọ|026 Vĩnh Phúc|027 Bắc Ninh|"
    "030 Hải Dương|031 Hải Phòng|033 Hưng Yên|034 Thái Bình|035 Hà Nam|036 Nam Định|"
    "037 Ninh Bình|038 Thanh Hóa|040 Nghệ An|042 Hà Tĩnh|044 Quảng Bình|045 Quảng Trị|"
    "046 Thừa Thiên Huế|048 Đà Nẵng|049 Quảng Nam|051 Quảng Ngãi|052 Bình Định|"
    "054 Phú Yên|056 Khánh Hòa|058 Ninh Thuận|060 Bình Thuận|062 Kon Tum|064 Gia Lai|"
    "066 Đắk Lắk|067 Đắk Nông|068 Lâm Đồng|070 Bình Phước|072 Tây Ninh|074 Bình Dương|"
    "075 Đồng Nai|077 Bà Rịa - Vũng Tàu|079 Hồ Chí Minh|080 Long An|082 Tiền Giang|"
    "083 Bến Tre|084 Trà Vinh|086 Vĩnh Long|087 Đồng Tháp|089 An Giang|091 Kiên Giang|"
    "092 Cần Thơ|093 Hậu Giang|094 Sóc Trăng|095 Bạc Liêu|096 Cà Mau"
)
_PROVINCES = {entry[:3]: entry[4:] for entry in _PROVINCE_TABLE.split("|")}
# Where people most often register a temporary residence: studies and work.
_CITIES = ["001", "079", "048", "031", "092"]

FAMILY_NAMES = "Nguyễn Trần Lê Phạm Hoàng Huỳnh Phan Vũ Võ Đặng Bùi Đỗ Hồ Ngô Dương Lý".split()  # noqa: SIM905
_MIDDLE = {
    "male": ["Văn", "Minh", "Đức", "Quốc", "Hữu", "Thành"],
    "female": ["Thị", "Thu", "Ngọc", "Thanh"],
}
_GIVEN = {
    "male": ["An", "Bình", "Dũng", "Hải", "Khôi", "Long", "Nam", "Phúc", "Quân", "Tuấn"],
    "female": ["An", "Chi", "Hà", "Hương", "Lan", "Linh", "Mai", "Thảo", "Trang", "Yến"],
}
_PLACES = "Đồng Tâm|Tân Phong|Hòa Bình|Quang Trung|Minh Khai|Tân Định|Phú Lợi|An Khánh".split("|")  # noqa: SIM905
_DISTRICTS = "Đông Hưng|Thống Nhất|Tân Bình|Phú Nhuận|Thanh Sơn|Hòa Vang|Ninh Phước".split("|")  # noqa: SIM905
_HAMLETS = ["Đông", "Tây", "Nam", "Bắc", "Thượng", "Hạ", "Trung"]
_STREETS = ["Lê Lợi", "Trần Phú", "Nguyễn Trãi", "Hùng Vương", "Lý Thường Kiệt", "Hai Bà Trưng"]

T = TypeVar("T")


def mask(value: str) -> str:
    return f"{value[:4]}******{value[-2:]}" if len(value) == 12 else "*" * len(value)


def _scrub(text: str) -> str:
    return _ID_IN_TEXT.sub(lambda m: mask(m.group()), text)


class _Draw:
    """A stream of choices taken from SHA-256 of the seed: stable unlike `random`."""

    def __init__(self, seed: str) -> None:
        self._seed = seed.encode()
        self._count = 0

    def number(self, below: int) -> int:
        self._count += 1
        digest = hashlib.sha256(self._seed + self._count.to_bytes(4, "big")).digest()
        return int.from_bytes(digest[:8], "big") % below

    def pick(self, options: Sequence[T]) -> T:
        return options[self.number(len(options))]

    def digits(self, count: int) -> str:
        return "".join(str(self.number(10)) for _ in range(count))


def _birth_year(personal_id: str) -> int:
    return 1900 + int(personal_id[3]) // 2 * 100 + int(personal_id[4:6])


def _gender(personal_id: str) -> str:
    return "female" if int(personal_id[3]) % 2 else "male"


def _name(draw: _Draw, gender: str, family: str | None = None) -> str:
    family = family or draw.pick(FAMILY_NAMES)
    return f"{family} {draw.pick(_MIDDLE[gender])} {draw.pick(_GIVEN[gender])}"


def _birth_date(draw: _Draw, year: int, today: date) -> str:
    born = date(year, 1, 1) + timedelta(days=draw.number(365))
    if born > today:
        # Born this year: somewhere between New Year and today.
        born = date(year, 1, 1) + timedelta(days=draw.number(today.timetuple().tm_yday))
    return born.isoformat()


def _address(draw: _Draw, province_code: str) -> registry_pb2.Address:
    urban = draw.number(2) == 0
    if urban:
        line = f"Số {1 + draw.number(199)}, đường {draw.pick(_STREETS)}"
    else:
        line = f"Số {1 + draw.number(99)}, thôn {draw.pick(_HAMLETS)}"
    return registry_pb2.Address(
        line=line,
        ward_code=draw.digits(5),
        ward_name=("Phường " if urban else "Xã ") + draw.pick(_PLACES),
        district_code=draw.digits(3),
        district_name=("Quận " if urban else "Huyện ") + draw.pick(_DISTRICTS),
        province_code=province_code,
        province_name=_PROVINCES[province_code],
    )


class _Household:
    """Members of one synthetic household, each with a valid number of its own."""

    def __init__(self, draw: _Draw, province_code: str, citizen_id: str) -> None:
        self._draw = draw
        self._province = province_code
        self._taken = {citizen_id}
        self.members: list[registry_pb2.HouseholdMember] = []

    def add(self, year: int, gender: str, relationship: str, family: str | None = None) -> str:
        century_gender = (year - 1900) // 100 * 2 + (gender == "female")
        personal_id = ""
        while not personal_id or personal_id in self._taken:
            # The last digit is never 9: members are registered and can be looked up.
            random_part = self._draw.digits(5) + str(self._draw.number(9))
            personal_id = f"{self._province}{century_gender}{year % 100:02d}{random_part}"
        self._taken.add(personal_id)
        self.join(personal_id, _name(self._draw, gender, family), relationship)
        return personal_id

    def join(self, personal_id: str, full_name: str, relationship: str) -> None:
        self.members.append(
            registry_pb2.HouseholdMember(
                personal_id=personal_id, full_name=full_name, relationship=relationship
            )
        )


def _household(draw: _Draw, pid: str, full_name: str, year: int) -> registry_pb2.Household:
    gender = _gender(pid)
    family = full_name.split(" ", 1)[0]
    house = _Household(draw, pid[:3], pid)
    # Born by 1985: head of a household with a spouse and up to two grown children.
    # Born later: a child in the father's household; nobody is born in the future.
    if year <= 1985:
        head, relationship = pid, "Chủ hộ"
        house.join(pid, full_name, relationship)
        spouse_year = max(1900, year + draw.number(7) - 3)
        if gender == "male":
            house.add(spouse_year, "female", "Vợ")
            children_family = family
        else:
            children_family = draw.pick(FAMILY_NAMES)
            house.add(spouse_year, "male", "Chồng", children_family)
        for _ in range(draw.number(3)):
            child_year = year + 22 + draw.number(13)
            house.add(child_year, draw.pick(["male", "female"]), "Con", children_family)
    else:
        relationship = "Con"
        head = house.add(year - 22 - draw.number(13), "male", "Chủ hộ", family)
        house.join(pid, full_name, relationship)
        father_year = _birth_year(head)
        if draw.number(2):
            house.add(father_year + draw.number(5) - 2, "female", "Vợ")
        if draw.number(2):
            house.add(year - 2 - draw.number(3), draw.pick(["male", "female"]), "Con", family)
    return registry_pb2.Household(
        household_id=pid[:3] + draw.digits(9),
        head_personal_id=head,
        relationship_to_head=relationship,
        members=house.members,
    )


def residence_of(personal_id: str, today: date | None = None) -> registry_pb2.Residence | None:
    """The registered citizen behind a 12-digit number, or None when nobody holds it."""
    today = today or datetime.now(_VIETNAM).date()
    year = _birth_year(personal_id)
    if personal_id.endswith("9") or personal_id[:3] not in _PROVINCES or year > today.year:
        return None
    draw = _Draw(personal_id)
    full_name = _name(draw, _gender(personal_id))
    residence = registry_pb2.Residence(
        personal_id=personal_id,
        full_name=full_name,
        birth_date=_birth_date(draw, year, today),
        permanent_residence=_address(draw, personal_id[:3]),
        household=_household(draw, personal_id, full_name, year),
    )
    # Adults often live away from home, registered as temporary residents where they study
    # or work.
    if year <= today.year - 18 and draw.number(3) == 0:
        city = draw.pick([c for c in _CITIES if c != personal_id[:3]])
        residence.temporary_residence.CopyFrom(_address(draw, city))
    return residence


class RegistryServicer(registry_pb2_grpc.PopulationRegistryServicer):
    async def GetResidence(
        self,
        request: registry_pb2.GetResidenceRequest,
        context: grpc.aio.ServicerContext[registry_pb2.GetResidenceRequest, registry_pb2.Residence],
    ) -> registry_pb2.Residence:
        # The real registry records who read what and why; the sandbox keeps it in the log.
        log.info(
            "GetResidence %s for agency %r, purpose %r, dossier %r",
            mask(request.personal_id),
            _scrub(request.requesting_agency),
            _scrub(request.purpose),
            _scrub(request.dossier_code),
        )
        problem = None
        if not _ID.fullmatch(request.personal_id):
            problem = "personal_id must be 12 digits"
        elif not request.purpose.strip():
            problem = "purpose is required: say why the data is read"
        elif not request.requesting_agency.strip():
            problem = "requesting_agency is required"
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        residence = residence_of(request.personal_id)
        if residence is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no citizen registered under this ID")
        assert residence is not None  # abort() raises
        return residence


async def serve_registry(host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Start the registry on host:port (0 for a free port); returns it and the bound port."""
    server = grpc.aio.server()
    registry_pb2_grpc.add_PopulationRegistryServicer_to_server(RegistryServicer(), server)
    bound = server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    if bound == 0:  # older grpcio reports a failed bind this way instead of raising
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    log.info("population registry listening on %s:%d", host, bound)
    return server, bound


class RegistrySandbox:
    """The registry served for the duration of an `async with` block."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def __aenter__(self) -> RegistrySandbox:
        self._server, self.port = await serve_registry(self.host, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            await self._server.stop(grace=1.0)
            self._server = None
