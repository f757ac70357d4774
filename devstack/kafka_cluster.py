"""A real Apache Kafka cluster (KRaft) of several nodes, from the same jars as devstack.kafka.

Each node is a devstack.kafka.KafkaBroker in combined mode (broker and controller): its own
ports and log dir, one static quorum of all nodes, one cluster id. With three nodes every
topic has three replicas and takes a write once two have it (min.insync.replicas=2), so a
producer with acks=all (core/kafka.py) loses nothing when any one broker dies, and the
quorum still has a majority to elect a new controller.

    python -m devstack.kafka_cluster [--size 3] [--data-dir D]
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import sys
import time
from pathlib import Path

from devstack._process import Launched, free_ports, temp_dir_path
from devstack.kafka import KafkaBroker, KafkaBrokerError, create_topics, new_cluster_id, serve


def replication_properties(size: int) -> dict[str, str]:
    """Broker settings of a cluster of `size` nodes: three replicas of every topic and
    internal topic (fewer when fewer nodes), writes taken once two replicas have them."""
    replicas, in_sync = str(min(size, 3)), str(min(size, 2))
    return {
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": in_sync,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": in_sync,
        "default.replication.factor": replicas,
        "min.insync.replicas": in_sync,
    }


class KafkaCluster(Launched):
    def __init__(self, data_dir: Path | None = None, size: int = 3) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        self._owns_data_dir = data_dir is None
        self.data_dir = data_dir if data_dir is not None else temp_dir_path("devstack-kafkas-")
        ports = free_ports(2 * size)
        client_ports, controller_ports = ports[:size], ports[size:]
        voters = ",".join(
            f"{node}@127.0.0.1:{port}" for node, port in enumerate(controller_ports, start=1)
        )
        cluster_id, properties = new_cluster_id(), replication_properties(size)
        self.nodes = [
            KafkaBroker(
                self.data_dir / f"node-{node}",
                client_port,
                controller_port,
                node_id=node,
                quorum_voters=voters,
                cluster_id=cluster_id,
                properties=properties,
            )
            for node, (client_port, controller_port) in enumerate(
                zip(client_ports, controller_ports, strict=True), start=1
            )
        ]

    @property
    def replication_factor(self) -> int:
        return min(len(self.nodes), 3)

    @property
    def bootstrap_servers(self) -> str:
        """Every node: a client that finds the first one dead asks the next."""
        return ",".join(node.bootstrap_servers for node in self.nodes)

    @property
    def log_path(self) -> Path:
        return self.nodes[0].log_path

    def is_running(self) -> bool:
        """True while a majority of the nodes runs (the quorum can still decide)."""
        return sum(node.is_running() for node in self.nodes) * 2 > len(self.nodes)

    def start(self, timeout: float = 120) -> None:
        atexit.register(self.stop)
        try:
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        atexit.unregister(self.stop)
        for node in self.nodes:
            node.stop()
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def create_topics(self, names: list[str], partitions: int = 6) -> None:
        """Create the topics that do not exist yet, each partition on `replication_factor`
        nodes; existing ones are left as they are."""
        create_topics(self.bootstrap_servers, names, partitions, self.replication_factor)

    def kill_node(self, index: int) -> None:
        """SIGKILL one node, as a crash would; its data dir stays to start again from."""
        self.nodes[index].kill()

    def start_node(self, index: int, timeout: float = 120) -> None:
        """Start a node again, on its own ports; it catches up with the others' logs before
        it leads again. A port the killed process held may not be free at once (Kafka
        then exits with a BindException): that start is tried again until `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.nodes[index].start(max(1.0, deadline - time.monotonic()))
                return
            except KafkaBrokerError as exc:
                if "BindException" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.kafka_cluster", description=__doc__)
    parser.add_argument("--size", type=int, default=3, help="nodes (default: 3)")
    parser.add_argument("--data-dir", type=Path, default=None, help="kept across runs if set")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)
    return serve(KafkaCluster(args.data_dir, args.size), args.timeout)


if __name__ == "__main__":
    sys.exit(main())
