"""Run an HTTP service under uvicorn with the settings' host, port and request limits.

uvicorn's httptools protocol (the fast one, with uvloop) bounds nothing before the body:
httptools keeps appending to an unterminated header (six sockets sending 32 MiB each grew a
service by 230 MiB), counts no header fields, and no timer runs while a request's head or
body trickles in (slow-loris). uvicorn's `h11_max_incomplete_event_size` applies to its h11
protocol only, which costs more per request. `GuardedHttpToolsProtocol` adds those bounds to
the httptools protocol; the body's size and JSON depth are the ASGI middleware's
(core.limits.RequestLimits).

Java's built-in HttpClient (HTTP/2 by default) offers an h2c upgrade on every http:// request
(`Connection: Upgrade, HTTP2-Settings`, `Upgrade: h2c`). llhttp then takes the bytes after
the head for the new protocol, so the request's body was lost (uvicorn answers it without a
body, or 400 "Invalid HTTP request received"). The offer is optional (RFC 9113 §3.1 left it
to the server to ignore): the protocol drops the `Upgrade: h2c` field before the parser
sees it, and the request is served as HTTP/1.1. (Only a head that starts a read, or runs on
over several, is rewritten: no client pipelines requests that offer an upgrade.)
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, cast

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.limits import HttpLimits
from core.problems import PROBLEM_JSON
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
        http=guarded_protocol(settings.http_limits),
        timeout_graceful_shutdown=10,
        backlog=settings.http_backlog,
    )


def guarded_protocol(limits: HttpLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http=`, bound to `limits`."""
    bound = type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})
    return cast(type[GuardedHttpToolsProtocol], bound)


# The h2c offer's Upgrade field, a whole line (RFC 9110 §7.8: its value lists protocols).
_H2C_OFFER = re.compile(rb"(?im)^upgrade:[ \t]*h2c[ \t]*\r\n")
_HEAD_END = b"\r\n\r\n"


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the refusal to send is on the protocol."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on the request head and on slow clients.

    - The head (request line and header fields) may take `max_header_bytes`: bytes fed to the
      parser while a head is incomplete are counted, so an unterminated header costs at most
      the limit plus one read (uvloop reads 256 KiB at a time) before 431 and close.
    - At most `max_headers` fields (431).
    - The head must be complete within `header_timeout_s` of the connection or of the read
      that left it incomplete, the body within `body_timeout_s` of the read that left it
      incomplete (408 and close; a connection that never sent a byte is just closed). uvicorn's
      keep-alive timeout still closes idle connections between requests.

    A timer runs only while a request is incomplete at the end of a read, so a request that
    arrives in one read (nearly all) costs a few attribute checks: no timer, and no work per
    byte or per header field in Python.
    """

    limits = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_message = False  # from a request's first byte to its end
        self._head_open = True  # until the end of the request's head
        self._head_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str, str] | None = None
        # A head's incomplete last line, held until it is whole (so a field split between
        # two reads is still recognised), and the last bytes of the head fed so far.
        self._partial_line = b""
        self._head_tail = b""

    # Protocol interface
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(cast(asyncio.Transport, transport))
        self._arm(self.limits.header_timeout_s, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_open:
            self._head_bytes += len(data)
            data = self._without_h2c_offer(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._head_open:
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(
                    431,
                    "Request header fields too large",
                    "The request line and headers may take at most "
                    f"{self.limits.max_header_bytes} bytes",
                )
            elif (self._head_bytes or self._in_message) and self._deadline is None:
                # Part of a head, or bare line breaks between requests (which would otherwise
                # keep resetting uvicorn's keep-alive timer).
                self._arm(self.limits.header_timeout_s, self._head_too_slow)
        elif self._deadline is None and not (
            self.parser.should_upgrade() and self._should_upgrade()
        ):
            self._arm(self.limits.body_timeout_s, self._body_too_slow)

    def _without_h2c_offer(self, data: bytes) -> bytes:
        """The bytes to feed the parser while a head is open, less an h2c upgrade offer."""
        data = self._partial_line + data
        self._partial_line = b""
        end = (self._head_tail + data).find(_HEAD_END)
        if end == -1:
            # The head goes on: hold a short last line back until it is whole (a longer
            # one is no h2c offer, and may be fed as it is).
            cut = data.rfind(b"\n") + 1
            if len(data) - cut >= 32:
                cut = len(data)
            head, rest, self._partial_line = data[:cut], b"", data[cut:]
        else:
            cut = end - len(self._head_tail) + len(_HEAD_END)
            head, rest = data[:cut], data[cut:]
        self._head_tail = (self._head_tail + head)[-3:] if end == -1 else b""
        return _H2C_OFFER.sub(b"", head) + rest

    # Parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message = True

    def on_headers_complete(self) -> None:
        self._disarm()
        self._head_open = False
        self._head_bytes = 0
        if len(self.headers) > self.limits.max_headers:
            self._refusal = (
                431,
                "Too many request header fields",
                f"At most {self.limits.max_headers} header fields",
            )
            raise _Refused  # httptools stops; uvicorn calls send_400_response
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_message = False
        self._head_open = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to anything the parser refused, ours included."""
        status, title, detail = self._refusal or (400, "Invalid HTTP request", msg)
        self._refusal = None
        self._refuse(status, title, detail)

    # Timers
    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._head_bytes == 0:
            self.transport.close()  # nothing asked, nothing to answer
            return
        self._refuse(
            408,
            "Request header timeout",
            f"The request line and headers must arrive within {self.limits.header_timeout_s} s",
        )

    def _body_too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_started:
            # Answered already (say, 413 before reading): stop draining the rest.
            self.transport.close()
            return
        self._refuse(
            408,
            "Request body timeout",
            f"The request body must arrive within {self.limits.body_timeout_s} s",
        )

    def _refuse(self, status: int, title: str, detail: str) -> None:
        """Answer with a problem document and close: the connection's framing is lost."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self.transport.close()  # half a response is out: nothing sound to add
                return
            # The application may still wait for the body: it gets a disconnect, and whatever
            # it would answer is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        body = json.dumps(
            {"type": "about:blank", "title": title, "status": status, "detail": detail}
        ).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"content-type: {PROBLEM_JSON}\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()
