from __future__ import annotations

from pathlib import Path

from pydantic import Field

from core.catalogue import DEFAULT_DIR
from core.settings import ServiceSettings


class RoutingSettings(ServiceSettings):
    http_port: int = 8081
    grpc_port: int = 50051
    # Where agencies report outcomes; sent with every transfer as its outcome_url.
    public_url: str = "http://127.0.0.1:8081"
    # Fills ${DEMO_AGENCY_BASE_URL} in catalogue/agencies.yaml (the sandbox back-office).
    demo_agency_base_url: str = "http://127.0.0.1:8090"
    # The trace UI's page of one trace, e.g. Zipkin's
    # "http://zipkin:9411/zipkin/traces/{trace_id}": a journey then links to its dossier's
    # trace. None: no link.
    trace_ui_url: str | None = None

    delivery_timeout_s: float = 10.0
    # A claimed transfer is retried after this if its worker died mid-delivery.
    delivery_lease_s: float = 30.0
    delivery_max_attempts: int = 8
    delivery_backoff_base_s: float = 1.0
    delivery_backoff_max_s: float = 300.0
    delivery_batch_size: int = 100
    delivery_poll_interval_s: float = 1.0
    # Each agency is a lane (core/lanes.py): at most this many of its transfers in flight,
    # so a slow agency cannot take every place; and at most this many altogether (each
    # holds its dossier in memory), 20 agencies hanging at once.
    delivery_agency_in_flight_max: int = Field(default=25, ge=1)
    delivery_in_flight_max: int = Field(default=500, ge=1)

    # Overdue: the apology's new appointment is this many working days after the lapse.
    apology_working_days: int = 2
    deadline_batch_size: int = 200
    # The scheduler sleeps until the earliest deadline, but at most this long (a deadline
    # armed by a replica that died is then still seen).
    deadline_max_sleep_s: float = 30.0
    # Demos and tests only: dossiers of these procedures (comma-separated codes) and their
    # steps are due this many seconds after routing takes them in, not in working days.
    deadline_override_s: float = 0.0
    deadline_override_procedures: str = ""
    # Where catalogue/*.yaml are read from at start and on POST /v1/catalogue/reload.
    catalogue_dir: Path = DEFAULT_DIR
    # How often a replica looks for a catalogue version loaded by another one.
    catalogue_refresh_s: float = 30.0
    # Fills ${DEMO_AGENCY_GRPC_TARGET}: the sandbox's AgencyInbox gRPC server.
    demo_agency_grpc_target: str = "127.0.0.1:50054"
    # A delivered transfer is sent again when unacknowledged this long after delivery, then
    # after twice as long each time (capped at the escalated pace)...
    delivery_ack_timeout_s: float = 300.0
    # ...and escalated to operators after this many re-deliveries without acknowledgement.
    delivery_ack_max_redeliveries: int = 3
    # ...and, escalated, still re-delivered at this slower pace until acknowledged.
    delivery_escalated_redelivery_s: float = 1800.0

    # The national portal's dossier sync endpoint; empty: status changes are kept, not sent.
    portal_sync_url: str = ""
    portal_sync_timeout_s: float = 10.0
    portal_sync_max_attempts: int = 10
    portal_sync_backoff_base_s: float = 1.0
    portal_sync_backoff_max_s: float = 600.0
    portal_sync_lease_s: float = 30.0
    portal_sync_batch_size: int = 100
    portal_sync_poll_interval_s: float = 1.0
