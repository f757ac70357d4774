"""Jaeger v2 as the local trace UI, without Docker: the binary `make jaeger` builds from the
Go module proxy (deploy/jaeger/go.mod) into .cache/jaeger/bin, run with
deploy/jaeger/config.yaml (OTLP in, traces in memory, the query UI and API).

`make run` starts it and points the services' OTLP exporters at it; the Jaeger test starts
one on free ports.

    python -m devstack.jaeger   # on the default ports (or JAEGER_*_PORT), until Ctrl-C
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from devstack._process import (
    Launched,
    die_with_parent,
    free_ports,
    port_open,
    stop_process_group,
    temp_dir_path,
    wait_for_signal,
)

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "deploy" / "jaeger" / "config.yaml"
# JAEGER_BINARY names another build (e.g. a released one already on the machine).
DEFAULT_BINARY = REPO / ".cache" / "jaeger" / "bin" / "jaeger"
HOST = "127.0.0.1"


class JaegerError(RuntimeError):
    pass


@dataclass(frozen=True)
class JaegerPorts:
    """Jaeger's usual ports: UI and query API, OTLP over gRPC and HTTP, the health check,
    the query API over gRPC."""

    ui: int = 16686
    otlp_grpc: int = 4317
    otlp_http: int = 4318
    health: int = 13133
    query_grpc: int = 16685

    @classmethod
    def free(cls) -> JaegerPorts:
        return cls(*free_ports(5))

    @classmethod
    def configured(cls, environ: dict[str, str] | None = None) -> JaegerPorts:
        """Each port from its JAEGER_*_PORT variable, else the usual one if it is free (else
        any free one: a second `make run`, or a Jaeger of the operator's own, has it)."""
        env = os.environ if environ is None else environ
        spare = iter(free_ports(5))
        chosen: list[int] = []
        for name, default in [
            ("JAEGER_UI_PORT", cls.ui),
            ("JAEGER_OTLP_GRPC_PORT", cls.otlp_grpc),
            ("JAEGER_OTLP_HTTP_PORT", cls.otlp_http),
            ("JAEGER_HEALTH_PORT", cls.health),
            ("JAEGER_QUERY_GRPC_PORT", cls.query_grpc),
        ]:
            given = env.get(name)
            if given:
                chosen.append(int(given))
            else:
                chosen.append(next(spare) if port_open(default, HOST) else default)
        return cls(*chosen)


def binary_path() -> Path:
    return Path(os.environ.get("JAEGER_BINARY") or DEFAULT_BINARY)


class Jaeger(Launched):
    """One Jaeger process; its traces live in its memory and go with it."""

    def __init__(
        self,
        ports: JaegerPorts | None = None,
        log_dir: Path | None = None,
        binary: Path | None = None,
    ) -> None:
        self.ports = ports or JaegerPorts.free()
        self.binary = binary or binary_path()
        self._owns_log_dir = log_dir is None
        self.log_dir = log_dir if log_dir is not None else temp_dir_path("devstack-jaeger-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / "jaeger.log"

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.ports.ui}"

    @property
    def trace_url_template(self) -> str:
        """The UI's page of one trace, as routing's TRACE_UI_URL wants it."""
        return self.ui_url + "/trace/{trace_id}"

    def exporter_env(self) -> dict[str, str]:
        """The standard OTEL_* variables that make a service export its traces here (gRPC,
        OTLP's default transport); metrics and logs stay where they are (core/telemetry.py)."""
        return {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{self.ports.otlp_grpc}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        }

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 60) -> None:
        """Start Jaeger and return once its health check and UI answer; on failure, raise."""
        if self.is_running():
            return
        if not os.access(self.binary, os.X_OK):
            raise JaegerError(f"no Jaeger binary at {self.binary}: run `make jaeger`")
        atexit.register(self.stop)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        p = self.ports
        env = {
            **os.environ,
            "JAEGER_HOST": HOST,
            "JAEGER_UI_PORT": str(p.ui),
            "JAEGER_OTLP_GRPC_PORT": str(p.otlp_grpc),
            "JAEGER_OTLP_HTTP_PORT": str(p.otlp_http),
            "JAEGER_HEALTH_PORT": str(p.health),
            "JAEGER_QUERY_GRPC_PORT": str(p.query_grpc),
        }
        # Jaeger's own spans would land in the traces it shows: an operator looks for
        # the dossier's, not the collector's.
        env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [str(self.binary), "--config", str(CONFIG)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise JaegerError(self._failure(f"Jaeger exited with code {code}"))
            if self._ready():
                return
            if time.monotonic() > deadline:
                raise JaegerError(self._failure(f"Jaeger not ready after {timeout:.0f} s"))
            time.sleep(0.2)

    def _ready(self) -> bool:
        # The health check turns OK once every pipeline component started; the OTLP port
        # must also accept, or the services' first batches would be refused.
        try:
            health = httpx.get(f"http://{HOST}:{self.ports.health}/status", timeout=1)
        except httpx.HTTPError:
            return False
        return health.status_code == 200 and port_open(self.ports.otlp_grpc, HOST)

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        """The trace as Jaeger's query API gives it (its `data[0]`), or None while unknown."""
        response = httpx.get(f"{self.ui_url}/api/traces/{trace_id}", timeout=10)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json().get("data") or []
        return data[0] if data else None

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if self._proc is not None:
            stop_process_group(self._proc, signal.SIGTERM, grace=10.0)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._owns_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)


def main() -> int:
    jaeger = Jaeger(JaegerPorts.configured(), log_dir=REPO / "var" / "log")
    try:
        jaeger.start()
    except JaegerError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"Jaeger UI {jaeger.ui_url}", flush=True)
    for name, value in jaeger.exporter_env().items():
        print(f"{name}={value}", flush=True)
    try:
        return wait_for_signal(jaeger.is_running)
    finally:
        jaeger.stop()


if __name__ == "__main__":
    sys.exit(main())
