"""The population-registry stand-in, over a real gRPC socket."""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import AsyncIterator

import grpc
import pytest

from core.personal_id import PROVINCES, validate_personal_id
from gateway.v1 import registry_pb2, registry_pb2_grpc
from sandbox.registry import FAMILY_NAMES, RegistrySandbox

CITIZEN = "001090012345"  # Hà Nội, man born 1990
HEAD = "079185000001"  # Hồ Chí Minh, woman born 1985


def spread() -> list[str]:
    """Registered numbers over provinces, centuries, genders and years of birth."""
    numbers = []
    provinces = ["001", "031", "048", "079", "092", "096"]
    for i, (province, century, yy) in enumerate(
        itertools.product(provinces, "0123", [0, 26, 61, 99])
    ):
        if 1900 + int(century) // 2 * 100 + yy <= 2026:
            # Last digit 0-8: a final 9 means "not registered" in the sandbox.
            numbers.append(f"{province}{century}{yy:02d}{(12345 + 7919 * i) % 100000:05d}{i % 9}")
    return numbers


SAMPLE = spread()


@pytest.fixture(scope="module")
async def registry() -> AsyncIterator[RegistrySandbox]:
    async with RegistrySandbox(port=0) as running:
        yield running


@pytest.fixture
async def stub(
    registry: RegistrySandbox,
) -> AsyncIterator[registry_pb2_grpc.PopulationRegistryAsyncStub]:
    # No proxy: a proxy from the environment must not stand between the test and localhost.
    async with grpc.aio.insecure_channel(
        registry.target, options=[("grpc.enable_http_proxy", 0)]
    ) as channel:
        yield registry_pb2_grpc.PopulationRegistryStub(channel)


def request(personal_id: str, /, **overrides: str) -> registry_pb2.GetResidenceRequest:
    fields = {
        "personal_id": personal_id,
        "purpose": "dossier:000.00.01.H22-261122-0001:LT.KS-TT-BHYT",
        "requesting_agency": "000.00.01.H22",
        "dossier_code": "000.00.01.H22-261122-0001",
    } | overrides
    return registry_pb2.GetResidenceRequest(**fields)


async def test_same_number_gives_the_same_citizen_even_after_a_restart(
    stub: registry_pb2_grpc.PopulationRegistryAsyncStub,
) -> None:
    first = await stub.GetResidence(request(CITIZEN))
    assert await stub.GetResidence(request(CITIZEN)) == first
    async with (
        RegistrySandbox(port=0) as other,
        grpc.aio.insecure_channel(other.target, options=[("grpc.enable_http_proxy", 0)]) as ch,
    ):
        assert (
            await registry_pb2_grpc.PopulationRegistryStub(ch).GetResidence(request(CITIZEN))
            == first
        )
    assert first.personal_id == CITIZEN
    assert first != await stub.GetResidence(request(HEAD))


async def test_citizen_is_consistent_with_the_number(
    stub: registry_pb2_grpc.PopulationRegistryAsyncStub,
) -> None:
    names = set()
    for personal_id in SAMPLE:
        residence = await stub.GetResidence(request(personal_id))
        pid = validate_personal_id(personal_id)
        assert int(residence.birth_date[:4]) == pid.birth_year, personal_id
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", residence.birth_date)
        family, middle, _given = residence.full_name.split(" ")
        assert family in FAMILY_NAMES
        if middle == "Thị":
            assert pid.gender == "female", "Thị is a woman's middle name"
        names.add(residence.full_name)

        home = residence.permanent_residence
        assert home.province_code == pid.province_code
        assert home.province_name == PROVINCES[pid.province_code]
        assert re.fullmatch(r"\d{5}", home.ward_code)
        assert re.fullmatch(r"\d{3}", home.district_code)
        assert home.line.startswith("Số ")
        assert home.ward_name.split(" ", 1)[0] in {"Phường", "Xã"}
        if residence.HasField("temporary_residence"):
            away = residence.temporary_residence
            assert away.province_code != home.province_code
            assert away.province_name == PROVINCES[away.province_code]
    # Derived from a hash: different numbers do not all map to one person.
    assert len(names) > len(SAMPLE) // 2


async def test_household_members_hold_valid_numbers_and_plausible_roles(
    stub: registry_pb2_grpc.PopulationRegistryAsyncStub,
) -> None:
    roles_seen = set()
    for personal_id in SAMPLE:
        household = (await stub.GetResidence(request(personal_id))).household
        members = {m.personal_id: m for m in household.members}
        assert 2 <= len(household.members) <= 4
        assert len(members) == len(household.members), "member numbers are unique"
        assert members[personal_id].relationship == household.relationship_to_head
        assert members[household.head_personal_id].relationship == "Chủ hộ"
        assert [m.relationship for m in household.members].count("Chủ hộ") == 1
        assert re.fullmatch(r"\d{12}", household.household_id)
        citizen_year = validate_personal_id(personal_id).birth_year
        for member in household.members:
            # The product's own validator accepts every number the registry hands out.
            pid = validate_personal_id(member.personal_id)
            assert pid.province_code == personal_id[:3]
            assert not member.personal_id.endswith("9"), "members are registered too"
            assert member.full_name.split(" ")[0] in FAMILY_NAMES
            if member.relationship == "Con" and household.relationship_to_head == "Chủ hộ":
                assert pid.birth_year >= citizen_year + 18
            if member.relationship == "Vợ":
                assert pid.gender == "female"
            if member.relationship == "Chồng":
                assert pid.gender == "male"
            roles_seen.add(member.relationship)
        if household.relationship_to_head == "Con":
            head = validate_personal_id(household.head_personal_id)
            assert head.birth_year <= citizen_year - 18
            assert (
                members[household.head_personal_id].full_name.split(" ")[0]
                == (members[personal_id].full_name.split(" ")[0])
            ), "a child carries the father's family name"
    assert roles_seen == {"Chủ hộ", "Vợ", "Chồng", "Con"}


async def test_members_can_be_looked_up_in_turn(
    stub: registry_pb2_grpc.PopulationRegistryAsyncStub,
) -> None:
    household = (await stub.GetResidence(request(HEAD))).household
    for member in household.members:
        found = await stub.GetResidence(request(member.personal_id))
        assert found.full_name  # registered: no NOT_FOUND


@pytest.mark.parametrize(
    "personal_id",
    [
        "001090012349",  # last digit 9: the sandbox's "not registered"
        "003090012345",  # no such province
        "001490012345",  # born in 2190
    ],
)
async def test_unregistered_numbers_are_not_found(
    stub: registry_pb2_grpc.PopulationRegistryAsyncStub, personal_id: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetResidence(request(personal_id))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert personal_id not in (raised.value.details() or "")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"personal_id": ""}, "12 digits"),
        ({"personal_id": "00109001234"}, "12 digits"),
        ({"personal_id": "0010900123456"}, "12 digits"),
        ({"personal_id": "00109001234a"}, "12 digits"),
        ({"personal_id": "00109001234\u0665"}, "12 digits"),
        ({"purpose": ""}, "purpose"),
        ({"purpose": "   "}, "purpose"),
        ({"requesting_agency": ""}, "requesting_agency"),
    ],
)
async def test_bad_requests_are_invalid_arguments(
    stub: registry_pb2_grpc.PopulationRegistryAsyncStub, overrides: dict[str, str], reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetResidence(request(CITIZEN, **overrides))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in (raised.value.details() or "")


async def test_requests_are_logged_with_the_number_masked(
    stub: registry_pb2_grpc.PopulationRegistryAsyncStub, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sandbox.registry"):
        await stub.GetResidence(request(CITIZEN, purpose=f"check {CITIZEN}"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetResidence(request("001090012349"))
    logged = [r.getMessage() for r in caplog.records if r.name == "sandbox.registry"]
    assert len(logged) == 2
    assert "0010******45" in logged[0]
    assert "000.00.01.H22" in logged[0]
    assert "0010******49" in logged[1]
    assert CITIZEN not in caplog.text
    assert "001090012349" not in caplog.text
