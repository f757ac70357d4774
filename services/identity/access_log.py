"""Who read a citizen's data: an append-only log, hash-chained so tampering shows.

Each row stores sha256(previous hash + canonical JSON of the row). `verify` walks the chain
and compares its end with the head row, so a modified, deleted or reordered row (the last
one included) is found. Citizens are keyed by a keyed hash of their personal ID.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import SYSTEM_CLOCK
from services.identity.models import access_log, access_log_head

GENESIS = "0" * 64
_FIELDS = ("seq", "citizen_ref", "agency", "service", "data", "purpose", "dossier_code", "read_at")


@dataclass(frozen=True)
class Read:
    citizen_ref: str
    agency: str
    service: str
    # What was read, e.g. "identity" or "residence".
    data: str
    purpose: str
    dossier_code: str = ""


def canonical(row: Mapping[str, Any]) -> str:
    values = {f: row[f] for f in _FIELDS}
    read_at: datetime = values["read_at"]
    values["read_at"] = read_at.astimezone(UTC).isoformat(timespec="microseconds")
    return json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def chain_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical(row)).encode()).hexdigest()


async def append(session: AsyncSession, reads: Iterable[Read]) -> None:
    """Append reads in the caller's transaction, which then holds the head until commit."""
    items = list(reads)
    if not items:
        return
    head = (
        await session.execute(
            select(access_log_head).where(access_log_head.c.id == 1).with_for_update()
        )
    ).first()
    if head is None:
        await session.execute(access_log_head.insert().values(id=1, seq=0, hash=GENESIS))
        seq, prev = 0, GENESIS
    else:
        seq, prev = head.seq, head.hash
    now = SYSTEM_CLOCK.now()
    rows = []
    for item in items:
        seq += 1
        row: dict[str, Any] = {
            "seq": seq,
            "citizen_ref": item.citizen_ref,
            "agency": item.agency,
            "service": item.service,
            "data": item.data,
            "purpose": item.purpose,
            "dossier_code": item.dossier_code,
            "read_at": now,
        }
        row["prev_hash"] = prev
        row["hash"] = prev = chain_hash(prev, row)
        rows.append(row)
    await session.execute(access_log.insert(), rows)
    await session.execute(
        update(access_log_head).where(access_log_head.c.id == 1).values(seq=seq, hash=prev)
    )


async def reads_of(session: AsyncSession, citizen_ref: str) -> list[dict[str, Any]]:
    query = (
        select(access_log)
        .where(access_log.c.citizen_ref == citizen_ref)
        .order_by(access_log.c.seq.desc())
    )
    return [dict(r._mapping) for r in (await session.execute(query)).all()]


def verify(rows: Iterable[Mapping[str, Any]], head: Mapping[str, Any] | None) -> list[str]:
    """Problems found in the chain (rows in seq order); empty when it is intact."""
    problems = []
    prev, expected_seq = GENESIS, 1
    for row in rows:
        if row["seq"] != expected_seq:
            problems.append(f"row {row['seq']}: expected row {expected_seq} (deleted or moved)")
        if row["prev_hash"] != prev:
            problems.append(f"row {row['seq']}: does not follow the row before it")
        if chain_hash(row["prev_hash"], row) != row["hash"]:
            problems.append(f"row {row['seq']}: content changed after it was written")
        prev, expected_seq = row["hash"], row["seq"] + 1
    if head is not None and (head["hash"] != prev or head["seq"] != expected_seq - 1):
        problems.append(f"the log ends at row {expected_seq - 1}, its head at row {head['seq']}")
    return problems


async def verify_stored(session: AsyncSession) -> list[str]:
    rows = (await session.execute(select(access_log).order_by(access_log.c.seq))).all()
    head = (await session.execute(select(access_log_head))).first()
    return verify([dict(r._mapping) for r in rows], dict(head._mapping) if head else None)
