"""Identity's consents judge a request by routing's catalogue (core/catalogue_client.py):
before the first version is in, a consent is refused 503 with Retry-After and nothing is
read; after it, the procedure's needs decide."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc

from core.catalogue_client import CatalogueClient
from core.personal_id import validate_personal_id
from services.identity.api import refused
from services.identity.citizens import CitizenSession
from services.identity.consents import ConsentRefused, Consents

CITIZEN = CitizenSession(
    personal_id=validate_personal_id("079185000002"),
    full_name="Nguyễn Văn An",
    assurance_level=2,
    expires_at=datetime(2026, 12, 3, 12, tzinfo=UTC),
)


class NoRegistry:
    """Fails the test if the registry is asked: nothing may be read without a catalogue."""

    async def residence(self, *args: Any) -> Any:
        raise AssertionError("the registry was read")


async def test_a_consent_before_the_catalogue_is_in_is_503_with_retry_after() -> None:
    catalogues = CatalogueClient("127.0.0.1:1", 0.5, None)  # routing not there yet
    consents = Consents(None, catalogues, NoRegistry(), None, None)  # type: ignore[arg-type]  # only the catalogue is reached
    try:
        await consents.preview(CITIZEN, "HT.XNTTHN", "Đăng ký kết hôn")
        raise AssertionError("not refused")
    except ConsentRefused as exc:
        problem = refused(exc)
    finally:
        await catalogues.close()
    assert (problem.status, problem.slug) == (503, "catalogue-unavailable")
    assert problem.headers == {"Retry-After": "5"}


def test_other_refusals_carry_no_retry_after() -> None:
    exc = ConsentRefused(422, grpc.StatusCode.INVALID_ARGUMENT, "unknown-procedure", "t", "d")
    assert refused(exc).headers == {}
