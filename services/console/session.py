"""Officials' sessions: a signed cookie (HS256 JWT, joserfc), its CSRF token, and the role check.

The cookie holds who logged in (the provider's `sub` and name), their roles as the ID token
gave them, a per-session CSRF token and an expiry; nothing else, and no dossier data. It is
HttpOnly and SameSite=Lax (Secure over https). Every POST must carry the session's CSRF token
in a hidden field: SameSite alone leaves older browsers and same-site attackers.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

SESSION_COOKIE = "console_session"
LOGIN_COOKIE = "console_login"
CSRF_FIELD = "csrf_token"
# A login (state, nonce, PKCE verifier) must come back from the provider within this.
LOGIN_TTL_S = 600


@dataclass(frozen=True)
class Official:
    subject: str
    name: str
    roles: tuple[str, ...]
    csrf: str

    def has_role(self, role: str) -> bool:
        return role in self.roles


def roles_from(claims: Mapping[str, Any], claim: str) -> tuple[str, ...]:
    """The roles in an ID token's claim: a list or a space-separated string, reached by a
    dotted path for providers that nest it; anything else is no role at all."""
    value: Any = claims
    for part in claim.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


class SessionSigner:
    """Signs and reads the console's cookies. The key is derived per purpose, so a login
    cookie can never be presented as a session."""

    def __init__(self, secret: str, ttl_s: int) -> None:
        if len(secret) < 32:
            raise ValueError("the session key must have at least 32 characters")
        self._secret = secret.encode()
        self.ttl_s = ttl_s

    def _key(self, purpose: str) -> OctKey:
        derived = hmac.new(self._secret, purpose.encode(), hashlib.sha256).digest()
        return OctKey.import_key(derived)

    def _sign(self, purpose: str, claims: dict[str, Any], ttl_s: int) -> str:
        now = int(time.time())
        body = claims | {"iat": now, "exp": now + ttl_s}
        return jwt.encode({"alg": "HS256"}, body, self._key(purpose))

    def _read(self, purpose: str, value: str | None) -> dict[str, Any] | None:
        if not value:
            return None
        try:
            token = jwt.decode(value, self._key(purpose), algorithms=["HS256"])
            jwt.JWTClaimsRegistry(exp={"essential": True}).validate(token.claims)
        except (JoseError, ValueError):
            return None
        return dict(token.claims)

    def new_session(self, subject: str, name: str, roles: tuple[str, ...]) -> str:
        claims = {"sub": subject, "name": name, "roles": list(roles)}
        return self._sign("session", claims | {"csrf": secrets.token_urlsafe(32)}, self.ttl_s)

    def session(self, value: str | None) -> Official | None:
        claims = self._read("session", value)
        if claims is None:
            return None
        roles = claims.get("roles")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            return None
        return Official(
            str(claims["sub"]), str(claims.get("name", "")), tuple(roles), str(claims["csrf"])
        )

    def new_login(self, state: str, nonce: str, verifier: str, next_path: str) -> str:
        claims = {"state": state, "nonce": nonce, "verifier": verifier, "next": next_path}
        return self._sign("login", claims, LOGIN_TTL_S)

    def login(self, value: str | None) -> dict[str, Any] | None:
        return self._read("login", value)


def csrf_ok(official: Official, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(official.csrf, submitted or "")


def safe_next(path: str | None) -> str:
    """Where to go after login: a path of this console only (no //host, no scheme)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path
