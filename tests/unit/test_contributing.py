"""CONTRIBUTING.md and the decision records stay true: every `make` target they name is a
rule of the Makefile, every repository path and `python -m` module they name exists, each
record has its parts and is listed; and the rules CONTRIBUTING.md states that a machine can
check cheaply (imports between rooms, one clock) hold."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

from devstack.stack import REPO

CONTRIBUTING = REPO / "CONTRIBUTING.md"
DECISIONS = REPO / "docs" / "decisions"
RECORDS = sorted(DECISIONS.glob("[0-9][0-9][0-9][0-9]-*.md"))
DOCUMENTS = [CONTRIBUTING, DECISIONS / "README.md", *RECORDS]
# A word in code that starts with one of these names a file of the repository; generated
# and local state (.venv, .cache, var/) is not checked.
TRACKED_DIRS = (
    ".ci/",
    "catalogue/",
    "core/",
    "deploy/",
    "devstack/",
    "docs/",
    "gen/",
    "proto/",
    "sandbox/",
    "services/",
    "tests/",
)
ROOT_FILE = re.compile(r"[\w.-]+\.(?:md|toml|txt|ya?ml|cfg)|Makefile")
PRODUCT_SERVICES = ("identity", "intake", "notify", "routing")


def code_of(text: str) -> list[str]:
    """The fenced blocks and inline code spans of a Markdown text."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return fenced + re.findall(r"`([^`\n]+)`", prose)


def named_paths(text: str) -> set[str]:
    paths = set()
    for code in code_of(text):
        for word in code.split():
            word = word.strip("\"'(),;:")
            if word.startswith(TRACKED_DIRS) or ROOT_FILE.fullmatch(word):
                paths.add(word)
    return paths


def exists(path: str) -> bool:
    """A path, a glob (`services/*/settings.py`) or a template (`services/<name>/models.py`)."""
    pattern = re.sub(r"<[^>]+>", "*", path)
    if "*" in pattern:
        return any(REPO.glob(pattern))
    return (REPO / pattern).exists()


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    # A rule, not a variable (`NAME := ...`, `NAME ?= ...`) nor a special target (.PHONY).
    return set(re.findall(r"^([a-z][a-z0-9-]*)\s*:(?!=)", text, flags=re.MULTILINE))


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_make_target_named_exists(document: Path) -> None:
    named = {
        target
        for code in code_of(document.read_text(encoding="utf-8"))
        for target in re.findall(r"(?:^|[\s;&|(])make ([a-z][a-z0-9-]*)", code)
    }
    assert named <= makefile_targets(), f"not in the Makefile: {named - makefile_targets()}"


def test_contributing_names_the_daily_targets() -> None:
    text = CONTRIBUTING.read_text(encoding="utf-8")
    for target in ("install", "run", "lint", "test", "test-unit", "test-integration", "proto"):
        assert f"`make {target}`" in text or f"make {target} " in text, target


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_path_named_exists(document: Path) -> None:
    missing = {p for p in named_paths(document.read_text(encoding="utf-8")) if not exists(p)}
    assert not missing, f"{document.name} names paths that do not exist: {sorted(missing)}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_leads_somewhere(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t)]
    missing = [t for t in local if t and not (document.parent / t).exists()]
    assert not missing, f"{document.name} links to {missing}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_module_run_with_python_m_exists(document: Path) -> None:
    modules = re.findall(r"python3? -m ([\w.]+)", document.read_text(encoding="utf-8"))
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    assert not missing, f"{document.name} runs modules that do not exist: {missing}"


def test_the_checks_above_can_fail() -> None:
    """The extractors see what a careless edit would leave behind."""
    text = "Run `make tset`, read `core/no_such_file.py` and:\n```sh\nmake lint\n```\n"
    assert named_paths(text) == {"core/no_such_file.py"}
    assert not exists("core/no_such_file.py")
    assert exists("services/<name>/settings.py")
    assert "tset" not in makefile_targets()
    assert {"lint", "test", "run"} <= makefile_targets()


def test_decision_records_are_numbered_complete_and_listed() -> None:
    assert RECORDS, "docs/decisions/ holds no record"
    numbers = [int(p.name[:4]) for p in RECORDS]
    assert numbers == list(range(1, len(RECORDS) + 1)), "records are numbered 0001, 0002, ..."
    index = (DECISIONS / "README.md").read_text(encoding="utf-8")
    for record in RECORDS:
        text = record.read_text(encoding="utf-8")
        assert text.startswith(f"# {record.name[:4]}. "), f"{record.name}: title '# NNNN. ...'"
        assert "- Status: " in text, f"{record.name} has no status"
        for part in ("## Context", "## Decision", "## Consequences"):
            assert f"\n{part}\n" in text, f"{record.name} has no '{part}'"
        assert f"]({record.name})" in index, f"{record.name} is not listed in the index"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from services import routing` imports services.routing.
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def forbidden_imports(folder: Path, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(REPO)} imports {name}"
        for path in sorted(folder.rglob("*.py"))
        for name in sorted(imported_modules(path))
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


@pytest.mark.parametrize("service", PRODUCT_SERVICES)
def test_a_service_imports_no_other_service_nor_tooling(service: str) -> None:
    others = tuple(f"services.{s}" for s in PRODUCT_SERVICES if s != service)
    found = forbidden_imports(REPO / "services" / service, (*others, "sandbox", "devstack"))
    assert not found, found


def test_core_imports_no_service_nor_tooling() -> None:
    found = forbidden_imports(REPO / "core", ("services", "sandbox", "devstack"))
    assert not found, found


def test_every_now_and_the_zone_come_from_the_clock() -> None:
    clock = REPO / "core" / "clock.py"
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for folder in ("core", "services")
        for path in sorted((REPO / folder).rglob("*.py"))
        if path != clock
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"datetime\.now\(|datetime\.utcnow\(|ZoneInfo\(", line)
    ]
    assert not found, f"use core.clock (the injected clock, VIETNAM): {found}"
