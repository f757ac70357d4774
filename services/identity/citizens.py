"""Citizens' e-ID logins and sessions, kept in identity's database.

A login keeps its state, nonce and PKCE verifier server-side until the provider sends the
citizen back; the callback consumes that row, so replaying it finds nothing. A session is an
opaque random id handed to the citizen; only its SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.clock import SYSTEM_CLOCK, Clock
from core.personal_id import PersonalId, pseudonymise, validate_personal_id
from services.identity.eid import LoginRequest, VerifiedCitizen
from services.identity.models import citizen_sessions, logins


@dataclass(frozen=True)
class CitizenSession:
    personal_id: PersonalId
    full_name: str
    assurance_level: int
    expires_at: datetime
    email: str | None = None
    phone: str | None = None


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Citizens:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        pseudonym_key: bytes,
        login_ttl_s: int,
        session_ttl_s: int,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._sessions = sessions
        self._key = pseudonym_key
        self._login_ttl = timedelta(seconds=login_ttl_s)
        self._session_ttl = timedelta(seconds=session_ttl_s)
        self._clock = clock

    def ref(self, personal_id: PersonalId) -> str:
        """The citizen's pseudonym: how the access log and consents name them."""
        return pseudonymise(personal_id.value, self._key)

    async def begin_login(self) -> LoginRequest:
        login = LoginRequest.new()
        now = self._clock.now()
        async with self._sessions.begin() as session:
            # Abandoned logins go as new ones come: no sweeper needed.
            await session.execute(delete(logins).where(logins.c.expires_at < now))
            await session.execute(
                logins.insert().values(
                    state=login.state,
                    nonce=login.nonce,
                    code_verifier=login.code_verifier,
                    expires_at=now + self._login_ttl,
                )
            )
        return login

    async def take_login(self, state: str) -> LoginRequest | None:
        """The login this state began, consumed: a second callback with it gets None."""
        async with self._sessions.begin() as session:
            row = (
                await session.execute(
                    delete(logins).where(logins.c.state == state).returning(*logins.c)
                )
            ).first()
        if row is None or row.expires_at < self._clock.now():
            return None
        return LoginRequest(row.state, row.nonce, row.code_verifier)

    async def open_session(self, citizen: VerifiedCitizen) -> tuple[str, CitizenSession]:
        session_id = secrets.token_urlsafe(32)
        now = self._clock.now()
        opened = CitizenSession(
            citizen.personal_id,
            citizen.name,
            citizen.assurance_level,
            now + self._session_ttl,
            citizen.email,
            citizen.phone,
        )
        async with self._sessions.begin() as session:
            await session.execute(
                delete(citizen_sessions).where(citizen_sessions.c.expires_at < now)
            )
            await session.execute(
                citizen_sessions.insert().values(
                    id_hash=session_hash(session_id),
                    personal_id=citizen.personal_id.value,
                    full_name=citizen.name,
                    assurance_level=citizen.assurance_level,
                    created_at=now,
                    expires_at=opened.expires_at,
                    email=citizen.email,
                    phone=citizen.phone,
                )
            )
        return session_id, opened

    async def close_session(self, session_id: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                delete(citizen_sessions).where(
                    citizen_sessions.c.id_hash == session_hash(session_id)
                )
            )

    async def session(self, session_id: str) -> CitizenSession | None:
        if not session_id:
            return None
        async with self._sessions() as session:
            row = (
                await session.execute(
                    citizen_sessions.select().where(
                        citizen_sessions.c.id_hash == session_hash(session_id)
                    )
                )
            ).first()
        if row is None or row.expires_at < self._clock.now():
            return None
        return CitizenSession(
            validate_personal_id(row.personal_id),
            row.full_name,
            row.assurance_level,
            row.expires_at,
            row.email,
            row.phone,
        )
