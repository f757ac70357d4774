from __future__ import annotations

from core.settings import ServiceSettings


class IdentitySettings(ServiceSettings):
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
    # catalogue/agency_clients.yaml when empty.
    agency_clients_file: str = ""
