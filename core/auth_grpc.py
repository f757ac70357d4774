"""Access tokens on gRPC: `authorization: Bearer <token>` metadata, checked per method.

Each service declares which scope every one of its methods needs; a method missing from the
map is refused (fail closed), except the standard health and reflection services, which
stay open like /health over HTTP. The verified principal is available to the servicer
through `current_principal()`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeAlias, cast

import grpc

from core.audit import record_refusal
from core.auth import AgencyPrincipal, InvalidToken, KeysUnavailable, TokenVerifier, check_scopes

OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/")
_principal: contextvars.ContextVar[AgencyPrincipal | None] = contextvars.ContextVar(
    "grpc_principal", default=None
)
Refusal = tuple[grpc.StatusCode, str]
# Generic only in the type stubs, not at run time.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


def current_principal() -> AgencyPrincipal | None:
    """The agency calling the gRPC method being served (None outside one)."""
    return _principal.get()


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """`scopes` maps full method names ("/gateway.v1.RoutingService/GetJourney") to a scope."""

    def __init__(self, verifier: TokenVerifier, scopes: Mapping[str, str]) -> None:
        check_scopes(scopes.values())
        self._verifier = verifier
        self._scopes = dict(scopes)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        scope = self._scopes.get(method)
        if scope is None:
            return _refusing(handler, (grpc.StatusCode.PERMISSION_DENIED, "method not allowed"))
        outcome = await self._check(handler_call_details.invocation_metadata or (), scope, method)
        if isinstance(outcome, tuple):
            return _refusing(handler, outcome)
        return _with_principal(handler, outcome)

    async def _check(self, metadata: Any, scope: str, method: str) -> AgencyPrincipal | Refusal:
        values = [v for k, v in metadata if k == "authorization"]
        scheme, _, token = (str(values[0]) if values else "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return grpc.StatusCode.UNAUTHENTICATED, "an access token is required"
        try:
            principal = await self._verifier.verify(token.strip())
        except InvalidToken as exc:
            return grpc.StatusCode.UNAUTHENTICATED, f"invalid access token: {exc}"
        except KeysUnavailable:
            return grpc.StatusCode.UNAVAILABLE, "cannot verify access tokens yet"
        if scope not in principal.scopes:
            reason = f"the access token lacks scope {scope}"
            record_refusal(principal, action=f"gRPC {method}", target=method, reason=reason)
            return grpc.StatusCode.PERMISSION_DENIED, reason
        return principal


def _refusing(handler: Handler, refusal: Refusal) -> Handler:
    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(*refusal)

    return _same_kind(handler, refuse)


def _with_principal(handler: Handler, principal: AgencyPrincipal) -> Handler:
    if handler.unary_unary is None:
        return handler  # streaming methods are authorised too, they just cannot read it
    # grpc's stubs type handlers for the threaded server; under grpc.aio the behaviour is a
    # coroutine function taking the aio context.
    behaviour = cast(
        Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]], handler.unary_unary
    )

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        reset = _principal.set(principal)
        try:
            return await behaviour(request, context)
        finally:
            _principal.reset(reset)

    return _same_kind(handler, call)


def _same_kind(handler: Handler, behaviour: Any) -> Handler:
    make = (
        grpc.unary_unary_rpc_method_handler
        if handler.unary_unary
        else grpc.unary_stream_rpc_method_handler
        if handler.unary_stream
        else grpc.stream_unary_rpc_method_handler
        if handler.stream_unary
        else grpc.stream_stream_rpc_method_handler
    )
    return make(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
