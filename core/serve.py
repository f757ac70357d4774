"""Run an HTTP service under uvicorn with the settings' host and port."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from core.settings import ServiceSettings


def serve_http(app: FastAPI, settings: ServiceSettings) -> None:
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        # Access logs would cost more than the request at 1,000 dossiers/s; traces and
        # Prometheus metrics carry the same facts.
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=10,
    )
