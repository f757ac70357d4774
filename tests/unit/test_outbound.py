"""core.outbound without leaving this machine: address classes, the allow-list, and the
checks of the resolver the connector uses (names resolved by a stub, never by DNS)."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from fastapi import FastAPI, Request, Response

from core.outbound import (
    DestinationRefused,
    OutboundClient,
    OutboundPolicy,
    address_refusal,
)
from sandbox.runner import AppServer, bind_socket


class StubResolver(AbstractResolver):
    """Answers names from a table, in turn per call (to play a DNS that changes)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        queue = self.answers[host]
        address = queue.pop(0) if len(queue) > 1 else queue[0]
        family_of = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": family_of,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "169.254.10.10",
        "224.0.0.251",
        "0.0.0.0",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "fec0::1",  # site-local, deprecated but routed where configured
        "192.0.0.9",  # IETF protocol assignments (CVE-2024-4032)
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_the_metadata_service_is_named() -> None:
    reason = address_refusal(ipaddress.ip_address("169.254.169.254"))
    assert reason is not None
    assert "metadata" in reason


RECEIVER = "http://127.0.0.1:8090/webhooks/"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://agency.example.gov.vn/hooks", "https"),
        ("ftp://agency.example.gov.vn/hooks", "http(s)"),
        ("http://127.0.0.1:8090/oidc/keys/rotate", "https"),
        ("http://127.0.0.1:8090/webhooksX", "https"),
        ("http://127.0.0.1:8091/webhooks/a", "https"),
        ("http://localhost:8090/webhooks/a", "https"),
        # The parser resolves encoded dot segments; the result is checked, and sent.
        ("http://127.0.0.1:8090/webhooks/%2e%2e/oidc/keys/rotate", "https"),
        ("http://127.0.0.1:8090/webhooks/a%2F..%2Foidc", "encoded slashes"),
        ("https://user:pw@agency.example.gov.vn/hooks", "user information"),
        ("https://agency.example.gov.vn/hooks#x", "fragment"),
    ],
)
def test_the_policy_refuses_before_any_lookup(url: str, why: str) -> None:
    with pytest.raises(DestinationRefused, match=re.escape(why)):
        OutboundPolicy([RECEIVER]).parse(url)


def test_the_allow_list_admits_exactly_its_prefix() -> None:
    policy = OutboundPolicy([RECEIVER])
    assert policy.parse("http://127.0.0.1:8090/webhooks/a?x=1")[1] is True
    assert policy.parse("https://agency.example.gov.vn/hooks")[1] is False
    # A literal ".." is resolved by the URL parser, and then the path is not under the prefix.
    with pytest.raises(DestinationRefused):
        policy.parse("http://127.0.0.1:8090/webhooks/../oidc/keys/rotate")


async def test_a_name_resolving_to_a_private_address_is_refused_without_connecting() -> None:
    resolver = StubResolver({"intranet.example.gov.vn": ["10.0.0.1"]})
    client = OutboundClient(OutboundPolicy(), timeout_s=2, resolver=resolver)
    with pytest.raises(DestinationRefused, match=re.escape("10.0.0.1 is a private address")):
        await client.check("https://intranet.example.gov.vn/hooks")
    await client.start()
    try:
        with pytest.raises(DestinationRefused, match="private"):
            await client.post("https://intranet.example.gov.vn/hooks", b"{}", {})
    finally:
        await client.close()
    # Refused by the connector's own resolver: the address checked is the one it would use.
    assert resolver.asked == ["intranet.example.gov.vn", "intranet.example.gov.vn"]


class Receiver:
    def __init__(self) -> None:
        self.hits: list[str] = []
        self.answer: dict[str, Any] = {"status_code": 204}


@pytest.fixture
async def local() -> AsyncIterator[tuple[Receiver, str]]:
    state = Receiver()
    app = FastAPI()

    @app.post("/{path:path}")
    async def anything(path: str, request: Request) -> Response:
        state.hits.append(path)
        return Response(**state.answer)

    async with AppServer(app, bind_socket("127.0.0.1", 0)) as server:
        yield state, server.url


async def test_dns_that_changes_after_the_check_is_caught_at_send(
    local: tuple[Receiver, str],
) -> None:
    state, url = local
    port = url.rsplit(":", 1)[1]
    # Public when the subscription is checked, then the gateway's own loopback (rebinding).
    resolver = StubResolver({"agency.example.gov.vn": ["93.184.216.34", "127.0.0.1"]})
    client = OutboundClient(OutboundPolicy(), timeout_s=2, resolver=resolver)
    await client.check(f"https://agency.example.gov.vn:{port}/hooks")
    await client.start()
    try:
        with pytest.raises(DestinationRefused, match="loopback"):
            await client.post(f"https://agency.example.gov.vn:{port}/hooks", b"{}", {})
        with pytest.raises(DestinationRefused, match="loopback"):
            await client.post(f"https://127.0.0.1:{port}/hooks", b"{}", {})
    finally:
        await client.close()
    assert state.hits == []


async def test_redirects_are_not_followed_and_answers_not_read(
    local: tuple[Receiver, str],
) -> None:
    state, url = local
    state.answer = {
        "status_code": 302,
        "headers": {"Location": f"{url}/elsewhere"},
        "content": "internal secrets of the receiver",
    }
    client = OutboundClient(OutboundPolicy([f"{url}/hooks/"]), timeout_s=2)
    await client.start()
    try:
        answer = await client.post(f"{url}/hooks/a", b"{}", {})
    finally:
        await client.close()
    assert (answer.status, answer.phrase) == (302, "HTTP 302 Found")
    assert state.hits == ["hooks/a"]
