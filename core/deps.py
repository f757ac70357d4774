"""How a route reaches what its service composed, the one way.

Each service's `deps.py` has a typed `compose(settings)` that builds a frozen dataclass of the
service's parts once (database sessions, clock, clients, workers...); `__main__`, the tests and
the dev stack (which runs `__main__`) all call it. `install` keeps those parts on the
application, and routes take them as `Annotated[..., Depends(...)]` aliases of the service's
`deps.py` (as FastAPI's full-stack template does: `SessionDep = Annotated[Session,
Depends(get_session)]`), never by reading `app.state` themselves: this module is the only
place that does.

Core's own parts (the runtime, the token verifier, the maintenance switch) are kept by
name and read back with `part_of` by the module that defines each: this module imports none
of them, so it stays at the bottom of the house.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import FastAPI, Request
from starlette.applications import Starlette

D = TypeVar("D")


def install(app: FastAPI, **parts: object) -> None:
    """Keep a service's composition (`deps`) and core's parts on its application, by name
    (only those given)."""
    for name, part in parts.items():
        if part is not None:
            setattr(app.state, name, part)


def part_of(app: Starlette, name: str, kind: type[D]) -> D:
    """A part kept by `install`, checked to be of the kind its reader expects."""
    part = getattr(app.state, name, None)
    if not isinstance(part, kind):
        raise TypeError(f"the application holds no {kind.__name__} as {name!r}")
    return part


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
