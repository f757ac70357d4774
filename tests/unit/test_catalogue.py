from pathlib import Path

import pytest

from core.catalogue import CatalogueError, load_catalogue


def test_seeded_chain_has_three_agencies_in_order() -> None:
    catalogue = load_catalogue(variables={"DEMO_AGENCY_BASE_URL": "http://agencies.test"})
    chain = catalogue.procedure("LT.KS-TT-BHYT")
    assert chain is not None
    assert [s.name for s in chain.steps] == [
        "Đăng ký khai sinh",
        "Đăng ký thường trú",
        "Cấp thẻ bảo hiểm y tế",
    ]
    assert len({s.agency_code for s in chain.steps}) == 3
    police = catalogue.agency(chain.steps[1].agency_code)
    assert police.url == f"http://agencies.test/agencies/{police.code}/transfers"
    assert police.xroad == f"VN/GOV/{police.code}/cutru"


def test_a_step_naming_an_unknown_agency_is_refused(tmp_path: Path) -> None:
    (tmp_path / "agencies.yaml").write_text(
        "agencies:\n  - {code: A, name: A, delivery: {url: 'http://a'}}\n"
    )
    (tmp_path / "procedures.yaml").write_text(
        "procedures:\n  - code: P\n    name: P\n    receiving_agency: A\n    total_days: 1\n"
        "    steps: [{name: s, agency: B, days: 1}]\n"
    )
    with pytest.raises(CatalogueError, match="unknown agencies"):
        load_catalogue(tmp_path)


def write(tmp_path: Path, agencies: str, procedures: str | None = None) -> Path:
    (tmp_path / "agencies.yaml").write_text("agencies:\n" + agencies)
    (tmp_path / "procedures.yaml").write_text(
        "procedures:\n"
        + (
            procedures
            or "  - code: P\n    name: P\n    receiving_agency: A\n    total_days: 2\n"
            "    steps: [{name: s, agency: A, days: 1}]\n"
        )
    )
    return tmp_path


@pytest.mark.parametrize(
    ("agency", "error"),
    [
        ("{code: A, name: A, delivery: {channel: smtp, url: 'x'}}", "unknown delivery channel"),
        ("{code: A, name: A, delivery: {channel: grpc, url: 'h:1'}}", "'target' is required"),
        ("{code: A, name: A, delivery: {channel: kafka}}", "'topic' is required"),
        ("{code: A, name: A, xroad: VN/GOV/B/x, delivery: {url: 'http://a'}}", "not VN/GOV/A/"),
        ("{code: A, delivery: {url: 'http://a'}}", "agency A: 'name' is required"),
    ],
)
def test_a_bad_agency_entry_is_refused_with_the_reason(
    tmp_path: Path, agency: str, error: str
) -> None:
    with pytest.raises(CatalogueError, match=error):
        load_catalogue(write(tmp_path, f"  - {agency}\n"))


def test_an_agency_listed_twice_is_refused(tmp_path: Path) -> None:
    agency = "  - {code: A, name: A, delivery: {url: 'http://a'}}\n"
    with pytest.raises(CatalogueError, match="listed twice"):
        load_catalogue(write(tmp_path, agency * 2))


def test_a_legal_time_shorter_than_the_steps_is_refused(tmp_path: Path) -> None:
    procedures = (
        "  - code: P\n    name: P\n    receiving_agency: A\n    total_days: 3\n"
        "    steps:\n      - {name: s1, agency: A, days: 1}\n"
        "      - parallel: [{name: s2, agency: A, days: 1}, {name: s3, agency: A, days: 4}]\n"
    )
    with pytest.raises(CatalogueError, match=r"total_days 3 is shorter than its steps \(5"):
        load_catalogue(write(tmp_path, "  - {code: A, name: A, delivery: {url: x}}\n", procedures))


def test_addresses_and_secrets_come_from_the_environment(tmp_path: Path) -> None:
    agencies = (
        "  - {code: A, name: A, xroad: VN/GOV/A/sub,"
        " delivery: {channel: https, url: '${BASE}/a', secret: '${A_SECRET}'}}\n"
        "  - {code: B, name: B, delivery: {channel: grpc, target: '${GRPC}', secret: '${UNSET}'}}\n"
        "  - {code: C, name: C, delivery: {channel: kafka, topic: agency.C.inbox}}\n"
        "  - {code: D, name: D, delivery: {channel: http, url: 'http://d'}}\n"
    )
    catalogue = load_catalogue(
        write(tmp_path, agencies),
        variables={"BASE": "https://a.gov.vn", "A_SECRET": "whsec_abc", "GRPC": "b.gov.vn:443"},
    )
    a, b, c, d = (catalogue.agency(code) for code in "ABCD")
    assert (a.channel, a.url, a.target, a.secret) == (
        "https",
        "https://a.gov.vn/a",
        "https://a.gov.vn/a",
        "whsec_abc",
    )
    # An unset variable leaves the agency without a secret, never with "${UNSET}" as one.
    assert (b.channel, b.url, b.target, b.secret) == ("grpc", "", "b.gov.vn:443", "")
    assert (c.channel, c.target) == ("kafka", "agency.C.inbox")
    assert d.channel == "https"  # the walking skeleton's `http` still reads


def test_seeded_demo_agencies_cover_every_channel() -> None:
    catalogue = load_catalogue()
    channels = {a.channel for a in catalogue.agencies.values()}
    assert channels == {"https", "grpc", "kafka"}
    procedure = catalogue.procedure("LT.XDKT-TCXH")
    assert procedure is not None
    assert [catalogue.agency(s.agency_code).channel for s in procedure.steps] == ["kafka", "grpc"]
