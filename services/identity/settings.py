from __future__ import annotations

from core.settings import ServiceSettings


class IdentitySettings(ServiceSettings):
    grpc_port: int = 50052
