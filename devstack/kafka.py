"""A real one-node Apache Kafka broker (KRaft) without Docker.

The one launcher behind `make run`, the pytest session fixture and CI. It runs Kafka's own
jars (resolved by deploy/kafka/pom.xml into .cache/kafka/libs) on the local JVM.

    python -m devstack.kafka [--port N] [--data-dir D]
"""

from __future__ import annotations

import argparse
import atexit
import base64
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Protocol

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from devstack._process import (
    Launched,
    die_with_parent,
    free_ports,
    log_tail,
    port_open,
    run_sync,
    stop_process_group,
    temp_dir_path,
    wait_for_signal,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_DEPLOY_DIR = REPO_ROOT / "deploy" / "kafka"
DEFAULT_LIBS_DIR = REPO_ROOT / ".cache" / "kafka" / "libs"

JVM_OPTIONS = ["-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true"]


class KafkaBrokerError(RuntimeError):
    pass


def new_cluster_id() -> str:
    # What `kafka-storage random-uuid` prints (URL-safe base64 of 16 bytes, no padding),
    # without paying half a second for a JVM. Kafka rejects ids that start with "-".
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class KafkaBroker(Launched):
    def __init__(
        self,
        data_dir: Path | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        libs_dir: Path = DEFAULT_LIBS_DIR,
        *,
        node_id: int = 1,
        quorum_voters: str | None = None,
        cluster_id: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        """One combined broker and controller; alone it is the whole cluster. As a node of
        devstack.kafka_cluster.KafkaCluster it is given its node id, the quorum's voters, the
        shared cluster id and the cluster's replication settings (over server.properties)."""
        if port is None or controller_port is None:
            free = iter(free_ports(2))
            port = port if port is not None else next(free)
            controller_port = controller_port if controller_port is not None else next(free)
        self.port = port
        self.controller_port = controller_port
        self.libs_dir = libs_dir
        self.node_id = node_id
        self.quorum_voters = quorum_voters or f"{node_id}@127.0.0.1:{controller_port}"
        self.cluster_id = cluster_id or new_cluster_id()
        self.properties = dict(properties or {})
        self._owns_data_dir = data_dir is None
        # A temp dir is only named here and made by start(), so an unstarted server
        # leaves nothing on disk.
        self.data_dir = data_dir if data_dir is not None else temp_dir_path("devstack-kafka-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 60) -> None:
        """Start the broker and return once it serves requests; on failure clean up, raise."""
        if self.is_running():
            return
        self.launch()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def launch(self) -> None:
        """Start the process without waiting for it: a cluster's nodes only become ready
        once a majority of the quorum's voters is up, so they are launched together."""
        if self.is_running():
            return
        atexit.register(self.stop)
        try:
            self._launch()
        except BaseException:
            self.stop()
            raise

    def _launch(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._ensure_libs()
        java = self._java()
        props = self._render_properties()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            self._format_storage(java, props)
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [*self._java_command(java, JVM_OPTIONS), "kafka.Kafka", str(props)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would, keeping its data dir to start again from."""
        if self._proc is not None:
            stop_process_group(self._proc, signal.SIGKILL, grace=10.0)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if self._proc is not None:
            # SIGTERM runs the broker's shutdown hook: a clean stop flushes the logs so a
            # kept data dir restarts without recovery.
            stop_process_group(self._proc, signal.SIGTERM, grace=20.0)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def wait_ready(self, timeout: float = 60) -> None:
        """Return once the broker answers a metadata request naming itself and a controller.

        An open port is not enough: the listener accepts connections while the broker is
        still fenced, and early clients then see NOT_CONTROLLER / empty metadata.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise KafkaBrokerError(self._failure(f"broker exited with code {code}"))
            if port_open(self.port) and run_sync(self._probe):
                return
            if time.monotonic() > deadline:
                raise KafkaBrokerError(self._failure(f"broker not ready after {timeout:.0f} s"))
            time.sleep(0.2)

    def create_topics(self, names: list[str], partitions: int = 6) -> None:
        """Create the topics that do not exist yet; existing ones are left as they are."""
        create_topics(self.bootstrap_servers, names, partitions, replication_factor=1)

    async def _probe(self) -> bool:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, request_timeout_ms=3000
        )
        try:
            await admin.start()
            info: dict[str, Any] = await admin.describe_cluster()
        except (KafkaError, OSError):
            return False
        finally:
            await admin.close()
        return bool(info.get("brokers")) and info.get("controller_id", -1) != -1

    def _ensure_libs(self) -> None:
        if self.libs_dir.is_dir() and any(self.libs_dir.glob("*.jar")):
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaBrokerError(
                f"no Kafka jars in {self.libs_dir} and Maven is not installed to fetch them "
                "(apt-get install -y maven, then: mvn -q -B -f deploy/kafka/pom.xml package)"
            )
        pom = str(KAFKA_DEPLOY_DIR / "pom.xml")
        command = [mvn, "-q", "-B", "-f", pom, f"-Dkafka.libs.dir={self.libs_dir}", "package"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not any(self.libs_dir.glob("*.jar")):
            raise KafkaBrokerError(
                f"mvn could not resolve the Kafka jars into {self.libs_dir}:\n"
                f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )

    @staticmethod
    def _java() -> str:
        java = shutil.which("java")
        if java is None:
            raise KafkaBrokerError("java not found on PATH; the broker needs Java 17+")
        return java

    def _java_command(self, java: str, options: list[str]) -> list[str]:
        log_config = KAFKA_DEPLOY_DIR / "log4j2.properties"
        # The JVM expands the trailing "*" itself, so no shell is involved.
        classpath = f"{self.libs_dir}/*"
        return [java, *options, f"-Dlog4j2.configurationFile={log_config}", "-cp", classpath]

    def _render_properties(self) -> Path:
        overrides = {
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.quorum_voters,
            "log.dirs": str(self.data_dir / "logs"),
            **self.properties,
        }
        rendered: list[str] = []
        for line in (KAFKA_DEPLOY_DIR / "server.properties").read_text().splitlines():
            key = line.split("=", 1)[0].strip()
            if not line.lstrip().startswith("#") and key in overrides:
                line = f"{key}={overrides.pop(key)}"
            rendered.append(line)
        rendered += [f"{key}={value}" for key, value in overrides.items()]
        path = self.data_dir / "server.properties"
        path.write_text("\n".join(rendered) + "\n")
        return path

    def _format_storage(self, java: str, props: Path) -> None:
        # The quorum is static (controller.quorum.voters), so no --standalone here: Kafka
        # 4.x rejects --standalone unless controller.quorum.bootstrap.servers is used.
        tool = ["kafka.tools.StorageTool", "format", "--cluster-id", self.cluster_id]
        tool += ["--config", str(props), "--ignore-formatted"]
        command = [*self._java_command(java, ["-Xmx256m"]), *tool]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise KafkaBrokerError(
                f"formatting {self.data_dir / 'logs'} failed:\n{result.stdout}{result.stderr}"
            )

    def _failure(self, reason: str) -> str:
        tail = log_tail(self.log_path)
        # With slf4j-api 1.x beside log4j-slf4j2-impl the broker logs nothing at all.
        hint = "\n(no SLF4J binding: fix the logging jars in deploy/kafka/pom.xml)"
        return f"{reason}; last lines of {self.log_path}:\n{tail}{hint if 'NOP' in tail else ''}"


def create_topics(
    bootstrap_servers: str, names: list[str], partitions: int, replication_factor: int
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""
    run_sync(lambda: _create_topics(bootstrap_servers, names, partitions, replication_factor))


async def _create_topics(
    bootstrap_servers: str, names: list[str], partitions: int, replication_factor: int
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        new = [NewTopic(name, partitions, replication_factor) for name in names]
        response = await admin.create_topics(new)
    finally:
        await admin.close()
    # The admin client does not raise per-topic errors; it hands back the codes.
    for topic_error in response.topic_errors:
        name, code = topic_error[0], topic_error[1]
        if code == 0:
            continue
        error = for_code(code)
        if error is TopicAlreadyExistsError:
            continue
        raise KafkaBrokerError(f"creating topic {name!r} failed: {error.__name__}")


class Serving(Protocol):
    """A broker or a cluster, as the command line runs it."""

    @property
    def bootstrap_servers(self) -> str: ...

    @property
    def log_path(self) -> Path: ...

    def start(self, timeout: float) -> None: ...

    def stop(self) -> None: ...

    def is_running(self) -> bool: ...


def serve(server: Serving, timeout: float) -> int:
    """Start, print where clients connect, and run until a signal or until it dies."""
    try:
        server.start(timeout)
    except KafkaBrokerError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"KAFKA_BOOTSTRAP_SERVERS={server.bootstrap_servers}", flush=True)
    try:
        code = wait_for_signal(server.is_running)
        if code:
            print(f"Kafka died:\n{log_tail(server.log_path)}", file=sys.stderr)
        return code
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.kafka", description=__doc__)
    parser.add_argument("--port", type=int, default=None, help="client port (default: free)")
    parser.add_argument("--controller-port", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=None, help="kept across runs if set")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    return serve(KafkaBroker(args.data_dir, args.port, args.controller_port), args.timeout)


if __name__ == "__main__":
    sys.exit(main())
