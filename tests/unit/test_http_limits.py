"""The request limits every HTTP service runs with (core.limits, core.serve), on a real uvicorn
server in this process: raw sockets for what no well-behaved client would send."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from core.limits import (
    HttpLimits,
    JsonShape,
    JsonShapeError,
    RequestLimits,
    check_json_shape,
    json_depth_exceeds,
)
from core.problems import install_problem_handlers
from core.serve import guarded_protocol

LIMITS = HttpLimits(
    max_body_bytes=4096,
    max_json_depth=8,
    max_header_bytes=4096,
    max_headers=20,
    header_timeout_s=0.5,
    body_timeout_s=0.5,
)


def limited_app(limits: HttpLimits) -> tuple[FastAPI, list[str]]:
    """An app built like the services' (problem handlers, the limits middleware); `seen`
    records every request a route was reached with."""
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(RequestLimits, limits=limits)
    seen: list[str] = []

    @app.post("/json")
    async def take_json(body: dict[str, Any]) -> dict[str, int]:
        seen.append("json")
        return {"keys": len(body)}

    @app.post("/form")
    async def take_form(request: Request) -> dict[str, int]:
        seen.append("form")
        return {"bytes": len(await request.body())}

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        seen.append("hello")
        return {"hello": "world"}

    return app, seen


class Running:
    def __init__(self, app: FastAPI, seen: list[str], port: int) -> None:
        self.app, self.seen, self.port = app, seen, port
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    app, seen = limited_app(LIMITS)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", http=guarded_protocol(LIMITS)
    )
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    while not uv.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.01)
    try:
        yield Running(app, seen, sock.getsockname()[1])
    finally:
        uv.should_exit = True
        await task
        sock.close()


async def exchange(
    port: int, *parts: bytes, pause: float = 0.0, wait: float = 3.0
) -> tuple[bytes, bool]:
    """Send the parts (pausing between them) while reading, until the server closes or `wait`
    passes: (what came back, whether the server closed the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        try:
            for part in parts:
                writer.write(part)
                await writer.drain()
                if pause:
                    await asyncio.sleep(pause)
        except ConnectionError:
            pass  # the server has had enough

    sending = asyncio.create_task(send())
    received, closed = b"", False
    deadline = time.monotonic() + wait
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), left)
            except TimeoutError:
                break
            except ConnectionError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
    finally:
        sending.cancel()
        writer.close()
    return received, closed


def status_and_problem(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/problem+json" in head.lower(), head
    return status, json.loads(body)


async def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(
    server: Running,
) -> None:
    # Only the head goes out: the 413 comes without waiting for the body, no route runs.
    head = b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    answer, _ = await exchange(server.port, head + b"Content-Length: 5000\r\n\r\n", wait=1)
    status, problem = status_and_problem(answer)
    assert status == 413
    assert problem["type"] == "/problems/content-too-large"
    assert problem["max_bytes"] == LIMITS.max_body_bytes
    assert problem["instance"] == "/json"
    assert server.seen == []


async def test_the_client_still_sending_gets_the_413_and_may_go_on(server: Running) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        too_big = await client.post("/form", content=b"x" * 1_000_000)
        assert too_big.status_code == 413
        assert too_big.headers["content-type"] == "application/problem+json"
        # The rest of the body was read and dropped: the connection still serves.
        assert (await client.get("/hello")).status_code == 200
    assert server.seen == ["hello"]


@pytest.mark.parametrize("path", ["/json", "/form"])
async def test_a_chunked_body_is_refused_once_it_passes_the_limit(
    server: Running, path: str
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"[" * 1000

    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post(
            path, content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json()["type"] == "/problems/content-too-large"
    assert server.seen == []


async def test_bodies_within_the_limit_reach_the_route_whole(server: Running) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"a": "'
        yield b"b" * 3000
        yield b'"}'

    async with httpx.AsyncClient(base_url=server.url) as client:
        streamed = await client.post(
            "/json", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.json() == {"keys": 1}
        assert (await client.post("/json", json={"a": [[[1]]]})).json() == {"keys": 1}
        exact = await client.post("/form", content=b"x" * LIMITS.max_body_bytes)
        assert exact.json() == {"bytes": LIMITS.max_body_bytes}


async def test_json_nested_past_the_limit_is_a_422_before_parsing(server: Running) -> None:
    deep = "[" * 9 + "]" * 9
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post("/json", content='{"a": ' + deep + "}")
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "/problems/json-too-deep"
        # Without a Content-Type too (FastAPI parses it as JSON unless strict_content_type).
        bare = await client.post("/json", content=deep, headers={"content-type": ""})
        assert bare.status_code == 422
        # Brackets inside strings are text, not nesting.
        fine = await client.post("/json", json={"a": "[" * 100, "b": "{" * 100})
        assert fine.status_code == 200
    assert server.seen == ["json"]


async def test_an_unterminated_header_is_cut_off_at_the_limit(server: Running) -> None:
    started = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Flood: "
    # A client that goes on sending is cut off (reset: its answer may be lost on the way).
    _, closed = await exchange(server.port, started, *[b"a" * 1024] * 1024, wait=3)
    assert closed
    # One that stops past the limit reads why.
    answer, closed = await exchange(server.port, started + b"a" * 2 * LIMITS.max_header_bytes)
    assert closed
    status, problem = status_and_problem(answer)
    assert status == 431
    assert str(LIMITS.max_header_bytes) in problem["detail"]
    assert server.seen == []


async def test_headers_within_the_limit_are_served(server: Running) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        headers = {f"x-field-{i}": "v" * 100 for i in range(10)}
        assert (await client.get("/hello", headers=headers)).status_code == 200


async def test_too_many_header_fields_are_refused(server: Running) -> None:
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(LIMITS.max_headers + 1))
    answer, closed = await exchange(
        server.port, b"GET /hello HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
    )
    assert closed
    status, problem = status_and_problem(answer)
    assert status == 431
    assert problem["title"] == "Too many request header fields"
    assert server.seen == []


async def test_a_head_sent_slowly_times_out(server: Running) -> None:
    # Slow-loris: a header field every 0.2 s, never the blank line.
    started = time.monotonic()
    answer, closed = await exchange(
        server.port,
        b"GET /hello HTTP/1.1\r\n",
        *[b"X-Slow: v\r\n"] * 10,
        pause=0.2,
    )
    assert closed
    assert time.monotonic() - started < LIMITS.header_timeout_s + 1.5
    status, problem = status_and_problem(answer)
    assert status == 408
    assert problem["title"] == "Request header timeout"
    assert server.seen == []


async def test_line_breaks_between_requests_do_not_hold_a_connection(server: Running) -> None:
    # After a request, a blank line every 0.2 s: no request ever starts, the clock runs.
    request = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
    started = time.monotonic()
    answer, closed = await exchange(server.port, request, *[b"\r\n"] * 30, pause=0.2, wait=5)
    assert closed
    assert time.monotonic() - started < LIMITS.header_timeout_s + 2
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert server.seen == ["hello"]


async def test_pipelined_requests_are_served_in_order(server: Running) -> None:
    request = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
    answer, _ = await exchange(server.port, request * 3, wait=1)
    assert answer.count(b"HTTP/1.1 200 ") == 3
    assert server.seen == ["hello"] * 3


async def test_a_connection_that_sends_nothing_is_closed(server: Running) -> None:
    started = time.monotonic()
    answer, closed = await exchange(server.port, wait=3)
    assert closed
    assert answer == b""
    assert time.monotonic() - started < LIMITS.header_timeout_s + 1


async def test_a_body_sent_slowly_times_out(server: Running) -> None:
    head = b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    answer, closed = await exchange(server.port, head, *[b"x"] * 20, pause=0.1)
    assert closed
    status, problem = status_and_problem(answer)
    assert status == 408
    assert problem["title"] == "Request body timeout"
    assert server.seen == []


async def test_keep_alive_requests_each_get_their_own_time(server: Running) -> None:
    # Four requests on one connection over more than the header timeout in all.
    async with httpx.AsyncClient(base_url=server.url) as client:
        for _ in range(4):
            assert (await client.get("/hello")).status_code == 200
            await asyncio.sleep(0.2)
    assert server.seen == ["hello"] * 4


def test_json_depth_counts_objects_and_arrays_but_not_strings() -> None:
    assert not json_depth_exceeds(b'{"a": [1, {"b": 2}]}', 3)
    assert json_depth_exceeds(b'{"a": [1, {"b": 2}]}', 2)
    assert not json_depth_exceeds(b'{"a": "[[[[[[", "b": "{{{{{{"}', 2)
    # Escaped quotes do not end a string.
    assert not json_depth_exceeds(b'{"a": "\\"[[[[[[\\""}', 2)
    assert json_depth_exceeds(b"[" * 100_000, 32)
    # Wide is not deep.
    assert not json_depth_exceeds(b"[" + b"[]," * 50_000 + b"[]]", 2)


def test_json_depth_scan_stays_linear_on_hostile_text() -> None:
    # Many quotes and backslashes, no closing quote: a naive string pattern goes quadratic.
    hostile = b'"' + b'\\"[' * 80_000
    started = time.perf_counter()
    json_depth_exceeds(hostile, 8)
    json_depth_exceeds(b'"[' * 120_000, 8)
    assert time.perf_counter() - started < 0.5


SHAPE = JsonShape(max_depth=3, max_entries=10, max_string=20, max_bytes=200)


@pytest.mark.parametrize(
    ("value", "path", "kind"),
    [
        ({"a": {"b": {"c": {"d": 1}}}}, ("a", "b", "c"), "json_too_deep"),
        ({"a": [[[1]]]}, ("a", 0, 0), "json_too_deep"),
        ({"k": list(range(11))}, ("k",), "json_too_many_entries"),
        ({"a": "x" * 21}, ("a",), "string_too_long"),
        ({"x" * 21: 1}, ("x" * 21,), "string_too_long"),
        ({"a": ["ok", "\ud800"]}, ("a", 1), "string_not_unicode"),
        ({"\udfff": 1}, ("\\udfff",), "string_not_unicode"),
        ({"a": float("nan")}, ("a",), "number_not_finite"),
        ({"a": [float("inf")]}, ("a", 0), "number_not_finite"),
        ({"a": 2**53 + 1}, ("a",), "number_too_large"),
        ({f"k{i}": "é" * 20 for i in range(6)}, (), "json_too_large"),
    ],
)
def test_json_shape_names_what_breaks_it(
    value: Any, path: tuple[str | int, ...], kind: str
) -> None:
    with pytest.raises(JsonShapeError) as info:
        check_json_shape(value, SHAPE)
    assert (info.value.path, info.value.kind) == (path, kind)


def test_json_shape_takes_what_fits_and_any_depth_without_recursion() -> None:
    check_json_shape({"a": {"b": [1, 2.5, True, None, "x" * 20]}, "n": -(2**53)}, SHAPE)
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(JsonShapeError, match="nested deeper than 3"):
        check_json_shape({"deep": deep}, SHAPE)


# What Java's HttpClient sends on http:// by default: an offer to upgrade to HTTP/2.
H2C_OFFER = (
    b"POST /form HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: AAEAAEAAAAIAAAABAAMAAABkAAQBAAAAAAUAAEAA\r\n"
    b"Content-Length: 7\r\n\r\n"
)


@pytest.mark.parametrize(
    "parts",
    [
        [H2C_OFFER + b"payload"],
        [H2C_OFFER, b"payload"],
        # The Upgrade field split between two reads.
        [H2C_OFFER[:70], H2C_OFFER[70:], b"payload"],
        [H2C_OFFER[:90], H2C_OFFER[90:] + b"payload"],
    ],
)
async def test_an_h2c_upgrade_offer_is_ignored_and_the_body_served(
    server: Running, parts: list[bytes]
) -> None:
    answer, _ = await exchange(server.port, *parts, pause=0.05, wait=1.0)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer
    assert json.loads(body) == {"bytes": 7}
    # Served as HTTP/1.1: no 101 Switching Protocols.
    assert b"101" not in head.split(b"\r\n")[0]


def post_json(body: bytes, target: bytes = b"/json") -> bytes:
    head = b"POST %s HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % (target, len(body)) + body


@pytest.mark.parametrize(
    "request_bytes",
    [
        post_json(b"{}", b"/json?q=a%00b"),
        b"GET /hello%00 HTTP/1.1\r\n\r\n",
        post_json(rb'{"a": "x\u0000"}'),
    ],
)
async def test_the_nul_character_is_refused_before_any_route(
    server: Running, request_bytes: bytes
) -> None:
    answer, _ = await exchange(server.port, request_bytes, wait=1.0)
    status, problem = status_and_problem(answer)
    assert status == 422
    assert problem["type"] == "/problems/nul-character"
    assert server.seen == []


async def test_an_escaped_backslash_before_u0000_is_no_nul(server: Running) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        taken = await client.post(
            "/json",
            content=rb'{"a": "x\\u0000"}',
            headers={"content-type": "application/json"},
        )
    assert taken.json() == {"keys": 1}
