"""Serving the sandbox with uvicorn on the running event loop, for `python -m sandbox` and tests.

The HTTP socket is bound here rather than by uvicorn so that port 0 works (the real port
is known before serving starts) and a busy port is an ordinary OSError, not sys.exit.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from sandbox.app import create_app
from sandbox.mail import MailServer
from sandbox.settings import SandboxSettings

log = logging.getLogger("sandbox")


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class AppServer:
    """One ASGI app served by uvicorn as a task; an async context manager."""

    def __init__(self, app: FastAPI, sock: socket.socket) -> None:
        self.app = app
        self._sock = sock
        # log_config=None leaves logging to whoever runs us; access logs would drown the demo.
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def request_stop(self) -> None:
        # Safe before serving too: uvicorn then starts up and shuts straight down.
        self._server.should_exit = True

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _serve(self) -> None:
        try:
            await self._server.serve(sockets=[self._sock])
        except SystemExit as exc:
            # uvicorn exits the process when the app's startup fails (say, the SMTP port is
            # taken); as a plain error it reaches whoever started us, and tests see it too.
            raise RuntimeError(f"the HTTP server failed to start (exit {exc.code})") from None

    async def __aenter__(self) -> AppServer:
        self._task = asyncio.create_task(self._serve())
        while not self._server.started:
            if self._task.done():
                self._sock.close()
                await self._task
                raise RuntimeError("the HTTP server stopped during startup (see the log)")
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.request_stop()
        try:
            if self._task is not None:
                await self._task
        finally:
            self._sock.close()


class Sandbox(AppServer):
    """The whole sandbox: HTTP API (and the e-ID provider at /oidc) on SANDBOX_HTTP_PORT,
    SMTP on SANDBOX_SMTP_PORT, the population registry (gRPC) on SANDBOX_REGISTRY_GRPC_PORT."""

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.settings = settings or SandboxSettings()
        sock = bind_socket(self.settings.host, self.settings.http_port)
        host, port = sock.getsockname()[:2]
        base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        super().__init__(create_app(self.settings, base_url), sock)

    @property
    def smtp_port(self) -> int:
        mail_server: MailServer = self.app.state.mail_server
        return mail_server.port

    async def __aenter__(self) -> Sandbox:
        await super().__aenter__()
        log.info(
            "sandbox listening: HTTP %s (e-ID issuer %s/oidc), SMTP %s:%d, registry gRPC %s:%d",
            self.url,
            self.url,
            self.settings.host,
            self.smtp_port,
            self.settings.host,
            self.app.state.registry_port,
        )
        return self
