"""The bench's bare pipeline takes the gateway's hops (agency delivery, outcome back, portal
pushes, a mail per event) on free ports, even when the sandbox's default ports are taken."""

from __future__ import annotations

import socket
from pathlib import Path

from devstack.bench import bench_bare
from devstack.bench_load import Load
from devstack.kafka import KafkaBroker
from devstack.stack import Ports


def test_the_bare_pipeline_takes_the_gateways_hops_on_free_ports(
    kafka: KafkaBroker, tmp_path: Path
) -> None:
    defaults = Ports()
    with socket.socket() as taken:
        # The agency gRPC port the bare run used to bind; taken by someone else is as good.
        try:
            taken.bind(("127.0.0.1", defaults.sandbox_agency_grpc))
            taken.listen()
        except OSError:
            pass

        [phase] = bench_bare(kafka, tmp_path, [Load(dossiers=6, concurrency=3)], settle_s=60)

    assert phase.accepted == 6
    assert phase.missing == 0
    assert len(phase.delivered_ms) == 6
    assert all(len(stage) == 6 for stage in phase.stages_ms.values())
    # What the far end took per dossier, as from the gateway: received, routed and
    # completed by mail, each status change pushed to the portal.
    assert phase.far_end == {"emails": 3.0, "SMS": 0.0, "portal pushes": 3.0}
    assert set(phase.cpu_ms) == {
        "bare-api",
        "bare-router",
        "bare-notify",
        "sandbox",
        "kafka",
        "bench",
    }
    assert phase.cpu_ms["bare-router"] > 0
