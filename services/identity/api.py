"""Identity's HTTP API for citizens: e-ID login, consents with preview, the access log."""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Cookie, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from core.openapi import problems, redirect
from core.problems import Problem
from services.identity import access_log
from services.identity.citizens import CitizenSession
from services.identity.consents import ConsentRefused, consent_view
from services.identity.deps import CitizensDep, ConsentsDep, Deps, Sessions
from services.identity.eid import EidError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["citizens"])
SESSION_COOKIE = "citizen_session"
LOGIN_COOKIE = "eid_login"
# Double submit, bound to the session: a browser sends the cookie by itself, so a change
# made with the cookie must also carry this header, which another site cannot set or know.
CSRF_COOKIE = "citizen_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# RFC 9110 §11.6.1: a 401 names how to authenticate.
CHALLENGE = 'CitizenSession realm="citizens", header="X-Citizen-Session"'


class ConsentIn(BaseModel):
    procedure_code: str = Field(min_length=1, max_length=40)
    purpose: str = Field(min_length=3, max_length=300, description="Why the data is read")


class CitizenOut(BaseModel):
    personal_id: str
    full_name: str
    assurance_level: int = Field(description="e-ID assurance level: 1, or 2 (verified in person)")
    expires_at: datetime


class CitizenSessionOut(BaseModel):
    session: str = Field(description="Send as X-Citizen-Session")
    csrf_token: str = Field(description="Send as X-CSRF-Token with the session cookie")
    full_name: str
    assurance_level: int
    expires_at: datetime


class ReadOut(BaseModel):
    seq: int
    agency: str
    service: str
    data: str
    purpose: str
    dossier_code: str | None
    read_at: datetime


class AccessLogOut(BaseModel):
    reads: list[ReadOut]


class ConsentOut(BaseModel):
    id: str
    state: Literal["previewed", "granted", "used"]
    procedure_code: str
    purpose: str
    requesting_agency: str
    preview: dict[str, Any] = Field(description="The data that would be attached")
    created_at: datetime
    granted_at: datetime | None


# How a citizen's requests authenticate (the session cookie is the browser's way).
CITIZEN_SECURITY: dict[str, Any] = {"security": [{"citizenSession": []}]}
# Logging out without a session ends nothing, and is no error.
OPTIONAL_CITIZEN_SECURITY: dict[str, Any] = {"security": [{"citizenSession": []}, {}]}
CITIZEN_SCHEME: dict[str, Any] = {
    "citizenSession": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Citizen-Session",
        "description": "The session a citizen's e-ID login opened (/v1/citizen/callback)",
    }
}


def csrf_token(session_id: str) -> str:
    """Derived from the session id: knowing it does not reveal the session."""
    return hashlib.sha256(b"csrf\0" + session_id.encode()).hexdigest()


def session_id_of(request: Request, cookie: str | None, header: str | None) -> str:
    """X-Citizen-Session (API clients), or the cookie (browsers); by cookie, a request that
    changes something must also prove it comes from our page (CSRF_HEADER)."""
    if header:
        return header
    if cookie and request.method not in SAFE_METHODS:
        presented = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(presented.encode(), csrf_token(cookie).encode()):
            raise Problem(
                403, "csrf-check-failed", "Cross-site request refused",
                f"With the session cookie, send {CSRF_HEADER} as given at login "
                f"(also in the {CSRF_COOKIE} cookie), or send X-Citizen-Session",
            )  # fmt: skip
    return cookie or ""


async def citizen(
    request: Request,
    citizens: CitizensDep,
    cookie: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None,
    x_citizen_session: Annotated[str | None, Header()] = None,
) -> CitizenSession:
    """The logged-in citizen, by session cookie (browsers) or X-Citizen-Session (API)."""
    session_id = session_id_of(request, cookie, x_citizen_session)
    found = await citizens.session(session_id)
    if found is None:
        challenge = CHALLENGE + (', error="invalid_session"' if session_id else "")
        raise Problem(
            401, "citizen-not-logged-in", "Log in with e-ID first",
            "No valid citizen session: GET /v1/citizen/login",
            headers={"WWW-Authenticate": challenge},
        )  # fmt: skip
    return found


Citizen = Annotated[CitizenSession, Depends(citizen)]


@router.get(
    "/citizen/login",
    status_code=302,
    response_class=RedirectResponse,
    responses={**redirect("To the e-ID provider"), **problems(422, 502)},
    operation_id="citizenLogin",
    summary="Log in with e-ID (redirects to the provider)",
)
async def login(
    deps: Deps,
    acr: Annotated[str, Query(pattern="^[0-9]*$", description="Assurance level: 1 or 2")] = "",
) -> Response:
    """`acr=2` asks the provider for assurance level 2 (identity verified in person), as the
    provider spells it (EID_ACR_VALUES); without `acr` the provider chooses."""
    citizens, party = deps.citizens, deps.relying_party
    acr_values = ""
    if acr:
        try:
            acr_values = party.acr_values_for(int(acr))
        except (ValueError, KeyError):
            raise Problem(
                422, "assurance-level-unknown", "No such e-ID assurance level",
                f"acr must be one of {sorted(party.client.acr_values)}",
            ) from None  # fmt: skip
    pending = await citizens.begin_login()
    try:
        url = await party.authorization_url(pending, acr_values=acr_values)
    except EidError as exc:
        raise Problem(
            502, "eid-unavailable", "The e-ID provider does not answer", str(exc)
        ) from None
    response = RedirectResponse(url, 302)
    # Binds the callback to the browser that started the login (login CSRF).
    response.set_cookie(
        LOGIN_COOKIE, pending.state, max_age=600, httponly=True, samesite="lax",
        secure=deps.settings.citizen_cookie_secure, path="/v1/citizen",
    )  # fmt: skip
    return response


@router.get(
    "/citizen/callback",
    response_model=CitizenSessionOut,
    responses=problems(400, 401),
    operation_id="citizenLoginCallback",
    summary="Where the e-ID provider sends the citizen back",
)
async def callback(
    deps: Deps,
    state: str = "",
    code: str = "",
    error: str = "",
    login_cookie: Annotated[str | None, Cookie(alias=LOGIN_COOKIE)] = None,
) -> Response:
    citizens, party = deps.citizens, deps.relying_party
    # Checked before the login is taken: a callback from another browser (no cookie, or
    # another login's) must not use up the login the citizen's own browser will complete.
    pending = await citizens.take_login(state) if state and login_cookie == state else None
    if pending is None:
        raise Problem(
            400, "login-unknown", "Unknown, expired or replayed login",
            "Start again at /v1/citizen/login",
        )  # fmt: skip
    if error or not code:
        raise Problem(401, "login-refused", "The e-ID provider refused the login", error)
    try:
        verified = await party.login(code, pending)
    except EidError as exc:
        log.warning("e-ID login refused: %s", exc)
        raise Problem(
            401, "login-refused", "The e-ID login could not be verified", str(exc)
        ) from None
    session_id, opened = await citizens.open_session(verified)
    log.info("citizen %s logged in, assurance %d", verified.personal_id, opened.assurance_level)
    response = JSONResponse(
        {
            "session": session_id,
            "csrf_token": csrf_token(session_id),
            "full_name": opened.full_name,
            "assurance_level": opened.assurance_level,
            "expires_at": opened.expires_at.isoformat(),
        },
        headers={"Cache-Control": "no-store"},
    )
    response.set_cookie(
        SESSION_COOKIE, session_id, expires=opened.expires_at, httponly=True, samesite="lax",
        secure=deps.settings.citizen_cookie_secure,
    )  # fmt: skip
    # Readable by our page's script (not HttpOnly), sent back as CSRF_HEADER.
    response.set_cookie(
        CSRF_COOKIE, csrf_token(session_id), expires=opened.expires_at, samesite="strict",
        secure=deps.settings.citizen_cookie_secure,
    )  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path="/v1/citizen")
    return response


@router.get(
    "/citizen/me",
    response_model=CitizenOut,
    responses=problems(401),
    operation_id="getCitizen",
    openapi_extra=CITIZEN_SECURITY,
    summary="The logged-in citizen",
)
async def me(session: Citizen) -> dict[str, Any]:
    return {
        "personal_id": session.personal_id.value,
        "full_name": session.full_name,
        "assurance_level": session.assurance_level,
        "expires_at": session.expires_at.isoformat(),
    }


@router.post(
    "/citizen/logout",
    status_code=204,
    response_class=Response,
    responses=problems(403),
    operation_id="citizenLogout",
    openapi_extra=OPTIONAL_CITIZEN_SECURITY,
    summary="End the citizen session",
)
async def logout(
    request: Request,
    citizens: CitizensDep,
    cookie: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None,
    x_citizen_session: Annotated[str | None, Header()] = None,
) -> Response:
    """POST only, and by cookie only with the CSRF header: no page elsewhere can log a
    citizen out (a link, an image, a form)."""
    if session_id := session_id_of(request, cookie, x_citizen_session):
        await citizens.close_session(session_id)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE)
    response.delete_cookie(CSRF_COOKIE)
    return response


@router.get(
    "/citizen/access-log",
    response_model=AccessLogOut,
    responses=problems(401),
    operation_id="getAccessLog",
    openapi_extra=CITIZEN_SECURITY,
    summary="Who read my data, when and why",
)
async def my_access_log(
    session: Citizen, sessions: Sessions, citizens: CitizensDep
) -> dict[str, Any]:
    async with sessions() as db:
        rows = await access_log.reads_of(db, citizens.ref(session.personal_id))
    fields = ("seq", "agency", "service", "data", "purpose", "dossier_code")
    reads = [{f: r[f] for f in fields} | {"read_at": r["read_at"].isoformat()} for r in rows]
    return {"reads": reads}


def refused(exc: ConsentRefused) -> Problem:
    # A 503 (the registry or the catalogue not there yet) passes: the client is told when
    # to ask again, as for every 503 of the gateway.
    headers = {"Retry-After": "5"} if exc.status == 503 else None
    return Problem(exc.status, exc.type, exc.title, exc.detail, headers=headers)


@router.post(
    "/consents",
    status_code=201,
    response_model=ConsentOut,
    responses=problems(401, 403, 404, 422, 503),
    operation_id="previewConsent",
    openapi_extra=CITIZEN_SECURITY,
    summary="Preview what would be attached",
)
async def preview_consent(
    body: ConsentIn, session: Citizen, consents: ConsentsDep
) -> dict[str, Any]:
    try:
        record = await consents.preview(session, body.procedure_code, body.purpose)
    except ConsentRefused as exc:
        raise refused(exc) from None
    return consent_view(record)


@router.post(
    "/consents/{consent_id}/confirm",
    response_model=ConsentOut,
    responses=problems(401, 403, 404, 410),
    operation_id="confirmConsent",
    openapi_extra=CITIZEN_SECURITY,
    summary="Grant a previewed consent",
)
async def confirm_consent(
    consent_id: str, session: Citizen, consents: ConsentsDep
) -> dict[str, Any]:
    try:
        record = await consents.confirm(session, consent_id)
    except ConsentRefused as exc:
        raise refused(exc) from None
    return consent_view(record)
