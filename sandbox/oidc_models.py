"""The sandbox e-ID provider's data: settings, registered clients, issued codes, and the
rotating signing keys. The OAuth/OIDC behaviour is in sandbox/oidc.py."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from joserfc.jwk import RSAKey
from pydantic_settings import BaseSettings, SettingsConfigDict

SCOPES = ["openid", "profile", "email", "phone"]
# VNeID assurance levels: 1 = account identified online, 2 = identity verified in person.
ACR_LEVELS = ["1", "2"]
# Offered on the login page; any registered number works through login_hint.
DEMO_CITIZENS = ["001090012345", "079185000001", "031200123456", "048305654321"]
# The province's officials, for clients that log officials in (the operators' console): the
# roles claim of their ID token says what they may do. An operator watches the gateway; a
# reception officer of the one-stop desk is an official without that role.
OFFICIAL_ROLES_CLAIM = "roles"


@dataclass(frozen=True)
class Official:
    username: str
    name: str
    roles: tuple[str, ...]
    # Officials' accounts are verified in person, like a level-2 e-ID.
    acr: str = "2"

    def claims(self, scope: str) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "sub": self.username,
            "name": self.name,
            "preferred_username": self.username,
            OFFICIAL_ROLES_CLAIM: list(self.roles),
        }
        if "email" in scope.split():
            claims |= {"email": f"{self.username}@h22.sandbox.example", "email_verified": True}
        return claims


OFFICIALS = {
    o.username: o
    for o in (
        Official("canbo.vanhanh", "Lê Văn Hành", ("operator",)),
        Official("canbo.tiepnhan", "Phạm Thị Nhận", ("reception",)),
    )
}


class OidcSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SANDBOX_OIDC_", extra="ignore", frozen=True)

    # Log in whoever `login_hint` names without showing a page: tests and demos only.
    auto_login: bool = False
    code_ttl_s: int = 600
    token_ttl_s: int = 3600
    # How long the previous signing key stays in /jwks after a rotation.
    key_grace_s: float = 86400.0


@dataclass(frozen=True)
class Citizen:
    personal_id: str
    name: str
    acr: str

    @property
    def email(self) -> str:
        return contact_of(self.personal_id)[0]

    @property
    def phone_number(self) -> str | None:
        return contact_of(self.personal_id)[1]

    def claims(self, scope: str) -> dict[str, Any]:
        """The claims the granted scopes release (OIDC Core §5.4), for userinfo and ID token."""
        granted = scope.split()
        claims: dict[str, Any] = {"sub": self.personal_id, "name": self.name}
        if "email" in granted:
            claims |= {"email": self.email, "email_verified": True}
        if "phone" in granted and self.phone_number is not None:
            claims |= {"phone_number": self.phone_number, "phone_number_verified": True}
        return claims


def contact_of(personal_id: str) -> tuple[str, str | None]:
    """Synthetic, stable contact details for a citizen's e-ID profile: the same citizen
    always gets the same ones, and about a third have no phone, as real profiles do."""
    digest = hashlib.sha256(f"vneid-contact:{personal_id}".encode()).hexdigest()
    email = f"cd-{digest[:10]}@vneid.sandbox.example"
    number = int(digest[10:26], 16)
    phone = None if number % 3 == 0 else f"+849{number % 10**8:08d}"
    return email, phone


@dataclass
class Client:
    """A registered relying party; a secret for client_secret_basic, else its JWKS. Who
    logs in to it: citizens (the gateway's e-ID login) or officials (the console)."""

    client_id: str
    redirect_uris: list[str]
    client_secret: str | None = None
    jwks: dict[str, Any] | None = None
    people: Literal["citizens", "officials"] = "citizens"

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in (scope or "").split() if s in SCOPES)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        secret = self.client_secret or ""
        return bool(secret) and hmac.compare_digest(secret.encode(), client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        expected = "client_secret_basic" if self.client_secret else "private_key_jwt"
        return method == expected

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str
    code_challenge: str
    code_challenge_method: str
    citizen: Citizen | Official
    expires_at: float
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> str:
        return self.citizen.acr

    def get_amr(self) -> None:
        return None


class SigningKeys:
    """The current RS256 key plus retired ones, published until their grace period ends."""

    def __init__(self, grace_s: float) -> None:
        self._grace_s = grace_s
        self.current = self._generate()
        self._retired: list[tuple[RSAKey, float]] = []

    @staticmethod
    def _generate() -> RSAKey:
        return RSAKey.generate_key(2048, {"use": "sig", "alg": "RS256"}, auto_kid=True)

    def rotate(self) -> None:
        self._retired.append((self.current, time.time() + self._grace_s))
        self.current = self._generate()

    def public_jwks(self) -> dict[str, Any]:
        now = time.time()
        self._retired = [(key, until) for key, until in self._retired if until > now]
        keys = [self.current, *(key for key, _ in self._retired)]
        return {"keys": [key.as_dict(private=False) for key in keys]}
