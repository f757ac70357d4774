"""The console composed once: what its pages use, built by `compose`."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from core.auth import token_url
from core.clock import SYSTEM_CLOCK, Clock
from core.deps import provider
from core.tokens import ServiceTokens
from services.console.oidc import RelyingParty
from services.console.session import SessionSigner
from services.console.settings import ConsoleSettings
from services.console.upstream import SCOPE, Upstream

log = logging.getLogger("console")


@dataclass(frozen=True)
class ConsoleDeps:
    settings: ConsoleSettings
    clock: Clock
    signer: SessionSigner
    relying_party: RelyingParty
    # The services' APIs, read with the console's own client credentials.
    upstream: Upstream

    @property
    def secure_cookies(self) -> bool:
        return self.settings.console_public_url.startswith("https://")


def compose(settings: ConsoleSettings | None = None, *, clock: Clock = SYSTEM_CLOCK) -> ConsoleDeps:
    settings = settings or ConsoleSettings()
    key = settings.console_session_key
    if not key:
        log.warning("CONSOLE_SESSION_KEY is unset: a key made now signs sessions until exit")
        key = secrets.token_urlsafe(48)
    relying_party = RelyingParty(
        settings.console_oidc_issuer,
        settings.console_oidc_client_id,
        settings.console_oidc_client_secret,
        settings.redirect_uri,
        settings.console_oidc_scope,
    )
    tokens = ServiceTokens(
        token_url(settings.auth_issuer),
        settings.auth_client_id,
        settings.auth_client_secret,
        SCOPE,
    )
    return ConsoleDeps(
        settings=settings,
        clock=clock,
        signer=SessionSigner(key, settings.console_session_ttl_s),
        relying_party=relying_party,
        upstream=Upstream(settings.services, tokens, settings.console_api_timeout_s),
    )


Deps = Annotated[ConsoleDeps, Depends(provider(ConsoleDeps))]


def _upstream(deps: Deps) -> Upstream:
    return deps.upstream


UpstreamDep = Annotated[Upstream, Depends(_upstream)]
