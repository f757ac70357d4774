"""core.auth_grpc: bearer tokens in gRPC metadata, one scope per method, fail closed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from core.auth import TokenVerifier
from core.auth_grpc import AuthInterceptor, bearer_metadata, current_principal
from tests.support.tokens import AUDIENCE, ISSUER, TestIssuer

AGENCY = "000.21.31.H22"
ISSUING = TestIssuer()


async def who(request: bytes, context: Any) -> bytes:
    principal = current_principal()
    assert principal is not None
    return json.dumps([principal.agency_code, principal.client_id]).encode()


def raw(data: bytes) -> bytes:
    return data


@pytest.fixture
async def target() -> AsyncIterator[str]:
    verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, static_jwks=ISSUING.jwks)
    interceptor = AuthInterceptor(verifier, {"/test.Echo/Who": "journeys:read"})
    server = grpc.aio.server(interceptors=[interceptor])
    handler = grpc.unary_unary_rpc_method_handler(who, raw, raw)
    unmapped = grpc.unary_unary_rpc_method_handler(who, raw, raw)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Echo", {"Who": handler, "Other": unmapped})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def call(target: str, method: str, metadata: Any = None) -> bytes:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = channel.unary_unary(method, request_serializer=raw, response_deserializer=raw)
        answer: bytes = await stub(b"", metadata=metadata, timeout=5)
        return answer


async def code_of(target: str, method: str, metadata: Any = None) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(target, method, metadata)
    return raised.value.code()


async def test_the_servicer_sees_the_verified_agency(target: str) -> None:
    token = ISSUING.token(AGENCY, "journeys:read")
    answer = await call(target, "/test.Echo/Who", bearer_metadata(token))
    assert json.loads(answer) == [AGENCY, f"client-of-{AGENCY}"]


async def test_no_token_or_a_bad_one_is_unauthenticated(target: str) -> None:
    assert await code_of(target, "/test.Echo/Who") == grpc.StatusCode.UNAUTHENTICATED
    forged = TestIssuer().token(AGENCY, "journeys:read")
    metadata = bearer_metadata(forged)
    assert await code_of(target, "/test.Echo/Who", metadata) == grpc.StatusCode.UNAUTHENTICATED
    basic = (("authorization", "Basic Zm9vOmJhcg=="),)
    assert await code_of(target, "/test.Echo/Who", basic) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_token_without_the_methods_scope_is_permission_denied(target: str) -> None:
    metadata = bearer_metadata(ISSUING.token(AGENCY, "transfers:report"))
    assert await code_of(target, "/test.Echo/Who", metadata) == grpc.StatusCode.PERMISSION_DENIED


async def test_a_method_without_a_declared_scope_is_refused(target: str) -> None:
    metadata = bearer_metadata(ISSUING.token(AGENCY, "journeys:read"))
    assert await code_of(target, "/test.Echo/Other", metadata) == grpc.StatusCode.PERMISSION_DENIED
