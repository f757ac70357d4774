"""The e-ID login's guards on the real stack: a stray callback does not use up the login,
an unknown level is refused, and a login too weak for a procedure reads nothing, by the
catalogue routing holds now (identity follows a reload without a restart)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.stack import Stack
from tests.support.eid import at_provider, browser, log_in, start_login
from tests.support.flows import as_operator, eventually

CITIZEN = "079185000002"
PROCEDURE = "HT.XNTTHN"  # needs residence and assurance level 2


def test_a_callback_without_the_login_cookie_leaves_the_login_to_its_browser(
    stack: Stack,
) -> None:
    client = browser()
    callback = at_provider(client, start_login(client, stack), CITIZEN)
    # Another browser (no eid_login cookie) presents the same callback first.
    with httpx.Client(trust_env=False, timeout=15) as stranger:
        refused = stranger.get(callback)
    assert refused.status_code == 400, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    # The citizen's own browser still completes it.
    done = client.get(callback)
    assert done.status_code == 200, done.text
    assert done.json()["assurance_level"] == 2


def test_an_unknown_assurance_level_is_refused(stack: Stack) -> None:
    response = httpx.get(
        stack.url("identity") + "/v1/citizen/login", params={"acr": "3"}, timeout=15
    )
    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("assurance-level-unknown")


def test_a_preview_at_too_low_a_level_reads_nothing(stack: Stack) -> None:
    _, login = log_in(stack, CITIZEN, acr="1")
    assert login["assurance_level"] == 1
    headers = {"X-Citizen-Session": login["session"]}
    access_log = stack.url("identity") + "/v1/citizen/access-log"
    before = httpx.get(access_log, headers=headers, timeout=15).json()["reads"]
    refused = httpx.post(
        stack.url("identity") + "/v1/consents",
        json={"procedure_code": PROCEDURE, "purpose": "Xác nhận tình trạng hôn nhân"},
        headers=headers,
        timeout=15,
    )
    assert refused.status_code == 403, refused.text
    assert refused.json()["type"].endswith("assurance-too-low")
    # Data minimisation: the registry was not asked, so the access log has no new read.
    assert httpx.get(access_log, headers=headers, timeout=15).json()["reads"] == before


@pytest.fixture
def procedures_file(stack: Stack) -> Iterator[Path]:
    """The procedures routing reads (a copy per test session), restored and reloaded after."""
    path = stack.var_dir / "catalogue" / "procedures.yaml"
    original = path.read_text()
    yield path
    path.write_text(original)
    reload(stack)


def reload(stack: Stack) -> None:
    answer = httpx.post(
        f"{stack.url('routing')}/v1/catalogue/reload", headers=as_operator(stack), timeout=10
    )
    assert answer.status_code == 200, answer.text


def test_identity_judges_consents_by_the_catalogue_routing_holds_now(
    stack: Stack, procedures_file: Path
) -> None:
    _, login = log_in(stack, CITIZEN, acr="1")
    headers = {"X-Citizen-Session": login["session"]}

    def preview() -> httpx.Response:
        return httpx.post(
            stack.url("identity") + "/v1/consents",
            json={"procedure_code": PROCEDURE, "purpose": "Xác nhận tình trạng hôn nhân"},
            headers=headers,
            timeout=15,
        )

    assert preview().json()["type"].endswith("assurance-too-low")
    # The province files this procedure without the registry from now on: identity, which
    # reads no catalogue file of its own, learns it from routing's reload, without a restart.
    text = procedures_file.read_text()
    at = text.index(f'code: "{PROCEDURE}"')
    head, tail = text[:at], text[at:]
    original = procedures_file.read_text()
    procedures_file.write_text(head + tail.replace("needs: [residence]", "needs: []", 1))
    try:
        reload(stack)
        refused = eventually(
            lambda: (r := preview()).json()["type"].endswith("residence-not-needed") and r, 15
        )
        assert refused.status_code == 422
    finally:
        procedures_file.write_text(original)
        reload(stack)
        # Back as it was before the next test asks identity.
        eventually(lambda: preview().json()["type"].endswith("assurance-too-low"), 15)
