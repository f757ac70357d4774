"""A provider's daily cap, counted in notify's database: the replicas share one count.

Providers bill and cut off by the day: a contract of 10,000 SMS a day is 10,000 whichever
replica sends them. A count per process (as core.ratelimit kept it before) let two replicas
send 20,000, so each replica reserves permits here before sending a claimed batch, in one
statement that grants what is left of the day's cap (all, part or none of the batch); the
permits a batch did not use (its rate limiter gave rows back) are returned. The day is the
calendar day in Vietnam, where the contract and the citizens are.

A replica that dies between reserving and sending leaves its permits counted: the cap errs
on sending less, never more. The rate and burst stay per replica (core.ratelimit, in
memory: a permit per message through the database would cost a statement per message);
NotifySettings.send_replicas divides them.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from sqlalchemy import case
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.clock import SYSTEM_CLOCK, VIETNAM, Clock
from core.storage import upsert
from services.notify.models import daily_sends


class DailyCap:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        channel: str,
        cap: int,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1 (no DailyCap for no cap)")
        self._sessions = sessions
        self._channel = channel
        self._cap = cap
        self._clock = clock

    async def reserve(self, wanted: int) -> int:
        """Permits granted for today, at most `wanted`: 0 once the day's cap is spent."""
        if wanted < 1:
            return 0
        first = min(wanted, self._cap)
        c = daily_sends.c
        left = self._cap - c.used
        granted = case((c.used + wanted <= self._cap, wanted), (left > 0, left), else_=0)
        insert = upsert(str(self._sessions.kw["bind"].dialect.name), daily_sends).values(
            channel=self._channel, day=self.today(), used=first, last_granted=first
        )
        # Every SET reads the row as it was: `used` grows by exactly what is granted.
        statement = insert.on_conflict_do_update(
            index_elements=[c.channel, c.day],
            set_={"used": c.used + granted, "last_granted": granted},
        ).returning(c.last_granted)
        async with self._sessions.begin() as session:
            return int((await session.execute(statement)).scalar_one())

    async def release(self, unused: int, day: date) -> None:
        """Give back permits reserved on `day` that were not used."""
        if unused < 1:
            return
        c = daily_sends.c
        async with self._sessions.begin() as session:
            await session.execute(
                daily_sends.update()
                .where(c.channel == self._channel, c.day == day)
                .values(used=case((c.used > unused, c.used - unused), else_=0))
            )

    def tomorrow(self) -> datetime:
        """When the next day's cap opens: local midnight."""
        return datetime.combine(self.today() + timedelta(days=1), time(), tzinfo=VIETNAM)

    def today(self) -> date:
        return self._clock.now().astimezone(VIETNAM).date()
