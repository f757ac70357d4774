"""Where the CLI finds the gateway and its operator credentials: GATEWAY_* environment
variables over a TOML file (--config, default ~/.config/gateway/config.toml) over defaults
for the local stack (`make run`)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from core.auth import token_url

DEFAULT_CONFIG = Path("~/.config/gateway/config.toml")
Service = Literal["intake", "routing", "notify", "identity"]
SERVICES: tuple[Service, ...] = ("intake", "routing", "notify", "identity")


class ConfigError(Exception):
    """The configuration cannot be used: a usage error (exit code 2)."""


class CliConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="forbid", frozen=True)

    # An operator client of identity (catalogue/agency_clients.yaml: gateway-operator).
    client_id: str = "gateway-operator"
    client_secret: SecretStr = SecretStr("")
    # Default: <identity_url>/oauth2/token.
    token_url: str = ""
    intake_url: str = "http://127.0.0.1:8080"
    routing_url: str = "http://127.0.0.1:8081"
    notify_url: str = "http://127.0.0.1:8082"
    identity_url: str = "http://127.0.0.1:8083"
    timeout_s: float = Field(default=30.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file's values, which come in as init arguments.
        return (env_settings, init_settings)

    def url(self, service: Service) -> str:
        base: str = getattr(self, f"{service}_url")
        return base.rstrip("/")

    @property
    def tokens_at(self) -> str:
        return self.token_url or token_url(self.identity_url)


def load_config(path: Path | None = None) -> CliConfig:
    """The file at `path` (it must exist), else the default file if there is one."""
    file = (path or DEFAULT_CONFIG).expanduser()
    values: dict[str, Any] = {}
    if file.exists():
        try:
            values = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    elif path is not None:
        raise ConfigError(f"{file}: no such configuration file")
    try:
        return CliConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"configuration ({file} or GATEWAY_*): {problems}") from None
