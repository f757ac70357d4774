"""`gateway`: the operators' commands (docs/reference/cli.md). Exit codes: 0 ok, 1 failed,
2 usage, 3 not found, 4 auth refused, 5 service unavailable (cli/client.py)."""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from cli import render
from cli.client import ExitCode, GatewayClient, GatewayError
from cli.config import SERVICES, CliConfig, ConfigError, load_config
from cli.dead_letters import list_all, replay

app = typer.Typer(
    name="gateway",
    help="Operate the dossier gateway: timelines, dead letters, reports, maintenance, health.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dead_letters_app = typer.Typer(help="Transfers, portal pushes and events set aside.")
catalogue_app = typer.Typer(help="Routing's procedure catalogue.")
app.add_typer(dead_letters_app, name="dead-letters")
app.add_typer(catalogue_app, name="catalogue")

out = Console()
err = Console(stderr=True)
P = ParamSpec("P")
R = TypeVar("R")
MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


class ServiceName(StrEnum):
    """The services, as typer wants choices (tests check they are SERVICES)."""

    intake = "intake"
    routing = "routing"
    notify = "notify"
    identity = "identity"


JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


class State:
    config_path: Path | None = None


STATE = State()


@app.callback()
def main(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file of settings (default ~/.config/gateway/config.toml); "
            "GATEWAY_* variables override it.",
        ),
    ] = None,
) -> None:
    STATE.config_path = config


def operator_command(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a GatewayError or a configuration error into its message and exit code."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(ExitCode.USAGE) from None
        except GatewayError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(exc.code) from None

    return run


@contextmanager
def gateway() -> Iterator[GatewayClient]:
    client = GatewayClient(config())
    try:
        yield client
    finally:
        client.close()


def config() -> CliConfig:
    return load_config(STATE.config_path)


def emit(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")


@app.command()
@operator_command
def dossier(code: str, as_json: JsonOut = False) -> None:
    """A dossier's timeline: steps, transfers, status changes, apologies, trace link."""
    with gateway() as client:
        journey = client.json("GET", "routing", f"/v1/dossiers/{code}/journey")
    if as_json:
        emit(journey)
        return
    render.journey(out, journey)


@dead_letters_app.command("list")
@operator_command
def list_dead_letters(as_json: JsonOut = False) -> None:
    """Every dead letter of every service, with the id to replay it by."""
    with gateway() as client:
        letters = list_all(client)
    if as_json:
        emit([letter.as_json() for letter in letters])
        return
    render.dead_letters(out, letters)


@dead_letters_app.command("replay")
@operator_command
def replay_dead_letters(
    ids: Annotated[list[str] | None, typer.Argument(help="Ids as `list` shows them.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    as_json: JsonOut = False,
) -> None:
    """Replay dead letters once their cause is mended; exit 1 if any could not be."""
    if bool(ids) == all_:
        err.print("[red]error:[/] name dead letter ids or give --all (not both)")
        raise typer.Exit(ExitCode.USAGE)
    results: list[dict[str, Any]] = []
    with gateway() as client:
        chosen = [letter.id for letter in list_all(client)] if all_ else list(ids or [])
        with Progress(
            TextColumn("replaying"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err,
            disable=as_json or not chosen,
        ) as progress:
            task = progress.add_task("replay", total=len(chosen))
            for letter_id in chosen:
                try:
                    replay(client, letter_id)
                    results.append({"id": letter_id, "replayed": True})
                except GatewayError as exc:
                    if exc.code in (ExitCode.AUTH_REFUSED, ExitCode.USAGE):
                        raise
                    results.append({"id": letter_id, "replayed": False, "error": str(exc)})
                progress.advance(task)
    failed = [r for r in results if not r["replayed"]]
    if as_json:
        emit(results)
    else:
        out.print(f"replayed {len(results) - len(failed)} of {len(results)} dead letters")
        for result in failed:
            err.print(f"[red]not replayed[/] {result['id']}: {result['error']}")
    if failed:
        raise typer.Exit(ExitCode.FAILED)


class By(StrEnum):
    desk = "desk"
    step = "step"


@app.command()
@operator_command
def report(
    month: Annotated[str, typer.Option(help="YYYY-MM, in Vietnam's time.")],
    csv: Annotated[bool, typer.Option("--csv", help="CSV as routing renders it.")] = False,
    by: Annotated[By, typer.Option(help="desk: per receiving agency; step: per agency.")] = By.desk,
    as_json: JsonOut = False,
) -> None:
    """Monthly statistics per agency and procedure."""
    if not MONTH.fullmatch(month):
        raise typer.BadParameter("the month must be YYYY-MM", param_hint="--month")
    params = {"month": month, "by": by.value, "format": "csv" if csv else "json"}
    with gateway() as client:
        response = client.call("GET", "routing", "/v1/statistics", params=params)
    if csv:
        sys.stdout.write(response.text)
    elif as_json:
        emit(response.json())
    else:
        render.statistics(out, response.json())


class Switch(StrEnum):
    on = "on"
    off = "off"
    show = "show"


@app.command()
@operator_command
def maintenance(
    switch: Annotated[Switch, typer.Argument(help="on, off, or show the state.")],
    service: Annotated[ServiceName, typer.Argument(help="The service.")],
    reason: Annotated[str, typer.Option(help="Why (shown in /health/ready).")] = "",
    as_json: JsonOut = False,
) -> None:
    """Turn a service's maintenance mode on or off (scope maintenance:manage), or show it."""
    name = next(s for s in SERVICES if s == service.value)
    with gateway() as client:
        if switch is Switch.show:
            state = client.json("GET", name, "/v1/maintenance")
        else:
            body = {"on": switch is Switch.on, "reason": reason}
            state = client.json("PUT", name, "/v1/maintenance", json=body)
    if as_json:
        emit(state)
        return
    render.maintenance(out, state)


@catalogue_app.command("reload")
@operator_command
def reload_catalogue(as_json: JsonOut = False) -> None:
    """Load routing's catalogue files again (a no-op when they did not change)."""
    with gateway() as client:
        loaded = client.json("POST", "routing", "/v1/catalogue/reload")
    if as_json:
        emit({k: loaded[k] for k in ("version", "sha256", "changed")})
        return
    state = "changed" if loaded.get("changed") else "unchanged"
    out.print(f"catalogue version {loaded['version']} ({state}), sha256 {loaded.get('sha256')}")


@app.command()
@operator_command
def health(as_json: JsonOut = False) -> None:
    """Every service's readiness, maintenance shown; exit 5 if any is unavailable."""
    answers: dict[str, dict[str, Any]] = {}
    with gateway() as client:
        for service in SERVICES:
            answers[service] = client.readiness(service)
    if as_json:
        emit(answers)
    else:
        render.health(out, answers)
    if any(a["status"] == "unavailable" for a in answers.values()):
        raise typer.Exit(ExitCode.UNAVAILABLE)


if __name__ == "__main__":
    app()
