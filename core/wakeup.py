"""Background workers sleep until woken by a commit that gave them work, or a poll interval.

The event makes the common case immediate; the interval catches work written by another
process (a peer replica, or this one before a crash).
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_for_work(wakeup: asyncio.Event, poll_interval_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wakeup.wait(), poll_interval_s)
