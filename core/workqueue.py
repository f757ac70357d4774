"""What every durable work queue shares: when to try again, what is worth trying again, and
setting aside (parking) what is not.

The queues (the outbox relay, transfer deliveries, portal sync, notify's senders) each claim
rows with a lease (core/leases.py) and call out with no transaction open. After a call, one
rule decides the row's fate: done; failed but worth another try later (a network error, a
timeout, 408/425/429/5xx, gRPC UNAVAILABLE, a retriable Kafka error) with exponential backoff
and full jitter; or parked as a dead letter with its reason (a refusal, a record Kafka will
never take, or the last attempt spent). A parked row never blocks the rows behind it and
stays until an operator replays it.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta

import grpc
from aiokafka import errors as kafka_errors
from aiokafka.errors import KafkaError
from pydantic import BaseModel, Field
from tenacity import RetryCallState, Retrying, wait_exponential

# Worth retrying over HTTP: the server was busy, down or slow, not the request wrong.
RETRYABLE_HTTP = frozenset({408, 425, 429})
RETRYABLE_GRPC = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)


def retryable_http(status: int) -> bool:
    return status in RETRYABLE_HTTP or status >= 500


def retryable_grpc(code: grpc.StatusCode) -> bool:
    return code in RETRYABLE_GRPC


# Refusals of the record itself, the same however often it is sent. aiokafka's own
# `retriable` flag cannot decide this: it is False for many outages too (a broker not
# available, a producer closing, a timeout), which must never dead-letter an event.
PERMANENT_KAFKA: tuple[type[KafkaError], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.CorruptRecordException,
    kafka_errors.InvalidMessageError,
    kafka_errors.InvalidTimestampError,
    kafka_errors.UnsupportedForMessageFormatError,
    kafka_errors.PolicyViolationError,
)


def retryable_kafka(exc: BaseException) -> bool:
    """False only for a record Kafka will refuse every time (too large, a bad topic, no
    right to write it) or for a fault of our own (a bug): anything else is the broker being
    away, and waits."""
    if isinstance(exc, KafkaError):
        return not isinstance(exc, PERMANENT_KAFKA)
    # Not connected yet, connection reset, timed out, the producer closing under it.
    return isinstance(exc, OSError | TimeoutError | asyncio.CancelledError)


class RetryPolicy(BaseModel):
    """Attempts and backoff of one queue, from its settings."""

    base_s: float = Field(1.0, gt=0)
    max_s: float = Field(60.0, gt=0)
    max_attempts: int = Field(8, ge=1)

    # The least share of the exponential step a wait takes: 0 is full jitter (uniform
    # between 0 and the step), which spreads best the rows that failed together; 0.5 is
    # "equal jitter", for a provider that should not hear from us sooner than half a step.
    jitter_floor: float = Field(0.0, ge=0, le=1)

    def delay_s(self, attempt: int) -> float:
        """Seconds to wait after `attempt` (1-based) failed: the exponential step (tenacity's
        wait_exponential, capped at max_s), jittered."""
        state = RetryCallState(Retrying(), None, (), {})
        state.attempt_number = max(attempt, 1)
        step = float(wait_exponential(multiplier=self.base_s, max=self.max_s)(state))
        return random.uniform(step * self.jitter_floor, step)

    def next_attempt_at(self, now: datetime, attempt: int) -> datetime:
        return now + timedelta(seconds=self.delay_s(attempt))

    def gives_up(self, attempt: int, *, retryable: bool) -> bool:
        """Park instead of retrying: the failure is permanent or the last attempt is spent."""
        return not retryable or attempt >= self.max_attempts


def describe(exc: BaseException, limit: int = 300) -> str:
    """A dead letter's reason: the error's type and message, bounded, never a response body."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
