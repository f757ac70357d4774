from __future__ import annotations

from pydantic import Field

from core.catalogue_client import CatalogueSettings
from core.limits import JsonShape
from core.settings import ServiceSettings


class IntakeSettings(ServiceSettings, CatalogueSettings):
    http_port: int = 8080
    # Routing answers "where is this dossier now" over gRPC (ROUTING_GRPC_TARGET), and
    # serves the catalogue (core/catalogue_client.py).
    journey_timeout_s: float = 2.0
    # Identity resolves e-ID citizen sessions and hands over consented registry data.
    identity_grpc_target: str = "127.0.0.1:50052"
    identity_timeout_s: float = 3.0
    # A dossier's form_data travels in its events (protobuf Struct, whose parsers stop at 100
    # levels of nesting) and to every agency of its journey: bounded before anything reads it.
    form_data_max_depth: int = Field(default=8, gt=0, le=32)
    # Keys of every object plus items of every array, at every depth.
    form_data_max_entries: int = Field(default=256, gt=0)
    # Characters of any key or string value.
    form_data_max_string: int = Field(default=4000, gt=0)
    # The whole form as UTF-8 JSON.
    form_data_max_bytes: int = Field(default=64 * 1024, gt=0)
    # Back-pressure (core/backlog.py): submissions are refused 503 while the slowest of these
    # consumer groups of the dossier events topic is more than this many seconds of work
    # behind (0: never). A backlog under the floor of events is in-flight batches, not one.
    pipeline_groups: tuple[str, ...] = ("routing", "notify", "portal-sync")
    pipeline_max_backlog_s: float = Field(default=120.0, ge=0)
    pipeline_backlog_floor_events: int = Field(default=1000, ge=0)
    pipeline_backlog_interval_s: float = Field(default=2.0, gt=0)
    # The longest Retry-After a refused submission is given: longer, and the pipeline runs
    # out of work while the clients wait.
    pipeline_retry_after_max_s: int = Field(default=10, ge=1)

    @property
    def form_data_shape(self) -> JsonShape:
        return JsonShape(
            max_depth=self.form_data_max_depth,
            max_entries=self.form_data_max_entries,
            max_string=self.form_data_max_string,
            max_bytes=self.form_data_max_bytes,
        )
