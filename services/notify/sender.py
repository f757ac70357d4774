"""One sender loop per channel: claim due notifications with a lease, pace them through
the channel's rate limiter, send, and record each outcome.

Where at-least-once meets at-most-once. A claim moves rows to `sending` and pushes their
due time one lease ahead, in a transaction; the sends happen with no transaction open;
then the outcomes are committed. A crash (SIGKILL, power) between a provider accepting a
message and that commit leaves the row in `sending` with its lease running; when the
lease is over the row is claimed again, and then:

- channels whose provider de-duplicates on the notification id (`idempotent`: the SMS
  gateway's `reference`, the webhook's `webhook-id`) send it again: at least once to the
  provider, exactly once to the citizen or agency. A resend being harmless, a batch goes
  out concurrently and its outcomes are committed once, together;
- email has no such key (the Message-ID is stable, but SMTP promises nothing about it), so
  messages go one at a time, each marked `in_flight_at` in a commit before the SMTP
  transaction (the same commit that records the previous message's outcome). The one
  message that was in flight at the crash is not sent again: it is recorded as a
  technical failure for an officer to check, at most once rather than twice. The rows of
  the batch that were not yet in flight are sent normally: nothing else is lost.

Pacing never holds a row past its lease (another replica could claim and send it):
a claim takes only what the limiter can serve within half a lease, and a row whose
permit would come later is given back, due when the limiter expects a permit. A channel
with a daily cap reserves a claimed batch's permits from the day's count shared by the
replicas (daily_cap.py) first; rows beyond the cap are given back until local midnight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.clock import SYSTEM_CLOCK, Clock
from core.lanes import GroupCommit, Lanes
from core.ratelimit import RateLimiter
from core.telemetry import context_from_carrier
from core.workqueue import Hold, Lease, LeasedQueue, describe
from services.notify.channels import Channel
from services.notify.daily_cap import DailyCap
from services.notify.models import notifications
from services.notify.settings import NotifySettings
from services.notify.status import Outcome, RetryPolicy, StatusLog, after_attempt

log = logging.getLogger(__name__)
tracer = trace.get_tracer("gateway.notify")

CLAIMABLE = ("created", "sending", "temporary-failure")


def pace_for(channel: str, settings: NotifySettings) -> tuple[float, int]:
    """This replica's share of the channel's rate and burst."""
    replicas = settings.send_replicas
    rate: float = getattr(settings, f"{channel}_rate_per_s")
    burst: int = getattr(settings, f"{channel}_burst")
    return rate / replicas, max(1, burst // replicas)


def _lane_of(column: str) -> Callable[[dict[str, Any]], str]:
    return lambda row: str(row[column])


def limiter_for(channel: str, settings: NotifySettings) -> RateLimiter:
    # No daily cap here: a count per process would be one cap per replica (DailyCap).
    return RateLimiter(*pace_for(channel, settings))


class ChannelSender(LeasedQueue[dict[str, Any]]):
    def __init__(
        self,
        channel: Channel,
        settings: NotifySettings,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        wakeup: asyncio.Event,
        status_log: StatusLog,
        *,
        clock: Clock = SYSTEM_CLOCK,
        hold: Hold | None = None,
    ) -> None:
        self._channel = channel
        self._settings = settings
        self._status_log = status_log
        self._limiter = limiter_for(channel.name, settings)
        cap: int = getattr(settings, f"{channel.name}_daily_cap")
        self._daily_cap = DailyCap(sessions, channel.name, cap, clock) if cap else None
        rate, burst = pace_for(channel.name, settings)
        within_lease = burst + int(rate * settings.send_lease_s / 2)
        self._policy = RetryPolicy(
            settings.retry_for_s, settings.retry_backoff_base_s, settings.retry_backoff_max_s
        )
        limit = max(1, min(settings.send_batch_size, within_lease))
        lanes = None
        if channel.lane is not None:
            lanes = Lanes(
                channel.lane,
                _lane_of(channel.lane),
                per_lane=settings.webhook_subscription_in_flight_max,
                total=settings.webhook_in_flight_max,
            )
        lease = Lease(
            notifications,
            CLAIMABLE,
            settings.send_lease_s,
            limit,
            claimed_status="sending",
            where=notifications.c.channel == channel.name,
            stamped=("updated_at",),
            lanes=lanes,
        )
        super().__init__(
            f"{channel.name}-sender",
            engine,
            sessions,
            lease,
            self._send_all,
            wakeup=wakeup,
            poll_interval_s=settings.send_poll_interval_s,
            hold=hold,
            take=self._take,
            prepare=self._claimed,
            clock=clock,
        )
        self._claim = self.claim
        self._record_together = GroupCommit(self._record_outcomes)

    async def run(self) -> None:
        await self._channel.start()
        try:
            await super().run()
        finally:
            await self._channel.close()

    async def _take(
        self, session: AsyncSession, rows: list[Any], now: datetime
    ) -> list[dict[str, Any]]:
        """The found rows but those a crash interrupted while the provider was taking them
        (see above): not resent."""
        found = [dict(r._mapping) for r in rows]
        if self._channel.idempotent:
            return found
        uncertain = [r for r in found if r["status"] == "sending" and r["in_flight_at"]]
        values = {
            "status": "technical-failure",
            "reason": "interrupted while the mail server was taking it; not sent again, as it "
            "may have been accepted (look for its Message-ID before resending)",
            "in_flight_at": None,
        }
        await self._status_log.change(session, [(row, values) for row in uncertain], now)
        return [r for r in found if r not in uncertain]

    async def _claimed(
        self, session: AsyncSession, found: list[dict[str, Any]], now: datetime
    ) -> list[dict[str, Any]]:
        lease_end = now + timedelta(seconds=self._settings.send_lease_s)
        claimed = [
            r
            | {
                "status": "sending",
                "attempts": r["attempts"] + 1,
                "next_attempt_at": lease_end,
                # A row found in `sending` had its lease run out: the last attempt's
                # outcome was never recorded (a crash mid-send).
                "reason": "previous attempt interrupted" if r["status"] == "sending" else None,
            }
            for r in found
        ]
        await self._status_log.record(session, claimed, now)
        return claimed

    async def _send_all(self, rows: list[dict[str, Any]]) -> None:
        if self._daily_cap is None:
            await self._send_paced(rows)
            return
        day = self._daily_cap.today()
        allowed = await self._daily_cap.reserve(len(rows))
        if allowed < len(rows):
            await self._give_back(rows[allowed:], self._daily_cap.tomorrow())
        if allowed:
            unsent = await self._send_paced(rows[:allowed])
            await self._daily_cap.release(unsent, day)

    async def _send_paced(self, rows: list[dict[str, Any]]) -> int:
        """Send what the rate limiter allows within the lease; how many were given back."""
        await self._channel.prepare(rows)
        deadline = time.monotonic() + self._settings.send_lease_s / 2
        if self._channel.idempotent:
            # A resend is harmless here, so the batch goes out concurrently (still paced:
            # each permit is reserved in order) and its outcomes are committed together.
            outcomes = await asyncio.gather(*(self._paced(row, deadline) for row in rows))
            refused = [r for r, o in zip(rows, outcomes, strict=True) if o is None]
            await self._give_back(refused)
            # With the other lanes' that returned meanwhile: one commit (core/lanes.py).
            await self._record_together(
                [(r, o) for r, o in zip(rows, outcomes, strict=True) if o is not None]
            )
            return len(refused)
        # A group at a time (one message unless email_in_flight_max says more), marked in
        # flight before it is handed over; the mark shares its commit with the previous
        # group's outcomes, so a commit costs 1/group of a message.
        group = self._settings.email_in_flight_max
        done: list[tuple[dict[str, Any], Outcome]] = []
        unsent = 0
        for start in range(0, len(rows), group):
            permitted = []
            for row in rows[start : start + group]:
                if not await self._limiter.acquire(max_wait=max(deadline - time.monotonic(), 0)):
                    break
                permitted.append(row)
            if permitted:
                marked = await self._record(done, in_flight=permitted)
                # A row whose lease ran out while it waited its turn (a slow batch) may be
                # another replica's now: only those still this claim's are handed over.
                done = [(row, await self._send(row)) for row in permitted if row["id"] in marked]
            if len(permitted) < len(rows[start : start + group]):
                unsent = len(rows) - start - len(permitted)
                await self._give_back(rows[start + len(permitted) :])
                break
        await self._record(done)
        return unsent

    async def _paced(self, row: dict[str, Any], deadline: float) -> Outcome | None:
        """The outcome of sending, or None when no permit comes before the deadline."""
        if not await self._limiter.acquire(max_wait=max(deadline - time.monotonic(), 0)):
            return None
        return await self._send(row)

    async def _record(
        self,
        done: list[tuple[dict[str, Any], Outcome]],
        in_flight: Sequence[dict[str, Any]] = (),
    ) -> set[str]:
        """Commit the outcomes of `done` and mark `in_flight` as handed over, in one
        transaction; the ids of the rows marked (those still held under this claim)."""
        now = self.clock.now()
        changes = []
        for row, outcome in done:
            values = after_attempt(
                outcome,
                attempts=row["attempts"],
                created_at=row["created_at"],
                now=now,
                policy=self._policy,
            )
            values["in_flight_at"] = None
            if outcome.provider_id:
                values["provider_id"] = outcome.provider_id
            if values["status"] != "delivered":
                log.warning(
                    "notification %s (%s): %s (%s)",
                    row["id"],
                    self._channel.name,
                    values["status"],
                    values["reason"],
                )
            changes.append((row, values))
        if not changes and not in_flight:
            return set()
        async with self.sessions.begin() as session:
            await self._status_log.change(session, changes, now)
            if not in_flight:
                return set()
            c = notifications.c
            marked = await session.execute(
                notifications.update()
                .where(_claimed_by_us(in_flight), c.status == "sending", c.in_flight_at.is_(None))
                .values(in_flight_at=now)
                .returning(c.id)
            )
            return set(marked.scalars())

    async def _record_outcomes(self, done: list[tuple[dict[str, Any], Outcome]]) -> None:
        await self._record(done)

    async def _send(self, row: dict[str, Any]) -> Outcome:
        with tracer.start_as_current_span(
            self._channel.span_name,
            context=context_from_carrier(row["trace"]),
            kind=SpanKind.CLIENT,
            attributes={
                "dossier.code": row["dossier_code"],
                "notification.id": row["id"],
                "notification.channel": self._channel.name,
                "notification.template": row["template"],
                "notification.attempt": row["attempts"],
            },
        ):
            try:
                return await self._channel.send(row)
            except Exception as exc:
                # One message's own trouble fails it alone, never its batch: it is tried
                # again within the retry window, then given up as a permanent failure.
                log.exception("notification %s failed unexpectedly", row["id"])
                return Outcome(status="temporary-failure", reason=describe(exc))

    async def _give_back(self, rows: list[dict[str, Any]], due: datetime | None = None) -> None:
        """Rows the limiter cannot serve within the lease: due again when it can (or at
        `due`: the daily cap's next day), their attempt not counted."""
        if not rows:
            return
        due = due or self.clock.now() + timedelta(seconds=self._limiter.delay())
        async with self.sessions.begin() as session:
            await session.execute(
                notifications.update()
                .where(_claimed_by_us(rows))
                .values(next_attempt_at=due, attempts=notifications.c.attempts - 1)
            )


def _claimed_by_us(rows: Sequence[dict[str, Any]]) -> ColumnElement[bool]:
    """The rows as this claim left them: every claim counts an attempt, so a row another
    replica claimed after this lease ran out has a higher count and is not ours to touch."""
    c = notifications.c
    by_attempts: dict[int, list[str]] = {}
    for row in rows:
        by_attempts.setdefault(row["attempts"], []).append(row["id"])
    return or_(*(and_(c.attempts == n, c.id.in_(ids)) for n, ids in by_attempts.items()))
