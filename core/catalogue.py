"""The procedure catalogue and agency registry, read from the data files in catalogue/.

Intake validates submissions against it; routing follows its steps. It is data, so a
procedure or an agency endpoint changes without a code change. Routing alone reads the files:
it keeps every version in its database (services/routing/catalogue_store.py) and serves them
over gRPC; intake and notify build this in-memory form from there (core/catalogue_client.py).

Endpoints and signing secrets are written as ${VARIABLES}: the files (and routing's tables)
keep the references, and `Catalogue.resolved` fills them from each process's environment,
so no secret is ever committed or stored in a table.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from string import Template
from typing import Any

import yaml

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "catalogue"
FILES = ("agencies.yaml", "procedures.yaml")
# How an agency takes transfers, and the key under `delivery` that names where.
CHANNEL_ADDRESS = {"https": "url", "grpc": "target", "kafka": "topic"}
# The walking skeleton called the HTTPS channel `http`; the files may still say so.
_CHANNEL_ALIASES = {"http": "https"}
_XROAD = re.compile(r"VN/GOV/(?P<code>[^/]+)/(?P<subsystem>[A-Za-z0-9._-]+)")
_UNRESOLVED = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")


@dataclass(frozen=True)
class Agency:
    code: str
    name: str
    xroad: str
    channel: str
    # The HTTPS endpoint (empty for the other channels).
    url: str
    # Where the channel delivers: the URL, the gRPC target (host:port) or the inbox topic.
    target: str = ""
    # The Standard Webhooks secret transfers are signed with; empty when not configured.
    secret: str = ""


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
    # False once the procedure left the files: kept so dossiers under way can finish.
    active: bool = True
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

    def form_schema(self) -> dict[str, Any]:
        """The JSON Schema of the procedure's form_data, as intake checks it: each required
        field present, neither null nor an empty string; other fields are free."""
        present: dict[str, Any] = {"not": {"type": "null"}, "minLength": 1}
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"form_data of {self.code}",
            "type": "object",
            "required": list(self.required_fields),
            "properties": {name: present for name in self.required_fields},
            "additionalProperties": True,
        }


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

    def resolved(self, env: Mapping[str, str]) -> Catalogue:
        """The catalogue with ${VAR} references in addresses and secrets filled from env."""
        return replace(self, agencies={code: _resolve(a, env) for code, a in self.agencies.items()})


class LiveCatalogue(Catalogue):
    """The catalogue as last loaded; readers always see one whole version, swapped at once."""

    def __init__(self) -> None:
        self.swap(Catalogue(procedures={}, agencies={}))

    def swap(self, current: Catalogue) -> None:
        object.__setattr__(self, "_current", current)

    @property
    def procedures(self) -> Mapping[str, Procedure]:
        current: Catalogue = object.__getattribute__(self, "_current")
        return current.procedures

    @property
    def agencies(self) -> Mapping[str, Agency]:
        current: Catalogue = object.__getattribute__(self, "_current")
        return current.agencies


def load_catalogue(
    directory: Path = DEFAULT_DIR, variables: Mapping[str, str] | None = None
) -> Catalogue:
    """Load and cross-check the catalogue; ${VAR} in URLs come from `variables` or the env."""
    return parse_catalogue(directory).resolved({**os.environ, **(variables or {})})


def catalogue_digest(directory: Path = DEFAULT_DIR) -> str:
    """SHA-256 of the files as written: an unchanged catalogue is recognised and skipped."""
    digest = hashlib.sha256()
    for name in FILES:
        digest.update((directory / name).read_bytes())
    return digest.hexdigest()


def parse_catalogue(directory: Path = DEFAULT_DIR) -> Catalogue:
    """The validated catalogue with its ${VAR} references left as written."""
    agencies: dict[str, Agency] = {}
    for raw in _read(directory / "agencies.yaml", "agencies"):
        agency = _agency(raw)
        if agency.code in agencies:
            raise CatalogueError(f"agency {agency.code} is listed twice")
        agencies[agency.code] = agency
    procedures: dict[str, Procedure] = {}
    for raw in _read(directory / "procedures.yaml", "procedures"):
        procedure = _procedure(raw)
        if procedure.code in procedures:
            raise CatalogueError(f"procedure {procedure.code} is listed twice")
        procedures[procedure.code] = procedure
    if not agencies or not procedures:
        raise CatalogueError(f"{directory}: the catalogue needs agencies and procedures")
    catalogue = Catalogue(procedures=procedures, agencies=agencies)
    for procedure in procedures.values():
        check_procedure(procedure, catalogue)
    return catalogue


def check_procedure(procedure: Procedure, catalogue: Catalogue) -> None:
    unknown = {procedure.receiving_agency} | {s.agency_code for s in procedure.steps}
    unknown -= catalogue.agencies.keys()
    if unknown:
        raise CatalogueError(f"procedure {procedure.code} names unknown agencies {unknown}")
    if not procedure.steps:
        raise CatalogueError(f"procedure {procedure.code} has no steps")
    # A stage lasts as long as its slowest branch; the legal time must cover them all.
    needed = sum(max(s.days for s in procedure.stage(n)) for n in range(procedure.stage_count))
    if procedure.total_days < needed:
        raise CatalogueError(
            f"procedure {procedure.code}: total_days {procedure.total_days} is shorter than "
            f"its steps ({needed} working days)"
        )


def _read(path: Path, key: str) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        document = yaml.safe_load(handle) or {}
    items = document.get(key)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise CatalogueError(f"{path}: expected a list of mappings under '{key}'")
    return items


def _field(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if value is None or str(value).strip() == "":
        raise CatalogueError(f"{where}: '{key}' is required")
    return str(value)


def _agency(raw: dict[str, Any]) -> Agency:
    code = _field(raw, "code", "agency")
    where = f"agency {code}"
    xroad = str(raw.get("xroad", ""))
    match = _XROAD.fullmatch(xroad)
    if xroad and (match is None or match["code"] != code):
        raise CatalogueError(f"{where}: xroad {xroad!r} is not VN/GOV/{code}/<subsystem>")
    delivery = raw.get("delivery") or {}
    if not isinstance(delivery, dict):
        raise CatalogueError(f"{where}: 'delivery' must be a mapping")
    channel = str(delivery.get("channel", "https"))
    channel = _CHANNEL_ALIASES.get(channel, channel)
    if channel not in CHANNEL_ADDRESS:
        raise CatalogueError(
            f"{where}: unknown delivery channel {channel!r} (one of {sorted(CHANNEL_ADDRESS)})"
        )
    target = _field(delivery, CHANNEL_ADDRESS[channel], f"{where} ({channel} channel)")
    return Agency(
        code=code,
        name=_field(raw, "name", where),
        xroad=xroad,
        channel=channel,
        url=target if channel == "https" else "",
        target=target,
        secret=str(delivery.get("secret", "")),
    )


def _resolve(agency: Agency, env: Mapping[str, str]) -> Agency:
    target = Template(agency.target).safe_substitute(env)
    secret = Template(agency.secret).safe_substitute(env)
    # An unset secret variable means "not configured", never a literal "${...}" key.
    secret = "" if _UNRESOLVED.search(secret) else secret
    return replace(
        agency, target=target, url=target if agency.channel == "https" else "", secret=secret
    )


def _procedure(raw: dict[str, Any]) -> Procedure:
    code = _field(raw, "code", "procedure")
    where = f"procedure {code}"
    try:
        return Procedure(
            code=code,
            name=_field(raw, "name", where),
            receiving_agency=_field(raw, "receiving_agency", where),
            total_days=int(raw["total_days"]),
            required_fields=tuple(str(f) for f in raw.get("required_fields", ())),
            steps=_steps(raw.get("steps", ()), where),
            needs=tuple(str(n) for n in raw.get("needs", ())),
            min_assurance=int(raw.get("min_assurance", 1)),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CatalogueError):
            raise
        raise CatalogueError(f"{where}: {type(exc).__name__}: {exc}") from None


def _steps(raw_steps: list[dict[str, Any]], where: str) -> tuple[Step, ...]:
    """Flatten `steps`; an item `{parallel: [step, ...]}` is one stage of parallel steps."""
    steps: list[Step] = []
    for stage, item in enumerate(raw_steps):
        for raw in item.get("parallel") or [item]:
            step = Step(
                index=len(steps),
                stage=stage,
                name=_field(raw, "name", f"{where} step {len(steps)}"),
                agency_code=_field(raw, "agency", f"{where} step {len(steps)}"),
                days=int(raw["days"]),
            )
            if step.days < 1:
                raise CatalogueError(f"{where} step {step.index}: days must be at least 1")
            steps.append(step)
    return tuple(steps)
