"""A traced channel to several replicas spreads its calls over all of them, and carries on
with the others when one goes away (core/grpc.py, round_robin)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.grpc import GrpcServer, traced_channel
from devstack.replicas import grpc_target


class Tally(grpc.aio.ServerInterceptor):
    """Counts the calls one replica takes."""

    def __init__(self, name: str, calls: Counter[str]) -> None:
        self._name, self._calls = name, calls

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        self._calls[self._name] += 1
        return await continuation(handler_call_details)


async def test_calls_go_to_every_replica_and_on_when_one_stops() -> None:
    calls: Counter[str] = Counter()
    replicas = [GrpcServer([], [], [Tally(name, calls)]) for name in ("first", "second")]
    ports = [await server.start("127.0.0.1", 0) for server in replicas]
    channel = traced_channel(grpc_target("127.0.0.1", ports))
    health = health_pb2_grpc.HealthStub(channel)
    try:
        for _ in range(10):
            await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert calls["first"] > 0, calls
        assert calls["second"] > 0, calls

        await replicas[0].stop(grace=0)
        before = calls["second"]
        for _ in range(10):
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert calls["second"] == before + 10
    finally:
        await channel.close()
        for server in replicas:
            await server.stop(grace=0)
