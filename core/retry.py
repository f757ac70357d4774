"""What is worth trying again: an outage of the database or the broker, waited out; and
a counterpart's answer (HTTP, gRPC, Kafka), judged busy or down rather than refusing.

An outage says nothing about the work itself (an event, a start-up step), so the work is
retried until it passes: never dead-lettered, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc
from aiokafka import errors as kafka_errors
from aiokafka.errors import KafkaError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    KafkaError,
    OperationalError,
    InterfaceError,
    # Every pooled connection busy: the database is overloaded, not the work wrong.
    PoolTimeout,
)


async def until_available(
    what: str,
    action: Callable[[], Awaitable[None]],
    *,
    first_delay_s: float = 0.1,
    max_delay_s: float = 10.0,
) -> None:
    """Run action; while a dependency is away, back off exponentially and run it again."""
    delay = first_delay_s
    while True:
        try:
            await action()
            return
        except TRANSIENT_ERRORS as exc:
            log.warning("%s: dependency unavailable (%r); retrying in %.1fs", what, exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay_s)


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
