"""Configuration of the sandbox, read from SANDBOX_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SandboxSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SANDBOX_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    # Port 0 asks the OS for a free port, which lets tests run several sandboxes side by side.
    http_port: int = Field(default=8090, ge=0, le=65535)
    smtp_port: int = Field(default=2525, ge=0, le=65535)
    # How long the demo agency "works" on a step before reporting it done.
    agency_delay_s: float = Field(default=0.5, ge=0)
    # How long a callback keeps being retried while the gateway is unreachable.
    callback_timeout_s: float = Field(default=300.0, gt=0)
    log_level: str = "INFO"
    # The population registry stand-in (gRPC); 0 for a free port.
    registry_grpc_port: int = Field(default=50053, ge=0, le=65535)
    # The gateway's client at the e-ID stand-in (issuer {sandbox}/oidc): its redirect URIs,
    # comma-separated, and either a client secret or a file holding its public JWKS
    # (private_key_jwt). Without a client id the provider runs with no client registered.
    oidc_client_id: str = ""
    oidc_redirect_uris: str = ""
    oidc_client_secret: str = ""
    oidc_client_jwks_file: str = ""
