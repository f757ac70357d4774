"""Identity's own access token, for its calls to the other services (the catalogue).

Every other service asks identity's token endpoint with its client secret (core/tokens.py).
Identity is the issuer: it signs its own token with the key it signs agency tokens with, so
it holds no secret for itself and its calls never wait on its own HTTP endpoint. The client
`gateway-identity` may not be in the clients file (load_clients refuses it), so the endpoint
never issues its token.
"""

from __future__ import annotations

import time

from services.identity.clients import OWN_CLIENT_ID, AgencyClient
from services.identity.oauth import AgencyTokens

# Signed anew this long before it expires: a token must not expire on its way to the callee.
REFRESH_MARGIN_S = 30.0


class OwnToken:
    def __init__(self, tokens: AgencyTokens, scope: str) -> None:
        self._tokens = tokens
        self._client = AgencyClient(OWN_CLIENT_ID, "GATEWAY", frozenset({scope}))
        self._scope = scope
        self._token = ""
        self._renew_at = 0.0

    async def token(self) -> str:
        if time.monotonic() >= self._renew_at:
            self._token = self._tokens.sign(self._client, self._scope)
            self._renew_at = time.monotonic() + max(self._tokens.ttl_s - REFRESH_MARGIN_S, 1)
        return self._token

    def forget(self) -> None:
        self._renew_at = 0.0  # e.g. after a key rotation: sign with the current key

    async def close(self) -> None:
        pass
