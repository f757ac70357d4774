"""The catalogue as routing serves it (gateway.v1.CatalogueService), for intake, notify and
identity.

Routing is the catalogue's one owner: it alone reads catalogue/*.yaml and keeps every version
it loaded. This client fetches the current version at start (retried while routing is away,
core/retry.py), follows new versions every `refresh_s`, and keeps the last versions it saw,
fetching an older one on demand: a dossier received under version N is handled under N even
after a reload. Until the first version is in, `ready` stays unset, so the service's gate
(core/runtime.py) answers 503 instead of validating against an empty catalogue. Identity
alone keeps its gate open (routing checks the catalogue request against identity's keys):
there only the consents, which need a procedure, answer 503 until then.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import grpc
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.auth import CATALOGUE_READ
from core.auth_grpc import bearer_metadata
from core.catalogue import Agency, Catalogue, LiveCatalogue, Procedure, Step
from core.grpc import LazyStub
from core.retry import until_available
from core.settings import ServiceSettings
from core.tokens import ServiceTokens, TokenUnavailable
from gateway.v1 import catalogue_pb2, catalogue_pb2_grpc

log = logging.getLogger(__name__)


class CatalogueSettings(BaseSettings):
    """Where intake and notify ask routing for the catalogue."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Routing's gRPC server: it serves the catalogue (and journeys).
    routing_grpc_target: str = "127.0.0.1:50051"
    catalogue_timeout_s: float = Field(default=5.0, gt=0)
    # How often routing is asked whether a new catalogue version was loaded.
    catalogue_refresh_s: float = Field(default=30.0, gt=0)


class CatalogueUnavailable(ConnectionError):
    """Routing could not be asked: a passing outage, retried like one (core/retry.py)."""


class TokenSource(Protocol):
    """The service's own access token: fetched from identity (core/tokens.py), or signed
    by identity itself for its own calls (services/identity/own_token.py)."""

    async def token(self) -> str: ...

    def forget(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Versioned:
    version: int
    catalogue: Catalogue


def snapshot_of(catalogue: Catalogue, version: int, digest: str) -> catalogue_pb2.CatalogueSnapshot:
    """The catalogue as the contract carries it; where and how an agency takes transfers
    (and its signing secret) stay with routing."""
    return catalogue_pb2.CatalogueSnapshot(
        version=version,
        digest=digest,
        procedures=[
            catalogue_pb2.CatalogueProcedure(
                code=p.code,
                name=p.name,
                receiving_agency=p.receiving_agency,
                total_days=p.total_days,
                required_fields=p.required_fields,
                steps=[
                    catalogue_pb2.CatalogueStep(
                        index=s.index,
                        stage=s.stage,
                        name=s.name,
                        agency_code=s.agency_code,
                        days=s.days,
                    )
                    for s in p.steps
                ],
                active=p.active,
                needs=p.needs,
                min_assurance=p.min_assurance,
            )
            for p in catalogue.procedures.values()
        ],
        agencies=[
            catalogue_pb2.CatalogueAgency(
                code=a.code, name=a.name, xroad=a.xroad, channel=a.channel
            )
            for a in catalogue.agencies.values()
        ],
    )


def catalogue_of(snapshot: catalogue_pb2.CatalogueSnapshot) -> Catalogue:
    return Catalogue(
        procedures={
            p.code: Procedure(
                code=p.code,
                name=p.name,
                receiving_agency=p.receiving_agency,
                total_days=p.total_days,
                required_fields=tuple(p.required_fields),
                steps=tuple(
                    Step(
                        index=s.index,
                        stage=s.stage,
                        name=s.name,
                        agency_code=s.agency_code,
                        days=s.days,
                    )
                    for s in p.steps
                ),
                active=p.active,
                needs=tuple(p.needs),
                min_assurance=p.min_assurance,
            )
            for p in snapshot.procedures
        },
        agencies={
            a.code: Agency(code=a.code, name=a.name, xroad=a.xroad, channel=a.channel, url="")
            for a in snapshot.agencies
        },
    )


class CatalogueClient:
    def __init__(
        self,
        target: str,
        timeout_s: float,
        tokens: TokenSource | None,
        *,
        refresh_s: float = 30.0,
        keep: int = 16,
    ) -> None:
        self._stub = LazyStub(target, catalogue_pb2_grpc.CatalogueServiceStub)
        self._timeout_s = timeout_s
        # The service's own token (scope catalogue:read); None where no client is configured
        # (tests against a stand-in catalogue server).
        self._tokens = tokens
        self._refresh_s = refresh_s
        self._keep = keep
        self._seen: OrderedDict[int, Catalogue] = OrderedDict()
        self._current = Versioned(0, Catalogue(procedures={}, agencies={}))
        # The current version, for readers that hold on to one Catalogue object.
        self.catalogue = LiveCatalogue()
        self.ready = asyncio.Event()

    @classmethod
    def from_settings(
        cls, settings: CatalogueSettings, tokens: TokenSource | None = None
    ) -> CatalogueClient:
        if tokens is None and isinstance(settings, ServiceSettings) and settings.auth_client_id:
            tokens = ServiceTokens.from_settings(settings, scope=CATALOGUE_READ)
        return cls(
            settings.routing_grpc_target,
            settings.catalogue_timeout_s,
            tokens,
            refresh_s=settings.catalogue_refresh_s,
        )

    @property
    def version(self) -> int:
        return self._current.version

    def current(self) -> Versioned:
        """The current version with its number: what a new dossier is received under."""
        return self._current

    async def run(self) -> None:
        """Worker: the first version (the gate opens with it), then each new one."""
        # At most 2 s between tries: the catalogue is one cheap call, and every second of
        # the wait is a second of 503s once routing is there.
        await until_available("catalogue from routing", self.refresh, max_delay_s=2)
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except CatalogueUnavailable as exc:
                # The version in hand stays in use; the next round asks again.
                log.warning("catalogue not refreshed: %s", exc)

    async def refresh(self) -> None:
        snapshot = await self._fetch(None)
        if self.ready.is_set() and snapshot.version == self.version:
            return
        built = catalogue_of(snapshot)
        self._remember(snapshot.version, built)
        self._current = Versioned(snapshot.version, built)
        self.catalogue.swap(built)
        log.info("catalogue version %d (%s)", snapshot.version, snapshot.digest)
        self.ready.set()

    async def at(self, version: int) -> Catalogue:
        """The catalogue of `version`, remembered or asked of routing. 0 (dossiers received
        before versions were recorded) and a version routing never had are the current one."""
        if version == 0 or version == self.version:
            return self._current.catalogue
        if version in self._seen:
            self._seen.move_to_end(version)
            return self._seen[version]
        try:
            snapshot = await self._fetch(version)
        except LookupError:
            log.warning("routing has no catalogue version %d: using %d", version, self.version)
            return self._current.catalogue
        built = catalogue_of(snapshot)
        self._remember(version, built)
        return built

    def _remember(self, version: int, catalogue: Catalogue) -> None:
        self._seen[version] = catalogue
        self._seen.move_to_end(version)
        while len(self._seen) > self._keep:
            self._seen.popitem(last=False)

    async def _fetch(self, version: int | None) -> catalogue_pb2.CatalogueSnapshot:
        request = catalogue_pb2.GetCatalogueRequest()
        if version is not None:
            request.version = version
        try:
            token = await self._tokens.token() if self._tokens is not None else ""
            snapshot: catalogue_pb2.CatalogueSnapshot = await self._stub().GetCatalogue(
                request,
                timeout=self._timeout_s,
                metadata=bearer_metadata(token) if token else None,
            )
        except TokenUnavailable as exc:
            raise CatalogueUnavailable(f"no service token: {exc}") from exc
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise LookupError(f"catalogue version {version}") from exc
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED and self._tokens is not None:
                self._tokens.forget()  # e.g. identity rotated its key: get a fresh token
            raise CatalogueUnavailable(f"routing answered {exc.code().name}") from exc
        return snapshot

    async def close(self) -> None:
        await self._stub.close()
        if self._tokens is not None:
            await self._tokens.close()
