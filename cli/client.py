"""The CLI's HTTP calls to the services with an operator token, and what becomes of their
answers: each failure is a GatewayError carrying the exit code scripts can test."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import httpx

from cli.config import CliConfig, Service
from core.problems import PROBLEM_JSON


class ExitCode(IntEnum):
    OK = 0
    # Something else went wrong: a refusal of the request itself, or some replays failed.
    FAILED = 1
    # Bad arguments or configuration (click's own code for usage errors).
    USAGE = 2
    NOT_FOUND = 3
    # No token, a token refused, or a token without the scope the call needs.
    AUTH_REFUSED = 4
    # The service could not be reached, timed out, or answered 503 (maintenance, overload).
    UNAVAILABLE = 5


class GatewayError(Exception):
    def __init__(self, code: ExitCode, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def exit_code_for(status: int) -> ExitCode:
    if status in (401, 403):
        return ExitCode.AUTH_REFUSED
    if status == 404:
        return ExitCode.NOT_FOUND
    if status in (502, 503, 504):
        return ExitCode.UNAVAILABLE
    return ExitCode.FAILED


def describe(response: httpx.Response) -> str:
    """A refusal in one line: the problem's title and detail, or the status."""
    text = f"{response.request.method} {response.request.url.path}: {response.status_code}"
    if response.headers.get("content-type", "").startswith((PROBLEM_JSON, "application/json")):
        try:
            problem = response.json()
        except ValueError:
            return text
        if isinstance(problem, dict):
            parts = [str(problem[k]) for k in ("title", "detail") if problem.get(k)]
            if parts:
                text += " " + " — ".join(parts)
    retry_after = response.headers.get("retry-after")
    return text + (f" (retry after {retry_after} s)" if retry_after else "")


class GatewayClient:
    def __init__(self, config: CliConfig, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self._http = httpx.Client(timeout=config.timeout_s, transport=transport)
        self._token: str | None = None

    def close(self) -> None:
        self._http.close()

    def token(self) -> str:
        if self._token is None:
            secret = self.config.client_secret.get_secret_value()
            if not secret:
                raise GatewayError(
                    ExitCode.AUTH_REFUSED, "no client secret: set GATEWAY_CLIENT_SECRET"
                )
            response = self._send(
                "POST",
                self.config.tokens_at,
                data={"grant_type": "client_credentials"},
                auth=(self.config.client_id, secret),
            )
            if response.status_code in (400, 401, 403):
                raise GatewayError(
                    ExitCode.AUTH_REFUSED,
                    f"identity refused the token for {self.config.client_id}: "
                    + describe(response),
                    response.status_code,
                )
            _check(response)
            self._token = str(response.json()["access_token"])
        return self._token

    def call(
        self,
        method: str,
        service: Service,
        path: str,
        *,
        authenticated: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token()}"} if authenticated else {}
        response = self._send(method, self.config.url(service) + path, headers=headers, **kwargs)
        _check(response)
        return response

    def json(self, method: str, service: Service, path: str, **kwargs: Any) -> Any:
        return self.call(method, service, path, **kwargs).json()

    def readiness(self, service: Service) -> dict[str, Any]:
        """/health/ready's answer (no token needed), or why there was none."""
        try:
            response = self._send("GET", self.config.url(service) + "/health/ready")
        except GatewayError as exc:
            return {"status": "unavailable", "checks": {"connection": str(exc)}}
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {"status": "unavailable", "checks": {"http": describe(response)}}
        if not response.is_success:
            body["status"] = "unavailable"
        return body

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise GatewayError(ExitCode.UNAVAILABLE, f"{url}: timed out") from None
        except httpx.TransportError as exc:
            raise GatewayError(ExitCode.UNAVAILABLE, f"{url}: cannot connect ({exc})") from None


def _check(response: httpx.Response) -> None:
    if response.is_success:
        return
    raise GatewayError(
        exit_code_for(response.status_code), describe(response), response.status_code
    )
