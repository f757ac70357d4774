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
