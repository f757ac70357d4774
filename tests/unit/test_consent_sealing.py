"""Consent previews at rest: sealed, bound to their consent, unreadable without the key."""

from __future__ import annotations

import pytest

from services.identity.sealing import ResidenceSeal, SealBroken

KEY = bytes(range(32))
RESIDENCE = {
    "personal_id": "079185000001",
    "full_name": "Nguyễn Thị Lan",
    "household": {"members": [{"personal_id": "079185000002", "relationship": "Con"}]},
}


def test_a_sealed_preview_opens_to_what_was_shown_and_names_nobody() -> None:
    seal = ResidenceSeal(KEY)
    sealed = seal.seal("consent-1", RESIDENCE)
    for clear in ("079185000001", "079185000002", "Lan"):
        assert clear not in sealed
    assert seal.open("consent-1", sealed) == RESIDENCE


def test_a_sealed_preview_cannot_move_to_another_consent_or_be_opened_by_another_key() -> None:
    sealed = ResidenceSeal(KEY).seal("consent-1", RESIDENCE)
    with pytest.raises(SealBroken):
        ResidenceSeal(KEY).open("consent-2", sealed)
    with pytest.raises(SealBroken):
        ResidenceSeal(bytes(32)).open("consent-1", sealed)
    tampered = sealed[:-8] + ("A" * 8 if not sealed.endswith("A" * 8) else "B" * 8)
    with pytest.raises(SealBroken):
        ResidenceSeal(KEY).open("consent-1", tampered)
