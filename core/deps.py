"""How a route reaches what its service composed, the one way.

Each service's `deps.py` has a typed `compose(settings)` that builds a frozen dataclass of the
service's parts once (database sessions, clock, clients, workers...); `__main__`, the tests and
the dev stack (which runs `__main__`) all call it. `install` keeps those parts on the
application, and routes take them as `Annotated[..., Depends(...)]` aliases of the service's
`deps.py` (as FastAPI's full-stack template does: `SessionDep = Annotated[Session,
Depends(get_session)]`), never by reading `app.state` themselves: this module is the only
place that does.

No import of core's services at run time: core/maintenance and core/auth use it, and the
runtime imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from fastapi import FastAPI, Request
from starlette.applications import Starlette

if TYPE_CHECKING:
    from core.auth import TokenVerifier
    from core.runtime import Runtime

D = TypeVar("D")


def install(
    app: FastAPI,
    *,
    deps: object = None,
    runtime: Runtime | None = None,
    token_verifier: TokenVerifier | None = None,
) -> None:
    """Keep a service's composition on its application (only what is given)."""
    if deps is not None:
        app.state.deps = deps
    if runtime is not None:
        app.state.runtime = runtime
    if token_verifier is not None:
        app.state.token_verifier = token_verifier


def deps_of(app: Starlette, kind: type[D]) -> D:
    """The service's composition, checked to be of the kind its routes expect."""
    deps = getattr(app.state, "deps", None)
    if not isinstance(deps, kind):
        raise TypeError(f"the application holds no {kind.__name__} (compose() it first)")
    return deps


def provider(kind: type[D]) -> Callable[[Request], D]:
    """A FastAPI dependency giving the composition of `kind`: a service's deps.py makes its
    `Annotated` alias from it once, so FastAPI resolves it once per request."""

    def composed(request: Request) -> D:
        return deps_of(request.app, kind)

    composed.__name__ = f"{kind.__name__.lower()}_of"
    return composed


def runtime_of(request: Request) -> Runtime:
    """The service's runtime (database, producer, maintenance switch), for core's routes."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def token_verifier_of(request: Request) -> TokenVerifier:
    """What checks agency access tokens, for core.auth's dependencies."""
    verifier: TokenVerifier = request.app.state.token_verifier
    return verifier
