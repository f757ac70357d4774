"""Routing's HTTP API, one small router a concern; each route takes what it needs from the
composition (services/routing/deps.py).

- outcomes: agencies report a step's outcome; the desk records supplements and hand-overs;
- acknowledgements: agencies confirm receipt; operators list the escalations;
- dead_letters: transfers not delivered (replay), escalated (redeliver) or stuck;
- portal_dead_letters: status changes the national portal never took (replay);
- catalogue: the catalogue routing follows, and its reload;
- timeline and statistics: a dossier's journey, overdue agencies, the monthly figures.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Depends, FastAPI
from fastapi.params import Depends as Dependency

from core.auth import REPORTS_READ, require_scope
from core.dead_letters import dead_events_router
from services.routing.api import (
    acknowledgements,
    catalogue,
    dead_letters,
    outcomes,
    portal_dead_letters,
    statistics,
    timeline,
)


def include(app: FastAPI, ready: Sequence[Dependency] = ()) -> None:
    """Mount every router; `ready`: what each route waits for first (the runtime's gates)."""
    for router in (
        outcomes.router,
        dead_letters.router,
        dead_events_router(),
        portal_dead_letters.router,
        dead_letters.escalations,
        dead_letters.stuck,
        acknowledgements.router,
        catalogue.router,
    ):
        app.include_router(router, dependencies=ready)
    # Reports: a dossier's journey and the figures are for operators with reports:read.
    reports = [Depends(require_scope(REPORTS_READ)), *ready]
    app.include_router(timeline.router, dependencies=reports)
    app.include_router(statistics.router, dependencies=reports)
