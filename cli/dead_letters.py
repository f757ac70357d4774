"""Every kind of dead letter the gateway keeps, under one id scheme an operator can type:
`transfer:<id>` (routing's undelivered transfers), `push:<key>` (status changes the
national portal never took) and `event:<service>:<row>` (events Kafka refused for good,
on each service that publishes through an outbox)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

from cli.client import ExitCode, GatewayClient, GatewayError
from cli.config import Service

# The services that publish through an outbox (core/dead_letters.py).
PUBLISHERS: tuple[Service, ...] = ("intake", "routing", "notify")


@dataclass(frozen=True)
class DeadLetter:
    id: str
    kind: str
    service: str
    dossier_code: str
    reason: str
    since: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def list_all(client: GatewayClient, limit: int = 1000) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    params = {"limit": limit}
    for t in client.json("GET", "routing", "/v1/dead-letters", params=params):
        letters.append(
            DeadLetter(
                f"transfer:{t['transfer_id']}",
                "transfer",
                "routing",
                t["dossier_code"],
                t.get("reason") or "",
                t.get("dead_lettered_at") or "",
            )
        )
    for p in client.json("GET", "routing", "/v1/dead-letters/portal-pushes", params=params):
        letters.append(
            DeadLetter(
                f"push:{p['push_key']}",
                "portal-push",
                "routing",
                p["dossier_code"],
                p.get("reason") or "",
                p.get("changed_at") or "",
            )
        )
    for service in PUBLISHERS:
        for e in client.json("GET", service, "/v1/dead-letters/events", params=params):
            letters.append(
                DeadLetter(
                    f"event:{service}:{e['id']}",
                    "event",
                    service,
                    e.get("dossier_code") or "",
                    e.get("reason") or "",
                    e.get("dead_lettered_at") or "",
                )
            )
    return letters


def replay(client: GatewayClient, letter_id: str) -> None:
    """Replay one dead letter by its id; a GatewayError says why not."""
    kind, _, rest = letter_id.partition(":")
    if kind == "transfer" and rest:
        client.call("POST", "routing", f"/v1/dead-letters/{quote(rest, safe='')}/replay")
        return
    if kind == "push" and rest:
        path = f"/v1/dead-letters/portal-pushes/{quote(rest, safe='')}/replay"
        client.call("POST", "routing", path)
        return
    name, _, row = rest.partition(":")
    service = next((s for s in PUBLISHERS if s == name), None)
    if kind == "event" and service is not None and row.isdigit():
        client.call("POST", service, f"/v1/dead-letters/events/{row}/replay")
        return
    raise GatewayError(
        ExitCode.USAGE,
        f"{letter_id!r} is no dead letter id (transfer:<id>, push:<key>, event:<service>:<row>)",
    )
