"""Routing's CatalogueService stood in, for services run in-process by the unit tests: it
serves catalogue/*.yaml as version 1 (and older versions a test adds), without a token."""

from __future__ import annotations

from concurrent import futures
from pathlib import Path

import grpc

from core.catalogue import DEFAULT_DIR, Catalogue, catalogue_digest, parse_catalogue
from core.catalogue_client import snapshot_of
from gateway.v1 import catalogue_pb2, catalogue_pb2_grpc


class StandInCatalogue(catalogue_pb2_grpc.CatalogueServiceServicer):
    def __init__(self, directory: Path = DEFAULT_DIR) -> None:
        self.versions = {1: snapshot_of(parse_catalogue(directory), 1, catalogue_digest(directory))}
        self.current = 1
        # Versions asked for, in order (None: the current one).
        self.asked: list[int | None] = []
        self._server: grpc.Server | None = None
        self.target = ""

    def publish(self, catalogue: Catalogue) -> int:
        """Load `catalogue` as the next version, as a reload in routing does."""
        self.current += 1
        self.versions[self.current] = snapshot_of(catalogue, self.current, f"v{self.current}")
        return self.current

    def GetCatalogue(
        self,
        request: catalogue_pb2.GetCatalogueRequest,
        context: grpc.ServicerContext,
    ) -> catalogue_pb2.CatalogueSnapshot:
        version = request.version if request.HasField("version") else None
        self.asked.append(version)
        snapshot = self.versions.get(self.current if version is None else version)
        if snapshot is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no catalogue version {version}")
        assert snapshot is not None
        return snapshot

    def start(self) -> str:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        catalogue_pb2_grpc.add_CatalogueServiceServicer_to_server(self, self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.target = f"127.0.0.1:{port}"
        return self.target

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None
