"""Agency systems allowed to ask identity for access tokens, and what each may call.

They are data (catalogue/agency_clients.yaml): a client id, the agency it acts for, the
scopes it may be granted, and where its credentials come from. Credentials are never in the
file: `${VARIABLE}`s name environment variables holding a client secret's hash (we never
store the secret itself) and/or the agency's public JWKS for private_key_jwt (RFC 7523).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml

from core.auth import check_scopes
from core.catalogue import DEFAULT_DIR

log = logging.getLogger(__name__)
CLIENTS_FILE = DEFAULT_DIR / "agency_clients.yaml"
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
# Identity's own client (services/identity/own_token.py): it signs its token itself, and the
# token endpoint must never issue one, so no file may register it.
OWN_CLIENT_ID = "gateway-identity"
KEY_METHOD = "private_key_jwt"
# scrypt at interactive cost: a token request pays ~50 ms once per token lifetime.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt$" + "$".join(base64.b64encode(v).decode() for v in (salt, digest))


def secret_matches(secret: str, stored: str) -> bool:
    scheme, _, rest = stored.partition("$")
    salt_b64, _, digest_b64 = rest.partition("$")
    if scheme != "scrypt" or not salt_b64 or not digest_b64:
        return False
    salt, digest = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
    candidate = hashlib.scrypt(secret.encode(), salt=salt, dklen=len(digest), **_SCRYPT)
    return hmac.compare_digest(candidate, digest)


@dataclass(frozen=True)
class AgencyClient:
    """A registered agency system, as authlib's ClientMixin wants it."""

    client_id: str
    agency_code: str
    scopes: frozenset[str]
    secret_hash: str | None = None
    jwks: Mapping[str, Any] | None = None

    @property
    def auth_methods(self) -> tuple[str, ...]:
        return (SECRET_METHODS if self.secret_hash else ()) + ((KEY_METHOD,) if self.jwks else ())

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return ""

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in (scope or "").split() if s in self.scopes)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return bool(self.secret_hash) and secret_matches(client_secret, self.secret_hash or "")

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in self.auth_methods

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class ClientsError(ValueError):
    pass


def load_clients(
    path: Path = CLIENTS_FILE, env: Mapping[str, str] | None = None
) -> dict[str, AgencyClient]:
    """Clients whose credentials are configured; the others are skipped with a warning."""
    env = os.environ if env is None else env
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    clients: dict[str, AgencyClient] = {}
    for entry in raw.get("clients", []):
        client = _client(entry, env)
        if client.client_id == OWN_CLIENT_ID:
            raise ClientsError(f"client id {OWN_CLIENT_ID} is identity's own: not for a file")
        if client.client_id in clients:
            raise ClientsError(f"client {client.client_id} is listed twice")
        if not client.auth_methods:
            log.warning("client %s has no credential configured: disabled", client.client_id)
            continue
        clients[client.client_id] = client
    return clients


def _client(entry: Mapping[str, Any], env: Mapping[str, str]) -> AgencyClient:
    try:
        client_id, agency, scopes = entry["client_id"], entry["agency"], entry["scopes"]
    except KeyError as exc:
        raise ClientsError(f"client entry {entry!r} lacks {exc}") from None
    try:
        check_scopes(scopes)
    except ValueError as exc:
        raise ClientsError(f"client {client_id}: {exc}") from None
    secret_hash = _resolve(entry.get("secret_hash"), env)
    jwks = _resolve(entry.get("jwks"), env)
    try:
        keys = json.loads(jwks) if jwks else None
    except json.JSONDecodeError as exc:
        raise ClientsError(f"client {client_id}: its JWKS is not JSON: {exc}") from None
    return AgencyClient(
        client_id=str(client_id),
        agency_code=str(agency),
        scopes=frozenset(scopes),
        secret_hash=secret_hash or None,
        jwks=keys,
    )


def _resolve(value: str | None, env: Mapping[str, str]) -> str:
    if not value:
        return ""
    template = Template(value)
    if any(not env.get(name) for name in template.get_identifiers()):
        return ""  # an unset variable leaves this credential out, not the whole file
    return template.substitute(env)
