"""`make bench`: the whole gateway (durable: PostgreSQL with fsync and synchronous commit,
outbox, Kafka acks=all; secured: OAuth2 tokens, signed transfers; traced over OTLP) against
a bare pipeline taking the same hops without any of that (devstack/bench_bare.py), on the
same machine in the same run, closed loop and then open loop.

    python -m devstack.bench [--dossiers 2000] [--concurrency 64] [--rate 100]
                             [--open-seconds 10] [--commit-delay 0] [--settle 300]
                             [--replicas 1]

--replicas 2 runs two processes each of intake, identity, routing and notify (the load
spread over both intakes): run it once with 1 and once with 2 to see what scale-out buys
on this machine.

For each pipeline and load it prints dossiers/s end to end (submit -> the citizen's
completion mail), p50/p99 of submit -> delivered to the agency and submit -> completion
mail, and the CPU each process spent per dossier; then gateway/bare, hop by hop. A run in
which some dossier never completes says so and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx
import psutil

from core.clock import SystemClock
from devstack import bench_auth
from devstack._process import free_ports
from devstack.bench_load import Load, Target, run_phase
from devstack.bench_measure import Phase, report, sample, verdict
from devstack.kafka import KafkaBroker
from devstack.otlp_sink import SpanCollector
from devstack.postgres import DURABLE_SETTINGS, PostgresServer
from devstack.stack import REPO, Ports, Stack

AGENCY = "000.21.31.H22"  # the one step of procedure HT.KS (birth registration)
BARE_AGENCY = "bench"  # an agency of the sandbox that asks for no signature nor token
# How long the sandbox's agencies work on a transfer before reporting it done, both runs.
AGENCY_DELAY_S = "0.05"
# Notify paces each channel to its provider's contract (50 emails/s by default). The bench
# measures the gateway, not a contract, and the bare pipeline does not pace: at 3 emails
# per dossier the default alone would cap the gateway at 16.7 dossiers/s.
EMAIL_PACING = {"EMAIL_RATE_PER_S": "5000", "EMAIL_BURST": "5000"}
WARM_UP = Load(dossiers=50, concurrency=8)


def run_loads(
    name: str,
    target: Target,
    loads: list[Load],
    pids: dict[str, int],
    settle_s: float,
) -> list[Phase]:
    sampler = partial(sample, pids)
    warm_up = Phase(name, "warm-up", WARM_UP.dossiers)
    asyncio.run(run_phase(target, WARM_UP, warm_up, sampler, settle_s))
    if problems := verdict([warm_up]):
        raise RuntimeError(f"{name} failed its warm-up: {problems}")
    mails = int(warm_up.far_end.get("emails", 1))
    phases = []
    for load in loads:
        phase = Phase(name, load.describe(), load.dossiers)
        asyncio.run(run_phase(target, load, phase, sampler, settle_s, mails))
        print("\n".join(phase.lines()), flush=True)
        phases.append(phase)
    return phases


def bench_gateway(
    kafka: KafkaBroker,
    pg: PostgresServer,
    var_dir: Path,
    loads: list[Load],
    settle_s: float,
    replicas: int = 1,
) -> list[Phase]:
    sink = SpanCollector()
    sink.start()
    stack = Stack(
        kafka_bootstrap=kafka.bootstrap_servers,
        var_dir=var_dir / "gateway",
        ports=Ports.free(),
        replica_ports=tuple(Ports.free() for _ in range(replicas - 1)),
        database_url=pg.url(),
        env={
            **sink.exporter_env(),
            "LOG_LEVEL": "WARNING",
            "SANDBOX_LOG_LEVEL": "WARNING",
            "SANDBOX_AGENCY_DELAY_S": AGENCY_DELAY_S,
            **EMAIL_PACING,
        },
    )
    try:
        stack.start()
        token = stack.credentials.token(stack.url("identity"), "motcua-h22", "dossiers:submit")
        intakes = stack.urls("intake")
        target = Target(intakes[0], stack.url("sandbox"), AGENCY, token, tuple(intakes[1:]))
        pids = {name: process.pid for name, process in stack.processes.items()}
        pids |= {"kafka": _pid(kafka.pid), "postgres": _pid(pg.pid)}
        phases = run_loads("gateway", target, loads, pids, settle_s)
        time.sleep(2)  # the last spans' export batch
        dossiers = WARM_UP.dossiers + sum(p.accepted for p in phases)
        received = sink.spans()
        per_dossier = len(received) / max(dossiers, 1)
        print(f"gateway: {per_dossier:.1f} spans exported per dossier (warm-up included)")
        # Which spans, so that "fewer spans" has a target: service and name, per dossier.
        kinds = Counter(f"{s.service}: {s.name}" for s in received).most_common(12)
        print("  " + "; ".join(f"{name} {n / max(dossiers, 1):.1f}" for name, n in kinds) + "\n")
        return phases
    finally:
        stack.stop()
        sink.stop()


def bench_bare(
    kafka: KafkaBroker, var_dir: Path, loads: list[Load], settle_s: float
) -> list[Phase]:
    # Free ports for every listener the sandbox opens (its gRPC ones too), and for ours.
    ports = Ports.free()
    api_port, router_port = free_ports(2)
    topic = f"bench.bare.{int(time.time())}"
    kafka.create_topics([topic])
    stack = Stack(
        kafka_bootstrap=kafka.bootstrap_servers,
        var_dir=var_dir / "bare",
        ports=ports,
        env={"SANDBOX_LOG_LEVEL": "WARNING", "SANDBOX_AGENCY_DELAY_S": AGENCY_DELAY_S},
        # The bare router does not sign: its agency must not ask for a signature.
        agency_secret="",
    )
    agency_url = f"{stack.url('sandbox')}/agencies/{BARE_AGENCY}/transfers"
    roles = {
        "bare-api": ["api", str(api_port), kafka.bootstrap_servers, topic],
        "bare-router": [
            "router",
            str(router_port),
            kafka.bootstrap_servers,
            topic,
            agency_url,
            f"{stack.url('sandbox')}/portal/dossiers",
        ],
        "bare-notify": ["notify", kafka.bootstrap_servers, topic, str(ports.sandbox_smtp)],
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        stack.start_service("sandbox")
        stack.wait_ready("sandbox")
        for name, args in roles.items():
            command = [sys.executable, "-m", "devstack.bench_bare", *args]
            processes[name] = subprocess.Popen(command, cwd=REPO)
        for port in (api_port, router_port):
            _wait_http(f"http://127.0.0.1:{port}/docs", processes)
        target = Target(f"http://127.0.0.1:{api_port}", stack.url("sandbox"), BARE_AGENCY)
        pids = {name: process.pid for name, process in processes.items()}
        pids |= {"sandbox": stack.processes["sandbox"].pid, "kafka": _pid(kafka.pid)}
        return run_loads("bare", target, loads, pids, settle_s)
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        stack.stop()


def _pid(pid: int | None) -> int:
    if pid is None:
        raise RuntimeError("a server of the bench is not running")
    return pid


def _wait_http(
    url: str, processes: dict[str, subprocess.Popen[bytes]], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def header(loads: list[Load], pg: PostgresServer, replicas: int) -> list[str]:
    settings = pg.show()
    version = settings.pop("server_version")
    shown = " ".join(f"{name}={value}" for name, value in settings.items())
    load1, load5, _ = os.getloadavg()
    return [
        f"make bench, {SystemClock().now():%Y-%m-%d %H:%M} UTC, {platform.node()}: "
        f"{psutil.cpu_count()} CPUs, load average {load1:.1f} (1 min) {load5:.1f} (5 min), "
        f"Python {platform.python_version()}",
        "  the load generator, Kafka, PostgreSQL and every process of the stack share them",
        f"PostgreSQL {version} (read back with SHOW; data on {_filesystem(pg.data_dir)}): {shown}",
        "Kafka: one broker (KRaft); the gateway produces with acks=all and idempotence, "
        "the bare pipeline with acks=1 and does not wait for them",
        f"gateway: procedure HT.KS, one step at {AGENCY}; outbox, OAuth2 tokens, signed "
        "transfers, every span exported over OTLP; email pacing "
        f"{EMAIL_PACING['EMAIL_RATE_PER_S']}/s (a provider's contract, not the gateway's); "
        f"{replicas} process(es) each of intake, identity, routing and notify",
        "bare: the same hops (devstack/bench_bare.py) without database, outbox, auth, "
        "signatures or tracing",
        f"an access token check costs {asyncio.run(bench_auth.measure(1000)):.0f} µs of CPU "
        "here (devstack/bench_auth.py), on every authenticated request",
        f"agencies report a step done {AGENCY_DELAY_S} s after taking it; warm-up "
        f"{WARM_UP.dossiers} dossiers; loads: " + "; ".join(load.describe() for load in loads),
    ]


def _filesystem(path: Path) -> str:
    """The file system type holding `path`: fsync on tmpfs would prove nothing."""
    mounts = [p for p in psutil.disk_partitions(all=True) if str(path).startswith(p.mountpoint)]
    return max(mounts, key=lambda p: len(p.mountpoint)).fstype if mounts else "unknown"


@contextmanager
def _servers(
    commit_delay: int, commit_siblings: int
) -> Iterator[tuple[KafkaBroker, PostgresServer]]:
    settings = {
        **DURABLE_SETTINGS,
        "commit_delay": str(commit_delay),
        "commit_siblings": str(commit_siblings),
    }
    with KafkaBroker() as kafka, PostgresServer(settings=settings) as pg:
        yield kafka, pg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.bench", description=__doc__)
    parser.add_argument("--dossiers", type=int, default=2000, help="closed loop (0: skip)")
    parser.add_argument("--concurrency", type=int, default=64, help="closed-loop clients")
    parser.add_argument("--rate", type=float, default=100, help="open loop /s (0: skip)")
    parser.add_argument("--open-seconds", type=float, default=10, help="open-loop duration")
    parser.add_argument("--settle", type=float, default=300, help="s to wait for stragglers")
    parser.add_argument("--commit-delay", type=int, default=0, help="µs, group commit")
    parser.add_argument("--commit-siblings", type=int, default=5)
    parser.add_argument(
        "--replicas", type=int, default=1, help="processes of each gateway service (1 or more)"
    )
    args = parser.parse_args(argv)
    loads = []
    if args.dossiers > 0:
        loads.append(Load(args.dossiers, args.concurrency))
    if args.rate > 0:
        loads.append(Load(max(1, round(args.rate * args.open_seconds)), 0, args.rate))
    if not loads:
        parser.error("nothing to run: --dossiers 0 and --rate 0")
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        _servers(args.commit_delay, args.commit_siblings) as (kafka, pg),
    ):
        print("\n".join(header(loads, pg, args.replicas)) + "\n", flush=True)
        try:
            gateway = bench_gateway(kafka, pg, Path(tmp), loads, args.settle, args.replicas)
            bare = bench_bare(kafka, Path(tmp), loads, args.settle)
        except (RuntimeError, TimeoutError) as exc:
            print(f"\nBENCH FAILED: {exc}", file=sys.stderr)
            return 1
    return report(gateway, bare)


if __name__ == "__main__":
    sys.exit(main())
