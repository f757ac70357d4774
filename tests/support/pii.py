"""Personal data that must never reach a trace backend, a log or a Kafka key: the check the
hygiene tests share (tests/integration/test_pii_hygiene.py, test_zipkin_trace.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Fields of a dossier that name or reach a person. Dates and a gender ("Nam") are personal
# too, but short or common enough to turn up anywhere in a span by chance.
APPLICANT_FIELDS = ("personal_id", "full_name", "email", "phone")
FORM_FIELDS_ENDING = ("_full_name", "_address")


def personal_values(dossier: dict[str, Any]) -> list[str]:
    """The values of `dossier` (a filing's request body) that identify a person."""
    applicant: dict[str, Any] = dossier.get("applicant") or {}
    form: dict[str, Any] = dossier.get("form_data") or {}
    found = [str(applicant[f]) for f in APPLICANT_FIELDS if applicant.get(f)]
    found += [str(v) for k, v in form.items() if v and k.endswith(FORM_FIELDS_ENDING)]
    return sorted(set(found))


def assert_no_personal_data(where: str, text: str, values: Iterable[str]) -> None:
    leaked = [value for value in values if value in text]
    assert not leaked, f"{where} carries personal data: {leaked}"
