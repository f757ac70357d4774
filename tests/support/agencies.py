"""Helpers for the delivery tests: steer the sandbox agencies, read routing's tables and
the dossier topic."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from core.events import Event, from_kafka
from devstack.stack import Stack
from tests.support.flows import steer_sandbox
from tests.support.kafka import Record, at_least, keyed, read_topic

BIRTH_AGENCY = "000.21.31.H22"  # the commune justice office: the one step of HT.KS


def birth_registration(email: str) -> dict[str, Any]:
    return {
        "procedure_code": "HT.KS",
        "applicant": {"personal_id": "001090012345", "full_name": "Nguyễn Thị Lan", "email": email},
        "form_data": {
            "child_full_name": "Trần Minh Khôi",
            "child_birth_date": "2026-11-01",
            "child_gender": "Nam",
            "mother_full_name": "Nguyễn Thị Lan",
        },
    }


def behave(stack: Stack, agency_code: str = BIRTH_AGENCY, **behaviour: Any) -> None:
    steer_sandbox(stack, f"agencies/{agency_code}", **behaviour)


async def transfer_rows(database_url: str, dossier_code: str) -> list[dict[str, Any]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT * FROM routing_transfer WHERE dossier_code = :code ORDER BY step_index"
                ),
                {"code": dossier_code},
            )
            return [dict(row._mapping) for row in result]
    finally:
        await engine.dispose()


async def events_of(
    bootstrap: str, topic: str, dossier_code: str, ce_type: str, within_s: float = 30
) -> list[Event]:
    """The events of one type for one dossier on a topic, read from the start."""
    records = await read_topic(
        bootstrap, topic, keyed(dossier_code, ce_type), at_least(1), within_s
    )
    return [from_kafka(r.key, r.value, dict(r.headers)) for r in records]


async def inbox_records(bootstrap: str, topic: str, dossier_code: str) -> list[Record]:
    """The records for one dossier on an agency's Kafka inbox, read from the start."""
    return await read_topic(bootstrap, topic, keyed(dossier_code), at_least(1), 30)
