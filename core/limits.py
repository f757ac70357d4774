"""What a client may send: bounds checked at the HTTP edge, before any handler parses a byte.

Two layers, both installed for every HTTP service:

- `RequestLimits`, an ASGI middleware (core.http.create_app installs it), refuses a body over
  `max_body_bytes` with 413 (at once when Content-Length says so; a chunked or streamed body
  as soon as the bytes received pass the limit, never buffering more), a JSON body nested
  deeper than `max_json_depth` with 422, and the NUL character in the path, the query or a
  JSON body's strings with 422 (PostgreSQL's text cannot hold it: the database would fail
  it as a 500). All answer application/problem+json.
- The HTTP protocol (core.serve) bounds what comes before the body: the request line and
  headers in bytes and in number (431), and slow clients (408, see `HttpLimits`).

`check_json_shape` bounds free-form JSON a service keeps and forwards (a dossier's form_data)
in depth, entries, string length and serialized size, naming the place that breaks a limit.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.problems import send_problem

KIB = 1024


@dataclass(frozen=True)
class HttpLimits:
    """Bounds on one HTTP request; every service reads them from its settings (HTTP_MAX_*)."""

    # 256 KiB: a dossier event (the body re-encoded as protobuf, plus an envelope of a few
    # hundred bytes) then always fits in one Kafka record, whose broker default is 1 MiB
    # (max.message.bytes), with room to spare. Raise it only with the broker's limit.
    max_body_bytes: int = 256 * KIB
    # Objects and arrays inside one another; no API of the gateway needs more than a handful.
    max_json_depth: int = 32
    # Request line and header fields together, and how many fields: a bearer token, a
    # traceparent and the usual headers take a few KiB.
    max_header_bytes: int = 32 * KIB
    max_headers: int = 100
    # Slow clients (slow-loris): the whole head must arrive within header_timeout_s of the
    # connection or of the request's first byte, the whole body within body_timeout_s of the
    # head's end. Idle keep-alive connections are closed by uvicorn after 5 s.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0


class RequestLimits:
    """ASGI middleware: body size and JSON depth, refused before the application reads them."""

    def __init__(self, app: ASGIApp, limits: HttpLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: int | None = None
        chunked = False
        # Checked without a Content-Type too: FastAPI parses such a body as JSON unless
        # strict_content_type.
        is_json = True
        content_types = 0
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value) if value.isdigit() else None
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"content-type":
                content_types += 1
                is_json = b"json" in value.lower()
        if _NUL in scope.get("raw_path", b"") or _NUL in scope.get("query_string", b""):
            await _nul_refused(scope, send)
            return
        if content_types > 1:
            # Which one counts differs between parsers: the depth check must not read one
            # while the application reads another.
            await send_problem(
                scope, send, 400, "ambiguous-content-type", "Only one Content-Type, please"
            )
            return
        if length is not None and length > self.limits.max_body_bytes:
            await _too_large(scope, send, self.limits.max_body_bytes)
            return
        if length == 0 or (
            # HTTP/1.x frames every body with Content-Length or Transfer-Encoding.
            length is None and not chunked and scope.get("http_version", "1.1") in ("1.0", "1.1")
        ):
            await self.app(scope, receive, send)
            return
        # Every body is read here, whatever its type, before the application (and the
        # admission place it holds) sees the request: a client trickling a body in holds a
        # connection, never one of the places that serve requests.
        try:
            body = await _read_body(receive, self.limits.max_body_bytes)
        except _BodyTooLarge:
            await _too_large(scope, send, self.limits.max_body_bytes)
            return
        if body is None:
            return  # the client went away: nobody to answer
        if is_json and _JSON_NUL.search(body):
            await _nul_refused(scope, send)
            return
        if is_json and json_depth_exceeds(body, self.limits.max_json_depth):
            await send_problem(
                scope,
                send,
                422,
                "json-too-deep",
                "The JSON body is nested too deeply",
                f"At most {self.limits.max_json_depth} levels of objects and arrays",
                max_depth=self.limits.max_json_depth,
            )
            return
        await self.app(scope, _replay(body, receive), send)


class _BodyTooLarge(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None if the client disconnected; raises _BodyTooLarge as soon as
    the bytes received pass `limit`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body once as a single message, then whatever the server says (a disconnect)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# Percent-encoded in a URL; in JSON, \u0000 not preceded by an escaped backslash.
_NUL = b"%00"
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


async def _nul_refused(scope: Scope, send: Send) -> None:
    await send_problem(
        scope,
        send,
        422,
        "nul-character",
        "Text may not contain the NUL character",
        "U+0000 in the path, the query or a JSON string",
    )


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    # The connection stays open: the server reads and drops the rest of the body (bounded by
    # the body timeout), so that the client, still sending, gets this answer and not a reset.
    await send_problem(
        scope,
        send,
        413,
        "content-too-large",
        "The request body is too large",
        f"At most {limit} bytes",
        max_bytes=limit,
    )


# A JSON string, or an unterminated one up to the end: every byte is matched at most once, so
# hostile input (many quotes, no closing one) cannot make the scan quadratic.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_exceeds(body: bytes, max_depth: int) -> bool:
    """Whether objects and arrays nest more than `max_depth` deep in a JSON text.

    Brackets inside strings do not count. Invalid JSON is left to the parser: this only
    guarantees that nothing past the limit reaches it. Linear in the body, in C but for one
    pass of `accumulate`, and free when the body holds no more brackets than the limit.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    if b'"' in body:
        body = _STRING.sub(b"", body)
    steps = body.translate(_STEPS, _NOT_BRACKET)
    return max(accumulate(memoryview(steps).cast("b")), default=0) > max_depth


@dataclass(frozen=True)
class JsonShape:
    """Bounds on free-form JSON that a service keeps and forwards."""

    max_depth: int
    # Keys of every object plus items of every array, at every depth.
    max_entries: int
    # Characters of any key or string value.
    max_string: int
    # The whole value serialized as UTF-8 JSON.
    max_bytes: int


class JsonShapeError(ValueError):
    """`path` locates the offending value from the checked one (keys and array indexes)."""

    def __init__(self, path: tuple[str | int, ...], message: str, kind: str) -> None:
        super().__init__(message)
        # Keys as they can be shown: a lone surrogate becomes its escape, "\\ud800".
        self.path = tuple(
            k.encode("utf-8", "backslashreplace").decode() if isinstance(k, str) else k
            for k in path
        )
        self.kind = kind


# Integers past 2**53 do not survive a JSON number's usual reading as a double (protobuf's
# Struct, JavaScript): refused rather than silently altered.
_MAX_EXACT_INT = 2**53


def check_json_shape(value: Any, shape: JsonShape) -> None:
    """Raise JsonShapeError at the first place where `value` breaks `shape`.

    Iterative, so that no depth of nesting can exhaust the stack. The size is only measured
    (by serializing) when a cheap upper bound of it, taken on the way, passes the limit.
    """
    entries = 0
    # Upper bound of the UTF-8 JSON size: 6 bytes a character (a control character's
    # \u00XX escape), 32 a number, 8 an entry's quotes, separators and brackets.
    bound = 8
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(value, 1, ())]
    while stack:
        item, depth, path = stack.pop()
        if not isinstance(item, dict | list):
            _check_scalar(item, path, shape)
            bound += 6 * len(item) if isinstance(item, str) else 32
            continue
        if depth > shape.max_depth:
            raise JsonShapeError(
                path, f"nested deeper than {shape.max_depth} levels", "json_too_deep"
            )
        entries += len(item)
        if entries > shape.max_entries:
            too_many = f"more than {shape.max_entries} keys and items in all"
            raise JsonShapeError(path, too_many, "json_too_many_entries")
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in pairs:
            bound += 8
            if isinstance(key, str):
                _check_string(key, (*path, key), shape)
                bound += 6 * len(key)
            if isinstance(child, str):
                _check_string(child, (*path, key), shape)
                bound += 6 * len(child)
            else:
                stack.append((child, depth + 1, (*path, key)))
    if bound > shape.max_bytes:
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
        if size > shape.max_bytes:
            raise JsonShapeError(
                (), f"{size} bytes as JSON, more than {shape.max_bytes}", "json_too_large"
            )


def _check_string(text: str, path: tuple[str | int, ...], shape: JsonShape) -> None:
    if len(text) > shape.max_string:
        too_long = f"a string longer than {shape.max_string} characters"
        raise JsonShapeError(path, too_long, "string_too_long")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            # A lone surrogate ("\ud800" is valid JSON): no UTF-8 store or protobuf takes it.
            raise JsonShapeError(path, "not valid Unicode text", "string_not_unicode") from None


def _check_scalar(item: Any, path: tuple[str | int, ...], shape: JsonShape) -> None:
    if isinstance(item, str):
        _check_string(item, path, shape)
    elif isinstance(item, float):
        if not math.isfinite(item):
            raise JsonShapeError(path, "not a finite number", "number_not_finite")
    elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > _MAX_EXACT_INT:
        too_large = f"an integer beyond ±2^53 ({_MAX_EXACT_INT})"
        raise JsonShapeError(path, too_large, "number_too_large")
