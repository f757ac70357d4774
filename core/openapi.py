"""The OpenAPI document each service serves: what agency integrators generate clients from.

Routes declare the problems only they raise (`problems(404, 409)`), the idempotent replay
(`replayed(Model)`), a redirect (`redirect(...)`) or a second media type (`also_csv()`).
What every route shares is added once, from what the service really does, by
`install_openapi`:

- one RFC 9457 `Problem` schema (core.problems) for every error, FastAPI's default 422
  (`HTTPValidationError`, which the service never sends) replaced by it;
- 429 and 503 with Retry-After on every route behind admission (core.admission), 413 on
  every route that takes a body (core.limits), and for a JSON body 400 (not JSON) and 422;
- the OAuth2 client-credentials scheme with identity's token URL and the scope each route
  requires (core.auth.require_scope), with its 401 and 403;
- short camelCase operationIds, one tag per operation, and `servers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel

from core.admission import UNGATED
from core.problems import PROBLEM_JSON

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details: every error the gateway answers.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {
            "type": "string",
            "description": "The problem's kind: /problems/<slug>, or about:blank",
        },
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "The request's path"},
        "errors": {
            "type": "array",
            "description": "Validation errors (422 validation-error): each field that failed",
            "items": {
                "type": "object",
                "required": ["location", "message"],
                "properties": {
                    "location": {
                        "type": "array",
                        "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    },
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    # Problems carry extensions (missing_fields, required_scope, limit...).
    "additionalProperties": True,
}
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
TITLES: Mapping[int, str] = {
    400: "Bad request: for a JSON body, one that cannot be read as JSON",
    401: "Missing or invalid credentials",
    403: "Not allowed for this caller",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict with the current state",
    410: "Gone",
    413: "Request body too large",
    422: "The request is not valid",
    429: "Too many requests from this caller at once; retry after Retry-After seconds",
    502: "An upstream system does not answer",
    503: "Service temporarily unavailable; retry after Retry-After seconds",
}
_RETRY_AFTER = {"description": "Seconds to wait", "schema": {"type": "integer"}}
HEADERS: Mapping[int, Mapping[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "How to authenticate", "schema": {"type": "string"}}},
    405: {"Allow": {"description": "The methods the path takes", "schema": {"type": "string"}}},
    429: {"Retry-After": _RETRY_AFTER},
    503: {"Retry-After": _RETRY_AFTER},
}
LOCATION = {"description": "The dossier's URL", "schema": {"type": "string"}}
AGENCY_SCHEME = "agencyToken"
# Statuses answered by validation FastAPI does itself; their schema is ours.
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")

Responses = dict[int | str, dict[str, Any]]


def problem(status: int, description: str = "") -> dict[str, Any]:
    """One error response: the shared Problem schema, and the headers its status carries."""
    entry: dict[str, Any] = {
        "description": description or TITLES[status],
        "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
    }
    if status in HEADERS:
        entry["headers"] = dict(HEADERS[status])
    return entry


def problems(*statuses: int) -> Responses:
    """The problems a route raises itself, for `responses=`; the shared ones are added."""
    return {status: problem(status) for status in statuses}


def replayed(model: type[BaseModel], description: str = "") -> Responses:
    """A create that answers 201, or 200 with the first answer when an Idempotency-Key is
    sent again; both give the resource's Location."""
    return {
        201: {"headers": {"Location": LOCATION}},
        200: {
            "model": model,
            "description": description
            or "Replay: the answer to the first request with this "
            "Idempotency-Key; nothing was created again",
            "headers": {
                "Location": LOCATION,
                "Idempotent-Replayed": {
                    "description": "true: an answer given before",
                    "schema": {"type": "string", "enum": ["true"]},
                },
            },
        },
    }


def redirect(description: str) -> Responses:
    return {
        302: {
            "description": description,
            "headers": {"Location": {"description": "Where to go", "schema": {"type": "string"}}},
        }
    }


def also_csv(description: str = "The same figures as CSV (format=csv)") -> Responses:
    """A 200 that is JSON, or text/csv when asked (the JSON model stays the route's)."""
    return {
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": description}
    }


def camel_case(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def operation_id(route: APIRoute) -> str:
    """Short and stable: the handler's name in camelCase (submit_dossier: submitDossier)."""
    return camel_case(route.name)


class ScopeRequirement:
    """Marks a dependency as requiring an agency token with `scope` (core.auth)."""

    scope: str


def required_scopes(dependant: Dependant) -> list[str]:
    """The scopes a route's dependencies require, searched through the whole tree."""
    found: list[str] = []
    for sub in dependant.dependencies:
        if isinstance(sub.call, ScopeRequirement):
            found.append(sub.call.scope)
        found += [scope for scope in required_scopes(sub) if scope not in found]
    return found


def install_openapi(
    app: FastAPI,
    *,
    server_url: str,
    token_url: str,
    scopes: Mapping[str, str],
    extra_schemes: Mapping[str, Any] | None = None,
) -> None:
    """Serve the finished document (built once, on the first request for it)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                servers=[{"url": server_url}],
            )
            app.openapi_schema = finish(
                document,
                _route_scopes(app.routes),
                token_url=token_url,
                scopes=scopes,
                extra_schemes=extra_schemes or {},
            )
        return app.openapi_schema

    setattr(app, "openapi", build)  # noqa: B010  FastAPI's documented way to replace it


def _route_scopes(routes: Iterable[Any]) -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    # Included routers are resolved lazily (FastAPI 0.16x): their routes, with the
    # dependencies of each include, come from iter_route_contexts, as get_openapi reads them.
    for context in iter_route_contexts(list(routes)):
        if not (isinstance(context.original_route, APIRoute) and context.include_in_schema):
            continue
        if scopes := required_scopes(context.dependant):
            for method in context.methods or ():
                found[(str(context.path_format), method.lower())] = scopes
    return found


Operation = dict[str, Any]


def finish(
    document: dict[str, Any],
    route_scopes: Mapping[tuple[str, str], list[str]],
    *,
    token_url: str,
    scopes: Mapping[str, str],
    extra_schemes: Mapping[str, Any],
) -> dict[str, Any]:
    """The generated document with the shared problems, security and tags added."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    schemes = components.setdefault("securitySchemes", {})
    schemes.pop("HTTPBearer", None)
    schemes[AGENCY_SCHEME] = {
        "type": "oauth2",
        "description": "An agency system's access token from identity (client credentials)",
        "flows": {"clientCredentials": {"tokenUrl": token_url, "scopes": dict(scopes)}},
    }
    schemes.update(extra_schemes)
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            _finish_operation(path, operation, route_scopes.get((path, method)))
            item[method] = operation
    return document


def _finish_operation(path: str, operation: Operation, scopes: list[str] | None) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    # One tag: generators make one client class per tag, and a route's own tag is the last.
    if tags := operation.get("tags"):
        operation["tags"] = [tags[-1]]
    added: list[int] = []
    if scopes:
        operation["security"] = [{AGENCY_SCHEME: scopes}]
        added += [401, 403, 503]
    elif "security" in operation:
        # The bearer parsing core.auth uses is no scheme of its own.
        kept = [s for s in operation["security"] if "HTTPBearer" not in s]
        if kept:
            operation["security"] = kept
        else:
            operation.pop("security")
    if "requestBody" in operation:
        # The body's size is checked whatever its type, its depth when it is JSON.
        added += [400, 413, 422] if _takes_json(operation) else [413]
    if not path.startswith(UNGATED):
        added += [429, 503]
    for status in added:
        responses.setdefault(str(status), problem(status))
    for code, entry in list(responses.items()):
        content = entry.get("content", {})
        schema = content.get("application/json", {}).get("schema", {})
        if schema.get("$ref", "").endswith("/HTTPValidationError"):
            if _validation_can_fail(operation):
                responses[code] = problem(int(code))
            else:
                del responses[code]
    operation["responses"] = dict(sorted(responses.items()))


# Keywords of a parameter's schema that FastAPI checks (any other than these: it can fail).
_UNCHECKED = {"type", "title", "description", "default", "examples"}


def _validation_can_fail(operation: Operation) -> bool:
    """Whether a request can be refused as invalid: a body, a path or query (the NUL
    character, core.limits), or a header or cookie FastAPI checks; never for an optional
    header or cookie taken as any string, which FastAPI documents with a 422 all the same."""
    if "requestBody" in operation:
        return True
    for parameter in operation.get("parameters", []):
        if parameter.get("in") in ("path", "query"):
            return True
        if parameter.get("required"):
            return True
        if not _any_string(parameter.get("schema", {})):
            return True
    return False


def _any_string(schema: Mapping[str, Any]) -> bool:
    """A schema every string (or, optional, null) satisfies."""
    if "anyOf" in schema:
        rest = set(schema) - _UNCHECKED - {"anyOf"}
        branches = [b for b in schema["anyOf"] if b != {"type": "null"}]
        return not rest and len(branches) == 1 and _any_string(branches[0])
    return schema.get("type") == "string" and not set(schema) - _UNCHECKED


def _takes_json(operation: Operation) -> bool:
    return any("json" in media for media in operation["requestBody"].get("content", {}))
