"""Identity's token endpoint and its metadata over HTTP: the routes of the authorization
server of agency systems (services/identity/oauth.py)."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from core.problems import Problem
from services.identity.deps import Deps
from services.identity.oauth import AgencyTokens, TokenRequest, presented
from services.identity.token_contract import TOKEN_REQUEST, TokenOut, oauth_error
from services.identity.token_guard import CheckRefused, ClientGone, SecretGuard
from services.identity.token_state import UsedAssertions

router = APIRouter(tags=["agency tokens"])


def _agency_tokens(deps: Deps) -> AgencyTokens:
    return deps.agency_tokens


def _secret_guard(deps: Deps) -> SecretGuard:
    return deps.secret_guard


def _used_assertions(deps: Deps) -> UsedAssertions:
    return deps.used_assertions


AgencyTokensDep = Annotated[AgencyTokens, Depends(_agency_tokens)]
SecretGuardDep = Annotated[SecretGuard, Depends(_secret_guard)]
UsedAssertionsDep = Annotated[UsedAssertions, Depends(_used_assertions)]


@router.post(
    "/oauth2/token",
    response_model=TokenOut,
    responses={
        400: oauth_error("invalid_request, unsupported_grant_type, invalid_scope"),
        401: oauth_error("invalid_client"),
    },
    operation_id="requestToken",
    openapi_extra=TOKEN_REQUEST,
    summary="Access token for an agency system (client credentials)",
)
async def token(
    request: Request, server: AgencyTokensDep, guard: SecretGuardDep, used: UsedAssertionsDep
) -> Response:
    # OAuth posts are urlencoded (RFC 6749 §4.1.3): no multipart parser needed.
    form: dict[str, str] = {}
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        try:
            text = (await request.body()).decode()
        except UnicodeDecodeError:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "the form is not UTF-8"},
                status_code=400,
            )
        form = dict(parse_qsl(text, keep_blank_values=True))
    oauth_request = TokenRequest(request, form, server.token_endpoint)
    who = presented(request, form)
    address = request.client.host if request.client else ""
    try:
        if who.secret is not None:
            client = server.query_client(who.client_id)
            stored = client.secret_hash if client else None
            if await guard.verify(
                who.client_id, who.secret, stored, address, request.is_disconnected
            ):
                oauth_request.verified_secret = (who.client_id, who.secret)
        else:
            await guard.refuse_if_throttled(who.client_id, address)
    except CheckRefused as exc:
        slug = "too-many-attempts" if exc.status == 429 else "token-endpoint-busy"
        raise Problem(
            exc.status, slug, "Token requests refused for now; retry later", exc.reason,
            headers={"Retry-After": str(exc.retry_after)},
        ) from None  # fmt: skip
    except ClientGone:
        return Response(status_code=503)  # nobody is listening any more
    answer = await server.answer(oauth_request, used)
    if who.secret is None and who.client_id and _error_of(answer) == "invalid_client":
        await guard.record_failure(who.client_id, address)
    return answer


@router.get(
    "/.well-known/oauth-authorization-server",
    response_model=dict[str, Any],
    operation_id="getAuthorizationServerMetadata",
    summary="RFC 8414 metadata",
)
async def metadata(server: AgencyTokensDep) -> dict[str, Any]:
    return server.metadata()


@router.get(
    "/.well-known/jwks.json",
    response_model=dict[str, Any],
    operation_id="getJwks",
    summary="Public keys that sign access tokens",
)
async def jwks(server: AgencyTokensDep) -> JSONResponse:
    # Cacheable briefly: verifiers refetch anyway when they meet an unknown key id.
    return JSONResponse(server.keys.public_jwks(), headers={"Cache-Control": "max-age=300"})


def _error_of(answer: Response) -> str:
    if answer.status_code < 400:
        return ""
    try:
        body = json.loads(bytes(answer.body))
    except ValueError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""
