"""What a client secret check may cost identity: one mechanism against guessing and storms.

A secret check is an scrypt hash (tens of milliseconds of a core, by design). Unguarded, a
flood of wrong secrets, or every agency's token expiring at once, queued one hash per
request without bound: valid clients waited behind the flood, clients that had given up
were still hashed for, and memory grew with the queue. Here, in the order a check meets
them:

1. A verified-secret cache: a client's secret that matched is remembered for a while,
   keyed by a keyed fast hash (HMAC-SHA256 with a per-process random key) of the client id
   and the secret, and tied to the stored hash it matched, so a changed secret no longer
   hits. A recently verified client costs no hash, whatever else is going on.
2. Single flight: checks of the same client id and secret already being hashed wait for
   that one hash instead of queueing their own (a burst of one client costs one hash).
3. Throttles before any hashing (429): per client id and per source address, failed
   checks are paced by a token bucket (burst, then a steady rate) kept in the database and
   shared by the replicas (token_state.FailureBuckets), and hashes in flight are capped
   per process, so one address cannot fill the pool.
4. A bounded pool: a fixed number of hashing threads and a bounded queue with a wait
   deadline; beyond either, 503 at once (the client retries after Retry-After), and a
   request whose client has gone is dropped before its hash.
5. Unknown client ids are hashed too, against a dummy hash, through the same path: a
   wrong secret costs the same whether the id exists or not, so ids cannot be enumerated.

Readiness says 503 while requests are being shed, so a balancer sends traffic elsewhere.

Replicas: the failure buckets (3) are shared through the database, so guesses spread over
replicas count once. The cache (1), single flight (2), in-flight caps and pool (3, 4) are
each process's own cost and stay per process: a replica hashes a client's secret once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge
from sqlalchemy.exc import SQLAlchemyError

from services.identity.clients import hash_secret, secret_matches
from services.identity.token_state import FailureBuckets, Pace

log = logging.getLogger(__name__)

CHECKS = Counter(
    "identity_token_secret_checks_total",
    "Client secret checks at the token endpoint, by how they ended",
    ["outcome"],
)
for _outcome in ("cached", "hashed", "joined", "throttled", "shed", "gone"):
    CHECKS.labels(_outcome)  # every series exported from the start, at 0
WAITING = Gauge("identity_token_hash_waiting", "Secret checks waiting for a hashing thread")

K = TypeVar("K")
V = TypeVar("V")


class BoundedTTLMap(Generic[K, V]):
    """A dict with a size bound (oldest out first) and an age bound per entry.

    Small enough to keep here rather than add a dependency (cachetools.TTLCache would do).
    """

    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float]) -> None:
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl_s
        self._clock = clock

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (self._clock() + self._ttl, value)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class GuardLimits:
    hash_workers: int = 2
    queue_size: int = 64
    queue_wait_s: float = 2.0
    verified_ttl_s: float = 600.0
    verified_max: int = 10_000
    # Failed checks: a burst, then so many a minute, per client id and per address.
    client_failures_burst: int = 20
    client_failures_per_min: float = 10.0
    address_failures_burst: int = 10
    address_failures_per_min: float = 10.0
    # Hashes in flight (queued or running) per client id and per address.
    client_in_flight: int = 2
    address_in_flight: int = 8
    # Not ready for this long after a request was shed.
    saturation_window_s: float = 5.0


class CheckRefused(Exception):
    """Answered before any hashing: status 429 (this client or address) or 503 (all)."""

    def __init__(self, status: int, retry_after_s: float, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.retry_after = max(1, math.ceil(retry_after_s))
        self.reason = reason


class ClientGone(Exception):
    """The client hung up while its check waited: nobody would read the answer."""


Disconnected = Callable[[], Awaitable[bool]]


async def _never_gone() -> bool:
    return False


class SecretGuard:
    def __init__(
        self,
        limits: GuardLimits | None = None,
        *,
        buckets: FailureBuckets,
        matches: Callable[[str, str], bool] = secret_matches,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits = limits or GuardLimits()
        self._matches = matches
        self._buckets = buckets
        self._clock = clock
        self._key = secrets.token_bytes(32)
        # A hash of a random secret nobody knows: unknown ids are checked against it.
        self._dummy = hash_secret(secrets.token_urlsafe(32))
        self._pool = ThreadPoolExecutor(limits.hash_workers, thread_name_prefix="secret-hash")
        self._slots = asyncio.Semaphore(limits.hash_workers)
        self._waiting = 0
        self._verified: BoundedTTLMap[bytes, str] = BoundedTTLMap(
            limits.verified_max, limits.verified_ttl_s, clock
        )
        self._in_flight: dict[str, int] = {}
        self._joined: dict[bytes, asyncio.Future[bool]] = {}
        self._last_shed = -math.inf
        self._hash_s = 0.05  # running mean of one hash, for Retry-After estimates

    async def verify(
        self,
        client_id: str,
        secret: str,
        stored_hash: str | None,
        address: str,
        gone: Disconnected = _never_gone,
    ) -> bool:
        """True when `secret` is the client's; raises CheckRefused or ClientGone instead
        of hashing when the check may not be paid for now."""
        fingerprint = hmac.new(
            self._key, f"{client_id}\0{secret}".encode(), hashlib.sha256
        ).digest()
        if stored_hash and self._verified.get(fingerprint) == stored_hash:
            CHECKS.labels("cached").inc()
            return True
        # Join a check of the same secret in flight. If that one ends without an answer
        # (shed, its client hung up), the first joiner to wake starts the next flight and
        # the others join it: still one hash at a time per secret.
        while (running := self._joined.get(fingerprint)) is not None:
            CHECKS.labels("joined").inc()
            try:
                return await asyncio.shield(running)
            except (CheckRefused, ClientGone):
                continue
        keys = (_client_key(client_id, address), f"address:{address}")
        self._refuse_if_crowded(keys)
        # In flight from here, before the first await: a burst of the same secret joins
        # this check while its buckets are being read.
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._joined[fingerprint] = future
        for key in keys:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            await self._refuse_if_throttled(keys)
            ok = await self._hash(secret, stored_hash or self._dummy, gone)
            ok = ok and bool(stored_hash)
            if ok:
                self._verified.put(fingerprint, stored_hash or "")
            else:
                await self._charge(keys)
            future.set_result(ok)
            return ok
        except BaseException as exc:
            # Joiners get their own answer next time rather than this request's refusal.
            future.set_exception(exc if isinstance(exc, Exception) else ClientGone())
            future.exception()  # retrieved: no "never retrieved" warning when nobody joined
            raise
        finally:
            if self._joined.get(fingerprint) is future:
                del self._joined[fingerprint]
            for key in keys:
                self._in_flight[key] -= 1
                if not self._in_flight[key]:
                    del self._in_flight[key]

    async def record_failure(self, client_id: str, address: str) -> None:
        """A failed check that did not hash (a bad client assertion): paced the same."""
        await self._charge((_client_key(client_id, address), f"address:{address}"))

    async def refuse_if_throttled(self, client_id: str, address: str) -> None:
        keys = (_client_key(client_id, address), f"address:{address}")
        self._refuse_if_crowded(keys)
        await self._refuse_if_throttled(keys)

    def saturated(self) -> bool:
        return self._clock() - self._last_shed < self.limits.saturation_window_s

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _refuse_if_crowded(self, keys: tuple[str, str]) -> None:
        """Hashes in flight are this process's own cost: capped per process."""
        caps = (self.limits.client_in_flight, self.limits.address_in_flight)
        for key, cap in zip(keys, caps, strict=True):
            if self._in_flight.get(key, 0) >= cap:
                CHECKS.labels("throttled").inc()
                raise CheckRefused(429, 1, f"too many attempts at once ({key.split(':')[0]})")

    async def _refuse_if_throttled(self, keys: tuple[str, str]) -> None:
        try:
            delays = await self._buckets.delays(self._paced(keys))
        except (SQLAlchemyError, OSError) as exc:
            # Unthrottled guessing is not the answer to a database outage.
            log.warning("cannot read the failure buckets: %r", exc)
            raise self._shed(5, "failure buckets unavailable") from None
        for key, delay in zip(keys, delays, strict=True):
            if delay > 0:
                CHECKS.labels("throttled").inc()
                raise CheckRefused(429, delay, f"too many failed attempts ({key.split(':')[0]})")

    async def _charge(self, keys: tuple[str, str]) -> None:
        """One failure against each key's bucket; an exhausted bucket stays exhausted."""
        try:
            await self._buckets.charge(self._paced(keys))
        except (SQLAlchemyError, OSError) as exc:
            log.warning("cannot charge the failure buckets: %r", exc)  # refused all the same

    def _paced(self, keys: tuple[str, str]) -> tuple[tuple[str, Pace], tuple[str, Pace]]:
        limits = self.limits
        client = Pace(limits.client_failures_per_min, limits.client_failures_burst)
        address = Pace(limits.address_failures_per_min, limits.address_failures_burst)
        return (keys[0], client), (keys[1], address)

    async def _hash(self, secret: str, stored_hash: str, gone: Disconnected) -> bool:
        async with self._slot(gone):
            started = time.monotonic()
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(self._pool, self._matches, secret, stored_hash)
            self._hash_s = 0.8 * self._hash_s + 0.2 * (time.monotonic() - started)
        CHECKS.labels("hashed").inc()
        return ok

    @asynccontextmanager
    async def _slot(self, gone: Disconnected) -> AsyncIterator[None]:
        workers = self.limits.hash_workers
        if self._waiting >= self.limits.queue_size:
            raise self._shed((self._waiting + workers) * self._hash_s / workers, "queue full")
        self._waiting += 1
        WAITING.inc()
        try:
            async with asyncio.timeout(self.limits.queue_wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise self._shed(self.limits.queue_wait_s, "queue wait deadline passed") from None
        finally:
            self._waiting -= 1
            WAITING.dec()
        try:
            if await gone():
                CHECKS.labels("gone").inc()
                raise ClientGone()
            yield
        finally:
            self._slots.release()

    def _shed(self, retry_after_s: float, reason: str) -> CheckRefused:
        self._last_shed = self._clock()
        CHECKS.labels("shed").inc()
        return CheckRefused(503, retry_after_s, f"token endpoint saturated: {reason}")


def _client_key(client_id: str, address: str) -> str:
    """A client's failures count where they come from: anyone who knows a client id (no
    secret) could otherwise lock the agency itself out by failing on purpose elsewhere."""
    return f"client:{client_id}@{address}"
