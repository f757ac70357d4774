from datetime import UTC, datetime, timedelta

import pytest

from services.notify.status import (
    TERMINAL,
    IllegalTransition,
    Outcome,
    RetryPolicy,
    after_attempt,
    check_transition,
)

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
POLICY = RetryPolicy(retry_for_s=3600, backoff_base_s=2, backoff_max_s=60)


def attempt(outcome: Outcome, attempts: int = 1, age_s: float = 10) -> dict[str, object]:
    return after_attempt(
        outcome,
        attempts=attempts,
        created_at=NOW - timedelta(seconds=age_s),
        now=NOW,
        policy=POLICY,
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("created", "sending"),
        ("sending", "delivered"),
        ("sending", "temporary-failure"),
        ("temporary-failure", "sending"),
        ("sending", "sending"),  # a lease that ran out
        ("created", "technical-failure"),
        ("sending", "technical-failure"),
    ],
)
def test_allowed_transitions(old: str, new: str) -> None:
    check_transition(old, new)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_statuses_are_never_left(terminal: str) -> None:
    for new in ("sending", "delivered", "temporary-failure"):
        with pytest.raises(IllegalTransition):
            check_transition(terminal, new)


def test_created_cannot_skip_sending_to_delivered() -> None:
    with pytest.raises(IllegalTransition):
        check_transition("created", "delivered")


def test_delivered_records_the_time() -> None:
    assert attempt(Outcome("delivered")) == {"status": "delivered", "reason": None, "sent_at": NOW}


def test_temporary_failure_backs_off_exponentially_within_bounds() -> None:
    for attempts, cap in [(1, 2), (3, 8), (10, 60)]:
        values = attempt(Outcome("temporary-failure", "HTTP 503"), attempts=attempts)
        assert values["status"] == "temporary-failure"
        delay = (values["next_attempt_at"] - NOW).total_seconds()  # type: ignore[operator]
        assert cap / 2 <= delay <= cap


def test_retry_after_is_honoured() -> None:
    values = attempt(Outcome("temporary-failure", "HTTP 429", retry_after_s=30))
    assert values["next_attempt_at"] == NOW + timedelta(seconds=30)


def test_temporary_failures_become_permanent_after_the_retry_window() -> None:
    values = attempt(Outcome("temporary-failure", "HTTP 503"), attempts=40, age_s=3600)
    assert values["status"] == "permanent-failure"
    assert "HTTP 503" in str(values["reason"])
    assert "next_attempt_at" not in values


@pytest.mark.parametrize("status", ["permanent-failure", "technical-failure"])
def test_permanent_and_technical_failures_are_not_retried(status: str) -> None:
    values = attempt(Outcome(status, "HTTP 401"))  # type: ignore[arg-type]
    assert values == {"status": status, "reason": "HTTP 401"}
