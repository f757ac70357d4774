"""What the token endpoint remembers, kept in identity's database so that every replica
behind the balancer sees the same: the client assertions already used (a jti works once, on
whichever replica it arrives) and the failure buckets that pace guessing (a brute-forcer
alternating replicas gets no more attempts than against one).

Each is one statement on the way it is needed: an assertion's use is an insert that a second
use of the same jti cannot make (the primary key refuses it); a failure is one upsert that
charges both of its buckets; a throttle check is one read of both, skipped while this
replica already knows the key is throttled (a flood of refused requests costs no queries).
Expired rows of both are purged by a worker on every replica (deletes: any replica may).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.clock import SYSTEM_CLOCK, Clock
from core.storage import rowcount, upsert
from services.identity.models import failure_buckets, used_assertions

log = logging.getLogger(__name__)
PURGE_INTERVAL_S = 60.0
# An expired assertion is refused for its exp anyway; its jti is kept a little longer so
# that clock skew between replicas (and authlib's leeway) cannot reopen it.
ASSERTION_KEPT_S = 60.0


def bounded(text: str, limit: int = 255) -> str:
    """A key that fits its column: long ones (from unauthenticated input) by their hash."""
    if len(text) <= limit:
        return text
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class UsedAssertions:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._sessions = sessions
        self._clock = clock

    async def use(self, client_id: str, jti: str, expires: float) -> bool:
        """True the first time (client_id, jti) is used, on any replica; False ever after."""
        kept_until = datetime.fromtimestamp(expires, UTC) + timedelta(seconds=ASSERTION_KEPT_S)
        row = {"client_id": bounded(client_id), "jti": bounded(jti), "expires_at": kept_until}
        statement = upsert(self._dialect, used_assertions).values(row).on_conflict_do_nothing()
        async with self._sessions.begin() as session:
            return rowcount(await session.execute(statement)) == 1

    async def purge(self) -> int:
        expired = delete(used_assertions).where(used_assertions.c.expires_at < self._clock.now())
        async with self._sessions.begin() as session:
            return rowcount(await session.execute(expired))

    @property
    def _dialect(self) -> str:
        return _dialect(self._sessions)


@dataclass(frozen=True)
class Pace:
    """A token bucket of failures: `burst` at once, then `per_min` a minute."""

    per_min: float
    burst: int

    @property
    def interval_s(self) -> float:
        return 60.0 / self.per_min

    @property
    def tolerance_s(self) -> float:
        return (self.burst - 1) * self.interval_s


class FailureBuckets:
    """Token buckets of failures (GCRA, as core.ratelimit.RateLimiter) in the database.

    A failure is granted while its bucket has room (tat - tolerance <= now) and moves tat one
    interval on; an exhausted bucket just stays exhausted (a refused failure reserves
    nothing). Times are the wall clock's epoch seconds: replicas share them.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock = SYSTEM_CLOCK,
        *,
        known_max: int = 10_000,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        # key -> epoch second until which it is throttled, as this replica last saw it.
        # Other replicas' failures only move that later, so a refusal from here is never
        # one the database would not give; a key throttled elsewhere is read once.
        self._throttled: dict[str, float] = {}
        self._known_max = known_max

    async def delays(self, keys: Sequence[tuple[str, Pace]]) -> list[float]:
        """Seconds until each key may fail again (0: now)."""
        now = self._now()
        known = [self._throttled.get(bounded(key), 0.0) - now for key, _ in keys]
        if any(delay > 0 for delay in known):
            return [max(0.0, delay) for delay in known]
        c = failure_buckets.c
        names = [bounded(key) for key, _ in keys]
        async with self._sessions() as session:
            rows = (await session.execute(select(c.key, c.tat).where(c.key.in_(names)))).all()
        tats = {row.key: float(row.tat) for row in rows}
        return [self._seen(name, tats.get(name, now) - pace.tolerance_s, now)
                for name, (_, pace) in zip(names, keys, strict=True)]  # fmt: skip

    async def charge(self, keys: Sequence[tuple[str, Pace]]) -> None:
        """One failure against each key's bucket, in one statement."""
        now = self._now()
        rows = sorted(  # one order for every replica: concurrent charges cannot deadlock
            (
                {
                    "key": bounded(key),
                    "tat": now + pace.interval_s,
                    "interval_s": pace.interval_s,
                    "tolerance_s": pace.tolerance_s,
                }
                for key, pace in keys
            ),
            key=lambda row: str(row["key"]),
        )
        c = failure_buckets.c
        insert = upsert(_dialect(self._sessions), failure_buckets).values(rows)
        new = insert.excluded
        start = case((c.tat > now, c.tat), else_=now)
        statement = insert.on_conflict_do_update(
            index_elements=[c.key],
            set_={
                "tat": case((c.tat - new.tolerance_s <= now, start + new.interval_s), else_=c.tat),
                "interval_s": new.interval_s,
                "tolerance_s": new.tolerance_s,
            },
        ).returning(c.key, c.tat, c.tolerance_s)
        async with self._sessions.begin() as session:
            charged = (await session.execute(statement)).all()
        for row in charged:
            self._seen(row.key, float(row.tat) - float(row.tolerance_s), now)

    async def purge(self) -> int:
        full = delete(failure_buckets).where(failure_buckets.c.tat < self._now())
        async with self._sessions.begin() as session:
            return rowcount(await session.execute(full))

    def _seen(self, key: str, free_at: float, now: float) -> float:
        """Remember when a throttled key is free again; the delay from now."""
        if free_at <= now:
            self._throttled.pop(key, None)
            return 0.0
        if len(self._throttled) >= self._known_max:
            self._throttled = {k: t for k, t in self._throttled.items() if t > now}
            if len(self._throttled) >= self._known_max:
                self._throttled.clear()  # only a cache: the database still knows
        self._throttled[key] = free_at
        return free_at - now

    def _now(self) -> float:
        return self._clock.now().timestamp()


async def purge_expired(
    assertions: UsedAssertions, buckets: FailureBuckets, interval_s: float = PURGE_INTERVAL_S
) -> None:
    """Runs on every replica: deleting expired rows twice is harmless."""
    while True:
        try:
            await assertions.purge()
            await buckets.purge()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("cannot purge expired token state: %r", exc)
        await asyncio.sleep(interval_s)


def _dialect(sessions: async_sessionmaker[AsyncSession]) -> str:
    bind = sessions.kw["bind"]
    return str(bind.dialect.name)
