"""Working-day calendar of Vietnam's public administration.

Statutory processing times are counted in working days: weekends and public holidays
(Tết included) do not count, substituted days off do not count and make-up working
Saturdays do; all of that comes from the `holidays` package. A province can add its own
extra days off and make-up working days by configuration.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta

import holidays

from core.clock import VIETNAM as VIETNAM

# Appointments (ngày hẹn trả kết quả) fall at the end of office hours of the last day.
OFFICE_CLOSE = time(17, 0)
# Working time (a paused clock, a delay) is counted within office hours of working days.
OFFICE_OPEN = time(8, 0)


class WorkingCalendar:
    def __init__(
        self,
        extra_days_off: Iterable[date] = (),
        extra_working_days: Iterable[date] = (),
    ) -> None:
        self._public = holidays.country_holidays("VN")
        self._days_off = frozenset(extra_days_off)
        self._working = frozenset(extra_working_days)

    def is_working_day(self, day: date) -> bool:
        if day in self._working:
            return True
        if day in self._days_off:
            return False
        return bool(self._public.is_working_day(day))

    def add_working_days(self, start: datetime, days: int) -> datetime:
        """Due time of a task started at `start` that takes `days` working days.

        Counting starts on the working day after the day of receipt, and the task is due at
        office close of the last counted day, in Vietnam's time zone.
        """
        day = start.astimezone(VIETNAM).date()
        counted = 0
        while counted < days:
            day += timedelta(days=1)
            if self.is_working_day(day):
                counted += 1
        return datetime.combine(day, OFFICE_CLOSE, tzinfo=VIETNAM)

    def working_time_between(self, start: datetime, end: datetime) -> timedelta:
        """Office time of working days between two instants: what a stopped clock owes."""
        total = timedelta()
        day = start.astimezone(VIETNAM).date()
        last = end.astimezone(VIETNAM).date()
        while day <= last:
            if self.is_working_day(day):
                opens, closes = self._office_hours(day)
                overlap = min(end, closes) - max(start, opens)
                if overlap > timedelta():
                    total += overlap
            day += timedelta(days=1)
        return total

    def add_working_time(self, start: datetime, amount: timedelta) -> datetime:
        """`start` moved forward by `amount` of office time of working days.

        A due time at office close moved by whole office days lands at office close again.
        """
        if amount <= timedelta():
            return start
        remaining = amount
        cursor = start.astimezone(VIETNAM)
        day = cursor.date()
        while True:
            if self.is_working_day(day):
                opens, closes = self._office_hours(day)
                begin = max(cursor, opens)
                if begin < closes:
                    if remaining <= closes - begin:
                        return begin + remaining
                    remaining -= closes - begin
            day += timedelta(days=1)
            cursor = datetime.combine(day, time(0, 0), tzinfo=VIETNAM)

    @staticmethod
    def _office_hours(day: date) -> tuple[datetime, datetime]:
        return (
            datetime.combine(day, OFFICE_OPEN, tzinfo=VIETNAM),
            datetime.combine(day, OFFICE_CLOSE, tzinfo=VIETNAM),
        )
