"""The procedure catalogue and agency registry, read from the data files in catalogue/.

Intake validates submissions against it; routing follows its steps. It is data, so a
procedure or an agency endpoint changes without a code change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "catalogue"


@dataclass(frozen=True)
class Agency:
    code: str
    name: str
    xroad: str
    channel: str
    url: str


@dataclass(frozen=True)
class Step:
    index: int
    # Steps of one stage run in parallel; the next stage starts when all are done (a join).
    stage: int
    name: str
    agency_code: str
    days: int


@dataclass(frozen=True)
class Procedure:
    code: str
    name: str
    receiving_agency: str
    total_days: int
    required_fields: tuple[str, ...]
    steps: tuple[Step, ...]
    # Citizen data the dossier must carry, e.g. ("residence",): read from the registry with
    # the citizen's consent, or proven by an uploaded document.
    needs: tuple[str, ...] = ()
    # Lowest e-ID assurance level (VNeID 1 or 2) a citizen filing with e-ID must have.
    min_assurance: int = 1

    @property
    def stage_count(self) -> int:
        return self.steps[-1].stage + 1 if self.steps else 0

    def stage(self, number: int) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.stage == number)


class CatalogueError(ValueError):
    pass


@dataclass(frozen=True)
class Catalogue:
    procedures: Mapping[str, Procedure]
    agencies: Mapping[str, Agency]

    def procedure(self, code: str) -> Procedure | None:
        return self.procedures.get(code)

    def agency(self, code: str) -> Agency:
        return self.agencies[code]


def load_catalogue(
    directory: Path = DEFAULT_DIR, variables: Mapping[str, str] | None = None
) -> Catalogue:
    """Load and cross-check the catalogue; ${VAR} in URLs come from `variables` or the env."""
    env = {**os.environ, **(variables or {})}
    agencies = {
        a.code: a
        for a in (_agency(raw, env) for raw in _read(directory / "agencies.yaml", "agencies"))
    }
    procedures = {
        p.code: p
        for p in (_procedure(raw) for raw in _read(directory / "procedures.yaml", "procedures"))
    }
    for procedure in procedures.values():
        unknown = {procedure.receiving_agency} | {s.agency_code for s in procedure.steps}
        unknown -= agencies.keys()
        if unknown:
            raise CatalogueError(f"procedure {procedure.code} names unknown agencies {unknown}")
        if not procedure.steps:
            raise CatalogueError(f"procedure {procedure.code} has no steps")
    return Catalogue(procedures=procedures, agencies=agencies)


def _read(path: Path, key: str) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        document = yaml.safe_load(handle) or {}
    items = document.get(key)
    if not isinstance(items, list):
        raise CatalogueError(f"{path}: expected a list under '{key}'")
    return items


def _agency(raw: dict[str, Any], env: Mapping[str, str]) -> Agency:
    delivery = raw.get("delivery") or {}
    return Agency(
        code=str(raw["code"]),
        name=str(raw["name"]),
        xroad=str(raw.get("xroad", "")),
        channel=str(delivery.get("channel", "http")),
        url=Template(str(delivery.get("url", ""))).safe_substitute(env),
    )


def _procedure(raw: dict[str, Any]) -> Procedure:
    return Procedure(
        code=str(raw["code"]),
        name=str(raw["name"]),
        receiving_agency=str(raw["receiving_agency"]),
        total_days=int(raw["total_days"]),
        required_fields=tuple(str(f) for f in raw.get("required_fields", ())),
        steps=_steps(raw.get("steps", ())),
        needs=tuple(str(n) for n in raw.get("needs", ())),
        min_assurance=int(raw.get("min_assurance", 1)),
    )


def _steps(raw_steps: list[dict[str, Any]]) -> tuple[Step, ...]:
    """Flatten `steps`; an item `{parallel: [step, ...]}` is one stage of parallel steps."""
    steps: list[Step] = []
    for stage, item in enumerate(raw_steps):
        for raw in item.get("parallel") or [item]:
            steps.append(
                Step(
                    index=len(steps),
                    stage=stage,
                    name=str(raw["name"]),
                    agency_code=str(raw["agency"]),
                    days=int(raw["days"]),
                )
            )
    return tuple(steps)
