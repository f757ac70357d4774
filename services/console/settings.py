"""The console's configuration, from the environment. The OpenID provider is configuration:
the sandbox's locally, the province's own single sign-on in production, unchanged code."""

from __future__ import annotations

from pydantic import Field

from core.settings import ServiceSettings


class ConsoleSettings(ServiceSettings):
    http_port: int = 8084
    # Where officials' browsers reach the console; the OIDC redirect URI is under it, and an
    # https URL makes the session cookie Secure.
    console_public_url: str = "http://127.0.0.1:8084"
    # The officials' OpenID provider (discovery at <issuer>/.well-known/openid-configuration)
    # and the console's client there (client_secret_basic).
    console_oidc_issuer: str = "http://127.0.0.1:8090/oidc"
    console_oidc_client_id: str = "operator-console"
    console_oidc_client_secret: str = ""
    console_oidc_scope: str = "openid profile"
    # The ID token claim with the official's roles (a list or a space-separated string); a
    # dotted path reaches a nested one (Keycloak: realm_access.roles).
    console_roles_claim: str = "roles"
    console_operator_role: str = "operator"
    # Signs the session cookie (HMAC-SHA256); at least 32 characters. Unset: a key made at
    # start, which logs every official out at each restart and is wrong for replicas.
    console_session_key: str = ""
    console_session_ttl_s: int = Field(default=8 * 3600, gt=0)
    # Where the console reads the gateway's APIs (with its own client credentials: AUTH_*).
    console_intake_url: str = "http://127.0.0.1:8080"
    console_routing_url: str = "http://127.0.0.1:8081"
    console_notify_url: str = "http://127.0.0.1:8082"
    console_identity_url: str = "http://127.0.0.1:8083"
    # A transfer still pending delivery this long is listed as stuck.
    console_stuck_after_s: float = Field(default=900.0, ge=0)
    console_api_timeout_s: float = Field(default=10.0, gt=0)

    @property
    def redirect_uri(self) -> str:
        return self.console_public_url.rstrip("/") + "/auth/callback"

    @property
    def services(self) -> dict[str, str]:
        return {
            "intake": self.console_intake_url,
            "routing": self.console_routing_url,
            "notify": self.console_notify_url,
            "identity": self.console_identity_url,
        }
