"""Portal sync: every national status change of a dossier, pushed to the national portal.

DossierStatusChanged events (consumer group `portal-sync`) become rows of a durable table in
one transaction per polled batch; a worker claims due rows with a lease, POSTs them with a
stable Idempotency-Key (dossier + status change) and retries 5xx, 429 and network errors
with exponential backoff and full jitter until portal_sync_max_attempts, then dead-letters
the row with its reason. Nothing is lost while the portal is down: the rows wait.

Fields follow the portal's dossier sync (names modelled on its one-stop API): dates are
`yyyyMMddHHmmss` in Asia/Ho_Chi_Minh, empty when not known yet.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC

import aiohttp
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.clock import SYSTEM_CLOCK, VIETNAM, Clock
from core.events import Event
from core.retry import retryable_http
from core.storage import upsert
from core.workqueue import (
    Hold,
    Lease,
    LeasedQueue,
    RetryPolicy,
    describe,
)
from gateway.v1 import events_pb2
from services.routing.models import PushStatus, portal_pushes
from services.routing.rows import Json, PushRow
from services.routing.settings import RoutingSettings

log = logging.getLogger(__name__)
PUSHES = Counter("gateway_portal_pushes", "Pushes to the national portal, by result", ["result"])
_EARLIER = portal_pushes.alias("earlier")
# A change waits while an earlier change of its dossier is still to be pushed: the portal
# must never see "processing" arrive after "decided".
IN_ORDER = ~(
    select(_EARLIER.c.push_key)
    .where(
        _EARLIER.c.dossier_code == portal_pushes.c.dossier_code,
        _EARLIER.c.status == PushStatus.PENDING,
        _EARLIER.c.changed_at < portal_pushes.c.changed_at,
    )
    .exists()
)
PUSH_NAMESPACE = uuid.UUID("0b6f3a51-8c2e-4f7d-a1d9-52e4c7b8f013")


def portal_date(stamp: Timestamp) -> str:
    """`yyyyMMddHHmmss` in Vietnam's time; "" for an unset timestamp."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return ""
    return stamp.ToDatetime(tzinfo=UTC).astimezone(VIETNAM).strftime("%Y%m%d%H%M%S")


def push_key(change: events_pb2.DossierStatusChanged) -> str:
    """The same for every redelivery of one change; different for the next change, even
    when a dossier comes back to a status it had (processing → supplement → processing)."""
    at = change.changed_at.ToMilliseconds()
    return str(uuid.uuid5(PUSH_NAMESPACE, f"{change.dossier_code}/{change.status}/{at}"))


def portal_fields(change: events_pb2.DossierStatusChanged) -> Json:
    return {
        "MaHoSo": change.dossier_code,
        "MaTTHC": change.procedure_code,
        "TrangThaiHoSo": int(change.status),
        "NgayTiepNhan": portal_date(change.received_at),
        "NgayHenTra": portal_date(change.due_at),
        "NgayKetThucXuLy": portal_date(change.finished_at),
        "DonViXuLy": change.agency_code,
        "NgayCapNhat": portal_date(change.changed_at),
        "LyDo": change.reason,
    }


class PortalSync(LeasedQueue[PushRow]):
    def __init__(
        self,
        settings: RoutingSettings,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Clock = SYSTEM_CLOCK,
        hold: Hold | None = None,
    ) -> None:
        self._settings = settings
        self._client: aiohttp.ClientSession | None = None
        lease = Lease(
            portal_pushes,
            [PushStatus.PENDING],
            settings.portal_sync_lease_s,
            settings.portal_sync_batch_size,
            where=IN_ORDER,
        )
        super().__init__(
            "portal-sync",
            engine,
            sessions,
            lease,
            self._work,
            wakeup=asyncio.Event(),
            poll_interval_s=settings.portal_sync_poll_interval_s,
            hold=hold,
            retry=RetryPolicy(
                base_s=settings.portal_sync_backoff_base_s,
                max_s=settings.portal_sync_backoff_max_s,
                max_attempts=settings.portal_sync_max_attempts,
            ),
            clock=clock,
        )

    async def take_in(self, events: Sequence[Event]) -> None:
        """Handler of DossierStatusChanged: one row per change, a redelivery adds nothing."""
        now = self.clock.now()
        rows = []
        for event in events:
            assert isinstance(event.data, events_pb2.DossierStatusChanged)
            rows.append(
                {
                    "push_key": push_key(event.data),
                    "dossier_code": event.data.dossier_code,
                    "payload": portal_fields(event.data),
                    "changed_at": event.data.changed_at.ToDatetime(tzinfo=UTC),
                    "status": PushStatus.PENDING,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
            )
        async with self.sessions.begin() as session:
            await session.execute(
                upsert(self._engine, portal_pushes).on_conflict_do_nothing(
                    index_elements=["push_key"]
                ),
                rows,
            )
        self.wake()

    async def run(self) -> None:
        settings = self._settings
        if not settings.portal_sync_url:
            log.warning("PORTAL_SYNC_URL is not set: status changes are kept, not pushed")
            return
        timeout = aiohttp.ClientTimeout(total=settings.portal_sync_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as self._client:
            await super().run()

    async def _work(self, rows: list[PushRow]) -> None:
        assert self._client is not None  # run() opened it
        client = self._client
        results = await asyncio.gather(*(self._push(client, row) for row in rows))
        await self._record(list(zip(rows, results, strict=True)))

    async def _push(self, client: aiohttp.ClientSession, row: PushRow) -> tuple[str | None, bool]:
        """(error, retryable) of one push; (None, _) when the portal took it."""
        try:
            async with client.post(
                self._settings.portal_sync_url,
                json=row.payload,
                headers={"Idempotency-Key": row.push_key},
            ) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return describe(exc), True
        except Exception as exc:
            # One push's own trouble (say, a payload that does not serialise) fails it alone:
            # tried again, then dead-lettered, never holding back the batch.
            log.exception("portal push %s failed unexpectedly", row.push_key)
            return describe(exc), True
        if 200 <= response.status < 300:
            return None, True
        return f"HTTP {response.status}", retryable_http(response.status)

    async def _record(self, results: list[tuple[PushRow, tuple[str | None, bool]]]) -> None:
        """A batch's outcomes in one transaction; the pushes the portal took in one
        executemany round trip rather than an update each."""
        now = self.clock.now()
        sent = []
        async with self.sessions.begin() as session:
            for row, (error, retryable) in results:
                PUSHES.labels("sent" if error is None else "failed").inc()
                if error is None:
                    sent.append({"key": row.push_key})
                    continue
                what = f"portal push of {row.dossier_code}"
                await self.fail(session, row, error, retryable=retryable, now=now, what=what)
            if sent:
                await session.execute(
                    portal_pushes.update()
                    .where(
                        portal_pushes.c.push_key == bindparam("key"),
                        portal_pushes.c.status == PushStatus.PENDING,
                    )
                    .values(status=PushStatus.SENT, sent_at=now, last_error=None),
                    sent,
                )
