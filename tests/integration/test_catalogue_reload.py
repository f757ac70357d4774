"""The catalogue lives in routing's database; a changed file is loaded by a reload and
routes the next dossier, an unchanged one is a no-op and a broken one changes nothing.
A dossier already received keeps the version it was received under, in intake, routing
and notify alike."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from devstack.stack import Stack
from tests.support.agencies import birth_registration
from tests.support.flows import (
    CHAIN,
    as_operator,
    chain_dossier,
    dossier_view,
    eventually,
    mails_to,
    submit,
    wait_completed,
)


async def catalogue_rows(database_url: str) -> dict[str, Any]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("SELECT version FROM routing_catalogue"))).one()
            procedures = await conn.execute(
                text("SELECT code, active FROM routing_procedure ORDER BY code")
            )
            steps = await conn.execute(
                text(
                    "SELECT name, agency_code, days FROM routing_procedure_step"
                    " WHERE procedure_code = 'HT.KS'"
                )
            )
            agencies = await conn.execute(text("SELECT code, channel FROM routing_agency"))
            return {
                "version": version.version,
                "procedures": dict(procedures.all()),
                "birth_steps": [tuple(s) for s in steps],
                "agencies": dict(agencies.all()),
            }
    finally:
        await engine.dispose()


@pytest.fixture
def procedures_file(stack: Stack) -> Iterator[Path]:
    path = stack.var_dir / "catalogue" / "procedures.yaml"
    original = path.read_text()
    yield path
    path.write_text(original)
    assert (
        httpx.post(
            f"{stack.url('routing')}/v1/catalogue/reload", headers=as_operator(stack), timeout=10
        ).status_code
        == 200
    )
    # Intake follows within its refresh interval: the next test's dossiers must be received
    # under the restored catalogue, not the changed one.
    restored = {
        p["code"]: [s["name"] for s in p["steps"]]
        for p in yaml.safe_load(original)["procedures"]
        if p["code"] in ("HT.KS", CHAIN)  # the procedures these tests change
    }
    eventually(
        lambda: all(
            [s["name"] for s in intake_procedure(stack, code)["steps"]] == steps
            for code, steps in restored.items()
        ),
        timeout=60,
    )


def with_birth_step(procedures: list[dict[str, Any]], **changes: str) -> str:
    """procedures.yaml with the one step of HT.KS changed."""
    changed = copy.deepcopy(procedures)
    birth = next(p for p in changed if p["code"] == "HT.KS")
    birth["steps"][0].update(changes)
    return yaml.safe_dump({"procedures": changed}, allow_unicode=True, sort_keys=False)


def reload(stack: Stack) -> httpx.Response:
    return httpx.post(
        f"{stack.url('routing')}/v1/catalogue/reload", headers=as_operator(stack), timeout=10
    )


def intake_procedure(stack: Stack, code: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.url('intake')}/v1/procedures/{code}", timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_catalogue_is_in_the_database_and_a_changed_file_reloads(
    stack: Stack, database_url: str, procedures_file: Path
) -> None:
    files = yaml.safe_load(procedures_file.read_text())["procedures"]
    rows = asyncio.run(catalogue_rows(database_url))
    assert set(rows["procedures"]) == {p["code"] for p in files}
    assert all(rows["procedures"].values())
    assert rows["birth_steps"] == [("Đăng ký khai sinh", "000.21.31.H22", 1)]
    assert set(rows["agencies"].values()) == {"https", "grpc", "kafka"}

    unchanged = reload(stack).json()
    assert (unchanged["changed"], unchanged["version"]) == (False, rows["version"])

    renamed = "Đăng ký khai sinh (đúng hạn)"
    procedures_file.write_text(with_birth_step(files, name=renamed))
    changed = reload(stack).json()
    assert (changed["changed"], changed["version"]) == (True, rows["version"] + 1)
    assert changed["procedures"]["HT.KS"]["steps"][0]["name"] == renamed
    assert changed["procedures"]["LT.KS-TT-BHYT"]["steps"][0]["name"] == "Đăng ký khai sinh"
    assert asyncio.run(catalogue_rows(database_url))["birth_steps"] == [
        (renamed, "000.21.31.H22", 1)
    ]
    # The next dossier follows the new catalogue, without a restart: once intake has it
    # from routing (within CATALOGUE_REFRESH_S).
    eventually(lambda: intake_procedure(stack, "HT.KS")["steps"][0]["name"] == renamed)
    code = submit(stack, birth_registration("reloaded@example.vn"))
    assert wait_completed(stack, code)["steps"][0]["name"] == renamed

    procedures_file.write_text(with_birth_step(files, name=renamed, agency="NO.SUCH"))
    broken = reload(stack)
    assert broken.status_code == 422
    assert broken.headers["content-type"] == "application/problem+json"
    assert "unknown agencies" in broken.json()["detail"]
    shown = httpx.get(
        f"{stack.url('routing')}/v1/catalogue", headers=as_operator(stack), timeout=10
    ).json()
    assert shown["version"] == rows["version"] + 1


def maintenance(stack: Stack, on: bool) -> None:
    response = httpx.put(
        f"{stack.url('routing')}/v1/maintenance",
        json={"on": on, "reason": "catalogue overhaul"},
        headers=as_operator(stack),
        timeout=10,
    )
    assert response.status_code == 200, response.text


def test_a_reload_never_changes_a_dossier_already_received(
    stack: Stack, procedures_file: Path
) -> None:
    files = yaml.safe_load(procedures_file.read_text())["procedures"]
    chain = next(p for p in files if p["code"] == CHAIN)
    old_name, old_steps = chain["name"], [s["name"] for s in chain["steps"]]
    # Routing delivers nothing in maintenance: the first dossier waits, received, while
    # the catalogue changes under it.
    maintenance(stack, True)
    try:
        in_flight = submit(stack, chain_dossier("received-before@example.vn"))
        version = dossier_view(stack, in_flight)["catalogue_version"]
        assert version >= 1

        # The chain loses its last step (health insurance) and is renamed.
        changed = copy.deepcopy(files)
        new = next(p for p in changed if p["code"] == CHAIN)
        new["name"], new["steps"] = "Liên thông khai sinh, thường trú", new["steps"][:2]
        procedures_file.write_text(
            yaml.safe_dump({"procedures": changed}, allow_unicode=True, sort_keys=False)
        )
        new_version = reload(stack).json()["version"]
        assert new_version > version
        # Intake follows routing's catalogue within its refresh interval.
        eventually(lambda: len(intake_procedure(stack, CHAIN)["steps"]) == 2, timeout=60)
        after = submit(stack, chain_dossier("received-after@example.vn"))
    finally:
        maintenance(stack, False)

    # The dossier under way still crosses all three agencies, under its own version.
    old = wait_completed(stack, in_flight, timeout=90)
    assert [s["name"] for s in old["steps"]] == old_steps
    assert all(s["status"] == "completed" for s in old["steps"])
    assert (old["catalogue_version"], old["procedure_name"]) == (version, old_name)
    # The next one follows the new version.
    fresh = wait_completed(stack, after, timeout=90)
    assert [s["name"] for s in fresh["steps"]] == old_steps[:2]
    assert (fresh["catalogue_version"], fresh["procedure_name"]) == (
        new_version,
        "Liên thông khai sinh, thường trú",
    )
    # Notify names the procedure as the citizen filed it, in the message after the reload.
    done = f"Hồ sơ {in_flight} đã được giải quyết xong"
    mails = eventually(
        lambda: [m for m in mails_to(stack, "received-before@example.vn") if m["subject"] == done]
    )
    assert old_name in mails[0]["text"]
