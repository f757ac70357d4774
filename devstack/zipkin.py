"""Zipkin as the local trace UI, without Docker: the server's self-contained jar that
`make zipkin-jar` fetches from Maven Central (deploy/zipkin/pom.xml) into .cache/zipkin/libs,
with its Lens web app inside, traces in memory.

`make run` starts it and has every service export its spans here (the SDK's Zipkin exporter,
OTEL_TRACES_EXPORTER=zipkin_json); routing links each dossier's journey to Lens's page of its
trace. The Zipkin test starts one on a free port.

    python -m devstack.zipkin   # on port 9411 (or ZIPKIN_PORT), until Ctrl-C
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import httpx

from core.telemetry import otlp_implied
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
# ZIPKIN_JAR names another copy (e.g. a released jar already on the machine).
DEFAULT_JAR = REPO / ".cache" / "zipkin" / "libs" / "zipkin-server-exec.jar"
HOST = "127.0.0.1"
DEFAULT_PORT = 9411
# The SDK's name for its Zipkin JSON exporter (opentelemetry-exporter-zipkin-json's entry
# point). The spec's plain "zipkin" is the protobuf exporter's, which pins protobuf 3.
EXPORTER = "zipkin_json"
# Server settings of the jar's own (zipkin-server-shared.yml): spans only over HTTP, kept in
# memory, a bounded number of them. The other collectors start as soon as their variable is
# set, and the services' KAFKA_BOOTSTRAP_SERVERS would have Zipkin consume the broker.
SERVER_ENV = {
    "STORAGE_TYPE": "mem",
    # A span with a request's tags takes ~4.6 KB of heap (measured): 25,000 of them, the
    # traces of ~300 dossiers, leave the heap below room to answer queries; older traces
    # make room for new ones.
    "MEM_MAX_SPANS": "25000",
    "SELF_TRACING_ENABLED": "false",
    "COLLECTOR_HTTP_ENABLED": "true",
    "COLLECTOR_GRPC_ENABLED": "false",
    "COLLECTOR_KAFKA_ENABLED": "false",
    "COLLECTOR_RABBITMQ_ENABLED": "false",
    "COLLECTOR_ACTIVEMQ_ENABLED": "false",
    "COLLECTOR_PULSAR_ENABLED": "false",
    "COLLECTOR_SCRIBE_ENABLED": "false",
}
# A bounded heap, one GC thread and the quick compiler: the JVM leaves the machine to the
# stack, and a heap that still runs out ends the server visibly rather than half-working.
JAVA_OPTIONS = [
    "-Xms64m",
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
]


class ZipkinError(RuntimeError):
    pass


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether `make run` starts a Zipkin: not when the operator's OTEL_* leave it nothing
    to show (the SDK off, a Zipkin of their own, exporters named without Zipkin's)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_EXPORTER_ZIPKIN_ENDPOINT"):
        return False
    named = env.get("OTEL_TRACES_EXPORTER")
    return named is None or EXPORTER in [n.strip() for n in named.lower().split(",")]


def jar_path() -> Path:
    return Path(os.environ.get("ZIPKIN_JAR") or DEFAULT_JAR)


def configured_port(environ: Mapping[str, str] | None = None) -> int:
    """ZIPKIN_PORT, else 9411 if it is free (else any free one: a second `make run`, or a
    Zipkin of the operator's own, has it)."""
    env = os.environ if environ is None else environ
    given = env.get("ZIPKIN_PORT")
    if given:
        return int(given)
    return free_ports(1)[0] if port_open(DEFAULT_PORT, HOST) else DEFAULT_PORT


class Zipkin(Launched):
    """One Zipkin server; its traces live in its memory and go with it."""

    def __init__(
        self, port: int | None = None, log_dir: Path | None = None, jar: Path | None = None
    ) -> None:
        self.port = port or free_ports(1)[0]
        self.jar = jar or jar_path()
        self._owns_log_dir = log_dir is None
        self.log_dir = log_dir if log_dir is not None else temp_dir_path("devstack-zipkin-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / "zipkin.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ui_url(self) -> str:
        return self.url + "/zipkin/"

    @property
    def trace_url_template(self) -> str:
        """Lens's page of one trace, as routing's TRACE_UI_URL wants it."""
        return self.url + "/zipkin/traces/{trace_id}"

    @property
    def spans_endpoint(self) -> str:
        return self.url + "/api/v2/spans"

    def exporter_env(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The SDK's standard variables that make a service export its spans here, less
        those the operator's `environ` already sets: theirs win (the stack's environment
        goes over the process's). Spans still go over OTLP where an endpoint asks for it,
        as they would with no exporter named (core/telemetry.py)."""
        env = os.environ if environ is None else environ
        exporters = ["otlp", EXPORTER] if otlp_implied("TRACES", env) else [EXPORTER]
        ours = {
            "OTEL_TRACES_EXPORTER": ",".join(exporters),
            "OTEL_EXPORTER_ZIPKIN_ENDPOINT": self.spans_endpoint,
        }
        return {name: value for name, value in ours.items() if name not in env}

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 180) -> None:
        """Start Zipkin and return once its health check says UP; on failure, raise."""
        if self.is_running():
            return
        if not self.jar.is_file():
            raise ZipkinError(f"no Zipkin server at {self.jar}: run `make zipkin-jar`")
        java = shutil.which("java")
        if java is None:
            raise ZipkinError("Java 17 is needed to run Zipkin (e.g. openjdk-17-jre-headless)")
        atexit.register(self.stop)
        try:
            self._start(java, timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, java: str, timeout: float) -> None:
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Zipkin's own spans, were an OTEL_* variable to reach a Java agent, are not the
        # dossier's: the server gets none of them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env |= SERVER_ENV | {"QUERY_PORT": str(self.port)}
        # Spring Boot replaces a list as a whole: the one port, on loopback only.
        listen = [
            f"--armeria.ports[0].ip={HOST}",
            f"--armeria.ports[0].port={self.port}",
            "--armeria.ports[0].protocols[0]=http",
        ]
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [java, *JAVA_OPTIONS, "-jar", str(self.jar), *listen],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise ZipkinError(self._failure(f"Zipkin exited with code {code}"))
            if self._ready():
                return
            if time.monotonic() > deadline:
                raise ZipkinError(self._failure(f"Zipkin not ready after {timeout:.0f} s"))
            time.sleep(0.5)

    def _ready(self) -> bool:
        # UP once the storage answers; the collector and the UI share its one port.
        try:
            health = httpx.get(self.url + "/health", timeout=2)
        except httpx.HTTPError:
            return False
        return health.status_code == 200 and health.json().get("status") == "UP"

    def trace(self, trace_id: str) -> list[dict[str, Any]] | None:
        """The trace's spans as Zipkin's API v2 gives them, or None while it has none."""
        response = httpx.get(f"{self.url}/api/v2/trace/{trace_id}", timeout=10)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        spans: list[dict[str, Any]] = response.json()
        return spans or None

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
    zipkin = Zipkin(configured_port(), log_dir=REPO / "var" / "log")
    try:
        zipkin.start()
    except ZipkinError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"Zipkin UI {zipkin.ui_url}", flush=True)
    for name, value in zipkin.exporter_env().items():
        print(f"{name}={value}", flush=True)
    try:
        return wait_for_signal(zipkin.is_running)
    finally:
        zipkin.stop()


if __name__ == "__main__":
    sys.exit(main())
