from __future__ import annotations

from core.settings import ServiceSettings


class IdentitySettings(ServiceSettings):
    http_port: int = 8083
    grpc_port: int = 50052
