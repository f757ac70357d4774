"""Waiting out an outage of the database or the broker.

These failures say nothing about the work itself (an event, a start-up step), so the work
is retried until they pass: never dead-lettered, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

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
