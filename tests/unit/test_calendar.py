from datetime import UTC, date, datetime, timedelta

from core.calendar import VIETNAM, WorkingCalendar


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=VIETNAM)


def test_weekend_is_skipped() -> None:
    # Received Friday 2026-11-06: 1 working day is Monday the 9th, due at office close.
    due = WorkingCalendar().add_working_days(at(2026, 11, 6, 10, 0), 1)
    assert due == at(2026, 11, 9, 17, 0)


def test_tet_holidays_are_skipped() -> None:
    # Tết 2026: Mon 16 to Fri 20 February are public holidays, then a weekend.
    due = WorkingCalendar().add_working_days(at(2026, 2, 13, 9, 0), 1)
    assert due.date() == date(2026, 2, 23)


def test_make_up_saturday_counts_and_substituted_day_off_does_not() -> None:
    # Saturday 2025-04-26 was worked to give Friday 2025-05-02 off.
    calendar = WorkingCalendar()
    assert calendar.is_working_day(date(2025, 4, 26))
    assert not calendar.is_working_day(date(2025, 5, 2))


def test_configured_extra_days() -> None:
    calendar = WorkingCalendar(
        extra_days_off=[date(2026, 11, 10)], extra_working_days=[date(2026, 11, 14)]
    )
    # Mon 9th received; 10th is off, 11, 12, 13 count, Saturday 14th counts.
    assert calendar.add_working_days(at(2026, 11, 9, 8, 0), 4).date() == date(2026, 11, 14)


def test_utc_input_is_counted_in_vietnam_time() -> None:
    # 18:00 UTC Friday is already 01:00 Saturday in Hà Nội: counting starts Monday.
    due = WorkingCalendar().add_working_days(datetime(2026, 11, 6, 18, 0, tzinfo=UTC), 1)
    assert due.date() == date(2026, 11, 9)


def test_working_time_counts_office_hours_of_working_days_only() -> None:
    calendar = WorkingCalendar()
    # Friday 15:00 to Monday 10:00: 2 hours on Friday, 2 on Monday; the weekend is free.
    assert calendar.working_time_between(at(2026, 11, 27, 15, 0), at(2026, 11, 30, 10, 0)) == (
        timedelta(hours=4)
    )
    # Evening to next morning before opening: nothing.
    assert calendar.working_time_between(at(2026, 12, 1, 18, 0), at(2026, 12, 2, 7, 0)) == (
        timedelta()
    )


def test_adding_working_time_skips_nights_weekends_and_tet() -> None:
    calendar = WorkingCalendar()
    # A due time at office close moved by a whole office day lands at the next day's close.
    assert calendar.add_working_time(at(2026, 11, 27, 17, 0), timedelta(hours=9)) == (
        at(2026, 11, 30, 17, 0)
    )
    # Wednesday 3 February 2027, 15:00 + 4 h: Tết runs Thu 4 to Wed 10; Thursday 11, 10:00.
    assert calendar.add_working_time(at(2027, 2, 3, 15, 0), timedelta(hours=4)) == (
        at(2027, 2, 11, 10, 0)
    )
    assert calendar.add_working_time(at(2026, 11, 27, 12, 0), timedelta()) == (
        at(2026, 11, 27, 12, 0)
    )
