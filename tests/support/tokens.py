"""Access tokens for services run in-process: a test issuer with its own key, whose public
JWKS the service under test is given (AUTH_JWKS) instead of fetching identity's."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

ISSUER = "http://identity.test"
AUDIENCE = "dossier-gateway"


class TestIssuer:
    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, {"use": "sig", "alg": "RS256"}, auto_kid=True)

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    def settings(self) -> dict[str, Any]:
        """Settings fields that make a service trust this issuer."""
        return {
            "auth_issuer": ISSUER,
            "auth_audience": AUDIENCE,
            "auth_jwks": json.dumps(self.jwks),
        }

    def token(self, agency: str, scopes: str, *, key: RSAKey | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "sub": f"client-of-{agency}",
            "agency": agency,
            "aud": AUDIENCE,
            "scope": scopes,
            "iat": now,
            "exp": now + 300,
            "jti": secrets.token_urlsafe(8),
        } | claims
        signer = key or self.key
        return jwt.encode({"alg": "RS256", "kid": signer.kid or ""}, body, signer)

    def headers(self, agency: str, scopes: str, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(agency, scopes, **claims)}"}
