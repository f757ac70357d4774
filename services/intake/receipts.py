"""Receipt codes in the national form AGENCYCODE-YYMMDD-NNNN (e.g. 000.00.01.H22-251117-0001).

The number restarts every day for every receiving agency. It is taken inside the dossier's
own transaction, so a rolled-back submission never burns a number another one sees.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from core.calendar import VIETNAM
from core.storage import upsert
from services.intake.models import receipt_sequences


async def next_receipt_code(session: AsyncSession, agency_code: str, received_at: datetime) -> str:
    day = received_at.astimezone(VIETNAM).strftime("%y%m%d")
    table = receipt_sequences
    insert = upsert(session.get_bind().dialect.name, table).values(
        agency_code=agency_code, day=day, last_number=1
    )
    statement = insert.on_conflict_do_update(
        index_elements=[table.c.agency_code, table.c.day],
        set_={"last_number": table.c.last_number + 1},
    ).returning(table.c.last_number)
    number = (await session.execute(statement)).scalar_one()
    return f"{agency_code}-{day}-{number:04d}"
