"""What an agency system's webhook endpoint received, kept in the sandbox's database
(sandbox/state.py) so that a killed sandbox still shows every callback it took.

A subscriber cannot refuse a callback it already had (the answer may be what got lost), so
nothing is de-duplicated here; each callback records how many earlier ones carried the same
`webhook-id`, which is how a subscriber would recognise a resend, and how a count shows one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sandbox.state import open_state


class WebhookLedger:
    def __init__(self, db: sqlite3.Connection | None = None) -> None:
        self._db = db or open_state()

    def record(self, receiver: str, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """Keep one callback, before answering it."""
        lowered = {k.lower(): v for k, v in headers.items()}
        row = self._db.execute(
            """
            INSERT INTO webhook_callback (receiver, webhook_id, body, headers, received_at)
            VALUES (?, ?, ?, ?, ?)
            RETURNING *
            """,
            (
                receiver,
                lowered.get("webhook-id", ""),
                body.decode(errors="replace"),
                json.dumps(lowered, ensure_ascii=False),
                datetime.now(UTC).isoformat(timespec="milliseconds"),
            ),
        ).fetchone()
        return self._callback(row)

    def received(self, receiver: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT * FROM webhook_callback WHERE receiver = ? ORDER BY id", (receiver,)
        ).fetchall()
        return [self._callback(row) for row in rows]

    def _callback(self, row: sqlite3.Row) -> dict[str, Any]:
        (repeats,) = self._db.execute(
            "SELECT count(*) FROM webhook_callback "
            "WHERE receiver = ? AND webhook_id = ? AND webhook_id != '' AND id < ?",
            (row["receiver"], row["webhook_id"], row["id"]),
        ).fetchone()
        return {
            "webhook_id": row["webhook_id"],
            "body": row["body"],
            "headers": json.loads(row["headers"]),
            "received_at": row["received_at"],
            # Earlier callbacks with the same webhook-id: a resend the subscriber should drop.
            "repeats": repeats,
        }

    def clear(self, receiver: str | None = None) -> None:
        self._db.execute(
            "DELETE FROM webhook_callback WHERE ?1 IS NULL OR receiver = ?1", (receiver,)
        )
