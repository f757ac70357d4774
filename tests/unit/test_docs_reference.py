"""The reference pages under docs/reference/ list what the code has, so they cannot rot
unnoticed: every settings field (pydantic-settings, by its environment name) with its
default, every CloudEvents type of proto/gateway/v1/events.proto, every metric the services
register."""

from __future__ import annotations

import importlib
import inspect
import re
from types import ModuleType

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from pydantic_settings import BaseSettings

# Imported for the metrics they register, as each service's process does.
import services.identity.main
import services.intake.main
import services.notify.main
import services.routing.main  # noqa: F401
from core.events import EVENT_TYPES
from devstack.stack import REPO

REFERENCE = REPO / "docs" / "reference"
CONFIGURATION = REFERENCE / "configuration.md"
# Where settings live: the services' and core's (every variable a deployment sets), the
# operators' CLI and the sandbox's stand-ins.
SETTINGS_MODULES = [
    "core.settings",
    "core.outbound",
    "core.catalogue_client",
    *sorted(
        f"services.{path.parent.name}.settings"
        for path in (REPO / "services").glob("*/settings.py")
    ),
    "cli.config",
    "sandbox.settings",
    "sandbox.oidc_models",
]
# A row of a settings table: | `NAME` | default | meaning |
SETTING_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| (.*?) \| .* \|$", flags=re.MULTILINE)
PLAIN = re.compile(r"`[^`]*`|—")


def settings_classes(module: ModuleType) -> list[type[BaseSettings]]:
    return [
        cls
        for cls in vars(module).values()
        if isinstance(cls, type)
        and issubclass(cls, BaseSettings)
        and cls.__module__ == module.__name__
    ]


def own_fields(cls: type[BaseSettings]) -> dict[str, object]:
    """Environment name → default of the fields this class declares (not inherits)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    fields = {}
    for name in inspect.get_annotations(cls):
        default = cls.model_fields[name].get_default(call_default_factory=True)
        fields[(prefix + name).upper()] = default
    return fields


def all_fields() -> list[tuple[str, str, object]]:
    found = []
    for module_name in SETTINGS_MODULES:
        for cls in settings_classes(importlib.import_module(module_name)):
            found += [(cls.__name__, env, default) for env, default in own_fields(cls).items()]
    return found


def written(default: object) -> str:
    """A default as the reference writes it in its cell."""
    if isinstance(default, SecretStr):
        default = default.get_secret_value()
    if default in ("", None, (), {}):
        return "—"
    if isinstance(default, bool):
        return "`true`" if default else "`false`"
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return f"`{default}`"


def documented_defaults() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for name, cell in SETTING_ROW.findall(CONFIGURATION.read_text(encoding="utf-8")):
        rows.setdefault(name, []).append(cell)
    return rows


def test_the_settings_are_found() -> None:
    fields = {env for _, env, _ in all_fields()}
    # One of each kind of place: core, a service, the CLI's prefix, the sandbox's.
    assert {"DATABASE_URL", "OUTBOUND_ALLOW", "DELIVERY_MAX_ATTEMPTS", "EID_ISSUER"} <= fields
    assert {"GATEWAY_CLIENT_ID", "SANDBOX_STATE_DIR", "SANDBOX_OIDC_AUTO_LOGIN"} <= fields
    assert len(SETTINGS_MODULES) >= 10


@pytest.mark.parametrize(("owner", "env", "default"), all_fields(), ids=lambda v: str(v)[:40])
def test_every_setting_is_in_the_reference_with_its_default(
    owner: str, env: str, default: object
) -> None:
    rows = documented_defaults()
    assert env in rows, f"{owner}'s {env} is not in {CONFIGURATION.relative_to(REPO)}"
    # A plain value in the default cell must be the code's; a cell in words (a map, a
    # path, "the local ports") is for the reader and is not compared. HTTP_PORT has one
    # row per service, each with that service's default.
    plain = [cell for cell in rows[env] if PLAIN.fullmatch(cell)]
    if plain:
        assert written(default) in plain, f"{env}: the reference says {plain}, {owner} {default!r}"


def test_every_default_written_is_one_the_code_has() -> None:
    defaults: dict[str, set[str]] = {}
    for _, env, default in all_fields():
        defaults.setdefault(env, set()).add(written(default))
    wrong = [
        (env, cell)
        for env, cells in documented_defaults().items()
        for cell in cells
        if PLAIN.fullmatch(cell) and cell not in defaults.get(env, {cell})
    ]
    assert not wrong, f"{CONFIGURATION.name} gives defaults the code does not have: {wrong}"


def test_the_reference_lists_no_setting_the_code_lacks() -> None:
    fields = {env for _, env, _ in all_fields()}
    stale = sorted(set(documented_defaults()) - fields)
    assert not stale, f"{CONFIGURATION.name} lists settings no class reads: {stale}"


def test_every_event_type_is_in_the_reference() -> None:
    proto = (REPO / "proto" / "gateway" / "v1" / "events.proto").read_text(encoding="utf-8")
    declared = set(re.findall(r"ce_type: (\S+)", proto))
    assert declared == set(EVENT_TYPES), "events.proto and core/events.py disagree"
    page = (REFERENCE / "events.md").read_text(encoding="utf-8")
    missing = sorted(t for t in declared if f"`{t}`" not in page)
    assert not missing, f"events.md lacks {missing}"
    for event_type, message in EVENT_TYPES.items():
        assert f"| `{event_type}` | `{message.__name__}` |" in page, event_type


def registered_metrics() -> set[str]:
    """Each metric family of the gateway as a dashboard names it."""
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith(("gateway_", "identity_")):
            names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def test_every_metric_is_in_the_reference() -> None:
    metrics = registered_metrics()
    assert "gateway_http_request_duration_seconds" in metrics
    assert "identity_token_secret_checks_total" in metrics
    page = (REFERENCE / "metrics.md").read_text(encoding="utf-8")
    missing = sorted(m for m in metrics if not re.search(rf"`{m}(?:\{{[^}}]*\}})?`", page))
    assert not missing, f"metrics.md lacks {missing}"


def test_the_checks_above_can_fail() -> None:
    assert written(SecretStr("")) == "—"
    assert written(1.0) == "`1`"
    assert written(2.5) == "`2.5`"
    assert written(False) == "`false`"
    assert SETTING_ROW.findall("| `X_Y` | `1` | what |\n| x | y | z |\n") == [("X_Y", "`1`")]
    assert "gateway_no_such_metric" not in registered_metrics()
