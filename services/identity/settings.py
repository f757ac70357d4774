from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from core.catalogue_client import CatalogueSettings
from core.settings import ServiceSettings
from services.identity.eid_policy import DEFAULT_ACR_LEVELS, DEFAULT_ACR_VALUES


# Which procedures need residence, and at what assurance, comes from routing's catalogue.
class IdentitySettings(ServiceSettings, CatalogueSettings):
    http_port: int = 8083
    grpc_port: int = 50052

    # Agency access tokens: identity is the issuer (auth_issuer) and signs them with this
    # RSA key (PEM text or a file). Unset: a key is generated at start (local runs only).
    token_signing_key: str = ""
    token_signing_key_file: str = ""
    # Set where several replicas run: they must all sign with, and publish, the same key.
    token_signing_key_required: bool = False
    # The previous key, still published (not used) after a rotation until tokens it signed
    # have expired; remove it from the settings after access_token_ttl_s.
    token_retired_key_file: str = ""
    access_token_ttl_s: int = 300
    # A client asking again for the same scopes within this many seconds gets the token it
    # was just given, with the lifetime it has left (a storm costs one signature a client).
    access_token_reuse_s: float = 10.0
    # What checking client secrets may cost (services/identity/token_guard.py): hashing
    # threads, how many checks may wait for one and how long, how long a verified secret
    # is remembered, failed checks allowed per client id and per address (a burst, then
    # so many a minute), hashes in flight per client id and per address, and how long
    # readiness stays 503 after a request was shed.
    token_hash_workers: int = 2
    token_hash_queue: int = 64
    token_hash_queue_wait_s: float = 2.0
    token_verified_secret_ttl_s: float = 600.0
    token_client_failures_burst: int = 20
    token_client_failures_per_min: float = 10.0
    token_address_failures_burst: int = 10
    token_address_failures_per_min: float = 10.0
    token_client_in_flight: int = 2
    token_address_in_flight: int = 8
    token_saturation_window_s: float = 5.0
    # catalogue/agency_clients.yaml when empty.
    agency_clients_file: str = ""
    # The national e-ID provider (OpenID Connect): only its issuer, our client id and our
    # credentials are configured; endpoints and keys come from discovery.
    eid_issuer: str = "http://127.0.0.1:8090/oidc"
    eid_client_id: str = "dossier-gateway"
    # client_secret_basic with EID_CLIENT_SECRET, or private_key_jwt with a private JWK file.
    eid_client_secret: SecretStr = SecretStr("")
    eid_client_key_file: str = ""
    # Unset: private_key_jwt with EID_CLIENT_KEY_FILE, else client_secret_basic.
    eid_token_auth_method: (
        Literal["client_secret_basic", "client_secret_post", "private_key_jwt"] | None
    ) = None
    # The ID-token (else userinfo) claim holding the personal ID; `a.b` reaches a nested one.
    eid_personal_id_claim: str = "sub"
    # JSON: the provider's `acr` values and the assurance level (1 or 2) each stands for;
    # an acr not listed refuses the login. Replaces the default map (VNeID and eIDAS).
    eid_acr_levels: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_ACR_LEVELS))
    # JSON: what `/v1/citizen/login?acr=<level>` sends as acr_values, per level.
    eid_acr_values: dict[int, str] = Field(default_factory=lambda: dict(DEFAULT_ACR_VALUES))
    # The provider's keys are fetched again after this; a known kid that fails to verify
    # fetches them again at most once in eid_jwks_refetch_interval_s.
    eid_jwks_max_age_s: float = 300.0
    eid_jwks_refetch_interval_s: float = 10.0
    eid_redirect_uri: str = "http://127.0.0.1:8083/v1/citizen/callback"
    eid_scope: str = "openid profile"
    # Also asked for when the provider supports them: the profile's contact details.
    eid_optional_scope: str = "email phone"
    # Comma-separated allow-list of ID-token algorithms (asymmetric only).
    eid_algorithms: str = "RS256,PS256,ES256"
    eid_leeway_s: int = 60
    # A login must come back from the provider within this time.
    eid_login_ttl_s: int = 600
    citizen_session_ttl_s: int = 1800
    # Set when identity is served over HTTPS (always outside the local stack).
    citizen_cookie_secure: bool = False

    # The national population registry (gRPC).
    registry_grpc_target: str = "127.0.0.1:50053"
    registry_timeout_s: float = 3.0
    # HMAC key (hex) that turns personal IDs into pseudonyms in the access log: at least
    # 16 bytes, kept secret and stable (a new key orphans every logged read).
    pseudonym_key: SecretStr = SecretStr("")
