"""Chaos run: the real stack takes a stream of dossiers while every component is SIGKILLed
in turn, then a census says whether each accepted dossier completed exactly once.

    make chaos                                              # the long form
    python -m devstack.chaos --dossiers 120 --rate 4        # a short form (CI runs one)
    python -m devstack.chaos --database postgres
    python -m devstack.chaos --database postgres --replicas 2 --brokers 3   # make replicas

Its own Kafka broker, database and stack on free ports: nothing is shared with another run.
Dossiers go over three multi-agency procedures (a chain over HTTPS, a parallel stage, and
agencies over Kafka and gRPC), each applicant with an email and a phone, and the desk
subscribed to webhooks. Clients behave as real ones: a refused connection, 429 or 5xx is
retried with the same Idempotency-Key, honouring Retry-After. The victims, in turn: intake,
routing, notify, identity, the sandbox (every national stand-in) and the broker, each
killed with SIGKILL and started again the way the stack starts it. With --replicas 2 the
victims are the first replica of each service and one of the --brokers: the others must
carry on meanwhile (the stand-ins stay up).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from devstack.chaos_census import TOPIC, Census, Offer, WebhookReceiver, replica_work, take_census
from devstack.kafka_cluster import KafkaCluster
from devstack.postgres import ensure_postgres
from devstack.stack import AGENCY_INBOX_TOPICS, REPO, Ports, Stack

DESK = "000.00.01.H22"
VICTIMS = ("intake", "routing", "notify", "identity", "sandbox", "kafka")
REPLICA_VICTIMS = ("intake", "routing", "notify", "identity", "kafka")
# Test-sized leases and backoff, so a killed worker's claims come back within seconds.
FAST_RECOVERY = {
    "DELIVERY_LEASE_S": "5",
    "DELIVERY_BACKOFF_BASE_S": "0.5",
    "DELIVERY_BACKOFF_MAX_S": "5",
    "DELIVERY_MAX_ATTEMPTS": "40",
    "DELIVERY_ACK_TIMEOUT_S": "15",
    "DELIVERY_ACK_MAX_REDELIVERIES": "20",
    "DELIVERY_TIMEOUT_S": "5",
    "SEND_LEASE_S": "5",
    "PORTAL_SYNC_BACKOFF_BASE_S": "0.5",
    "PORTAL_SYNC_MAX_ATTEMPTS": "40",
    "RETRY_BACKOFF_BASE_S": "0.5",
    "RETRY_BACKOFF_MAX_S": "5",
    "RETRY_FOR_S": "600",
    "SANDBOX_AGENCY_DELAY_S": "0.2",
}


@dataclass(frozen=True)
class Plan:
    dossiers: int = 120
    rate: float = 4.0
    database: str = "sqlite"
    # Seconds a victim stays down before it is started again.
    down_s: float = 2.0
    # How long, after the last offer, accepted dossiers have to complete.
    settle_s: float = 240.0
    seed: int = 6
    # False: an overload run (the same clients and census, nobody killed).
    kills: bool = True
    # Processes of intake, identity, routing and notify each (more than one: PostgreSQL),
    # and Kafka nodes. With replicas the victims are the first ones; the others carry on.
    replicas: int = 1
    brokers: int = 1
    victims: tuple[str, ...] = VICTIMS


def dossier_body(run: str, i: int) -> dict[str, Any]:
    """The i-th dossier: the three procedures in turn, each applicant reachable twice."""
    applicant = {
        "personal_id": "001090012345",
        "full_name": "Nguyễn Thị Lan",
        "email": f"chaos-{run}-{i}@example.vn",
        "phone": f"0912{i % 1_000_000:06d}",
    }
    forms = [
        (
            "LT.KS-TT-BHYT",
            {
                "child_full_name": "Trần Minh Khôi",
                "child_birth_date": "2026-11-01",
                "child_gender": "Nam",
                "mother_full_name": "Nguyễn Thị Lan",
                "residence_address": "Số 12, thôn Đông, xã Tân Phong",
            },
        ),
        (
            "LT.KT-XTT-MTP",
            {
                "deceased_full_name": "Trần Văn Bình",
                "deceased_personal_id": "001050012345",
                "date_of_death": "2026-11-20",
                "requester_relationship": "Con",
            },
        ),
        (
            "LT.XDKT-TCXH",
            {
                "person_full_name": "Lê Văn Cường",
                "person_personal_id": "001080012345",
                "disability_description": "Khuyết tật vận động",
            },
        ),
    ]
    procedure, form = forms[i % len(forms)]
    return {"procedure_code": procedure, "applicant": applicant, "form_data": form}


class DeskTokens:
    """The desk's access token, fetched once for all waiting clients (single flight) and
    again when refused, as an agency's own client would."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._token: str | None = None
        self._lock = asyncio.Lock()
        # Each attempt asks the next identity replica: one that is down is not waited for.
        self._attempts = 0

    async def get(self, client: httpx.AsyncClient) -> str:
        async with self._lock:
            while self._token is None:
                client_id = self._stack.credentials.client_for(DESK).client_id
                secret = self._stack.credentials.clients[client_id].secret
                identity = alternate(self._stack.urls("identity"), self._attempts)
                self._attempts += 1
                try:
                    answer = await client.post(
                        identity + "/oauth2/token",
                        data={"grant_type": "client_credentials"},
                        auth=(client_id, secret),
                        timeout=10,
                    )
                    if answer.status_code == 200:
                        self._token = str(answer.json()["access_token"])
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(1.0)
            return self._token

    def refused(self) -> None:
        self._token = None


def alternate(urls: list[str], attempt: int) -> str:
    """The replica for this attempt: in turn, as a client behind a load balancer sees them."""
    return urls[attempt % len(urls)]


async def offer(stack: Stack, run: str, plan: Plan, patience_s: float = 180) -> Offer:
    """Open loop: dossier i is offered at i / rate seconds, whatever the answers so far.
    Attempts go to each intake replica in turn, so a retry finds one that is up."""
    result = Offer()
    tokens = DeskTokens(stack)
    urls = [url + "/v1/dossiers" for url in stack.urls("intake")]
    # Many agencies' clients, not one shared pool: a client's wait for its own free
    # connection is not the gateway's answer time, so the pool is as wide as the offer.
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:

        async def one(i: int) -> None:
            await asyncio.sleep(i / plan.rate)
            body, key = dossier_body(run, i), f"chaos-{run}-{i}"
            deadline, delay, attempt = time.monotonic() + patience_s, 0.5, i
            while time.monotonic() < deadline:
                url, attempt = alternate(urls, attempt), attempt + 1
                headers = {"Authorization": f"Bearer {await tokens.get(client)}"}
                failure = ""  # the client-side error's name where no answer came
                try:
                    answer = await client.post(
                        url, json=body, headers=headers | {"Idempotency-Key": key}
                    )
                except httpx.HTTPError as exc:
                    answer, failure = None, type(exc).__name__
                if answer is not None and answer.status_code in (200, 201):
                    result.accepted[i] = str(answer.json()["code"])
                    return
                if answer is not None and answer.status_code == 401:
                    tokens.refused()
                elif answer is not None and answer.status_code < 500 and answer.status_code != 429:
                    result.refused[i] = f"{answer.status_code} {answer.text[:200]}"
                    return
                result.retries += 1
                result.pushed_back[failure if answer is None else str(answer.status_code)] += 1
                after = answer.headers.get("Retry-After") if answer is not None else None
                if answer is not None and answer.status_code in (429, 503) and not after:
                    result.retry_after_missing += 1
                wait = float(after) if after and after.isdigit() else delay
                await asyncio.sleep(min(wait, 10) * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 8)
            result.unanswered.append(i)

        await asyncio.gather(*(one(i) for i in range(plan.dossiers)))
    return result


class Victims:
    """Kills and restarts each component the way the stack starts it."""

    def __init__(self, stack: Stack, kafka: KafkaCluster) -> None:
        # The victim "kafka" is the cluster's first node (of one node: the whole cluster).
        self.stack, self.kafka = stack, kafka
        self.log: list[str] = []

    def kill(self, victim: str) -> None:
        if victim == "kafka":
            self.kafka.kill_node(0)
        else:
            self.stack.stop_service(victim, signal.SIGKILL)
        self.log.append(f"{time.strftime('%H:%M:%S')} SIGKILL {victim}")

    def restart(self, victim: str) -> None:
        if victim == "kafka":
            self.kafka.start_node(0)
        else:
            self.stack.start_service(victim)
            try:
                self.stack.wait_ready(victim, timeout=120)
            except TimeoutError:
                # Running but saying 503: a backlog it sheds (readiness is honest about
                # saturation). The run goes on; the census judges what came of it.
                self.log.append(f"{time.strftime('%H:%M:%S')} {victim} up, not ready in 120 s")
                return
        self.log.append(f"{time.strftime('%H:%M:%S')} {victim} back")

    async def in_turn(self, plan: Plan) -> None:
        gap = plan.dossiers / plan.rate / (len(plan.victims) + 1)
        for victim in plan.victims:
            await asyncio.sleep(gap)
            await asyncio.to_thread(self.kill, victim)
            await asyncio.sleep(plan.down_s)
            await asyncio.to_thread(self.restart, victim)


PEAK: dict[str, int] = {}


async def peak_memory(stack: Stack) -> None:
    """Each service's largest resident memory while dossiers are offered (bounded memory
    is part of surviving overload)."""
    while True:
        for name, process in list(stack.processes.items()):
            with contextlib.suppress(psutil.Error):
                PEAK[name] = max(PEAK.get(name, 0), psutil.Process(process.pid).memory_info().rss)
        await asyncio.sleep(1.0)


async def settle(stack: Stack, offered: Offer, within_s: float) -> dict[str, str]:
    """Each accepted dossier's last status, polled until all are completed or time is up."""
    tokens = DeskTokens(stack)
    statuses: dict[str, str] = {code: "unknown" for code in offered.accepted.values()}
    deadline, asked = time.monotonic() + within_s, 0
    async with httpx.AsyncClient(timeout=10) as client:
        while time.monotonic() < deadline:
            open_codes = [c for c, s in statuses.items() if s != "completed"]
            if not open_codes:
                break
            headers = {"Authorization": f"Bearer {await tokens.get(client)}"}
            for code in open_codes:
                intake, asked = alternate(stack.urls("intake"), asked), asked + 1
                try:
                    answer = await client.get(intake + f"/v1/dossiers/{code}", headers=headers)
                except httpx.HTTPError:
                    continue
                if answer.status_code == 401:
                    tokens.refused()
                    break
                if answer.status_code == 200:
                    statuses[code] = str(answer.json()["status"])
            await asyncio.sleep(2)
    return statuses


async def subscribe_webhooks(stack: Stack, receiver_url: str) -> None:
    """The desk follows its dossiers by webhook, as an agency system would."""
    async with httpx.AsyncClient(timeout=10) as client:
        token = await DeskTokens(stack).get(client)
        answer = await client.post(
            stack.url("notify") + "/v1/webhook-subscriptions",
            json={
                "agency_code": DESK,
                "url": receiver_url,
                "event_types": ["vn.gov.dossier.completed.v1", "vn.gov.dossier.submitted.v1"],
            },
            headers={"Authorization": f"Bearer {token}"},
        )
        answer.raise_for_status()


async def run_chaos(plan: Plan, var_dir: Path) -> Census:
    random.seed(plan.seed)
    run = f"{int(time.time()) % 100000}"
    kafka = KafkaCluster(var_dir / "kafka", size=plan.brokers)
    receiver = WebhookReceiver()
    kafka.start()
    try:
        kafka.create_topics([TOPIC, TOPIC + ".dlq", *AGENCY_INBOX_TOPICS])
        database_url = ensure_postgres(f"chaos_{run}") if plan.database == "postgres" else None
        await receiver.start()
        stack = Stack(
            kafka_bootstrap=kafka.bootstrap_servers,
            var_dir=var_dir,
            ports=Ports.free(),
            replica_ports=tuple(Ports.free() for _ in range(plan.replicas - 1)),
            database_url=database_url,
            env={
                **FAST_RECOVERY,
                "DOSSIER_EVENTS_TOPIC": TOPIC,
                "OTEL_TRACES_EXPORTER": "none",
            },
            # The desk's webhook endpoint is ours, on loopback: allowed by name.
            env_by_service={"notify": {"OUTBOUND_ALLOW": receiver.url}},
        )
        await asyncio.to_thread(stack.start)
        try:
            await subscribe_webhooks(stack, receiver.url)
            victims = Victims(stack, kafka)
            killing = victims.in_turn(plan) if plan.kills else asyncio.sleep(0)
            memory = asyncio.create_task(peak_memory(stack))
            offered, _ = await asyncio.gather(offer(stack, run, plan), killing)
            memory.cancel()
            statuses = await settle(stack, offered, plan.settle_s)
            census = await take_census(
                stack, kafka.bootstrap_servers, offered, statuses, receiver, database_url
            )
            census.kills = victims.log
            census.work = await replica_work(stack) if plan.replicas > 1 else {}
            census.peak_rss_mib = {k: round(v / 2**20) for k, v in PEAK.items()}
            return census
        finally:
            await asyncio.to_thread(stack.stop)
    finally:
        await receiver.stop()
        kafka.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.chaos", description=__doc__)
    parser.add_argument("--dossiers", type=int, default=Plan.dossiers)
    parser.add_argument("--rate", type=float, default=Plan.rate, help="dossiers offered a second")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default=Plan.database)
    parser.add_argument("--settle", type=float, default=Plan.settle_s)
    parser.add_argument("--var-dir", type=Path, default=None, help="kept; default: a temp dir")
    parser.add_argument(
        "--no-kills", action="store_true", help="an overload run: offer at --rate, kill nobody"
    )
    parser.add_argument("--replicas", type=int, default=1, help="of each service (PostgreSQL)")
    parser.add_argument("--brokers", type=int, default=1, help="Kafka nodes (3: replicated)")
    parser.add_argument("--down", type=float, default=Plan.down_s, help="seconds a victim is down")
    args = parser.parse_args(argv)
    plan = Plan(
        args.dossiers,
        args.rate,
        args.database,
        down_s=args.down,
        settle_s=args.settle,
        kills=not args.no_kills,
        replicas=args.replicas,
        brokers=args.brokers,
        # With replicas the stand-ins stay up: what is proven is that the services' other
        # replicas, and the other brokers, carry on.
        victims=VICTIMS if args.replicas == 1 else REPLICA_VICTIMS,
    )
    os.chdir(REPO)
    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
        census = asyncio.run(run_chaos(plan, args.var_dir or Path(scratch)))
    print("\n".join(census.lines()))
    return 0 if census.ok else 1


if __name__ == "__main__":
    sys.exit(main())
