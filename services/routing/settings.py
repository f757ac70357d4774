from __future__ import annotations

from core.settings import ServiceSettings


class RoutingSettings(ServiceSettings):
    http_port: int = 8081
    grpc_port: int = 50051
    # Where agencies report outcomes; sent with every transfer as its outcome_url.
    public_url: str = "http://127.0.0.1:8081"
    # Fills ${DEMO_AGENCY_BASE_URL} in catalogue/agencies.yaml (the sandbox back-office).
    demo_agency_base_url: str = "http://127.0.0.1:8090"

    delivery_timeout_s: float = 10.0
    # A claimed transfer is retried after this if its worker died mid-delivery.
    delivery_lease_s: float = 30.0
    delivery_max_attempts: int = 8
    delivery_backoff_base_s: float = 1.0
    delivery_backoff_max_s: float = 300.0
    delivery_batch_size: int = 100
    delivery_poll_interval_s: float = 1.0
