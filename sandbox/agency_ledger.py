"""What the demo agencies took and what they still owe the gateway, kept in the sandbox's
database (sandbox/state.py) so that neither is forgotten when the sandbox is killed.

A transfer is recorded, together with the callbacks it calls for, in one commit before the
agency answers the delivery: killed before that commit, the agency never said yes and the
gateway delivers again; killed after, the re-delivery is recognised by its transfer id and
the owed callbacks are picked up again at start-up.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sandbox.state import transaction

CallbackKind = Literal["acknowledgement", "outcome"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class TransferRecord:
    agency_code: str
    transfer_id: str
    dossier_code: str
    step_index: int
    first_received_at: str
    deliveries: int
    effects: int
    channel: str
    # The signature was checked (the sandbox has the agencies' secret) and matched.
    verified: bool
    acknowledged_at: str | None
    reported_at: str | None

    @classmethod
    def of(cls, row: sqlite3.Row) -> TransferRecord:
        # A Row iterates over its values, not its column names.
        columns = dict(zip(row.keys(), tuple(row), strict=True))
        return cls(**columns | {"verified": bool(row["verified"])})

    def as_json(self) -> dict[str, Any]:
        return {
            "transfer_id": self.transfer_id,
            "dossier_code": self.dossier_code,
            "step_index": self.step_index,
            "first_received_at": self.first_received_at,
            "deliveries": self.deliveries,
            "effects": self.effects,
            "reported_at": self.reported_at,
            "channel": self.channel,
            "verified": self.verified,
            "acknowledged_at": self.acknowledged_at,
        }


@dataclass(frozen=True)
class Owed:
    """A callback the agency owes the gateway: its acknowledgement or its outcome report."""

    agency_code: str
    transfer_id: str
    what: CallbackKind
    url: str
    payload: dict[str, Any]
    # Unix time: not sent before (the agency works on the step meanwhile).
    due_at: float
    # W3C trace context (traceparent, tracestate) of the delivery this callback answers.
    trace: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, row: sqlite3.Row) -> Owed:
        return cls(
            row["agency_code"],
            row["transfer_id"],
            row["what"],
            row["url"],
            json.loads(row["payload"]),
            row["due_at"],
            json.loads(row["trace"]),
        )


_OWE = """
INSERT OR IGNORE INTO agency_callback (agency_code, transfer_id, what, url, payload, due_at,
    trace)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""


class AgencyLedger:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def receive(
        self,
        agency_code: str,
        transfer_id: str,
        *,
        dossier_code: str,
        step_index: int,
        channel: str,
        verified: bool,
        owed: list[Owed],
    ) -> tuple[TransferRecord, bool]:
        """Record a delivery: a new transfer with the callbacks it calls for (True), or one
        more delivery of a transfer already taken (False), whose `owed` are not added."""
        with transaction(self._db) as db:
            row = db.execute(
                """
                INSERT INTO agency_transfer (agency_code, transfer_id, dossier_code, step_index,
                    channel, verified, first_received_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (agency_code, transfer_id) DO UPDATE SET deliveries = deliveries + 1
                RETURNING *
                """,
                (agency_code, transfer_id, dossier_code, step_index, channel, verified, now_iso()),
            ).fetchone()
            record = TransferRecord.of(row)
            new = record.deliveries == 1
            if new:
                db.executemany(_OWE, [_values(o) for o in owed])
        return record, new

    def owe(self, owed: list[Owed]) -> None:
        """Add callbacks to the to-do (all or none), except those already there."""
        with transaction(self._db) as db:
            db.executemany(_OWE, [_values(o) for o in owed])

    def owed(self, agency_code: str | None = None, transfer_id: str | None = None) -> list[Owed]:
        """The to-do, acknowledgements before outcomes, oldest transfers first."""
        rows = self._db.execute(
            """
            SELECT * FROM agency_callback
            WHERE (?1 IS NULL OR agency_code = ?1) AND (?2 IS NULL OR transfer_id = ?2)
            ORDER BY what = 'outcome', due_at
            """,
            (agency_code, transfer_id),
        ).fetchall()
        return [Owed.of(row) for row in rows]

    def settle(self, owed: Owed, done: bool) -> None:
        """Strike a callback off the to-do: sent (done, and the time is recorded on the
        transfer) or given up."""
        column = "acknowledged_at" if owed.what == "acknowledgement" else "reported_at"
        with transaction(self._db) as db:
            db.execute(
                "DELETE FROM agency_callback "
                "WHERE agency_code = ? AND transfer_id = ? AND what = ?",
                (owed.agency_code, owed.transfer_id, owed.what),
            )
            if done:
                db.execute(
                    f"UPDATE agency_transfer SET {column} = coalesce({column}, ?) "  # noqa: S608 - column is one of two literals
                    "WHERE agency_code = ? AND transfer_id = ?",
                    (now_iso(), owed.agency_code, owed.transfer_id),
                )

    def acknowledged(self, agency_code: str, transfer_id: str) -> None:
        """The acknowledgement went with the answer itself (a gRPC receipt): none is owed."""
        with transaction(self._db) as db:
            db.execute(
                "UPDATE agency_transfer SET acknowledged_at = coalesce(acknowledged_at, ?) "
                "WHERE agency_code = ? AND transfer_id = ?",
                (now_iso(), agency_code, transfer_id),
            )
            db.execute(
                "DELETE FROM agency_callback "
                "WHERE agency_code = ? AND transfer_id = ? AND what = 'acknowledgement'",
                (agency_code, transfer_id),
            )

    def record(self, agency_code: str, transfer_id: str) -> TransferRecord | None:
        row = self._db.execute(
            "SELECT * FROM agency_transfer WHERE agency_code = ? AND transfer_id = ?",
            (agency_code, transfer_id),
        ).fetchone()
        return None if row is None else TransferRecord.of(row)

    def transfers(self, agency_code: str) -> list[TransferRecord]:
        rows = self._db.execute(
            "SELECT * FROM agency_transfer WHERE agency_code = ? ORDER BY rowid", (agency_code,)
        ).fetchall()
        return [TransferRecord.of(row) for row in rows]

    def summary(self) -> dict[str, tuple[int, int]]:
        """Per agency: transfers taken, deliveries received."""
        rows = self._db.execute(
            "SELECT agency_code, count(*), sum(deliveries) FROM agency_transfer "
            "GROUP BY agency_code ORDER BY min(rowid)"
        ).fetchall()
        return {row[0]: (row[1], row[2]) for row in rows}

    def clear(self) -> None:
        with transaction(self._db) as db:
            db.execute("DELETE FROM agency_callback")
            db.execute("DELETE FROM agency_transfer")


def _values(owed: Owed) -> tuple[Any, ...]:
    payload = json.dumps(owed.payload, ensure_ascii=False)
    trace = json.dumps(owed.trace)
    return (owed.agency_code, owed.transfer_id, owed.what, owed.url, payload, owed.due_at, trace)
