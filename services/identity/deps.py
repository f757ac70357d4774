"""Identity composed once: what its routes, gRPC services and tests use, built by `compose`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.auth import CATALOGUE_READ, CITIZEN_DATA_READ, Fetch, TokenVerifier, token_verifier
from core.auth_grpc import AuthInterceptor
from core.catalogue_client import CatalogueClient
from core.clock import SYSTEM_CLOCK, Clock
from core.deps import provider
from core.grpc import GrpcServer
from core.personal_id import MIN_PSEUDONYM_KEY_BYTES
from core.runtime import Runtime
from gateway.v1 import identity_pb2, identity_pb2_grpc
from services.identity import models
from services.identity.citizens import Citizens
from services.identity.clients import CLIENTS_FILE, load_clients
from services.identity.consents import Consents
from services.identity.eid import EidClient, RelyingParty
from services.identity.grpc_api import CitizenIdentityServicer
from services.identity.keys import SigningKeys, load_signing_keys
from services.identity.oauth import AgencyTokens
from services.identity.own_token import OwnToken
from services.identity.registry import RegistryClient
from services.identity.sealing import ResidenceSeal
from services.identity.settings import IdentitySettings
from services.identity.token_guard import GuardLimits, SecretGuard
from services.identity.token_state import FailureBuckets, UsedAssertions, purge_expired

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Every method of identity's gRPC services and the scope it needs ("/package.Service/Method").
CITIZEN_IDENTITY = identity_pb2.DESCRIPTOR.services_by_name["CitizenIdentity"].full_name
GRPC_SCOPES: Mapping[str, str] = {
    f"/{CITIZEN_IDENTITY}/ResolveCitizenSession": CITIZEN_DATA_READ,
    f"/{CITIZEN_IDENTITY}/TakeResidence": CITIZEN_DATA_READ,
}


def eid_client(settings: IdentitySettings) -> EidClient:
    key_file = settings.eid_client_key_file
    try:
        return _eid_client(settings, key_file)
    except ValueError as exc:
        raise SystemExit(f"e-ID settings (EID_*): {exc}") from None


def _eid_client(settings: IdentitySettings, key_file: str) -> EidClient:
    return EidClient(
        issuer=settings.eid_issuer,
        client_id=settings.eid_client_id,
        redirect_uri=settings.eid_redirect_uri,
        client_secret=settings.eid_client_secret.get_secret_value(),
        private_key=json.loads(Path(key_file).read_text(encoding="utf-8")) if key_file else None,
        scope=settings.eid_scope,
        optional_scope=settings.eid_optional_scope,
        algorithms=tuple(a.strip() for a in settings.eid_algorithms.split(",") if a.strip()),
        leeway_s=settings.eid_leeway_s,
        jwks_max_age_s=settings.eid_jwks_max_age_s,
        jwks_refetch_interval_s=settings.eid_jwks_refetch_interval_s,
        personal_id_claim=settings.eid_personal_id_claim,
        acr_levels=settings.eid_acr_levels,
        acr_values=settings.eid_acr_values,
        token_auth_method=settings.eid_token_auth_method or "",
    )


def pseudonym_key(settings: IdentitySettings) -> bytes:
    """Checked at start-up rather than at the first login: no key, no access log."""
    try:
        key = bytes.fromhex(settings.pseudonym_key.get_secret_value())
    except ValueError:
        key = b""
    if len(key) < MIN_PSEUDONYM_KEY_BYTES:
        raise SystemExit(
            f"PSEUDONYM_KEY must be at least {MIN_PSEUDONYM_KEY_BYTES} bytes in hex, kept "
            "secret and stable (e.g. `openssl rand -hex 32` into a secret store)"
        )
    return key


@dataclass(frozen=True)
class IdentityDeps:
    settings: IdentitySettings
    runtime: Runtime
    clock: Clock
    token_verifier: TokenVerifier
    agency_tokens: AgencyTokens
    secret_guard: SecretGuard
    used_assertions: UsedAssertions
    citizens: Citizens
    consents: Consents
    relying_party: RelyingParty
    registry: RegistryClient

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.runtime.sessions


def compose(
    settings: IdentitySettings | None = None, *, clock: Clock = SYSTEM_CLOCK
) -> IdentityDeps:
    settings = settings or IdentitySettings()
    runtime = Runtime(settings, name="identity", metadata=models.metadata, migrations=MIGRATIONS)
    tokens = agency_tokens(settings)
    # What the token endpoint remembers is shared by the replicas through the database.
    used = UsedAssertions(runtime.sessions, clock)
    buckets = FailureBuckets(runtime.sessions, clock)
    guard = secret_guard(settings, buckets)
    # Like every service; tests running it in-process may give a fixed JWKS (AUTH_JWKS).
    verifier = (
        token_verifier(settings).verifier
        if settings.auth_jwks
        else TokenVerifier(
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            fetch=_published(tokens.keys),
            leeway_s=settings.auth_leeway_s,
        )
    )
    key = pseudonym_key(settings)
    citizens = Citizens(
        runtime.sessions, key, settings.eid_login_ttl_s, settings.citizen_session_ttl_s
    )
    registry = RegistryClient(settings.registry_grpc_target, settings.registry_timeout_s)
    # No gate on the catalogue: routing checks identity's token against identity's keys, so
    # identity serves those first; only the consents wait for it (services/identity/consents.py).
    catalogues = CatalogueClient.from_settings(settings, OwnToken(tokens, CATALOGUE_READ))
    runtime.add_worker("catalogue", catalogues.run)
    runtime.on_stop(catalogues.close)
    consents = Consents(runtime.sessions, catalogues, registry, citizens, ResidenceSeal(key))
    servicer = CitizenIdentityServicer(runtime.sessions, citizens, consents)
    grpc_server = GrpcServer(
        [lambda server: identity_pb2_grpc.add_CitizenIdentityServicer_to_server(servicer, server)],
        [CITIZEN_IDENTITY],
        [AuthInterceptor(verifier, GRPC_SCOPES)],
    )
    relying_party = RelyingParty(eid_client(settings))

    runtime.serve_grpc(grpc_server, settings.http_host, settings.grpc_port)
    runtime.on_stop(relying_party.close)
    runtime.on_stop(registry.close)
    runtime.on_stop(_closing(guard))
    runtime.add_worker("expired-token-state", lambda: purge_expired(used, buckets))
    runtime.add_readiness_check("token-endpoint", _not_saturated(guard))
    return IdentityDeps(
        settings=settings,
        runtime=runtime,
        clock=clock,
        token_verifier=verifier,
        agency_tokens=tokens,
        secret_guard=guard,
        used_assertions=used,
        citizens=citizens,
        consents=consents,
        relying_party=relying_party,
        registry=registry,
    )


def agency_tokens(settings: IdentitySettings) -> AgencyTokens:
    keys = load_signing_keys(
        settings.token_signing_key,
        settings.token_signing_key_file,
        settings.token_retired_key_file,
        required=settings.token_signing_key_required,
        grace_s=settings.access_token_ttl_s * 2,
    )
    return AgencyTokens(
        issuer=settings.auth_issuer,
        audience=settings.auth_audience,
        clients=load_clients(Path(settings.agency_clients_file or CLIENTS_FILE)),
        keys=keys,
        ttl_s=settings.access_token_ttl_s,
        reuse_s=settings.access_token_reuse_s,
    )


def secret_guard(settings: IdentitySettings, buckets: FailureBuckets) -> SecretGuard:
    return SecretGuard(
        GuardLimits(
            hash_workers=settings.token_hash_workers,
            queue_size=settings.token_hash_queue,
            queue_wait_s=settings.token_hash_queue_wait_s,
            verified_ttl_s=settings.token_verified_secret_ttl_s,
            client_failures_burst=settings.token_client_failures_burst,
            client_failures_per_min=settings.token_client_failures_per_min,
            address_failures_burst=settings.token_address_failures_burst,
            address_failures_per_min=settings.token_address_failures_per_min,
            client_in_flight=settings.token_client_in_flight,
            address_in_flight=settings.token_address_in_flight,
            saturation_window_s=settings.token_saturation_window_s,
        ),
        buckets=buckets,
    )


def _not_saturated(guard: SecretGuard) -> Callable[[], Awaitable[None]]:
    async def probe() -> None:
        if guard.saturated():
            raise ConnectionError("token requests are being shed")

    return probe


def _closing(guard: SecretGuard) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        guard.close()

    return close


def _published(keys: SigningKeys) -> Fetch:
    """Identity checks tokens like every service, against what it publishes, minus the HTTP."""

    async def fetch() -> dict[str, Any]:
        return keys.public_jwks()

    return fetch


Deps = Annotated[IdentityDeps, Depends(provider(IdentityDeps))]


def _sessions(deps: Deps) -> async_sessionmaker[AsyncSession]:
    return deps.sessions


def _citizens(deps: Deps) -> Citizens:
    return deps.citizens


def _consents(deps: Deps) -> Consents:
    return deps.consents


Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(_sessions)]
CitizensDep = Annotated[Citizens, Depends(_citizens)]
ConsentsDep = Annotated[Consents, Depends(_consents)]
