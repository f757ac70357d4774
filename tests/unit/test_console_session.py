"""The console's session cookie, CSRF token and operator check, and its security headers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import OctKey

from services.console.deps import compose
from services.console.main import http_app
from services.console.session import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SessionSigner,
    csrf_ok,
    roles_from,
    safe_next,
)
from services.console.settings import ConsoleSettings
from tests.support.audit import Trail, audit_trail

KEY = "k" * 40


@pytest.fixture
def signer() -> SessionSigner:
    return SessionSigner(KEY, 3600)


def test_a_session_reads_back_with_roles_and_its_own_csrf_token(signer: SessionSigner) -> None:
    first = signer.session(signer.new_session("canbo.vanhanh", "Lê Văn Hành", ("operator",)))
    second = signer.session(signer.new_session("canbo.vanhanh", "Lê Văn Hành", ("operator",)))
    assert first is not None
    assert second is not None
    assert first.subject == "canbo.vanhanh"
    assert first.has_role("operator")
    assert not first.has_role("admin")
    assert len(first.csrf) >= 32
    assert first.csrf != second.csrf


def test_a_tampered_foreign_or_expired_session_is_no_session(signer: SessionSigner) -> None:
    cookie = signer.new_session("canbo.tiepnhan", "Phạm Thị Nhận", ())
    header, body, signature = cookie.split(".")
    assert signer.session(f"{header}.{body}x.{signature}") is None
    assert SessionSigner("z" * 40, 3600).session(cookie) is None
    assert signer.session("") is None
    assert signer.session(None) is None
    # The operator role added by someone who knows the format but not the key.
    now = int(time.time())
    claims = {"sub": "canbo.tiepnhan", "roles": ["operator"], "csrf": "x", "exp": now + 60}
    forged = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(KEY.encode()))
    assert signer.session(forged) is None
    assert signer.session(jwt.encode({"alg": "none"}, claims, None, algorithms=["none"])) is None
    expired = SessionSigner(KEY, -120).new_session("canbo.vanhanh", "x", ("operator",))
    assert signer.session(expired) is None


def test_a_login_cookie_is_not_a_session(signer: SessionSigner) -> None:
    login = signer.new_login("state", "nonce", "verifier", "/transfers")
    assert signer.session(login) is None
    assert signer.login(login) is not None
    assert signer.login(signer.new_session("a", "b", ())) is None


def test_short_session_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32"):
        SessionSigner("short", 60)


def test_csrf_token_must_match_the_session(signer: SessionSigner) -> None:
    official = signer.session(signer.new_session("canbo.vanhanh", "x", ("operator",)))
    assert official is not None
    assert csrf_ok(official, official.csrf)
    assert not csrf_ok(official, None)
    assert not csrf_ok(official, "")
    assert not csrf_ok(official, official.csrf + "x")


@pytest.mark.parametrize(
    ("claims", "claim", "roles"),
    [
        ({"roles": ["operator", "reception"]}, "roles", ("operator", "reception")),
        ({"roles": "operator reception"}, "roles", ("operator", "reception")),
        ({"realm_access": {"roles": ["operator"]}}, "realm_access.roles", ("operator",)),
        ({"roles": [1, "operator"]}, "roles", ("operator",)),
        ({"roles": {"operator": True}}, "roles", ()),
        ({}, "roles", ()),
        ({"realm_access": "operator"}, "realm_access.roles", ()),
    ],
)
def test_roles_come_from_the_configured_claim(
    claims: dict[str, object], claim: str, roles: tuple[str, ...]
) -> None:
    assert roles_from(claims, claim) == roles


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("/transfers?x=1", "/transfers?x=1"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        (None, "/"),
        ("", "/"),
    ],
)
def test_after_login_only_paths_of_the_console(given: str | None, safe: str) -> None:
    assert safe_next(given) == safe


SETTINGS = ConsoleSettings(console_session_key=KEY, console_operator_role="operator")


@pytest.fixture
def console() -> Iterator[TestClient]:
    with TestClient(http_app(compose(SETTINGS)), follow_redirects=False) as client:
        yield client


def _log_in(client: TestClient, roles: tuple[str, ...]) -> str:
    signer = SessionSigner(KEY, 3600)
    cookie = signer.new_session("someone", "Ai Đó", roles)
    client.cookies.set(SESSION_COOKIE, cookie)
    official = signer.session(cookie)
    assert official is not None
    return official.csrf


def test_pages_send_to_login_then_refuse_officials_without_the_role(
    console: TestClient,
) -> None:
    answer = console.get("/transfers?x=1")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Ftransfers%3Fx%3D1"
    _log_in(console, ("reception",))
    refused = console.get("/")
    assert refused.status_code == 403
    assert "không có vai trò" in refused.text


def test_pages_carry_security_headers(console: TestClient) -> None:
    _log_in(console, ("operator",))
    answer = console.get("/")
    assert answer.status_code == 200
    assert "Tra cứu hồ sơ" in answer.text
    assert answer.headers["content-security-policy"].startswith("default-src 'self'")
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_a_post_without_the_sessions_csrf_token_is_refused(console: TestClient) -> None:
    csrf = _log_in(console, ("operator",))
    for form in ({"confirm": "yes"}, {"confirm": "yes", CSRF_FIELD: "not-" + csrf}):
        answer = console.post("/dead-letters/abc/replay", data=form)
        assert answer.status_code == 403
        assert "chống giả mạo" in answer.text
    # With the token but without the confirmation nothing is replayed either.
    unconfirmed = console.post("/dead-letters/abc/replay", data={CSRF_FIELD: csrf})
    assert unconfirmed.status_code == 400
    logout = console.post("/logout", data={CSRF_FIELD: csrf})
    assert logout.status_code == 303
    assert SESSION_COOKIE in logout.headers["set-cookie"]


class _Routing:
    """Routing's replay as the console sees it: the answer, and who was asked what."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.posted: list[tuple[str, str]] = []

    async def post(self, service: str, path: str) -> tuple[int, dict[str, str]]:
        self.posted.append((service, path))
        return self.status, {"detail": "transfer t-1 is delivered"}

    async def close(self) -> None:
        pass


@pytest.fixture
def trail() -> Iterator[Trail]:
    with audit_trail() as handler:
        yield handler


@pytest.mark.parametrize(("status", "shown"), [(200, 303), (409, 409)])
def test_a_confirmed_replay_is_asked_of_routing_and_audited(
    trail: Trail, status: int, shown: int
) -> None:
    routing = _Routing(status)
    upstream: Any = routing
    deps = replace(compose(SETTINGS), upstream=upstream)
    with TestClient(http_app(deps), follow_redirects=False) as console:
        csrf = _log_in(console, ("operator",))
        answer = console.post("/dead-letters/t-1/replay", data={CSRF_FIELD: csrf, "confirm": "yes"})
    assert answer.status_code == shown
    assert routing.posted == [("routing", "/v1/dead-letters/t-1/replay")]
    actions = [r for r in trail.records if r["event"] == "operator.action"]
    assert len(actions) == 1
    assert actions[0]["operator"] == "official:someone"
    assert actions[0]["action"] == "replay-dead-letter"
    assert actions[0]["object"] == "t-1"
    assert actions[0]["outcome"] == str(status)


def test_refusals_of_the_console_are_audited(console: TestClient, trail: Trail) -> None:
    _log_in(console, ("reception",))
    assert console.get("/sla").status_code == 403
    (refusal,) = [r for r in trail.records if r["event"] == "authorization.refused"]
    assert refusal["client"] == "official:someone"
    assert refusal["reason"] == "missing-role: operator"
