"""How `make bench` loads a pipeline and sees dossiers through it, from the outside: it
submits over HTTP, then reads the far end (the sandbox) for when each dossier reached its
agency and when its completion mail reached the citizen's mailbox.

Closed loop finds the saturation throughput: every client submits again as soon as it is
answered, so latency there is mostly queueing. Open loop (a rate) has dossiers arrive at
fixed instants, as citizens do, and latency is what one dossier sees below saturation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

from devstack.bench_measure import Phase, spent_ms_per_dossier

# What the completion mail's subject says in either pipeline (services/notify/templates.py).
COMPLETED_SUBJECT = "đã được giải quyết xong"
POLL_S = 0.5


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


@dataclass(frozen=True)
class Load:
    dossiers: int
    concurrency: int
    # Dossiers per second arriving open loop; None submits closed loop as fast as answered.
    rate: float | None = None

    def describe(self) -> str:
        if self.rate is None:
            return f"closed loop, {self.dossiers} dossiers by {self.concurrency} clients"
        return f"open loop, {self.dossiers} dossiers arriving at {self.rate:g}/s"


@dataclass(frozen=True)
class Target:
    """Where a pipeline takes dossiers and where its far end shows what came through."""

    intake_url: str
    sandbox_url: str
    agency: str
    token: str = ""
    # Further replicas of intake: dossier i goes to replica i mod n, as a load balancer
    # would spread them.
    more_intake_urls: tuple[str, ...] = ()

    def intake_for(self, i: int) -> str:
        urls = (self.intake_url, *self.more_intake_urls)
        return urls[i % len(urls)]


async def run_phase(
    target: Target,
    load: Load,
    phase: Phase,
    sample_cpu: Callable[[], dict[str, float]],
    settle_s: float,
    mails_per_dossier: int = 1,
) -> None:
    """Submit `load`, wait for every accepted dossier's completion mail (or `settle_s` after
    the last submission), and fill in `phase`. CPU is sampled around exactly that window.
    `mails_per_dossier` (at least the completion mail; learnt in the warm-up) says when the
    mailbox may hold them all and is worth reading whole."""
    sent_at: dict[str, float] = {}
    # aiohttp: the load generator shares the cores with the stack, so it must be cheap.
    # Open loop must not queue in the client: a connection per dossier in flight (0 = no cap).
    connector = aiohttp.TCPConnector(limit=load.concurrency if load.rate is None else 0)
    timeout = aiohttp.ClientTimeout(total=30)
    # One token for the whole run, as an agency system would reuse it until it expires.
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        traffic_before = await _traffic(client, target.sandbox_url)
        cpu_before = sample_cpu()

        async def submit(i: int) -> None:
            started = time.time()
            # Told to come back later (back-pressure), a client waits as asked and submits
            # the same dossier again under the same key: the dossier counts from its first try.
            key = {"Idempotency-Key": f"bench-{started:.0f}-{i}"}
            give_up = started + settle_s
            try:
                url = f"{target.intake_for(i)}/v1/dossiers"
                while True:
                    async with client.post(url, json=payload(i), headers=headers | key) as response:
                        why = f"HTTP {response.status}"
                        wait = response.headers.get("Retry-After", "")
                        later = response.status in (429, 503) and wait.isdigit()
                        if later and time.time() + int(wait) < give_up:
                            phase.told_later[why] = phase.told_later.get(why, 0) + 1
                            await asyncio.sleep(int(wait))
                            continue
                        if response.status >= 300:
                            phase.refused[why] = phase.refused.get(why, 0) + 1
                            return
                        sent_at[(await response.json())["code"]] = started
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = type(exc).__name__
                phase.refused[why] = phase.refused.get(why, 0) + 1

        queue = iter(range(load.dossiers))

        async def client_loop() -> None:
            for i in queue:
                await submit(i)

        async def arrivals(rate: float) -> None:
            # Each dossier at its own scheduled instant, whether or not earlier ones are done.
            tasks = []
            for i in range(load.dossiers):
                await asyncio.sleep(max(0.0, began + i / rate - time.time()))
                tasks.append(asyncio.create_task(submit(i)))
            await asyncio.gather(*tasks)

        began = time.time()
        if load.rate is None:
            await asyncio.gather(*(client_loop() for _ in range(load.concurrency)))
        else:
            await arrivals(load.rate)
        phase.submit_seconds = time.time() - began
        phase.accepted = len(sent_at)
        completed, cpu_after = await _wait_completed(
            client,
            target.sandbox_url,
            set(sent_at),
            traffic_before["emails"],
            max(mails_per_dossier, 1),
            sample_cpu,
            time.time() + settle_s,
        )
        delivered = await _delivered(client, target, set(sent_at))
        traffic_after = await _traffic(client, target.sandbox_url)
    phase.cpu_ms = spent_ms_per_dossier(cpu_before, cpu_after, phase.accepted)
    phase.completed_ms = [(completed[c] - sent_at[c]) * 1000 for c in completed]
    phase.delivered_ms = [(delivered[c][0] - sent_at[c]) * 1000 for c in delivered]
    # Where the time goes, stage by stage, for the dossiers seen at both ends of a stage.
    reported = {c: at[1] for c, at in delivered.items() if at[1] is not None}
    phase.stages_ms = {
        "submit->agency": phase.delivered_ms,
        "agency->outcome answered": [(at - delivered[c][0]) * 1000 for c, at in reported.items()],
        "outcome->completion mail": [
            (completed[c] - at) * 1000 for c, at in reported.items() if c in completed
        ],
    }
    phase.end_to_end_seconds = max(completed.values(), default=began) - began
    phase.far_end = {
        what: (traffic_after[what] - traffic_before[what]) / max(phase.accepted, 1)
        for what in traffic_after
    }


async def _wait_completed(
    client: aiohttp.ClientSession,
    sandbox_url: str,
    codes: set[str],
    mails_before: int,
    mails_per_dossier: int,
    sample_cpu: Callable[[], dict[str, float]],
    deadline: float,
) -> tuple[dict[str, float], dict[str, float]]:
    """When each dossier's completion mail arrived, and the CPU sample taken as soon as the
    last one was seen (or at the deadline). The mailbox is read whole, so it is read only
    once the count of completion mails could be complete: reading it is work too."""
    completed: dict[str, float] = {}
    while True:
        seen_at = sample_cpu()
        mails = await _mail_count(client, sandbox_url) - mails_before
        if mails // mails_per_dossier >= len(codes) or time.time() > deadline:
            completed = await _completion_mails(client, sandbox_url, codes)
            if len(completed) == len(codes) or time.time() > deadline:
                return completed, seen_at
        await asyncio.sleep(POLL_S)


async def _mail_count(client: aiohttp.ClientSession, sandbox_url: str) -> int:
    async with client.get(f"{sandbox_url}/mail/stats") as response:
        return int((await response.json())["messages"])


async def _completion_mails(
    client: aiohttp.ClientSession, sandbox_url: str, codes: set[str]
) -> dict[str, float]:
    async with client.get(f"{sandbox_url}/mail/messages") as response:
        mails = await response.json()
    completed: dict[str, float] = {}
    for mail in mails:
        subject = str(mail.get("subject", ""))
        if COMPLETED_SUBJECT not in subject:
            continue
        for code in codes.intersection(subject.split()):
            at = datetime.fromisoformat(mail["received_at"]).timestamp()
            completed[code] = min(at, completed.get(code, at))
    return completed


async def _delivered(
    client: aiohttp.ClientSession, target: Target, codes: set[str]
) -> dict[str, tuple[float, float | None]]:
    """When the agency took each dossier, and when the pipeline answered its outcome."""
    url = f"{target.sandbox_url}/agencies/{target.agency}/transfers"
    async with client.get(url) as response:
        transfers = await response.json()
    return {
        t["dossier_code"]: (_instant(t["first_received_at"]) or 0.0, _instant(t["reported_at"]))
        for t in transfers
        if t["dossier_code"] in codes
    }


def _instant(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


async def _traffic(client: aiohttp.ClientSession, sandbox_url: str) -> dict[str, int]:
    """What the far end has taken so far, besides transfers: mails, SMS, portal pushes."""
    async with client.get(f"{sandbox_url}/mail/stats") as response:
        emails = int((await response.json())["messages"])
    async with client.get(f"{sandbox_url}/sms/messages") as response:
        sms = len(await response.json())
    async with client.get(f"{sandbox_url}/portal/stats") as response:
        portal = int((await response.json())["pushes"])
    return {"emails": emails, "SMS": sms, "portal pushes": portal}
