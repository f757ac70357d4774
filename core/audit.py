"""The audit trail of authorisation refusals: who was refused what, on which object, and why;
and of operators' actions that change something (a replay from the console, a maintenance
switch): who did what.

Every 403 a service answers (a missing scope, a dossier or transfer of another agency) goes
through `forbidden()` here, so the trail is complete and has one shape. Each refusal is one
JSON line on the `gateway.audit` logger, which writes to stderr on its own handler (whatever
the root logger's format and level) so a log shipper can route the trail apart from the
operational log. A record names the client, its agency, the action, the object (a dossier
code, a transfer id, a path) and the reason, never personal data: callers pass identifiers
and reasons written from them, not a request body.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Protocol

from opentelemetry import trace

from core.clock import SYSTEM_CLOCK
from core.problems import Problem

AUDIT_LOGGER = "gateway.audit"
audit_log = logging.getLogger(AUDIT_LOGGER)


class Caller(Protocol):
    """Who asked: core.auth's AgencyPrincipal (a protocol here, as core.auth uses this)."""

    @property
    def client_id(self) -> str: ...

    @property
    def agency_code(self) -> str: ...


def _ensure_handler() -> None:
    # Installed on first use, not at import: tests attach their own handlers before that.
    if audit_log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    audit_log.addHandler(handler)
    audit_log.setLevel(logging.INFO)
    audit_log.propagate = False


def record_refusal(caller: Caller, *, action: str, target: str, reason: str) -> dict[str, Any]:
    """Write one refusal to the audit trail; returns the record written."""
    record: dict[str, Any] = {
        "time": SYSTEM_CLOCK.now().isoformat(),
        "event": "authorization.refused",
        "client": caller.client_id,
        "agency": caller.agency_code,
        "action": action,
        "object": target,
        "reason": reason,
    }
    _trace(record)
    _ensure_handler()
    audit_log.warning(json.dumps(record, ensure_ascii=False, sort_keys=True))
    return record


def record_action(
    *, client: str, action: str, target: str, event: str = "operator.action", **details: Any
) -> dict[str, Any]:
    """Write one operator's change to the audit trail: the service client it went through,
    what it did to which object, and details such as the official (an identifier from their
    login, never a name), a maintenance reason, or how the callee answered."""
    record: dict[str, Any] = {
        "time": SYSTEM_CLOCK.now().isoformat(),
        "event": event,
        "client": client,
        "action": action,
        "object": target,
    } | details
    _trace(record)
    _ensure_handler()
    audit_log.warning(json.dumps(record, ensure_ascii=False, sort_keys=True))
    return record


def _trace(record: dict[str, Any]) -> None:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        record["trace_id"] = format(context.trace_id, "032x")


def forbidden(
    caller: Caller,
    *,
    action: str,
    target: str,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> Problem:
    """The 403 problem to raise, after recording the refusal (the detail is the reason)."""
    record_refusal(caller, action=action, target=target, reason=f"{slug}: {detail}")
    return Problem(403, slug, title, detail, headers=headers, **extensions)
