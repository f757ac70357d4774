"""How the CLI shows answers to a person (rich tables); `--json` prints the answers instead."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from cli.dead_letters import DeadLetter

STATUS_STYLE = {"ok": "green", "maintenance": "yellow", "unavailable": "red"}


def _when(value: Any) -> str:
    # ISO instants as routing writes them, shortened to the minute for a table.
    return str(value)[:16].replace("T", " ") if value else ""


def journey(console: Console, body: Mapping[str, Any]) -> None:
    console.print(
        f"[bold]{body['dossier_code']}[/] {body['procedure_code']} — "
        f"{body['state']} (national status {body['status']})"
    )
    console.print(
        f"received {_when(body.get('received_at'))}, due {_when(body.get('due_at'))}, "
        f"finished {_when(body.get('finished_at')) or '—'}"
        + (f", [red]overdue since {_when(body['overdue_at'])}[/]" if body.get("overdue_at") else "")
    )
    if body.get("trace_url"):
        console.print(f"trace: {body['trace_url']}")
    elif body.get("trace_id"):
        console.print(f"trace id: {body['trace_id']}")
    steps = Table("stage", "step", "agency", "status", "attempts", "due", "completed")
    for step in body.get("steps", []):
        steps.add_row(
            str(step.get("stage", step.get("step_index", ""))),
            str(step.get("step_name", "")),
            str(step.get("agency_code", "")),
            str(step.get("status", "")),
            str(step.get("attempts", "")),
            _when(step.get("due_at")),
            _when(step.get("completed_at")),
        )
    console.print(steps)
    history = Table("when", "status", "state", "agency", "reason")
    for change in body.get("history", []):
        history.add_row(
            _when(change.get("changed_at")),
            str(change.get("status", "")),
            str(change.get("state", "")),
            str(change.get("agency_code") or ""),
            str(change.get("reason") or ""),
        )
    console.print(history)


def dead_letters(console: Console, letters: Sequence[DeadLetter]) -> None:
    if not letters:
        console.print("no dead letters")
        return
    table = Table()
    # The id is what `replay` takes, the code what a desk asks about: never broken.
    table.add_column("id", no_wrap=True)
    for column in ("kind", "service"):
        table.add_column(column)
    table.add_column("dossier", no_wrap=True)
    for column in ("since", "reason"):
        table.add_column(column)
    for letter in letters:
        table.add_row(
            letter.id,
            letter.kind,
            letter.service,
            letter.dossier_code,
            _when(letter.since),
            letter.reason,
        )
    console.print(table)


def statistics(console: Console, body: Mapping[str, Any]) -> None:
    rows: list[dict[str, Any]] = body.get("rows", [])
    columns = list(rows[0]) if rows else ["agency_code", "procedure_code"]
    table = Table(*columns, title=f"{body.get('month')} by {body.get('by')}")
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    console.print(table)


def maintenance(console: Console, state: Mapping[str, Any]) -> None:
    if state["on"]:
        console.print(
            f"{state['service']}: [yellow]in maintenance[/] since {_when(state['changed_at'])} "
            f"by {state['changed_by']}" + (f": {state['reason']}" if state["reason"] else "")
        )
    else:
        console.print(f"{state['service']}: [green]not in maintenance[/]")


def health(console: Console, answers: Mapping[str, Mapping[str, Any]]) -> None:
    table = Table("service", "status", "maintenance", "not ok")
    for service, answer in answers.items():
        status = str(answer.get("status", "unavailable"))
        in_maintenance: Mapping[str, Any] = answer.get("maintenance") or {}
        failing = [f"{k}: {v}" for k, v in answer.get("checks", {}).items() if v != "ok"]
        table.add_row(
            service,
            f"[{STATUS_STYLE.get(status, 'red')}]{status}[/]",
            str(in_maintenance.get("reason") or "yes") if in_maintenance else "",
            "; ".join(failing),
        )
    console.print(table)
