"""12-factor configuration: every setting comes from the environment (or its default).

Each service subclasses ServiceSettings with its own fields; the standard OTEL_*
variables are read by the OpenTelemetry SDK itself and are not repeated here.
"""

from __future__ import annotations

from datetime import date

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.limits import HttpLimits

_HTTP = HttpLimits()


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # SQLite is the embedded default for `make run`; PostgreSQL for real deployments.
    database_url: str = "sqlite+aiosqlite:///var/gateway.db"
    database_pool_size: int = 10
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # Every dossier lifecycle event, keyed by dossier code so a dossier's events stay ordered.
    dossier_events_topic: str = "dossier.events"
    # Events a consumer could not process go here with the reason, never silently dropped.
    dead_letter_suffix: str = ".dlq"

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # Admission control (core/admission.py): requests served at once, and how long one more
    # may wait for a place before it is answered 503 with Retry-After.
    http_max_in_flight: int = 128
    http_queue_budget_s: float = 1.0
    # Connections the kernel holds before they are accepted (capped by net.core.somaxconn):
    # a burst beyond it is dropped and retried by the client's TCP a second later or more.
    http_backlog: int = 4096
    # Where clients reach this service (behind a proxy, its public URL): the OpenAPI
    # document's `servers`. Empty: http://<HTTP_HOST>:<HTTP_PORT>.
    http_public_url: str = ""
    # What one HTTP request may be (core.limits.HttpLimits says why these defaults): a larger
    # body is refused with 413, deeper JSON with 422, larger or more headers with 431, a head
    # or body arriving too slowly with 408 — all before any handler runs.
    http_max_body_bytes: int = Field(default=_HTTP.max_body_bytes, gt=0)
    http_max_json_depth: int = Field(default=_HTTP.max_json_depth, gt=0)
    http_max_header_bytes: int = Field(default=_HTTP.max_header_bytes, gt=0)
    http_max_headers: int = Field(default=_HTTP.max_headers, gt=0)
    http_header_timeout_s: float = Field(default=_HTTP.header_timeout_s, gt=0)
    http_body_timeout_s: float = Field(default=_HTTP.body_timeout_s, gt=0)

    outbox_batch_size: int = 500
    # The relay is woken on every commit; polling only catches rows of crashed peers.
    outbox_poll_interval_s: float = 1.0
    # Kafka producer batching: a little linger buys large batches at high load.
    kafka_linger_ms: int = 5
    consumer_max_records: int = 500
    # Offsets are committed at most this often (and within it after the last batch): every
    # handler claims its event ids (core/inbox.py), so what a crash makes Kafka hand over
    # again changes nothing, and one commit a batch cost the broker a request per batch.
    consumer_commit_interval_ms: int = Field(default=500, ge=0)
    # A consumer takes no more events in while a work queue it feeds has this many rows due
    # (0: never holds): the backlog then waits in Kafka, where intake's gate sees it.
    consumer_max_due_rows: int = Field(default=2000, ge=0)
    log_level: str = "INFO"
    # How long a request waits for the schema at start-up before answering 503.
    schema_wait_s: float = 5.0
    # Maintenance mode (core/maintenance.py): how often a replica re-reads the switch from
    # the database, and the Retry-After of writes refused meanwhile.
    maintenance_cache_s: float = Field(default=2.0, ge=0)
    maintenance_retry_after_s: int = Field(default=60, ge=1)
    # How often the queue gauges (gateway_queue_depth...) are counted from the database.
    queue_metrics_interval_s: float = Field(default=15.0, gt=0)

    # Agency access tokens: issued by identity (the issuer), verified offline by every service
    # against identity's JWKS (default <issuer>/.well-known/jwks.json).
    auth_issuer: str = "http://127.0.0.1:8083"
    auth_audience: str = "dossier-gateway"
    auth_jwks_url: str = ""
    # A fixed JWKS document (JSON) instead of fetching it: services run in-process by tests.
    auth_jwks: str = ""
    auth_leeway_s: float = 30.0
    # This service's own client credentials, for its calls to other services.
    auth_client_id: str = ""
    auth_client_secret: str = ""
    # A province's own days off and make-up working days, beyond Vietnam's public holidays
    # (JSON lists of dates, e.g. CALENDAR_EXTRA_DAYS_OFF='["2026-12-31"]').
    calendar_extra_days_off: tuple[date, ...] = ()
    calendar_extra_working_days: tuple[date, ...] = ()

    @property
    def dead_letter_topic(self) -> str:
        return self.dossier_events_topic + self.dead_letter_suffix

    @property
    def openapi_server_url(self) -> str:
        if self.http_public_url:
            return self.http_public_url.rstrip("/")
        host = "localhost" if self.http_host in ("0.0.0.0", "::", "") else self.http_host
        return f"http://{host}:{self.http_port}"

    @property
    def http_limits(self) -> HttpLimits:
        return HttpLimits(
            max_body_bytes=self.http_max_body_bytes,
            max_json_depth=self.http_max_json_depth,
            max_header_bytes=self.http_max_header_bytes,
            max_headers=self.http_max_headers,
            header_timeout_s=self.http_header_timeout_s,
            body_timeout_s=self.http_body_timeout_s,
        )
