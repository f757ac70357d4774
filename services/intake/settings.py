from __future__ import annotations

from core.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    http_port: int = 8080
    # Routing answers "where is this dossier now" over gRPC.
    routing_grpc_target: str = "127.0.0.1:50051"
    journey_timeout_s: float = 2.0
    # Identity resolves e-ID citizen sessions and hands over consented registry data.
    identity_grpc_target: str = "127.0.0.1:50052"
    identity_timeout_s: float = 3.0
