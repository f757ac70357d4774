"""Object-level access on the real stack: a desk acts only on the dossiers it received and
files only in its own agency's name, and every refusal lands in the audit trail."""

from __future__ import annotations

import json
from typing import Any

import httpx

from devstack.stack import Stack
from services.routing.models import transfer_id_for
from tests.support.flows import DESK, as_agency, chain_dossier, eventually, receiving_agency, submit

JUSTICE = "000.21.31.H22"  # a desk too (hotich-tanphong may submit), but of its own dossiers


def disability_dossier() -> dict[str, Any]:
    """LT.XDKT-TCXH: the commune council, then the labour department; not the justice office."""
    return {
        "procedure_code": "LT.XDKT-TCXH",
        "applicant": {"personal_id": "001090012345", "full_name": "Nguyễn Văn An"},
        "form_data": {
            "person_full_name": "Nguyễn Văn An",
            "person_personal_id": "001090012345",
            "disability_description": "Khuyết tật vận động",
        },
    }


def assert_problem(response: httpx.Response, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == f"/problems/{slug}"


def audit_records(stack: Stack, service: str) -> list[dict[str, Any]]:
    """The refusals a service wrote to its audit trail (JSON lines in its log)."""
    lines = (stack.var_dir / "log" / f"{service}.log").read_text(errors="replace").splitlines()
    records = [json.loads(line) for line in lines if line.startswith('{"')]
    return [r for r in records if r.get("event") == "authorization.refused"]


def refused(stack: Stack, service: str, action: str, target: str) -> dict[str, Any] | None:
    found = [
        r for r in audit_records(stack, service) if (r["action"], r["object"]) == (action, target)
    ]
    return found[-1] if found else None


def test_a_desk_cannot_record_on_another_desks_dossier(stack: Stack) -> None:
    routing = stack.url("routing")
    code = submit(stack, disability_dossier())  # received by the one-stop desk
    documents = {"documents": [{"name": "Giấy xác nhận", "reference": "GXN-1"}]}

    def supplement_as(agency: str) -> httpx.Response | None:
        answer = httpx.post(
            f"{routing}/v1/dossiers/{code}/supplements",
            json=documents,
            headers=as_agency(stack, agency),
            timeout=10,
        )
        return None if answer.status_code == 404 else answer  # routing has not taken it in yet

    assert_problem(eventually(lambda: supplement_as(JUSTICE)), 403, "dossier-of-another-desk")
    returned = httpx.post(
        f"{routing}/v1/dossiers/{code}/result-returned", headers=as_agency(stack, JUSTICE)
    )
    assert_problem(returned, 403, "dossier-of-another-desk")
    # The receiving desk itself passes the check (and meets the state machine instead).
    own = supplement_as(DESK)
    assert own is not None
    assert_problem(own, 409, "no-supplement-requested")

    for action in ("record-supplement", "record-result-returned"):
        record = eventually(lambda a=action: refused(stack, "routing", a, f"dossier/{code}"))
        assert record["client"] == "hotich-tanphong"
        assert record["agency"] == JUSTICE
        assert DESK in record["reason"]


def test_a_desk_files_in_its_own_agencys_name_only(stack: Stack) -> None:
    intake = stack.url("intake") + "/v1/dossiers"
    justice = as_agency(stack, JUSTICE)
    body = chain_dossier("own-desk@example.vn")
    impostor = httpx.post(intake, json=body | {"receiving_agency_code": DESK}, headers=justice)
    assert_problem(impostor, 403, "dossier-for-another-agency")
    record = eventually(lambda: refused(stack, "intake", "submit-dossier", f"agency/{DESK}"))
    assert (record["client"], record["agency"]) == ("hotich-tanphong", JUSTICE)
    assert "own-desk@example.vn" not in json.dumps(record)  # identifiers, no personal data

    # Naming no desk, the dossier is the caller's, whatever the procedure's usual desk.
    filed = httpx.post(intake, json=body, headers=justice, timeout=10)
    assert filed.status_code == 201, filed.text
    assert receiving_agency(filed.json()["code"]) == JUSTICE
    assert filed.json()["receiving_agency_code"] == JUSTICE


def test_scope_refusals_are_audited(stack: Stack) -> None:
    police = "000.22.31.H22"  # may read and report, not submit
    answer = httpx.post(
        stack.url("intake") + "/v1/dossiers",
        json=chain_dossier("scope@example.vn"),
        headers=as_agency(stack, police),
        timeout=10,
    )
    assert_problem(answer, 403, "insufficient-scope")
    record = eventually(lambda: refused(stack, "intake", "POST /v1/dossiers", "/v1/dossiers"))
    assert record["agency"] == police
    assert "dossiers:submit" in record["reason"]


def test_reports_on_another_agencys_transfer_are_refused_and_audited(stack: Stack) -> None:
    routing = stack.url("routing")
    code = submit(stack, disability_dossier())
    transfer_id = transfer_id_for(code, 0)  # the commune council's step
    justice = as_agency(stack, JUSTICE)

    def outcome() -> httpx.Response | None:
        answer = httpx.post(
            f"{routing}/v1/transfers/{transfer_id}/outcome",
            json={"outcome": "refused", "reason": "Sai thẩm quyền"},
            headers=justice,
            timeout=10,
        )
        return None if answer.status_code == 404 else answer

    assert_problem(eventually(outcome), 403, "step-held-by-another-agency")
    acknowledged = httpx.post(
        f"{routing}/v1/transfers/{transfer_id}/acknowledgement", headers=justice, timeout=10
    )
    assert_problem(acknowledged, 403, "transfer-held-by-another-agency")
    for action in ("report-outcome", "acknowledge-transfer"):
        record = eventually(
            lambda a=action: refused(stack, "routing", a, f"transfer/{transfer_id}")
        )
        assert record["agency"] == JUSTICE
