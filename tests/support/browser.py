"""Debian's chromium, headless, driven by Playwright: the operators' console as an official
sees it (tests/integration/test_console.py, and the trace link in test_zipkin_trace.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright

from devstack.stack import Stack

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # Root in CI: chromium's sandbox needs user namespaces it may not have there.
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            launched.close()


def logged_in(browser: Browser, stack: Stack, username: str) -> Page:
    """A fresh browser context, logged in as `username` on the sandbox's officials' page."""
    page = browser.new_context(viewport={"width": 1100, "height": 900}, locale="vi-VN").new_page()
    page.set_default_timeout(30_000)
    page.goto(stack.url("console") + "/")
    expect(page.locator("h1")).to_have_text("Đăng nhập cán bộ")
    page.locator(f"button[value='{username}']").click()
    page.wait_for_url(stack.url("console") + "/**")
    return page
