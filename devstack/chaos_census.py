"""The census after a chaos run: per accepted dossier, was it completed, once, and did every
agency and citizen hear of it once?

Counted from the outside, as an auditor would: the dossier topic (distinct event ids of
each decision), the agencies' own records of what they took (the sandbox back-offices),
the mailbox, the SMS gateway, a webhook receiver of our own, and what is left in each
service's outbox and dead letters.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import MetaData, Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from core.outbox import outbox_table
from devstack._process import free_ports
from devstack.replicas import REPLICATED, split_name
from services.notify.models import notifications
from services.routing.models import transfers

if TYPE_CHECKING:
    from devstack.stack import Stack

COMPLETED = b"vn.gov.dossier.completed.v1"
STEP_COMPLETED = b"vn.gov.dossier.step_completed.v1"
AGENCIES = ("000.21.31.H22", "000.22.31.H22", "000.23.05.H22", "000.00.12.H22", "000.00.15.H22")
OUTBOXES = ("intake", "routing", "notify")

# The chaos stack's dossier events (DOSSIER_EVENTS_TOPIC), which the census reads back.
TOPIC = "dossier.events"


@dataclass
class Offer:
    """What the clients saw: receipt codes of accepted dossiers, and what was not."""

    accepted: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    unanswered: list[int] = field(default_factory=list)
    retries: int = 0
    # Every answer that was not an acceptance, by status ("0": no answer), and the 429s
    # and 503s that did not say when to come back.
    pushed_back: Counter[str] = field(default_factory=Counter)
    retry_after_missing: int = 0


@dataclass
class Census:
    offered: int = 0
    accepted: int = 0
    refused: dict[int, str] = field(default_factory=dict)
    unanswered: int = 0
    client_retries: int = 0
    pushed_back: dict[str, int] = field(default_factory=dict)
    retry_after_missing: int = 0
    completed: int = 0
    stuck: list[str] = field(default_factory=list)
    completed_twice: list[str] = field(default_factory=list)
    steps_completed_twice: int = 0
    duplicate_deliveries: list[str] = field(default_factory=list)
    duplicate_emails: int = 0
    duplicate_sms: int = 0
    duplicate_webhooks: int = 0
    # Notifications a completed dossier should have caused and nobody received: each
    # applicant's "received" and "completed" email and SMS, the desk's webhooks. Those notify
    # marked failed (an operator sees them and can resend) are counted apart.
    missing_notifications: list[str] = field(default_factory=list)
    failed_notifications: int = 0
    # What was counted, so a clean census is seen not to be an empty one.
    taken: dict[str, int] = field(default_factory=dict)
    left_in_outboxes: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    kills: list[str] = field(default_factory=list)
    # Per process of a replicated stack, what it did (replica_work): replicas share the load.
    work: dict[str, int] = field(default_factory=dict)
    peak_rss_mib: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.accepted > 0
            and not self.refused
            and self.completed == self.accepted
            and not self.stuck
            and not self.completed_twice
            and self.steps_completed_twice == 0
            and not self.duplicate_deliveries
            and self.duplicate_emails == self.duplicate_sms == self.duplicate_webhooks == 0
            and self.left_in_outboxes == 0
            and not self.missing_notifications
            and self.retry_after_missing == 0
        )

    def lines(self) -> list[str]:
        out = [f"  {k}" for k in self.kills]
        out += [
            f"offered {self.offered}, accepted {self.accepted}, refused {len(self.refused)}, "
            f"unanswered {self.unanswered} (client retries {self.client_retries}: "
            f"{self.pushed_back}, Retry-After missing {self.retry_after_missing})",
            f"completed {self.completed}, stuck {len(self.stuck)}, completed twice "
            f"{len(self.completed_twice)}, steps completed twice {self.steps_completed_twice}",
            f"duplicate deliveries with effect {len(self.duplicate_deliveries)}, duplicate "
            f"emails {self.duplicate_emails}, SMS {self.duplicate_sms}, webhooks "
            f"{self.duplicate_webhooks}",
            f"missing notifications {len(self.missing_notifications)} "
            f"{self.missing_notifications[:5]}, marked failed by notify "
            f"{self.failed_notifications}",
            f"counted: {self.taken}",
            f"left in outboxes {self.left_in_outboxes}, dead letters {self.dead_letters}",
            f"peak resident memory (MiB) {self.peak_rss_mib}",
            f"work per replica {self.work}" if self.work else "work per replica: one each",
            f"stuck: {self.stuck[:10]}" if self.stuck else "stuck: none",
            f"refused: {list(self.refused.values())[:3]}" if self.refused else "refused: none",
            "CHAOS PASSED" if self.ok else "CHAOS FAILED",
        ]
        return out


class WebhookReceiver:
    """An agency system's webhook endpoint that keeps every callback it is sent."""

    def __init__(self) -> None:
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.received: list[tuple[str, bytes]] = []
        self._runner: web.AppRunner | None = None

    async def _take(self, request: web.Request) -> web.Response:
        self.received.append((request.headers.get("webhook-id", ""), await request.read()))
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._take)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def duplicates(self) -> int:
        """Callbacks of one event told twice under different webhook ids (a resend of the
        same id is at-least-once delivery, which the subscriber de-duplicates)."""
        seen: dict[str, set[str]] = {}
        for webhook_id, body in self.received:
            try:
                data = json.loads(body)
            except ValueError:
                continue
            what = data.get("type", ""), json.dumps(data.get("data", {}), sort_keys=True)
            seen.setdefault(hashlib.sha256(repr(what).encode()).hexdigest(), set()).add(webhook_id)
        return sum(len(ids) - 1 for ids in seen.values())


async def decisions(bootstrap: str, topic: str) -> tuple[Counter[bytes], Counter[bytes]]:
    """Distinct event ids of DossierCompleted per dossier, and of StepCompleted per dossier
    and step, read from the start of the topic."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    completed: dict[bytes, set[bytes]] = {}
    steps: dict[bytes, set[bytes]] = {}
    try:
        while batch := await consumer.getmany(timeout_ms=3000):
            for records in batch.values():
                for record in records:
                    headers = dict(record.headers or ())
                    kind, event_id = headers.get("ce_type"), headers.get("ce_id", b"")
                    if kind == COMPLETED:
                        completed.setdefault(record.key or b"", set()).add(event_id)
                    elif kind == STEP_COMPLETED:
                        step = (record.key or b"") + b"#" + _step_index(record.value)
                        steps.setdefault(step, set()).add(event_id)
    finally:
        await consumer.stop()
    return (
        Counter({k: len(v) for k, v in completed.items()}),
        Counter({k: len(v) for k, v in steps.items()}),
    )


def _step_index(value: bytes) -> bytes:
    from gateway.v1 import events_pb2

    return str(events_pb2.StepCompleted.FromString(value).step_index).encode()


def _duplicated(items: list[str]) -> int:
    return sum(n - 1 for n in Counter(items).values() if n > 1)


async def take_census(
    stack: Stack,
    bootstrap_servers: str,
    offered: Offer,
    statuses: dict[str, str],
    receiver: WebhookReceiver,
    database_url: str | None,
) -> Census:
    census = Census(
        offered=len(offered.accepted) + len(offered.refused) + len(offered.unanswered),
        accepted=len(offered.accepted),
        refused=offered.refused,
        unanswered=len(offered.unanswered),
        client_retries=offered.retries,
        pushed_back=dict(offered.pushed_back),
        retry_after_missing=offered.retry_after_missing,
    )
    census.completed = sum(1 for s in statuses.values() if s == "completed")
    census.stuck = sorted(c for c, s in statuses.items() if s != "completed")
    completed, steps = await decisions(bootstrap_servers, TOPIC)
    census.completed_twice = sorted(k.decode() for k, n in completed.items() if n > 1)
    census.steps_completed_twice = sum(1 for n in steps.values() if n > 1)
    mine = set(offered.accepted.values())
    sandbox = stack.url("sandbox")
    async with httpx.AsyncClient(timeout=30) as client:
        for agency in AGENCIES:
            taken = (await client.get(f"{sandbox}/agencies/{agency}/transfers")).json()
            steps_taken = [
                f"{agency} {t['dossier_code']}#{t['step_index']}"
                for t in taken
                if t["dossier_code"] in mine
            ]
            census.taken["transfers"] = census.taken.get("transfers", 0) + len(steps_taken)
            census.duplicate_deliveries += [s for s, n in Counter(steps_taken).items() if n > 1] + [
                f"{agency} {t['transfer_id']} x{t['effects']}"
                for t in taken
                if t["dossier_code"] in mine and t.get("effects", 1) > 1
            ]
        mails = (await client.get(f"{sandbox}/mail/messages")).json()
        census.taken["emails"] = len(mails)
        census.duplicate_emails = _duplicated(
            [json.dumps([m.get("to"), m.get("subject"), m.get("text")]) for m in mails]
        )
        sms = (await client.get(f"{sandbox}/sms/messages")).json()
        census.taken["sms"] = len(sms)
        census.duplicate_sms = _duplicated([json.dumps([m.get("to"), m.get("text")]) for m in sms])
    census.duplicate_webhooks = receiver.duplicates()
    census.taken["webhooks"] = len(receiver.received)
    census.left_in_outboxes, census.dead_letters = await _leftovers(stack, database_url)
    done = [code for code, status in statuses.items() if status == "completed"]
    failed = await _failed_notifications(stack, database_url)
    census.failed_notifications = len(failed)
    hooks = [body for _, body in receiver.received]
    census.missing_notifications = [
        f"{code} {channel} {what}"
        for code, channel, what in _missing(done, mails, sms, hooks)
        if (code, channel) not in failed
    ]
    return census


# What each completed dossier must have caused, found by its receipt code in the text.
EXPECTED = {
    "email": ("đã được tiếp nhận", "đã được giải quyết xong"),
    "sms": ("đã được tiếp nhận", "đã có kết quả"),
    "webhook": ("vn.gov.dossier.submitted.v1", "vn.gov.dossier.completed.v1"),
}


def _missing(
    codes: list[str], mails: list[dict[str, str]], sms: list[dict[str, str]], hooks: list[bytes]
) -> list[tuple[str, str, str]]:
    """(code, channel, what) for every expected message nobody received."""
    wanted = set(codes)
    said: dict[tuple[str, str], list[str]] = {}
    texts = {
        "email": [f"{m.get('subject', '')} {m.get('text', '')}" for m in mails],
        "sms": [str(m.get("text", "")) for m in sms],
        "webhook": [h.decode(errors="replace") for h in hooks],
    }
    for channel, found in texts.items():
        for text_ in found:
            for code in wanted.intersection(text_.replace('"', " ").split()):
                said.setdefault((code, channel), []).append(text_)
    return [
        (code, channel, what)
        for code in codes
        for channel, phrases in EXPECTED.items()
        for what in phrases
        if not any(what in t for t in said.get((code, channel), []))
    ]


async def _failed_notifications(stack: Stack, database_url: str | None) -> set[tuple[str, str]]:
    """(code, channel) of every notification notify has not delivered: given up on, or
    still being retried; an operator sees these and can resend them."""
    url = database_url or f"sqlite+aiosqlite:///{stack.var_dir / 'notify.db'}"
    engine = create_async_engine(url)
    query = select(notifications.c.dossier_code, notifications.c.channel).where(
        notifications.c.status != "delivered"
    )
    try:
        async with engine.connect() as conn:
            return {(code, channel) for code, channel in await conn.execute(query)}
    finally:
        await engine.dispose()


async def _leftovers(stack: Stack, database_url: str | None) -> tuple[int, dict[str, int]]:
    """Events still waiting in any outbox, and every kind of dead letter."""
    left, dead = 0, {}
    for service in OUTBOXES:
        url = database_url or f"sqlite+aiosqlite:///{stack.var_dir / (service + '.db')}"
        engine = create_async_engine(url)
        outbox = outbox_table(MetaData(), service)
        waiting = outbox.c.dead_lettered_at.is_(None)
        try:
            async with engine.connect() as conn:
                left += await _count(conn, select(func.count()).where(waiting))
                dead[f"{service} events"] = await _count(conn, select(func.count()).where(~waiting))
                if service == "routing":
                    dead["transfers"] = await _count(
                        conn,
                        select(func.count()).where(transfers.c.status == "dead_lettered"),
                    )
        finally:
            await engine.dispose()
    return left, {k: v for k, v in dead.items() if v}


async def _count(conn: AsyncConnection, query: Select[int]) -> int:
    return int((await conn.scalar(query)) or 0)


async def replica_work(stack: Stack) -> dict[str, int]:
    """What each running replica did, from its own /metrics: dossiers intake accepted
    (POST /v1/dossiers answered 200/201), rows routing and notify claimed from their work
    queues, requests identity answered. A replica that was restarted counts since then."""
    work: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for service in REPLICATED:
            for name in stack.names(service):
                try:
                    answer = await client.get(stack.url(*split_name(name)) + "/metrics/")
                except httpx.HTTPError:
                    continue
                work[name] = work_of(service, answer.text)
    return work


def work_of(service: str, exposition: str) -> int:
    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if service in ("routing", "notify"):
                total += sample.value if sample.name == "gateway_work_claimed_total" else 0
            elif sample.name == "gateway_http_request_duration_seconds_count":
                labels = sample.labels
                if service == "identity" or (
                    labels.get("route") == "/v1/dossiers"
                    and labels.get("method") == "POST"
                    and labels.get("status") in ("200", "201")
                ):
                    total += sample.value
    return int(total)
