"""What every service process owns: its database, the Kafka producer, the outbox relay and
supervised background workers, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import MetaData
from starlette.requests import Request

from core.deps import part_of
from core.grpc import GrpcServer
from core.kafka import EventProducer
from core.maintenance import Maintenance, table_name
from core.migrations import upgrade
from core.outbox import Outbox, OutboxRelay
from core.queue_metrics import QueueCount, QueueMetrics
from core.retry import until_available
from core.settings import ServiceSettings
from core.storage import create_engine, ping, session_factory
from core.telemetry import configure_tracing, shutdown_tracing
from core.workqueue import Hold

log = logging.getLogger(__name__)
Worker = Callable[[], Awaitable[None]]
# Something to open once the event loop runs (gRPC servers and channels), or to close.
Hook = Callable[[], Awaitable[None]]


class Runtime:
    def __init__(
        self,
        settings: ServiceSettings,
        *,
        name: str,
        metadata: MetaData,
        migrations: Path,
        outbox: Outbox | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.metadata = metadata
        self.migrations = migrations
        self.outbox = outbox
        self.engine = create_engine(settings.database_url, settings.database_pool_size)
        self.sessions = session_factory(self.engine)
        self.producer = EventProducer(settings)
        self._workers: list[tuple[str, Worker]] = []
        self._on_start: list[Hook] = []
        self._on_stop: list[Hook] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._readiness_checks: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self.schema_ready = asyncio.Event()
        # The switch every service has (core/maintenance.py): its table is in the service's
        # metadata (maintenance_table in its models).
        self.maintenance = Maintenance(
            self.sessions,
            metadata.tables[table_name(name)],
            service=name,
            cache_s=settings.maintenance_cache_s,
            retry_after_s=settings.maintenance_retry_after_s,
        )
        # Conditions under which every work queue of the process stops claiming (maintenance
        # mode first); the queues ask `held` before each claim.
        self.holds: list[Hold] = [self.maintenance.held]
        self.queue_metrics = QueueMetrics(self.sessions, settings.queue_metrics_interval_s)
        # What the routes need besides the schema (routing: its catalogue loaded).
        self._gates: list[asyncio.Event] = [self.schema_ready]
        self.add_worker("queue-metrics", self.queue_metrics.run)
        if outbox is not None:
            relay = OutboxRelay(
                self.engine,
                self.sessions,
                outbox,
                self.producer,
                batch_size=settings.outbox_batch_size,
                poll_interval_s=settings.outbox_poll_interval_s,
                hold=self.held,
            )
            self.add_worker("outbox-relay", relay.run)
            c = outbox.table.c
            self.count_queue(
                QueueCount(
                    "outbox",
                    outbox.table,
                    c.dead_lettered_at.is_(None),
                    c.dead_lettered_at.is_not(None),
                )
            )

    async def held(self) -> bool:
        """True while any hold answers True: the work queues claim nothing meanwhile."""
        for hold in self.holds:
            if await hold():
                return True
        return False

    def count_queue(self, count: QueueCount) -> None:
        """Report a work queue's waiting and dead-lettered rows as gauges (core/queue_metrics)."""
        self.queue_metrics.add(count)

    def on_start(self, hook: Hook) -> None:
        """Run after the workers are started, in the order registered."""
        self._on_start.append(hook)

    def on_stop(self, hook: Hook) -> None:
        """Run first when stopping, last registered first (closing in reverse of opening)."""
        self._on_stop.append(hook)

    def serve_grpc(self, server: GrpcServer, host: str, port: int) -> None:
        self.on_start(lambda: _started(server.start(host, port)))
        self.on_stop(server.stop)

    def add_readiness_check(self, name: str, probe: Callable[[], Awaitable[None]]) -> None:
        """A service's own condition for readiness besides the database and Kafka: the
        probe raises (its message is shown) while the service cannot serve."""
        self._readiness_checks.append((name, probe))

    def add_gate(self, name: str, opened: asyncio.Event) -> None:
        """Something the routes need first (routing's catalogue, loaded from the database):
        until it is set they answer 503 with Retry-After, and readiness names it."""
        self._gates.append(opened)

        async def probe() -> None:
            if not opened.is_set():
                raise ConnectionError(f"{name} not loaded yet")

        self.add_readiness_check(name, probe)

    @property
    def serving(self) -> bool:
        return all(gate.is_set() for gate in self._gates)

    async def until_serving(self) -> None:
        for gate in self._gates:
            await gate.wait()

    def add_worker(self, name: str, worker: Worker) -> None:
        """Register a long-running coroutine; it is restarted if it ever fails."""
        self._workers.append((name, worker))

    async def start(self) -> None:
        configure_logging(self.settings.log_level)
        configure_tracing(self.name)
        # Nothing here waits for the database or Kafka: the process is live at once and
        # becomes ready when both answer; workers retry until then.
        self._tasks.append(asyncio.create_task(self._prepare_database(), name="database"))
        self._tasks.append(asyncio.create_task(self._connect_producer(), name="kafka-producer"))
        for name, worker in self._workers:
            self._tasks.append(asyncio.create_task(self._supervise(name, worker), name=name))
        for hook in self._on_start:
            await hook()
        log.info("%s started", self.name)

    async def stop(self) -> None:
        for hook in reversed(self._on_stop):
            await hook()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.producer.stop()
        await self.engine.dispose()
        shutdown_tracing()

    async def readiness(self) -> dict[str, str]:
        """Each dependency's state; the service is ready only when all say ok."""
        return {
            "database": await _check(self._database_check()),
            "kafka": await _check(self.producer.check()),
        } | {name: await _check(probe()) for name, probe in self._readiness_checks}

    async def _database_check(self) -> None:
        if not self.schema_ready.is_set():
            raise ConnectionError("schema not created yet")
        await ping(self.engine)

    async def _prepare_database(self) -> None:
        await until_available(
            "database schema",
            lambda: upgrade(self.engine, self.name, self.migrations, self.metadata),
            max_delay_s=5,
        )
        self.schema_ready.set()

    async def _connect_producer(self) -> None:
        await until_available("kafka producer", self.producer.start, max_delay_s=5)

    async def _supervise(self, name: str, worker: Worker) -> None:
        await self.schema_ready.wait()
        delay = 0.5
        while True:
            try:
                await worker()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker %s failed; restarting in %.1fs", name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)


async def _started(starting: Awaitable[object]) -> None:
    await starting


async def _check(probe: Awaitable[None]) -> str:
    try:
        await asyncio.wait_for(probe, timeout=3)
    except Exception as exc:
        return f"unavailable: {exc!r}"
    return "ok"


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # aiokafka logs every reconnect attempt at ERROR; our retry loops already say it once.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    # One INFO line per outgoing request is noise at a thousand dossiers a second.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def runtime_of(request: Request) -> Runtime:
    """The service's runtime (database, producer, outbox), for core's routes."""
    return part_of(request.app, "runtime", Runtime)
