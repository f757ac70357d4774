"""A procedure with parallel steps completes only after every branch (the join)."""

from __future__ import annotations

from devstack.stack import Stack
from tests.support.agencies import behave
from tests.support.flows import agency_transfers, dossier_view, eventually, submit, wait_completed

JUSTICE, POLICE, INSURANCE = "000.21.31.H22", "000.22.31.H22", "000.23.05.H22"


def death_registration(email: str) -> dict[str, object]:
    return {
        "procedure_code": "LT.KT-XTT-MTP",
        "applicant": {
            "personal_id": "001090012345",
            "full_name": "Nguyễn Văn Hùng",
            "email": email,
        },
        "form_data": {
            "deceased_full_name": "Nguyễn Văn Tư",
            "deceased_personal_id": "001045001234",
            "date_of_death": "2026-11-20",
            "requester_relationship": "Con",
        },
    }


def test_parallel_branches_join_before_completion(stack: Stack) -> None:
    behave(stack, INSURANCE, delay_s=3)
    try:
        code = submit(stack, death_registration("parallel@example.vn"))

        def police_done() -> dict[str, object] | None:
            view = dossier_view(stack, code)
            steps = {s["agency_code"]: s for s in view["steps"]}
            return view if steps.get(POLICE, {}).get("status") == "completed" else None

        halfway = eventually(police_done)
        steps = {s["agency_code"]: s for s in halfway["steps"]}  # type: ignore[index]
        # Both branches were sent together, after the death registration.
        assert steps[POLICE]["stage"] == steps[INSURANCE]["stage"] == 1
        assert steps[POLICE]["routed_at"] == steps[INSURANCE]["routed_at"]
        assert steps[INSURANCE]["status"] != "completed"
        assert halfway["status"] == "processing"

        view = wait_completed(stack, code)
        assert [s["status"] for s in view["steps"]] == ["completed"] * 3
        for agency in (JUSTICE, POLICE, INSURANCE):
            got = [t for t in agency_transfers(stack, agency) if t["dossier_code"] == code]
            assert len(got) == 1, agency
    finally:
        behave(stack, INSURANCE)
