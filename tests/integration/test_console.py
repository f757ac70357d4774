"""The operators' console in a real browser (Debian's chromium, headless, via Playwright)
against the real stack: officials log in at the sandbox's provider, operators see a dossier's
journey, replay a dead letter and read the SLA board; others are refused, and so is a POST
without the session's CSRF token. Screenshots are kept under var/console-screens/."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from core.clock import SYSTEM_CLOCK
from devstack.stack import REPO, Stack
from tests.conftest import TRACE_UI_URL
from tests.support.agencies import BIRTH_AGENCY, behave, birth_registration
from tests.support.browser import CHROMIUM, chromium, logged_in
from tests.support.flows import (
    as_operator,
    chain_dossier,
    eventually,
    submit,
    wait_completed,
)

SCREENS = REPO / "var" / "console-screens"
# How the console shows an instant: Hà Nội time, day first.
VN_TIME = re.compile(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SCREENS.mkdir(parents=True, exist_ok=True)
    with chromium() as launched:
        yield launched


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=True)


def routing_json(stack: Stack, path: str, **params: str) -> Any:
    answer = httpx.get(
        stack.url("routing") + path, params=params, headers=as_operator(stack), timeout=10
    )
    answer.raise_for_status()
    return answer.json()


def test_an_operator_follows_a_dossier_through_its_three_steps(
    browser: Browser, stack: Stack
) -> None:
    code = submit(stack, chain_dossier("console-lan@example.vn"))
    wait_completed(stack, code)
    journey = routing_json(stack, f"/v1/dossiers/{code}/journey")

    page = logged_in(browser, stack, "canbo.vanhanh")
    expect(page.locator("header .who")).to_have_text("Lê Văn Hành")
    page.fill("#code", code)
    page.click("form.search button")
    expect(page.locator("h1 .code")).to_have_text(code)
    steps = page.locator(".timeline .step")
    expect(steps).to_have_count(3)
    for index, step in enumerate(journey["steps"]):
        shown = steps.nth(index)
        expect(shown.locator(".agency")).to_contain_text(step["agency_name"])
        expect(shown.locator(".status")).to_have_text("completed")
        # Arrived and left: times in Hà Nội, day first, never the empty mark.
        for cell in ("arrived", "left"):
            expect(shown.locator(f".{cell}")).to_have_text(VN_TIME)
        expect(shown.locator(".held")).to_contain_text("/ hạn")
    shot(page, "dossier")
    # The README's picture: the top of this page, as an operator first sees it.
    page.screenshot(path=str(SCREENS / "console.png"))

    trace_id = journey["trace_id"]
    assert len(trace_id) == 32
    # The test stack names a trace UI (TRACE_UI_URL, tests/conftest.py), so routing links it.
    assert journey["trace_url"] == TRACE_UI_URL.replace("{trace_id}", trace_id)
    link = page.locator("#trace-link")
    expect(link).to_have_text(trace_id)
    expect(link).to_have_attribute("href", journey["trace_url"])
    # Followed only where a trace UI of one's own answers (TRACE_UI_URL in the environment);
    # the test stack's default names one that is not running.
    if os.environ.get("TRACE_UI_URL"):
        link.click()
        page.wait_for_load_state()
        assert trace_id in page.url
    page.context.close()


def test_a_dead_letter_is_replayed_from_the_console_and_delivered(
    browser: Browser, stack: Stack
) -> None:
    behave(stack, fail_next=1, fail_status=400)
    try:
        code = submit(stack, birth_registration("console-replay@example.vn"))
        letter = eventually(
            lambda: next(
                (d for d in routing_json(stack, "/v1/dead-letters") if d["dossier_code"] == code),
                None,
            )
        )
    finally:
        behave(stack, fail_next=0)
    page = logged_in(browser, stack, "canbo.vanhanh")
    page.goto(stack.url("console") + "/transfers")
    row = page.locator(f"#dead-letters tr[data-transfer='{letter['transfer_id']}']")
    expect(row.locator(".reason")).to_have_text("HTTP 400")
    shot(page, "dead-letters")
    row.locator("a.button").click()
    expect(page.locator("h1")).to_have_text("Gửi lại lần chuyển thất bại?")
    shot(page, "replay-confirm")
    page.click("#confirm-replay")
    expect(page.locator("#replayed")).to_contain_text(letter["transfer_id"])

    view = wait_completed(stack, code)
    assert view["steps"][0]["status"] == "completed"
    transfers = httpx.get(f"{stack.url('sandbox')}/agencies/{BIRTH_AGENCY}/transfers").json()
    taken = [t for t in transfers if t["dossier_code"] == code]
    assert len(taken) == 1
    assert taken[0]["deliveries"] == 1
    journey = routing_json(stack, f"/v1/dossiers/{code}/journey")
    assert journey["steps"][0]["replays"] == 1
    page.reload()
    expect(page.locator(f"tr[data-transfer='{letter['transfer_id']}']")).to_have_count(0)
    page.context.close()
    # The replay is in the audit trail: who, through which client, what, and the answer.
    assert any(
        '"event": "operator.action"' in line
        and f'"object": "{letter["transfer_id"]}"' in line
        and '"operator": "official:canbo.vanhanh"' in line
        and '"outcome": "200"' in line
        for line in stack.log_tail("console", 200).splitlines()
    )


def test_a_transfer_pending_past_the_threshold_is_listed_as_stuck(
    browser: Browser, stack: Stack
) -> None:
    # Three deliveries answered late (after DELIVERY_TIMEOUT_S) keep the transfer pending
    # for seconds, past the test stack's CONSOLE_STUCK_AFTER_S; the fourth is taken.
    behave(stack, hang_next=3, hang_s=4)
    try:
        code = submit(stack, birth_registration("console-stuck@example.vn"))
        page = logged_in(browser, stack, "canbo.vanhanh")

        def listed() -> bool:
            page.goto(stack.url("console") + "/transfers")
            return page.locator(f"#stuck tr[data-dossier='{code}']").count() == 1

        eventually(listed, timeout=30, every=0.5)
        shot(page, "stuck")
    finally:
        behave(stack, hang_next=0)
    wait_completed(stack, code)
    page.goto(stack.url("console") + "/transfers")
    expect(page.locator(f"#stuck tr[data-dossier='{code}']")).to_have_count(0)
    page.context.close()


def test_the_sla_board_shows_the_statistics_api_figures(browser: Browser, stack: Stack) -> None:
    month = SYSTEM_CLOCK.now().strftime("%Y-%m")
    page = logged_in(browser, stack, "canbo.vanhanh")

    def board_equals_api() -> list[list[str]] | None:
        before = routing_json(stack, "/v1/statistics", month=month)["rows"]
        page.goto(f"{stack.url('console')}/sla?month={month}")
        shown = [
            [cell.strip() for cell in row.locator("td").all_inner_texts()[:-1]]
            + [row.locator("td.hold").get_attribute("data-seconds") or ""]
            for row in page.locator("#sla tbody tr").all()
        ]
        after = routing_json(stack, "/v1/statistics", month=month)["rows"]
        # Figures of dossiers still in progress may move between the reads: compare when
        # the API said the same before and after the page.
        if before != after:
            return None
        expected = [
            [str(r[c]) for c in COLUMNS]
            + ["" if r["average_hold_s"] is None else str(r["average_hold_s"])]
            for r in after
        ]
        assert shown == expected
        return shown

    shown = eventually(board_equals_api, timeout=60, every=1)
    assert shown, "the month has dossiers (this module submitted some)"
    shot(page, "sla")

    def csv_equals_api() -> bool:
        api = httpx.get(
            stack.url("routing") + "/v1/statistics",
            params={"month": month, "format": "csv"},
            headers=as_operator(stack),
            timeout=10,
        )
        export = page.request.get(f"{stack.url('console')}/sla.csv?month={month}")
        assert export.status == 200
        assert export.headers["content-type"].startswith("text/csv")
        return export.body() == api.content

    eventually(csv_equals_api, timeout=60, every=1)
    page.context.close()


COLUMNS = (
    "agency_code",
    "procedure_code",
    "received",
    "completed_on_time",
    "completed_late",
    "in_progress",
    "overdue",
)


def test_the_services_health_is_shown(browser: Browser, stack: Stack) -> None:
    page = logged_in(browser, stack, "canbo.vanhanh")
    page.goto(stack.url("console") + "/services")
    for service in ("intake", "routing", "notify", "identity"):
        expect(page.locator(f"#health tr[data-service='{service}'] .status")).to_have_text("ok")
    shot(page, "services")
    page.context.close()


def test_an_official_without_the_operator_role_is_refused(browser: Browser, stack: Stack) -> None:
    page = logged_in(browser, stack, "canbo.tiepnhan")
    expect(page.locator("h1")).to_have_text("Không có quyền truy cập")
    for path in ("/", "/transfers", f"/sla?month={SYSTEM_CLOCK.now():%Y-%m}", "/services"):
        answer = page.goto(stack.url("console") + path)
        assert answer is not None, path
        assert answer.status == 403, path
    shot(page, "refused")
    page.context.close()


def test_a_post_without_the_csrf_token_is_refused(browser: Browser, stack: Stack) -> None:
    page = logged_in(browser, stack, "canbo.vanhanh")
    # The operator's own cookie goes with the request; only the form's token is missing.
    answer = page.request.post(
        stack.url("console") + "/dead-letters/00000000-0000-0000-0000-000000000000/replay",
        form={"confirm": "yes"},
    )
    assert answer.status == 403
    assert "chống giả mạo" in answer.text()
    forged = page.request.post(
        stack.url("console") + "/dead-letters/00000000-0000-0000-0000-000000000000/replay",
        form={"confirm": "yes", "csrf_token": "guessed"},
    )
    assert forged.status == 403
    page.context.close()
