"""Identity: e-ID login and population-registry reads (issue 3). Today it serves the standard
gRPC health and reflection services, so the stack, probes and clients are wired already."""

from __future__ import annotations

import asyncio
import logging
import signal

from core.grpc import GrpcServer
from core.runtime import configure_logging
from core.telemetry import configure_tracing, shutdown_tracing
from services.identity.settings import IdentitySettings

log = logging.getLogger(__name__)


async def serve(settings: IdentitySettings) -> None:
    configure_logging(settings.log_level)
    configure_tracing("identity")
    server = GrpcServer([], [])
    port = await server.start(settings.http_host, settings.grpc_port)
    log.info("identity gRPC listening on %s:%d", settings.http_host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    shutdown_tracing()


def main() -> None:
    asyncio.run(serve(IdentitySettings()))
