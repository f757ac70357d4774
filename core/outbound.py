"""The one way out to URLs that users supply (webhook callbacks): checked against SSRF.

A URL someone else typed must not make the gateway talk to itself or to the networks behind
it (loopback services, the cloud metadata endpoint, private ranges). Every destination is
resolved and each of its addresses checked; the connection then goes to an address that was
checked, because the check *is* the connector's resolver (no second lookup that DNS
rebinding could answer differently). Outside the operator's allow-list only https is used.
Redirects are never followed and answers are never read: the caller learns a status code
and its standard phrase, nothing the destination wrote.

Address classes come from the standard library's `ipaddress` (IANA special-purpose
registries: `is_loopback`, `is_link_local`, `is_private`, `is_multicast`, `is_reserved`,
`is_unspecified`, `is_global`), plus what it does not name: IPv4 embedded in IPv6
(mapped, 6to4, Teredo, NAT64) is judged as the IPv4 address it carries, and the cloud
metadata addresses are named as such.

The allow-list (`OUTBOUND_ALLOW`, comma-separated URL prefixes such as
`http://127.0.0.1:8090/webhooks/`) admits exactly the URLs under a prefix: same scheme, host
and port, and a path under the prefix's path. Anything else on that host is still refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic_settings import BaseSettings, SettingsConfigDict
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_IETF = ipaddress.IPv4Network("192.0.0.0/24")
_METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598, carrier-grade NAT
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052, carries an IPv4 address
_RESOLVE_TIMEOUT_S = 5.0


class DestinationRefused(Exception):
    """The URL or one of its addresses may not be called. Not an OSError on purpose: aiohttp
    wraps those from a resolver into a DNS error, which would read like a temporary fault."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutboundSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # URL prefixes an operator lets through although they are not public https (a local
    # receiver, an agency on the government network), comma-separated.
    outbound_allow: str = ""


def address_refusal(address: IPAddress) -> str | None:
    """Why a callback may not go to this address, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = address_refusal(embedded)
            return f"{reason} (embedded in {address})" if reason else None
        address = ipaddress.IPv6Address(address.compressed.split("%")[0])  # no scope id
    if address in _METADATA:
        return f"{address} is the cloud metadata service"
    checks = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (isinstance(address, ipaddress.IPv4Address) and address in _SHARED, "shared (CGNAT)"),
        # Named here, not left to `is_private`: older Pythons' tables miss them (site-local
        # IPv6 is deprecated but still routed where configured; 192.0.0.0/24 is IETF
        # protocol assignments, fixed in Python's table only by CVE-2024-4032's patch).
        (isinstance(address, ipaddress.IPv6Address) and address.is_site_local, "site-local"),
        (isinstance(address, ipaddress.IPv4Address) and address in _IETF, "IETF protocol"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "not globally routable"),
    )
    for failed, name in checks:
        if failed:
            return f"{address} is a {name} address"
    return None


@dataclass(frozen=True)
class _Prefix:
    scheme: str
    host: str
    port: int | None
    path: str

    def admits(self, url: URL) -> bool:
        if (url.scheme, (url.host or "").lower(), url.port) != (self.scheme, self.host, self.port):
            return False
        if self.path.endswith("/"):
            return url.path.startswith(self.path)
        return url.path == self.path or url.path.startswith(self.path + "/")


class OutboundPolicy:
    """Which URLs may be called at all, before any address is looked at."""

    def __init__(self, allow: Sequence[str] = ()) -> None:
        prefixes = []
        for entry in allow:
            url = URL(entry.strip())
            if url.scheme not in ("http", "https") or not url.host:
                raise ValueError(f"OUTBOUND_ALLOW entry {entry!r} is not an http(s) URL prefix")
            prefixes.append(_Prefix(url.scheme, url.host.lower(), url.port, url.path or "/"))
        self._prefixes = tuple(prefixes)

    @classmethod
    def from_settings(cls, settings: OutboundSettings | None = None) -> OutboundPolicy:
        settings = settings or OutboundSettings()
        return cls([e for e in settings.outbound_allow.split(",") if e.strip()])

    def parse(self, raw: str) -> tuple[URL, bool]:
        """The URL to call and whether the allow-list names it; DestinationRefused for a URL
        that could mean something else to the destination than to this check."""
        try:
            url = URL(raw)
        except ValueError as exc:
            raise DestinationRefused("not a URL") from exc
        if url.scheme not in ("http", "https") or not url.raw_host:
            raise DestinationRefused("only absolute http(s) URLs can be called")
        if url.raw_user is not None or url.raw_password is not None:
            raise DestinationRefused("a URL with user information is not accepted")
        if url.raw_fragment:
            raise DestinationRefused("a URL with a fragment is not accepted")
        raw_path = url.raw_path.lower()
        if "%2f" in raw_path or "%5c" in raw_path or "\\" in url.path:
            raise DestinationRefused("encoded slashes in the path are not accepted")
        if any(segment in (".", "..") for segment in url.path.split("/")):
            raise DestinationRefused("dot segments in the path are not accepted")
        allowed = any(prefix.admits(url) for prefix in self._prefixes)
        if not allowed and url.scheme != "https":
            raise DestinationRefused("callbacks go over https")
        return url, allowed


class GuardedResolver(AbstractResolver):
    """Resolves through `inner` and refuses the name when any address is not public: the
    connector connects to what this returned, so what was checked is what is called."""

    def __init__(self, inner: AbstractResolver) -> None:
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if not found:
            raise DestinationRefused(f"{host} does not resolve")
        for result in found:
            reason = address_refusal(ipaddress.ip_address(result["host"]))
            if reason:
                raise DestinationRefused(f"{host} resolves to {reason}")
        return found

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True)
class Answer:
    """All that is kept of an answer: never its body, headers or the server's own phrase."""

    status: int

    @property
    def phrase(self) -> str:
        try:
            return f"HTTP {self.status} {HTTPStatus(self.status).phrase}"
        except ValueError:
            return f"HTTP {self.status}"


def _literal(url: URL) -> IPAddress | None:
    try:
        return ipaddress.ip_address((url.host or "").split("%")[0])
    except ValueError:
        return None


class OutboundClient:
    """POSTs to user-supplied URLs. Two connection pools: one whose resolver checks every
    address (the public internet), one for URLs the operator's allow-list names."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        timeout_s: float,
        resolver: AbstractResolver | None = None,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        self._policy = policy
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._resolver = resolver
        self._trace_configs = list(trace_configs)
        self._public: aiohttp.ClientSession | None = None
        self._allowed: aiohttp.ClientSession | None = None

    def _inner_resolver(self) -> AbstractResolver:
        return self._resolver or aiohttp.ThreadedResolver()

    def _session(self, resolver: AbstractResolver) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=resolver),
            timeout=self._timeout,
            trace_configs=self._trace_configs,
            trust_env=False,  # no proxy from the environment between the check and the call
        )

    async def start(self) -> None:
        if self._public is None:
            self._public = self._session(GuardedResolver(self._inner_resolver()))
            self._allowed = self._session(self._inner_resolver())

    async def close(self) -> None:
        for session in (self._public, self._allowed):
            if session is not None:
                await session.close()
        self._public = self._allowed = None

    async def check(self, raw: str) -> URL:
        """Whether `raw` may be called now, without calling it (at subscription time)."""
        url, allowed = self._policy.parse(raw)
        if allowed:
            return url
        literal = _literal(url)
        if literal is not None:
            reason = address_refusal(literal)
            if reason:
                raise DestinationRefused(reason)
            return url
        inner = self._inner_resolver()
        try:
            async with asyncio.timeout(_RESOLVE_TIMEOUT_S):
                await GuardedResolver(inner).resolve(
                    url.raw_host or "", url.port or 0, socket.AF_UNSPEC
                )
        except TimeoutError as exc:  # before OSError, of which it is a kind
            raise DestinationRefused(f"{url.host} does not resolve in time") from exc
        except OSError as exc:
            raise DestinationRefused(f"{url.host} does not resolve") from exc
        finally:
            if inner is not self._resolver:  # an injected resolver belongs to its owner
                await inner.close()
        return url

    async def post(self, raw: str, data: bytes, headers: dict[str, Any]) -> Answer:
        """POST without following redirects or reading the answer. DestinationRefused when
        the URL or an address is not allowed (nothing was sent); aiohttp's errors and
        TimeoutError when the destination did not answer."""
        if self._public is None or self._allowed is None:
            raise RuntimeError("OutboundClient.post before start()")
        url, allowed = self._policy.parse(raw)
        literal = _literal(url)
        if not allowed and literal is not None:
            # aiohttp connects to an address literal without asking the resolver.
            reason = address_refusal(literal)
            if reason:
                raise DestinationRefused(reason)
        session = self._allowed if allowed else self._public
        async with session.post(url, data=data, headers=headers, allow_redirects=False) as response:
            return Answer(response.status)
