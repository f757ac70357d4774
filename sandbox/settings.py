"""Configuration of the sandbox, read from SANDBOX_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SandboxSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SANDBOX_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    # Port 0 asks the OS for a free port, which lets tests run several sandboxes side by side.
    http_port: int = Field(default=8090, ge=0, le=65535)
    # Larger request bodies get 413 (FastAPI's own limit: the sandbox never imports core),
    # with room for a transfer that carries a whole dossier to a demo agency.
    http_max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    smtp_port: int = Field(default=2525, ge=0, le=65535)
    # How long the demo agency "works" on a step before reporting it done.
    agency_delay_s: float = Field(default=0.5, ge=0)
    # How long a callback keeps being retried while the gateway is unreachable or shedding
    # load: a day, as a back-office's outbox would (300 s lost outcomes in a chaos run on a
    # saturated machine, and their dossiers stayed stuck).
    callback_timeout_s: float = Field(default=86400.0, gt=0)
    log_level: str = "INFO"
    # Where the stand-ins keep what they received and still owe, so that a killed sandbox
    # restarts knowing it (sandbox/state.py); empty: kept in memory, lost with the process.
    state_dir: str = ""
    # Agencies report outcomes with an OAuth2 client-credentials token from this endpoint;
    # agency_clients maps an agency code to {"client_id": ..., "client_secret": ...} (JSON).
    agency_token_url: str = ""
    agency_clients: dict[str, dict[str, str]] = Field(default_factory=dict)
    # Standard Webhooks secret the demo agencies verify transfers with; empty: not checked.
    agency_secret: str = ""
    # AgencyInbox gRPC server of the agencies on the grpc channel; None: not served.
    agency_grpc_port: int | None = Field(default=None, ge=0, le=65535)
    # Kafka inbox topics of the agencies on the kafka channel, comma-separated; consumed
    # when kafka_bootstrap_servers is set.
    kafka_bootstrap_servers: str = ""
    agency_inbox_topics: str = "agency.000.00.15.H22.inbox"
    # The population registry stand-in (gRPC); 0 for a free port.
    registry_grpc_port: int = Field(default=50053, ge=0, le=65535)
    # The gateway's client at the e-ID stand-in (issuer {sandbox}/oidc): its redirect URIs,
    # comma-separated, and either a client secret or a file holding its public JWKS
    # (private_key_jwt). Without a client id the provider runs with no client registered.
    oidc_client_id: str = ""
    oidc_redirect_uris: str = ""
    oidc_client_secret: str = ""
    oidc_client_jwks_file: str = ""
    # The operators' console, a client for officials (secret, client_secret_basic): its
    # redirect URIs, comma-separated. Without a client id no console client is registered.
    oidc_console_client_id: str = ""
    oidc_console_client_secret: str = ""
    oidc_console_redirect_uris: str = ""
