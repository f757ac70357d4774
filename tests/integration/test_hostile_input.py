"""Hostile input at every HTTP edge of the real stack: oversized bodies (declared and chunked),
header floods, slow clients, deep nesting, personal IDs and phones no agency should get."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest

from devstack.stack import HOST, Stack
from tests.support.flows import DESK, as_agency, chain_dossier, submit

MiB = 1024 * 1024
LIMIT = 256 * 1024  # the default HTTP_MAX_BODY_BYTES
# A POST route of each service, whatever it needs: the limits answer before it runs.
ROUTES = {
    "intake": "/v1/dossiers",
    "routing": "/v1/transfers/00000000-0000-0000-0000-000000000000/outcome",
    "notify": "/v1/webhook-subscriptions",
    "identity": "/oauth2/token",
}


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{slug}"
    return body


def port_of(stack: Stack, service: str) -> int:
    return int(stack.url(service).rsplit(":", 1)[1])


def rss(stack: Stack, service: str) -> int:
    return int(psutil.Process(stack.processes[service].pid).memory_info().rss)


@pytest.mark.parametrize("service", list(ROUTES))
def test_a_body_past_the_limit_is_413_on_every_service(stack: Stack, service: str) -> None:
    url = stack.url(service) + ROUTES[service]
    started = time.monotonic()
    declared = httpx.post(
        url,
        content=b'{"a": "' + b"x" * (20 * MiB) + b'"}',
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert assert_problem(declared, 413, "content-too-large")["max_bytes"] == LIMIT
    assert time.monotonic() - started < 10

    def chunks() -> Iterator[bytes]:
        for _ in range(8 * 16):
            yield b"x" * (64 * 1024)

    chunked = httpx.post(
        url, content=chunks(), headers={"content-type": "application/json"}, timeout=30
    )
    assert "content-length" not in chunked.request.headers
    assert_problem(chunked, 413, "content-too-large")


def test_an_8_mib_token_request_is_413_declared_or_chunked(stack: Stack) -> None:
    url = stack.url("identity") + "/oauth2/token"
    form = "grant_type=client_credentials&scope=" + "dossiers:read+" * (8 * MiB // 14)
    headers = {"content-type": "application/x-www-form-urlencoded"}
    assert_problem(
        httpx.post(url, content=form.encode(), headers=headers, timeout=30),
        413,
        "content-too-large",
    )

    def chunks() -> Iterator[bytes]:
        data = form.encode()
        for i in range(0, len(data), 256 * 1024):
            yield data[i : i + 256 * 1024]

    assert_problem(
        httpx.post(url, content=chunks(), headers=headers, timeout=30), 413, "content-too-large"
    )
    # Tokens are still served.
    assert stack.credentials.token(stack.url("identity"), "motcua-h22", "dossiers:read")


def test_a_token_request_that_is_not_utf8_is_a_clear_400(stack: Stack) -> None:
    answer = httpx.post(
        stack.url("identity") + "/oauth2/token",
        content=b"grant_type=client_credentials&client_id=\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"


def test_the_sandbox_bounds_bodies_too(stack: Stack) -> None:
    response = httpx.post(
        stack.url("sandbox") + "/sms/messages", content=b"x" * (2 * MiB), timeout=30
    )
    assert response.status_code == 413


def flood(port: int, sockets: int, per_socket: int) -> list[tuple[int, bool]]:
    """`sockets` connections at once, each sending an unterminated header of up to
    `per_socket` bytes: per socket, (bytes sent, whether the server closed it)."""
    chunk = b"a" * (256 * 1024)
    open_ = [socket.create_connection((HOST, port), timeout=10) for _ in range(sockets)]
    sent = [0] * sockets
    closed = [False] * sockets
    try:
        for sock in open_:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Flood: ")
        while not all(closed[i] or sent[i] >= per_socket for i in range(sockets)):
            for i, sock in enumerate(open_):
                if closed[i] or sent[i] >= per_socket:
                    continue
                try:
                    sock.sendall(chunk)
                    sent[i] += len(chunk)
                except OSError:
                    closed[i] = True
        for i, sock in enumerate(open_):
            if not closed[i]:
                try:
                    closed[i] = sock.recv(65536) == b""  # answered, then closed
                except OSError:
                    closed[i] = True
    finally:
        for sock in open_:
            sock.close()
    return list(zip(sent, closed, strict=True))


def test_header_floods_do_not_grow_any_service(stack: Stack) -> None:
    """Six sockets per service, each sending an unterminated 32 MiB header (the tester's
    attack grew intake by 286 MiB): each is cut off near the 32 KiB limit."""
    services = list(ROUTES)
    before = {service: rss(stack, service) for service in services}
    results: dict[str, list[tuple[int, bool]]] = {}

    def attack(service: str) -> None:
        results[service] = flood(port_of(stack, service), 6, 32 * MiB)

    threads = [threading.Thread(target=attack, args=(s,)) for s in services]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    after = {service: rss(stack, service) for service in services}
    for service in services:
        assert len(results[service]) == 6, (service, results.get(service))
        for sent, closed in results[service]:
            assert closed, (service, results[service])
            # Cut off within a few reads of the limit, far from 32 MiB.
            assert sent < 8 * MiB, (service, results[service])
        growth = after[service] - before[service]
        assert growth < 16 * MiB, f"{service} grew by {growth / MiB:.0f} MiB"
    # And they serve as before.
    for service in services:
        assert httpx.get(stack.url(service) + "/health/live", timeout=5).status_code == 200


def test_slow_heads_are_answered_408_and_cut_off(stack: Stack) -> None:
    """Slow-loris on every service at once: a header field every second, never the end."""
    results: dict[str, tuple[bytes, float]] = {}

    def loris(service: str) -> None:
        started = time.monotonic()
        answer = b""
        with socket.create_connection((HOST, port_of(stack, service)), timeout=30) as sock:
            try:
                sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
                sock.settimeout(1)
                for i in range(30):
                    try:
                        chunk = sock.recv(65536)
                    except TimeoutError:
                        sock.sendall(b"X-Slow-%d: v\r\n" % i)
                        continue
                    answer += chunk
                    if not chunk:
                        break
            except OSError:
                pass
        results[service] = (answer, time.monotonic() - started)

    threads = [threading.Thread(target=loris, args=(s,)) for s in ROUTES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)
    for service, (answer, took) in results.items():
        assert answer.startswith(b"HTTP/1.1 408 "), (service, answer)
        assert b"application/problem+json" in answer
        assert took < 15, (service, took)  # HTTP_HEADER_TIMEOUT_S is 10 s
    assert set(results) == set(ROUTES)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": "x"}
    for _ in range(depth - 1):
        value = {"next": value}
    return value


@pytest.mark.parametrize("depth", [9, 33, 100, 500])
def test_deep_form_data_is_422_not_500(stack: Stack, depth: int) -> None:
    body = chain_dossier("deep@example.vn") | {"form_data": nested(depth)}
    response = httpx.post(
        stack.url("intake") + "/v1/dossiers", json=body, headers=as_agency(stack, DESK), timeout=10
    )
    if depth <= 32:
        problem = assert_problem(response, 422, "validation-error")
        assert problem["errors"][0]["location"][:2] == ["body", "form_data"]
    else:
        assert_problem(response, 422, "json-too-deep")


@pytest.mark.parametrize("service", list(ROUTES))
def test_deep_json_is_422_on_every_service(stack: Stack, service: str) -> None:
    deep = b'{"note": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = httpx.post(
        stack.url(service) + ROUTES[service],
        content=deep,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert_problem(response, 422, "json-too-deep")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("personal_id", "999090012345"),
        ("personal_id", "001290012345"),
        ("personal_id", "٠٠١٠٩٠٠١٢٣٤٥"),
        ("personal_id", "００１０９００１２３４５"),
        ("phone", "０９１２３４５６７８"),
        ("phone", "٠٩١٢٣٤٥٦٧٨"),
        ("phone", "024 3825 3525"),
    ],
)
def test_ids_and_phones_no_agency_should_get_are_422(stack: Stack, field: str, value: str) -> None:
    body = chain_dossier("bad-id@example.vn")
    body["applicant"][field] = value
    response = httpx.post(
        stack.url("intake") + "/v1/dossiers", json=body, headers=as_agency(stack, DESK), timeout=10
    )
    problem = assert_problem(response, 422, "validation-error")
    assert [e["location"] for e in problem["errors"]] == [["body", "applicant", field]]


def test_after_all_that_a_dossier_is_still_taken(stack: Stack) -> None:
    body = chain_dossier("after-hostile@example.vn")
    body["applicant"]["phone"] = "0912 345 678"
    assert submit(stack, body)
