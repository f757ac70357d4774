"""Back-pressure across the pipeline (issue F, item 5: queues stay bounded under a
sustained overload). Intake takes a dossier in within milliseconds; the services behind it
are slower. When one of them stops draining the dossier events topic, intake must stop
taking dossiers in (503, Retry-After) instead of letting the topic grow without end, keep
answering reads, and take them in again once the backlog drains; nothing accepted is lost.

The laggard is real: notify's process is frozen with SIGSTOP, so its consumer group stops
committing while intake goes on publishing. Or notify runs but its mail goes out slower
than dossiers come in: its work queue fills, its consumer holds (CONSUMER_MAX_DUE_ROWS), and
the backlog shows in Kafka, where intake looks, instead of growing unseen in notify's
database. The flood goes to an extra intake replica with a small backlog limit (same
database and broker), so the rest of the suite keeps its own.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from devstack._process import free_ports
from devstack.stack import REPO, Stack
from tests.support.flows import DESK, agency_token, chain_dossier, eventually, wait_completed


@pytest.fixture
def watchful_intake(stack: Stack) -> Iterator[str]:
    port = free_ports(1)[0]
    env = stack.service_env("intake") | {
        "HTTP_PORT": str(port),
        "PIPELINE_GROUPS": '["notify"]',
        "PIPELINE_MAX_BACKLOG_S": "2",
        "PIPELINE_BACKLOG_FLOOR_EVENTS": "5",
        "PIPELINE_BACKLOG_INTERVAL_S": "0.5",
    }
    log = (stack.var_dir / "log" / "intake-watchful.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.intake"], cwd=REPO, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool | None:
        try:
            return httpx.get(url + "/health/ready", timeout=2).status_code == 200 or None
        except httpx.HTTPError:
            return None

    try:
        eventually(ready, timeout=60)
        yield url
    finally:
        process.terminate()
        process.wait(15)
        log.close()


@pytest.fixture
def slow_mail(stack: Stack) -> Iterator[None]:
    """Notify restarted with mail paced to one a second and room for 3 due rows."""

    def restart(extra: dict[str, str]) -> None:
        stack.stop_service("notify")
        default = stack.env
        stack.env = {**default, **extra}
        try:
            stack.start_service("notify")
        finally:
            stack.env = default
        stack.wait_ready("notify")

    restart({"EMAIL_RATE_PER_S": "1", "EMAIL_BURST": "1", "CONSUMER_MAX_DUE_ROWS": "3"})
    try:
        yield
    finally:
        restart({})


def submit(url: str, token: str, i: int, prefix: str = "backlog") -> httpx.Response:
    return httpx.post(
        url + "/v1/dossiers",
        json=chain_dossier(f"{prefix}-{i}@example.vn"),
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"{prefix}-{i}"},
        timeout=15,
    )


def test_a_stalled_consumer_stops_intake_taking_dossiers_in_until_it_drains(
    stack: Stack, watchful_intake: str
) -> None:
    url, token = watchful_intake, agency_token(stack, DESK)
    notify = stack.processes["notify"]
    # Notify has drained the topic once (a group that never committed is not judged: its
    # pace is unknown).
    first = submit(url, token, 0).json()["code"]
    wait_completed(stack, first, timeout=120)
    accepted: dict[int, str] = {0: first}
    refused: httpx.Response | None = None
    notify.send_signal(signal.SIGSTOP)
    try:
        # Each dossier puts several events on the topic that frozen notify does not commit.
        deadline = time.monotonic() + 90
        i = 1
        while refused is None and time.monotonic() < deadline:
            answer = submit(url, token, i)
            if answer.status_code == 503:
                refused = answer
                break
            assert answer.status_code == 201, answer.text
            accepted[i] = answer.json()["code"]
            i += 1
            time.sleep(0.1)
        gauges = [
            line
            for line in httpx.get(url + "/metrics").text.splitlines()
            if line.startswith("gateway_pipeline_backlog")
        ]
        assert refused is not None, f"{len(accepted)} accepted, none refused; {gauges}"
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith("pipeline-backlog"), refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 10
        # Refused for the backlog, not for being busy: it says so again at once, and reads
        # of what it already took in go on.
        assert submit(url, token, i).status_code == 503
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/v1/dossiers/{first}", headers=headers).status_code == 200
    finally:
        notify.send_signal(signal.SIGCONT)

    # Notify drains the topic; the client comes back as told, with the same key.
    def taken_in() -> httpx.Response | None:
        answer = submit(url, token, i)
        return answer if answer.status_code == 201 else None

    accepted[i] = eventually(taken_in, timeout=180, every=1.0).json()["code"]
    for code in accepted.values():
        assert wait_completed(stack, code, timeout=180)["status"] == "completed"


def test_a_full_work_queue_holds_its_consumer_so_intake_sees_the_backlog(
    stack: Stack, slow_mail: None, watchful_intake: str
) -> None:
    url, token = watchful_intake, agency_token(stack, DESK)
    notify = stack.url("notify")
    accepted: dict[int, str] = {}
    refused: httpx.Response | None = None
    held = False
    deadline = time.monotonic() + 120
    i = 0
    while refused is None and time.monotonic() < deadline:
        answer = submit(url, token, i, "mailqueue")
        if answer.status_code == 503:
            refused = answer
            break
        assert answer.status_code == 201, answer.text
        accepted[i] = answer.json()["code"]
        i += 1
        metrics = httpx.get(notify + "/metrics/", follow_redirects=True).text
        held = held or 'gateway_consumer_held{group="notify"} 1.0' in metrics
        time.sleep(0.2)
    assert refused is not None, f"{len(accepted)} accepted, none refused"
    assert refused.json()["type"].endswith("pipeline-backlog"), refused.text
    # Refused because notify held its consumer with its mail queue full, not because it
    # stopped: it kept sending meanwhile.
    assert held
    assert 1 <= int(refused.headers["retry-after"]) <= 10

    def taken_in() -> httpx.Response | None:
        answer = submit(url, token, i, "mailqueue")
        return answer if answer.status_code == 201 else None

    # At one mail a second the queue drains, notify takes the topic in again, intake too.
    accepted[i] = eventually(taken_in, timeout=240, every=1.0).json()["code"]
    for code in accepted.values():
        assert wait_completed(stack, code, timeout=180)["status"] == "completed"
