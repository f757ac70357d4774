"""Reads the national population registry over gRPC: one citizen's residence, for a stated
purpose and on behalf of a named agency (the registry keeps its own trail of both)."""

from __future__ import annotations

import grpc

from core.grpc import LazyStub
from core.personal_id import PersonalId
from gateway.v1 import registry_pb2, registry_pb2_grpc


class RegistryUnavailable(Exception):
    pass


class CitizenNotRegistered(Exception):
    pass


class RegistryClient:
    def __init__(self, target: str, timeout_s: float) -> None:
        self._target = target
        self._timeout_s = timeout_s
        self._stub = LazyStub(target, registry_pb2_grpc.PopulationRegistryStub)

    async def close(self) -> None:
        await self._stub.close()

    async def residence(
        self, personal_id: PersonalId, purpose: str, agency: str, dossier_code: str = ""
    ) -> registry_pb2.Residence:
        request = registry_pb2.GetResidenceRequest(
            personal_id=personal_id.value,
            purpose=purpose,
            requesting_agency=agency,
            dossier_code=dossier_code,
        )
        try:
            return await self._stub().GetResidence(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise CitizenNotRegistered from None
            raise RegistryUnavailable(str(exc.code())) from None
