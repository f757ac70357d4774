"""The gRPC servers answer the standard health and reflection services over real sockets,
RoutingService returns a proper status for an unknown dossier, and CatalogueService serves
routing's catalogue to holders of catalogue:read only."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from core.auth_grpc import bearer_metadata
from devstack.stack import HOST, Stack
from gateway.v1 import catalogue_pb2, catalogue_pb2_grpc, routing_pb2, routing_pb2_grpc
from tests.support.flows import client_token


def intake_token(stack: Stack) -> str:
    return client_token(stack, "gateway-intake")


def listed_services(target: str) -> set[str]:
    with grpc.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answer = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5)))
    return {s.name for s in answer.list_services_response.service}


@pytest.mark.parametrize(
    ("port_field", "expected"),
    [
        ("identity_grpc", {"grpc.health.v1.Health", "gateway.v1.CitizenIdentity"}),
        (
            "routing_grpc",
            {"grpc.health.v1.Health", "gateway.v1.RoutingService", "gateway.v1.CatalogueService"},
        ),
    ],
)
def test_health_and_reflection(stack: Stack, port_field: str, expected: set[str]) -> None:
    target = f"{HOST}:{getattr(stack.ports, port_field)}"
    assert expected | {"grpc.reflection.v1alpha.ServerReflection"} <= listed_services(target)
    with grpc.insecure_channel(target) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_unknown_dossier_is_not_found(stack: Stack) -> None:
    with grpc.insecure_channel(f"{HOST}:{stack.ports.routing_grpc}") as channel:
        stub = routing_pb2_grpc.RoutingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetJourney(
                routing_pb2.GetJourneyRequest(dossier_code="nope"),
                timeout=5,
                metadata=bearer_metadata(intake_token(stack)),
            )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_catalogue_is_served_to_catalogue_readers_only(stack: Stack) -> None:
    with grpc.insecure_channel(f"{HOST}:{stack.ports.routing_grpc}") as channel:
        stub = catalogue_pb2_grpc.CatalogueServiceStub(channel)
        notify = bearer_metadata(client_token(stack, "gateway-notify"))
        current = stub.GetCatalogue(catalogue_pb2.GetCatalogueRequest(), timeout=5, metadata=notify)
        assert current.version >= 1
        assert len(current.digest) == 64
        marital = next(p for p in current.procedures if p.code == "HT.XNTTHN")
        assert (list(marital.needs), marital.min_assurance) == (["residence"], 2)
        same = stub.GetCatalogue(
            catalogue_pb2.GetCatalogueRequest(version=current.version), timeout=5, metadata=notify
        )
        assert same.digest == current.digest
        with pytest.raises(grpc.RpcError) as unknown:
            stub.GetCatalogue(
                catalogue_pb2.GetCatalogueRequest(version=10_000), timeout=5, metadata=notify
            )
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        journeys_only = bearer_metadata(client_token(stack, "gateway-intake", "journeys:read"))
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetCatalogue(
                catalogue_pb2.GetCatalogueRequest(), timeout=5, metadata=journeys_only
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
