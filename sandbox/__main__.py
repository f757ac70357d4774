"""`python -m sandbox`: serve the stand-ins of national systems until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from types import FrameType

from sandbox.runner import Sandbox
from sandbox.settings import SandboxSettings
from sandbox.telemetry import configure_tracing

log = logging.getLogger("sandbox")


async def _serve(sandbox: Sandbox) -> None:
    async with sandbox:
        await sandbox.wait()


def main() -> int:
    settings = SandboxSettings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiosmtpd narrates every SMTP command at INFO; our own log line per message is enough.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    try:
        sandbox = Sandbox(settings)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.http_port, exc)
        return 1

    def stop(signum: int, _: FrameType | None) -> None:
        # uvicorn handles signals while serving and re-raises them after its graceful
        # shutdown; landing here then keeps the exit status 0 instead of dying by signal.
        sandbox.request_stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    tracing = configure_tracing()
    try:
        asyncio.run(_serve(sandbox))
    except (OSError, RuntimeError) as exc:
        log.error("sandbox failed: %s", exc)
        return 1
    finally:
        if tracing is not None:
            tracing.shutdown()  # the last batch of spans
    log.info("sandbox stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
