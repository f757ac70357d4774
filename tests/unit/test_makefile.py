"""`make run` and `make test` install what is missing, and only that: the Makefile's stamp
files against the files they are made from, checked with `make -n` (prints, runs nothing) in
a copy of the repository's build inputs."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from devstack.stack import REPO

INPUTS = [
    "Makefile",
    "pyproject.toml",
    "constraints.txt",
    "deploy/kafka/pom.xml",
    "deploy/oidc-test/pom.xml",
    "deploy/openapi-generator/pom.xml",
    "deploy/zipkin/pom.xml",
]
STAMPS = [
    ".venv/.installed",
    ".cache/kafka/libs/.resolved",
    ".cache/oidc-test/libs/.resolved",
    ".cache/openapi-generator/libs/.resolved",
    ".cache/zipkin/libs/.resolved",
]
PIP = "pip install -q -c constraints.txt"
ZIPKIN = "mvn -q -B -f deploy/zipkin/pom.xml package"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    for name in INPUTS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def planned(checkout: Path, target: str) -> str:
    """What `make target` would run, without running it."""
    # As a person runs it: not as a sub-make of `make test` (CI), whose MAKELEVEL and flags
    # would add "Entering directory" lines and change nothing else.
    inherited = {"MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"}
    env = {k: v for k, v in os.environ.items() if k not in inherited}
    env["GATEWAY_TEST_DATABASE_URL"] = "postgresql://unused"
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", target],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def stamp_all(checkout: Path) -> None:
    later = time.time() + 5
    for stamp in STAMPS:
        (checkout / stamp).parent.mkdir(parents=True, exist_ok=True)
        (checkout / stamp).touch()
        os.utime(checkout / stamp, (later, later))


def test_a_fresh_clone_installs_before_running(checkout: Path) -> None:
    run = planned(checkout, "run")
    assert PIP in run
    assert "mvn -q -B -f deploy/kafka/pom.xml package" in run
    assert "deploy/oidc-test" not in run  # only the tests need the second OIDC provider
    assert "deploy/openapi-generator" not in run  # nor the client generator
    # The trace UI comes with the first `make run` (Zipkin's server, one jar).
    assert ZIPKIN in run
    assert run.rstrip().endswith("-m devstack.run")

    test = planned(checkout, "test")
    assert PIP in test
    assert "mvn -q -B -f deploy/kafka/pom.xml package" in test
    assert "mvn -q -B -f deploy/oidc-test/pom.xml package" in test
    assert "mvn -q -B -f deploy/openapi-generator/pom.xml package" in test
    # The Zipkin test runs the real server: `make test` fetches it, so CI never skips it.
    assert ZIPKIN in test
    assert test.rstrip().endswith("-m pytest")


def test_a_second_run_installs_nothing(checkout: Path) -> None:
    stamp_all(checkout)

    assert planned(checkout, "run").strip() == ".venv/bin/python -m devstack.run"
    assert "pip" not in planned(checkout, "test")
    assert "mvn" not in planned(checkout, "test")


def test_a_changed_input_is_installed_again(checkout: Path) -> None:
    stamp_all(checkout)
    later = time.time() + 60
    os.utime(checkout / "constraints.txt", (later, later))
    os.utime(checkout / "deploy/kafka/pom.xml", (later, later))

    run = planned(checkout, "run")
    assert PIP in run
    # The old version's jars go first, or both would be on the broker's classpath.
    assert "rm -rf .cache/kafka/libs\nmvn -q -B -f deploy/kafka/pom.xml package" in run
    assert "deploy/oidc-test" not in planned(checkout, "test")
    assert ZIPKIN not in run

    os.utime(checkout / "deploy/zipkin/pom.xml", (later, later))
    assert "rm -rf .cache/zipkin/libs\n" + ZIPKIN in planned(checkout, "zipkin-jar")
