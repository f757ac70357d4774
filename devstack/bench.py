"""`make bench`: dossiers per second and submit->delivered latency of the whole gateway
(durable: PostgreSQL, outbox, Kafka acks=all; traced: every span exported over OTLP),
then of a bare pipeline with the same payload, measured in the same run on this machine.

    python -m devstack.bench [--dossiers 2000] [--concurrency 64] [--rate 100]

Closed loop (the default) finds the saturation throughput: every client submits again as
soon as it is answered, so latency there is mostly queueing. With --rate, dossiers arrive
open loop at a fixed rate, as citizens do, and latency is what one dossier sees below
saturation.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from devstack._process import free_ports
from devstack.kafka import KafkaBroker
from devstack.otlp_sink import SpanCollector
from devstack.postgres import PostgresServer
from devstack.stack import REPO, Ports, Stack

AGENCY = "000.21.31.H22"  # the one step of procedure HT.KS (birth registration)


def payload(i: int) -> dict[str, Any]:
    return {
        "procedure_code": "HT.KS",
        "applicant": {
            "personal_id": f"0010900{i % 100000:05d}",
            "full_name": "Nguyễn Thị Lan",
            "email": f"bench{i}@example.vn",
        },
        "form_data": {
            "child_full_name": "Trần Minh Khôi",
            "child_birth_date": "2026-11-01",
            "child_gender": "Nam",
            "mother_full_name": "Nguyễn Thị Lan",
        },
    }


@dataclass
class Result:
    name: str
    submitted: int
    submit_seconds: float
    delivered: int
    end_to_end_seconds: float
    latencies_ms: list[float]

    def lines(self) -> list[str]:
        lat = sorted(self.latencies_ms)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
        return [
            f"{self.name}",
            f"  submitted         {self.submitted} in {self.submit_seconds:.2f} s "
            f"= {self.submitted / self.submit_seconds:.0f} dossiers/s accepted",
            f"  delivered         {self.delivered} in {self.end_to_end_seconds:.2f} s "
            f"= {self.delivered / max(self.end_to_end_seconds, 1e-9):.0f} dossiers/s end to end",
            f"  submit->delivered p50 {p50:.0f} ms   p99 {p99:.0f} ms",
        ]


@dataclass(frozen=True)
class Load:
    dossiers: int
    concurrency: int
    # Dossiers per second arriving open loop; None submits closed loop as fast as answered.
    rate: float | None = None


WARM_UP = Load(dossiers=50, concurrency=8)


async def drive(
    intake_url: str, sandbox_url: str, agency: str, load: Load, name: str, token: str = ""
) -> Result:
    sent_at: dict[str, float] = {}
    n, concurrency = load.dossiers, load.concurrency
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    # aiohttp: the load generator shares the cores with the stack, so it must be cheap.
    # Open loop must not queue in the client: a connection per dossier in flight (0 = no cap).
    connector = aiohttp.TCPConnector(limit=concurrency if load.rate is None else 0)
    timeout = aiohttp.ClientTimeout(total=30)
    # One token for the whole run, as an agency system would reuse it until it expires.
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def submit(i: int) -> None:
            started = time.time()
            url = f"{intake_url}/v1/dossiers"
            async with client.post(url, json=payload(i), headers=headers) as response:
                response.raise_for_status()
                sent_at[(await response.json())["code"]] = started

        async def worker() -> None:
            while not queue.empty():
                await submit(queue.get_nowait())

        async def arrivals(rate: float) -> None:
            # Each dossier at its own scheduled instant, whether or not earlier ones are done.
            tasks = []
            for i in range(n):
                await asyncio.sleep(max(0.0, began + i / rate - time.time()))
                tasks.append(asyncio.create_task(submit(i)))
            await asyncio.gather(*tasks)

        began = time.time()
        if load.rate is None:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            await arrivals(load.rate)
        submit_seconds = time.time() - began
        received = await _wait_delivered(
            client, f"{sandbox_url}/agencies/{agency}/transfers", sent_at
        )
    last = max(received.values(), default=began)
    latencies = [(received[c] - sent_at[c]) * 1000 for c in received]
    return Result(name, n, submit_seconds, len(received), last - began, latencies)


async def _wait_delivered(
    client: aiohttp.ClientSession, url: str, sent_at: dict[str, float]
) -> dict[str, float]:
    deadline = time.time() + 300
    received: dict[str, float] = {}
    while time.time() < deadline:
        async with client.get(url) as response:
            transfers = await response.json()
        received = {
            t["dossier_code"]: datetime.fromisoformat(t["first_received_at"]).timestamp()
            for t in transfers
            if t["dossier_code"] in sent_at
        }
        if len(received) == len(sent_at):
            break
        await asyncio.sleep(0.5)
    return received


def bench_stack(kafka: KafkaBroker, database_url: str, var_dir: Path, load: Load) -> Result:
    sink = SpanCollector()
    sink.start()
    stack = Stack(
        kafka_bootstrap=kafka.bootstrap_servers,
        var_dir=var_dir,
        ports=Ports.free(),
        database_url=database_url,
        env={
            **sink.exporter_env(),
            "LOG_LEVEL": "WARNING",
            "SANDBOX_LOG_LEVEL": "WARNING",
            "SANDBOX_AGENCY_DELAY_S": "0.05",
        },
    )
    try:
        stack.start()
        token = stack.credentials.token(stack.url("identity"), "motcua-h22", "dossiers:submit")
        intake, sandbox = stack.url("intake"), stack.url("sandbox")
        asyncio.run(drive(intake, sandbox, AGENCY, WARM_UP, "warm-up", token))
        result = asyncio.run(
            drive(intake, sandbox, AGENCY, load, "gateway (durable, traced)", token)
        )
        time.sleep(2)
        result.name += f" — {len(sink.spans())} spans exported"
        return result
    finally:
        stack.stop()
        sink.stop()


def bench_bare(kafka: KafkaBroker, var_dir: Path, load: Load) -> Result:
    api_port, sandbox_port = free_ports(2)
    topic = f"bench.bare.{int(time.time())}"
    kafka.create_topics([topic])
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    stack = Stack(
        kafka_bootstrap=kafka.bootstrap_servers,
        var_dir=var_dir,
        ports=Ports(sandbox=sandbox_port, sandbox_smtp=free_ports(1)[0]),
        env={"SANDBOX_LOG_LEVEL": "WARNING"},
        # The bare forwarder does not sign: its agency must not ask for a signature.
        agency_secret="",
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        stack.start_service("sandbox")
        stack.wait_ready("sandbox")
        # The bare pipeline never reports outcomes: keep the sandbox from calling back.
        httpx.put(
            f"{sandbox_url}/agencies/bench/behaviour", json={"fail_next": 0, "delay_s": 86400}
        )
        for args in (
            ["api", str(api_port), kafka.bootstrap_servers, topic],
            [
                "forwarder",
                kafka.bootstrap_servers,
                topic,
                f"{sandbox_url}/agencies/bench/transfers",
            ],
        ):
            processes.append(
                subprocess.Popen([sys.executable, "-m", "devstack.bench_bare", *args], cwd=REPO)
            )
        _wait_http(f"http://127.0.0.1:{api_port}/docs")
        url = f"http://127.0.0.1:{api_port}"
        asyncio.run(drive(url, sandbox_url, "bench", WARM_UP, "warm-up"))
        return asyncio.run(
            drive(url, sandbox_url, "bench", load, "bare pipeline (no outbox, no tracing)")
        )
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
        stack.stop()


def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dossiers", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, help="open loop: dossiers arriving per second")
    args = parser.parse_args()
    load = Load(args.dossiers, args.concurrency, args.rate)
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        KafkaBroker() as kafka,
        PostgresServer() as pg,
    ):
        var_dir = Path(tmp)
        results = [
            bench_stack(kafka, pg.url(), var_dir, load),
            bench_bare(kafka, var_dir, load),
        ]
    arrival = f"arriving at {args.rate:.0f}/s" if args.rate else f"{args.concurrency} clients"
    print(
        f"\n{args.dossiers} dossiers, {arrival}, one machine "
        "(load generator, Kafka, PostgreSQL and services share its cores)"
    )
    for result in results:
        print("\n".join(result.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
