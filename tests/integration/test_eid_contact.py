"""Contact details from the e-ID profile on the real stack: a citizen logged in with e-ID
who gives no email or phone still gets the receipt, at the addresses the provider released
(sandbox/oidc_models.py contact_of); contact details in the body win over the profile's."""

from __future__ import annotations

from typing import Any

import httpx

from devstack.otlp_sink import SpanCollector
from devstack.stack import Stack
from sandbox.oidc_models import contact_of
from tests.support.eid import log_in
from tests.support.flows import CHAIN, DESK, as_agency, dossier_view, eventually, mails_to
from tests.support.notify import sms_to

RECEIPT = "đã được tiếp nhận"


def file_with_eid(stack: Stack, session: str, applicant: dict[str, str]) -> str:
    body = {
        "procedure_code": CHAIN,
        "applicant": applicant,
        "form_data": {
            "child_full_name": "Trần Minh Khôi",
            "child_birth_date": "2026-11-01",
            "child_gender": "Nam",
            "mother_full_name": "Nguyễn Thị Lan",
            "residence_address": "Số 12, thôn Đông, xã Tân Phong",
        },
    }
    headers = as_agency(stack, DESK) | {"X-Citizen-Session": session}
    response = httpx.post(
        stack.url("intake") + "/v1/dossiers", json=body, headers=headers, timeout=15
    )
    assert response.status_code == 201, response.text
    code: str = response.json()["code"]
    return code


def receipts(messages: list[dict[str, Any]], code: str) -> list[dict[str, Any]]:
    """The receipts of this dossier among mails or SMS (later transfers are not counted)."""
    return [m for m in messages if code in m["text"] and RECEIPT in m.get("subject", m["text"])]


def test_a_citizen_without_contact_in_the_body_is_told_through_the_e_id_profile(
    stack: Stack, spans: SpanCollector
) -> None:
    citizen = "001090012345"
    email, phone = contact_of(citizen)
    assert phone is not None, "this sandbox citizen has a phone in the e-ID profile"
    _, login = log_in(stack, citizen, acr="1")

    code = file_with_eid(stack, login["session"], {})

    mails = eventually(lambda: receipts(mails_to(stack, email), code) or None)
    assert len(mails) == 1
    assert mails[0]["to"] == [email]
    assert len(eventually(lambda: receipts(sms_to(stack, phone), code) or None)) == 1

    # Contact data is kept out of what operators read, as personal IDs are. The sandbox
    # stands in for the SMTP server and SMS gateway, whose logs name recipients.
    national = phone.removeprefix("+84")  # in +84…, 84… and 0… spellings alike
    trace_id = dossier_view(stack, code)["trace_id"]
    # Spans are exported in batches: wait until the receipt's mail went out in its trace.
    eventually(lambda: any(s.name == "smtp send" for s in spans.spans(trace_id)))
    for service in ("identity", "intake", "routing", "notify"):
        text = (stack.var_dir / "log" / f"{service}.log").read_text(errors="replace")
        assert email not in text, f"{service} logs the e-ID email"
        assert national not in text, f"{service} logs the e-ID phone"
    for span in spans.spans():
        exported = f"{span.name} {span.attributes}"
        assert email not in exported, f"span {span.name} of {span.service} carries the email"
        assert national not in exported, f"span {span.name} of {span.service} carries the phone"


def test_the_body_s_contact_wins_and_the_profile_fills_in_the_rest(stack: Stack) -> None:
    citizen = "031200123456"
    profile_email, profile_phone = contact_of(citizen)
    assert profile_phone is not None
    _, login = log_in(stack, citizen, acr="1")
    given = "eid-contact-body@example.vn"

    code = file_with_eid(stack, login["session"], {"email": given})

    assert len(eventually(lambda: receipts(mails_to(stack, given), code) or None)) == 1
    # The receipt went to the body's address, once: none to the profile's.
    assert receipts(mails_to(stack, profile_email), code) == []
    # No phone in the body: the profile's fills in.
    assert len(eventually(lambda: receipts(sms_to(stack, profile_phone), code) or None)) == 1
