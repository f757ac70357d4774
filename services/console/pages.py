"""The console's pages: a dossier's journey, stuck and dead-lettered transfers with replay,
the monthly SLA board and the services' health. Each reads the services' APIs afresh."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from core.audit import record_action
from services.console.deps import Deps, UpstreamDep
from services.console.upstream import UpstreamError
from services.console.views import Form, Operator, install_errors, page, templates

TRANSFER_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
# Receipt codes: agency code, date, number (e.g. 000.00.01.H22-261122-0001).
RECEIPT = re.compile(r"[A-Za-z0-9.]{1,30}-\d{6}-\d{1,6}")


def message(status: int, text: str, link: tuple[str, str] | None = None) -> HTMLResponse:
    body = templates.get_template("message.html").render(text=text, link=link, official=None)
    return HTMLResponse(body, status_code=status)


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def journey_steps(journey: dict[str, Any]) -> list[dict[str, Any]]:
    """Each step as the timeline shows it: when it reached the agency and left it, how long
    the agency held it against the time the law gives it, overdue and apology marks."""
    apologies: dict[str, list[dict[str, Any]]] = {}
    for apology in journey.get("apologies", []):
        apologies.setdefault(apology["agency_code"], []).append(apology)
    steps = []
    for step in journey.get("steps", []):
        steps.append(
            step
            | {
                "arrived_at": step.get("delivered_at") or step.get("routed_at"),
                "left_at": step.get("completed_at"),
                "held_s": step.get("waiting_s", {}).get("agency"),
                "allowed_s": _seconds(step.get("routed_at"), step.get("due_at")),
                "apologies": apologies.get(step["agency_code"], []),
            }
        )
    return steps


# What a page may answer besides itself (the console serves no OpenAPI document: this is
# for readers): a visitor not logged in is sent to /login.
TO_LOGIN: dict[int | str, dict[str, Any]] = {303: {"description": "To the login page"}}
router = APIRouter(responses=TO_LOGIN)


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, official: Operator) -> Response:
    return page(request, "home.html", official=official)


@router.get("/dossiers", response_class=HTMLResponse)
async def dossier(
    request: Request, official: Operator, upstream: UpstreamDep, code: str = ""
) -> Response:
    code = code.strip()
    if not code:
        return RedirectResponse("/", status_code=303)
    if not RECEIPT.fullmatch(code):
        return page(
            request,
            "home.html",
            422,
            official=official,
            code=code,
            error="Mã hồ sơ không đúng dạng (ví dụ 000.00.01.H22-261122-0001).",
        )
    try:
        journey = await upstream.get_json("routing", f"/v1/dossiers/{code}/journey")
    except UpstreamError as exc:
        if exc.status == 404:
            return page(
                request,
                "home.html",
                404,
                official=official,
                code=code,
                error=f"Không tìm thấy hồ sơ {code}.",
            )
        return page(
            request,
            "home.html",
            502,
            official=official,
            code=code,
            error=f"Không đọc được hành trình hồ sơ ({exc.service}: {exc.status}).",
        )
    notifications: list[dict[str, Any]] | None
    try:
        notifications = await upstream.get_json("notify", "/v1/notifications", {"dossier": code})
    except UpstreamError:
        notifications = None  # the journey is still worth showing
    return page(
        request,
        "dossier.html",
        official=official,
        journey=journey,
        steps=journey_steps(journey),
        notifications=notifications,
    )


@router.get("/transfers", response_class=HTMLResponse)
async def transfers(
    request: Request, official: Operator, deps: Deps, replayed: str = ""
) -> Response:
    settings, upstream = deps.settings, deps.upstream
    errors = []
    stuck: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []
    try:
        stuck = await upstream.get_json(
            "routing",
            "/v1/transfers/stuck",
            {"older_than_s": str(settings.console_stuck_after_s)},
        )
    except UpstreamError as exc:
        errors.append(f"Chuyển hồ sơ tồn đọng: {exc.service} {exc.status}")
    try:
        dead = await upstream.get_json("routing", "/v1/dead-letters")
    except UpstreamError as exc:
        errors.append(f"Chuyển hồ sơ thất bại: {exc.service} {exc.status}")
    return page(
        request,
        "transfers.html",
        official=official,
        stuck=stuck,
        dead=dead,
        errors=errors,
        replayed=replayed,
        stuck_after=settings.console_stuck_after_s,
    )


@router.get("/dead-letters/{transfer_id}/replay", response_class=HTMLResponse)
async def confirm_replay(
    request: Request, official: Operator, upstream: UpstreamDep, transfer_id: str
) -> Response:
    if not TRANSFER_ID.fullmatch(transfer_id):
        return page(
            request, "message.html", 404, official=official, text="Không có lần chuyển này."
        )
    dead = await upstream.get_json("routing", "/v1/dead-letters", {"limit": "1000"})
    letter = next((d for d in dead if d["transfer_id"] == transfer_id), None)
    if letter is None:
        return page(
            request,
            "message.html",
            404,
            official=official,
            text="Lần chuyển này không còn trong danh sách thất bại.",
            link=("/transfers", "Về danh sách"),
        )
    return page(request, "replay.html", official=official, letter=letter)


@router.post("/dead-letters/{transfer_id}/replay", response_class=HTMLResponse)
async def replay(
    request: Request, official: Operator, form: Form, deps: Deps, transfer_id: str
) -> Response:
    """Answers 303 to the transfers page once routing has taken the replay."""
    if not TRANSFER_ID.fullmatch(transfer_id) or form.get("confirm") != "yes":
        return page(
            request,
            "message.html",
            400,
            official=official,
            text="Cần xác nhận trước khi gửi lại.",
            link=(f"/dead-letters/{transfer_id}/replay", "Xác nhận"),
        )
    status, body = await deps.upstream.post("routing", f"/v1/dead-letters/{transfer_id}/replay")
    record_action(
        operator=f"official:{official.subject}",
        client=deps.settings.auth_client_id,
        action="replay-dead-letter",
        target=transfer_id,
        outcome=str(status),
    )
    if status != 200:
        detail = body.get("detail") if isinstance(body, dict) else body
        return page(
            request,
            "message.html",
            409 if status == 409 else 502,
            official=official,
            text=f"Không gửi lại được ({status}): {detail}",
            link=("/transfers", "Về danh sách"),
        )
    return RedirectResponse(f"/transfers?replayed={transfer_id}", status_code=303)


@router.get("/sla", response_class=HTMLResponse)
async def sla(
    request: Request, official: Operator, deps: Deps, month: str = "", by: str = "desk"
) -> Response:
    month = month or deps.clock.now().strftime("%Y-%m")
    by = by if by in ("desk", "step") else "desk"
    if not MONTH.fullmatch(month):
        return page(
            request,
            "sla.html",
            422,
            official=official,
            month=month,
            by=by,
            rows=[],
            error="Tháng phải có dạng YYYY-MM.",
        )
    figures = await deps.upstream.get_json("routing", "/v1/statistics", {"month": month, "by": by})
    return page(
        request,
        "sla.html",
        official=official,
        month=month,
        by=by,
        rows=figures["rows"],
        error=None,
    )


@router.get(
    "/sla.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "Routing's CSV, as it is"}},
)
async def sla_csv(
    official: Operator, upstream: UpstreamDep, month: str, by: str = "desk"
) -> Response:
    if not MONTH.fullmatch(month) or by not in ("desk", "step"):
        return message(422, "Tháng phải có dạng YYYY-MM.")
    # Routing's own CSV, byte for byte: the province gets the figures of the API.
    body, kind = await upstream.get_bytes(
        "routing", "/v1/statistics", {"month": month, "by": by, "format": "csv"}
    )
    disposition = f'attachment; filename="sla-{by}-{month}.csv"'
    return Response(body, media_type=kind, headers={"Content-Disposition": disposition})


@router.get("/services", response_class=HTMLResponse)
async def services(request: Request, official: Operator, upstream: UpstreamDep) -> Response:
    health = []
    for name in upstream.services:
        status, body = await upstream.health(name)
        body = body if isinstance(body, dict) else {"status": str(body)}
        extra = {k: v for k, v in body.items() if k not in ("status", "checks")}
        health.append(
            {
                "name": name,
                "http": status,
                "status": body.get("status", "?"),
                "checks": body.get("checks") or {},
                "extra": extra,
            }
        )
    return page(request, "services.html", official=official, health=health)


async def upstream_failed(request: Request, exc: Exception) -> HTMLResponse:
    assert isinstance(exc, UpstreamError)
    return message(
        502,
        f"Dịch vụ {exc.service} không trả lời được ({exc.status}).",
        link=("/", "Về trang chính"),
    )


def install(app: FastAPI) -> None:
    install_errors(app)
    app.add_exception_handler(UpstreamError, upstream_failed)
    app.include_router(router)
