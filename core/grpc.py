"""gRPC servers with the standard health and reflection services, and traced channels.

The OpenTelemetry interceptors carry `traceparent` in gRPC metadata both ways.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor

# The instrumentation has no type hints; these are its documented results.
_server_tracing = cast(Callable[[], grpc.aio.ServerInterceptor], aio_server_interceptor)
_client_tracing = cast(Callable[[], list[grpc.aio.ClientInterceptor]], aio_client_interceptors)

Registration = Callable[[grpc.aio.Server], None]
SERVING = health_pb2.HealthCheckResponse.SERVING
S = TypeVar("S")


class GrpcServer:
    """Built in start(): a grpc.aio server belongs to the event loop it was created on."""

    def __init__(
        self,
        registrations: Sequence[Registration],
        service_names: Sequence[str],
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        self._registrations = list(registrations)
        self._names = list(service_names)
        # After tracing, so that refused calls are traced too (e.g. core.auth_grpc).
        self._interceptors = list(interceptors)
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None

    async def start(self, host: str, port: int) -> int:
        tracing = _server_tracing()
        server = grpc.aio.server(interceptors=[tracing, *self._interceptors])
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        for register in self._registrations:
            register(server)
        reflection.enable_server_reflection(
            [*self._names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        bound = server.add_insecure_port(f"{host}:{port}")
        await server.start()
        self._server = server
        for name in ["", *self._names]:
            await self._health.set(name, SERVING)
        return bound

    async def stop(self, grace: float = 5.0) -> None:
        if self._server is None or self._health is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        self._server = None


# Calls spread over every address the target resolves to (all replicas behind a DNS name,
# or "ipv4:10.0.0.1:50051,10.0.0.2:50051"), and a replica that goes away is skipped; gRPC's
# default (pick_first) would send everything to one replica until it fails.
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def traced_channel(target: str) -> grpc.aio.Channel:
    interceptors = _client_tracing()
    options = [("grpc.service_config", ROUND_ROBIN)]
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)


class LazyStub(Generic[S]):
    """A client stub on a traced channel made on first use: a grpc.aio channel belongs to the
    running event loop, and a service is composed before its loop starts."""

    def __init__(self, target: str, stub: Callable[[grpc.aio.Channel], S]) -> None:
        self._target = target
        self._make = stub
        self._channel: grpc.aio.Channel | None = None
        self._stub: S | None = None

    def __call__(self) -> S:
        if self._stub is None:
            self._channel = traced_channel(self._target)
            self._stub = self._make(self._channel)
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = self._stub = None
