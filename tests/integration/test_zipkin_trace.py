"""`make run`'s trace UI for real: a stack exporting to Zipkin (the server's jar, `make
zipkin-jar`), the README's dossier filed, its one trace read back through Zipkin's own API,
and the operator's trace link followed from the console into Zipkin's Lens page in chromium.

A stack of its own, with its own broker and SQLite files, so that its consumers and the
session stack's never share a group, a topic or a table.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from devstack.kafka import KafkaBroker
from devstack.stack import AGENCY_INBOX_TOPICS, REPO, Ports, Stack
from devstack.zipkin import Zipkin, jar_path
from tests.support.browser import CHROMIUM, chromium, logged_in
from tests.support.flows import DESK, as_agency, as_operator, eventually, wait_completed
from tests.support.pii import assert_no_personal_data, personal_values

README_DOSSIER = REPO / "docs" / "examples" / "birth-residence-insurance.json"
TOPIC = "dossier.events"
SCREENS = REPO / "var" / "console-screens"


@pytest.fixture(scope="module")
def zipkin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zipkin]:
    # `make test` fetches the jar: missing, the trace UI is untested, which must not pass.
    if not jar_path().is_file():
        pytest.fail(f"no Zipkin server at {jar_path()}: run `make zipkin-jar`")
    log_dir: Path = tmp_path_factory.mktemp("zipkin")
    with Zipkin(log_dir=log_dir) as running:
        yield running


@pytest.fixture(scope="module")
def traced_stack(zipkin: Zipkin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    var_dir: Path = tmp_path_factory.mktemp("zipkin-stack")
    with KafkaBroker() as broker:
        broker.create_topics([TOPIC, TOPIC + ".dlq", *AGENCY_INBOX_TOPICS])
        stack = Stack(
            kafka_bootstrap=broker.bootstrap_servers,
            var_dir=var_dir,
            ports=Ports.free(),
            env={
                "DOSSIER_EVENTS_TOPIC": TOPIC,
                # As `make run` sets them (devstack/run.py), whatever this shell's OTEL_* say.
                **zipkin.exporter_env({}),
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                "SANDBOX_AGENCY_DELAY_S": "0.2",
            },
            env_by_service={"routing": {"TRACE_UI_URL": zipkin.trace_url_template}},
        )
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()


@dataclass(frozen=True)
class Filed:
    code: str
    journey: dict[str, Any]
    spans: list[dict[str, Any]]


def named(spans: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    # Zipkin keeps span and service names in lower case.
    return Counter((s["localEndpoint"]["serviceName"], s.get("name", "")) for s in spans)


@pytest.fixture(scope="module")
def filed(traced_stack: Stack, zipkin: Zipkin) -> Filed:
    """The README's dossier, completed, with every hop's spans arrived in Zipkin."""
    stack = traced_stack
    response = httpx.post(
        stack.url("intake") + "/v1/dossiers",
        json=json.loads(README_DOSSIER.read_text(encoding="utf-8")),
        headers=as_agency(stack, DESK),
        timeout=15,
    )
    assert response.status_code == 201, response.text
    code = response.json()["code"]
    wait_completed(stack, code, timeout=120)
    journey = httpx.get(
        f"{stack.url('routing')}/v1/dossiers/{code}/journey",
        headers=as_operator(stack),
        timeout=10,
    ).json()
    trace_id = journey["trace_id"]
    assert len(trace_id) == 32

    def whole() -> list[dict[str, Any]] | None:
        # Each process exports in its own batches: wait for every hop's spans.
        spans = zipkin.trace(trace_id)
        if spans is None:
            return None
        names = named(spans)
        expected = {
            ("intake", "post /v1/dossiers"): 1,
            ("routing", "transfer acknowledged"): 3,
            ("routing", "dossier step completed"): 3,
            ("notify", "smtp send"): 5,
        }
        return spans if all(names[n] >= c for n, c in expected.items()) else None

    return Filed(code=code, journey=journey, spans=eventually(whole, timeout=90, every=1))


def test_the_readme_dossier_is_one_whole_trace_in_zipkin(filed: Filed, zipkin: Zipkin) -> None:
    trace_id, spans = filed.journey["trace_id"], filed.spans
    services = {s["localEndpoint"]["serviceName"] for s in spans}
    assert {"intake", "routing", "notify", "sandbox"} <= services
    assert services <= {"intake", "routing", "notify", "identity", "sandbox"}
    assert {s["traceId"] for s in spans} == {trace_id}
    # ONE trace: one root, the filing's request, and no span whose parent Zipkin lacks.
    ids = {s["id"] for s in spans}
    roots = [named([s]) for s in spans if "parentId" not in s]
    assert roots == [Counter({("intake", "post /v1/dossiers"): 1})]
    assert [s.get("name") for s in spans if s.get("parentId", s["id"]) not in ids] == []
    names = named(spans)
    assert names[("routing", "transfer deliver")] >= 3
    # The agencies' callbacks are in the dossier's trace, as the sandbox's client spans.
    assert sum(n for (service, _), n in names.items() if service == "sandbox") >= 6

    # Zipkin's search by the dossier's code finds this trace and no other: no hop of the
    # dossier started a trace of its own.
    found = httpx.get(
        zipkin.url + "/api/v2/traces",
        params={"annotationQuery": f"dossier.code={filed.code}", "limit": "100"},
        timeout=10,
    )
    found.raise_for_status()
    assert [{s["traceId"] for s in trace} for trace in found.json()] == [{trace_id}]

    # No personal data of the filing in anything Zipkin holds: names, tags, endpoints.
    everything = httpx.get(zipkin.url + "/api/v2/traces", params={"limit": "10000"}, timeout=10)
    everything.raise_for_status()
    assert trace_id in everything.text  # not vacuous: the dossier's trace is in there
    personal = personal_values(json.loads(README_DOSSIER.read_text(encoding="utf-8")))
    assert {"001090012345", "Nguyễn Thị Lan", "lan@example.vn"} <= set(personal)
    for trace in everything.json():
        for span in trace:
            text = json.dumps(span, ensure_ascii=False)
            assert_no_personal_data(f"span {span.get('name')}", text, personal)

    # The operator's link: Lens's page of this trace (routing's TRACE_UI_URL).
    assert filed.journey["trace_url"] == zipkin.trace_url_template.replace("{trace_id}", trace_id)


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM}")
def test_the_console_trace_link_opens_the_dossier_trace_in_zipkin(
    filed: Filed, traced_stack: Stack, zipkin: Zipkin
) -> None:
    trace_id = filed.journey["trace_id"]
    SCREENS.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        page = logged_in(browser, traced_stack, "canbo.vanhanh")
        page.fill("#code", filed.code)
        page.click("form.search button")
        expect(page.locator("h1 .code")).to_have_text(filed.code)
        link = page.locator("#trace-link")
        expect(link).to_have_text(trace_id)
        link.click()
        page.wait_for_url(f"**/zipkin/traces/{trace_id}")
        # Lens (served from the jar, no CDN) draws the trace: its root, each hop's spans, and
        # a summary of as many services and spans as Zipkin's API holds.
        lens = page.locator("main")
        root = lens.get_by_role("heading", name="intake: post /v1/dossiers")
        expect(root).to_be_visible(timeout=60_000)
        for service in ("intake", "routing", "notify", "sandbox"):
            expect(lens.get_by_text(re.compile(f"^{service}: ")).first).to_be_visible()
        page.screenshot(path=str(SCREENS / "zipkin-trace.png"), full_page=True)
        summary = lens.inner_text()
        page.context.close()
    assert trace_id in summary
    held = zipkin.trace(trace_id) or []
    shown = re.search(r"Services\s+(\d+)\s+Total Spans\s+(\d+)", summary)
    assert shown is not None, summary[:500]
    # More spans may land after the page was drawn (a late batch), never fewer.
    services = {s["localEndpoint"]["serviceName"] for s in held}
    assert int(shown[1]) == len(services)
    assert len(filed.spans) <= int(shown[2]) <= len(held)
