"""Demo credentials of the local stack: agency clients, their keys, identity's signing key.

Generated once into the stack's var_dir and reused on the next start, so a token recipe from
the README keeps working. Identity gets only hashes and public keys (environment variables
named in catalogue/agency_clients.yaml); the secrets are for the sandbox agencies, the
gateway's own services and whoever calls the APIs by hand.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import httpx
import yaml
from joserfc import jwt
from joserfc.jwk import RSAKey

from services.identity.clients import CLIENTS_FILE, hash_secret

FILE = "agency_clients.json"
SIGNING_KEY = "identity-signing-key.pem"


@dataclass(frozen=True)
class DemoClient:
    client_id: str
    agency: str
    secret: str
    # The agency's private key for private_key_jwt, when the catalogue registers a JWKS.
    key_file: str | None


@dataclass
class DemoCredentials:
    directory: Path
    clients: dict[str, DemoClient]
    _identity_env: dict[str, str]
    _tokens: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def seed(cls, directory: Path) -> DemoCredentials:
        directory.mkdir(parents=True, exist_ok=True)
        signing_key = directory / SIGNING_KEY
        if not signing_key.exists():
            _write_private(signing_key, _new_key())
        saved = directory / FILE
        known: dict[str, Any] = json.loads(saved.read_text()) if saved.exists() else {}
        catalogue = yaml.safe_load(CLIENTS_FILE.read_text(encoding="utf-8"))["clients"]
        clients: dict[str, DemoClient] = {}
        env = {"TOKEN_SIGNING_KEY_FILE": str(signing_key)}
        for entry in catalogue:
            client_id = entry["client_id"]
            previous = known.get(client_id, {})
            secret = previous.get("secret") or _random_secret()
            key_file = previous.get("key_file")
            if entry.get("jwks") and not key_file:
                key_file = str(directory / f"{client_id}.key.pem")
                _write_private(Path(key_file), _new_key())
            clients[client_id] = DemoClient(client_id, entry["agency"], secret, key_file)
            env[_variable(entry["secret_hash"])] = hash_secret(secret)
            if key_file:
                key = _read_key(key_file)
                env[_variable(entry["jwks"])] = json.dumps({"keys": [key.as_dict(private=False)]})
        saved.write_text(json.dumps({c: vars(v) for c, v in clients.items()}, indent=2))
        saved.chmod(0o600)
        return cls(directory, clients, env)

    @property
    def file(self) -> Path:
        return self.directory / FILE

    def identity_env(self) -> dict[str, str]:
        return dict(self._identity_env)

    def client_env(self, client_id: str) -> dict[str, str]:
        """AUTH_CLIENT_* for a gateway service that calls another with its own token."""
        client = self.clients[client_id]
        return {"AUTH_CLIENT_ID": client.client_id, "AUTH_CLIENT_SECRET": client.secret}

    def sandbox_agencies(self) -> str:
        """SANDBOX_AGENCY_CLIENTS: each demo agency's client, to report outcomes with."""
        return json.dumps(
            {
                c.agency: {"client_id": c.client_id, "client_secret": c.secret}
                for c in self.clients.values()
                if c.agency != "GATEWAY"
            }
        )

    def client_for(self, agency_code: str) -> DemoClient:
        return next(c for c in self.clients.values() if c.agency == agency_code)

    def token(self, issuer: str, client_id: str, scope: str = "") -> str:
        """A token for client_id (client secret), cached until shortly before it expires."""
        with self._lock:
            cached = self._tokens.get((client_id, scope))
            if cached and cached[1] > time.monotonic():
                return cached[0]
            client = self.clients[client_id]
            form = {"grant_type": "client_credentials"} | ({"scope": scope} if scope else {})
            answer = httpx.post(
                issuer.rstrip("/") + "/oauth2/token",
                data=form,
                auth=(client.client_id, client.secret),
                timeout=30,
            )
            answer.raise_for_status()
            body = answer.json()
            token = str(body["access_token"])
            self._tokens[(client_id, scope)] = (token, time.monotonic() + body["expires_in"] / 2)
            return token

    def assertion(self, issuer: str, client_id: str) -> str:
        """A private_key_jwt client assertion (RFC 7523) signed with the client's own key."""
        client = self.clients[client_id]
        assert client.key_file, f"{client_id} has no key"
        key = _read_key(client.key_file)
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": issuer.rstrip("/") + "/oauth2/token",
            "iat": now,
            "exp": now + 60,
            "jti": _random_secret(),
        }
        return jwt.encode({"alg": "RS256", "kid": key.kid or ""}, claims, key)


def _variable(template: str) -> str:
    (name,) = Template(template).get_identifiers()
    return name


def _read_key(path: str) -> RSAKey:
    key = RSAKey.import_key(Path(path).read_bytes())
    key.ensure_kid()
    return key


def _new_key() -> RSAKey:
    return RSAKey.generate_key(2048, {"use": "sig", "alg": "RS256"}, auto_kid=True)


def _write_private(path: Path, key: RSAKey) -> None:
    path.write_bytes(key.as_pem(private=True))
    path.chmod(0o600)


def _random_secret() -> str:
    return secrets.token_urlsafe(32)
