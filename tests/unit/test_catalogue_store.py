"""Routing's catalogue tables on the embedded SQLite: loaded once per version of the files,
rebuilt in memory from the rows, procedures that left the files kept for dossiers under way."""

import shutil
from pathlib import Path

import yaml

from core.catalogue import DEFAULT_DIR
from core.storage import create_engine, create_tables, session_factory
from services.routing.catalogue_store import CatalogueStore
from services.routing.models import metadata


async def test_files_are_loaded_once_per_version_and_read_back_from_the_rows(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "catalogue"
    shutil.copytree(DEFAULT_DIR, directory)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'routing.db'}")
    await create_tables(engine, metadata)
    variables = {"DEMO_AGENCY_BASE_URL": "http://sandbox.test", "DEMO_AGENCY_SECRET": "whsec_x"}
    store = CatalogueStore(engine, session_factory(engine), directory, variables, 60)
    try:
        first = await store.load_files()
        again = await store.load_files()
        assert (first.changed, first.version) == (True, 1)
        assert (again.changed, again.version) == (False, 1)
        catalogue = store.catalogue
        chain = catalogue.procedure("LT.KS-TT-BHYT")
        assert chain is not None
        assert [s.days for s in chain.steps] == [1, 3, 1]
        police = catalogue.agency(chain.steps[1].agency_code)
        assert police.url == f"http://sandbox.test/agencies/{police.code}/transfers"
        assert police.secret == "whsec_x"

        # A procedure leaves the files, another changes: one new version.
        path = directory / "procedures.yaml"
        procedures = yaml.safe_load(path.read_text())["procedures"]
        kept = [p for p in procedures if p["code"] != "HT.KS"]
        kept[0]["steps"][1]["days"] = 2
        path.write_text(yaml.safe_dump({"procedures": kept}, allow_unicode=True))
        changed = await store.load_files()
        assert (changed.changed, changed.version) == (True, 2)
        assert store.version == 2
        chain = catalogue.procedure("LT.KS-TT-BHYT")
        assert chain is not None
        assert [s.days for s in chain.steps] == [1, 2, 1]
        retired = catalogue.procedure("HT.KS")
        assert retired is not None
        assert not retired.active
        assert [s.name for s in retired.steps] == ["Đăng ký khai sinh"]

        # Every version stays whole: a dossier received under version 1 follows its steps.
        first_chain = await store.procedure(1, "LT.KS-TT-BHYT")
        assert first_chain is not None
        assert [s.days for s in first_chain.steps] == [1, 3, 1]
        assert await store.procedure(1, "HT.KS") is not None
        assert await store.procedure(2, "HT.KS") is None
        # Before versions were recorded (0): the current catalogue, retired procedures too.
        assert await store.procedure(0, "HT.KS") == retired
        served = await store.snapshot()
        assert served is not None
        assert (served.version, served.digest) == (2, changed.sha256)
        assert "HT.KS" not in {p.code for p in served.procedures}
        marital = next(p for p in served.procedures if p.code == "HT.XNTTHN")
        assert (list(marital.needs), marital.min_assurance) == (["residence"], 2)
        old = await store.snapshot(1)
        assert old is not None
        assert old.digest == first.sha256
        assert await store.snapshot(3) is None
    finally:
        await engine.dispose()
