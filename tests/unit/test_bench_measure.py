"""What `make bench` computes: percentiles, CPU per dossier by process and by hop, and a
run that fails when some dossier never came through."""

from __future__ import annotations

import io
import math
import subprocess
import sys

from devstack.bench_measure import (
    HOPS,
    Phase,
    cpu_seconds,
    per_hop,
    percentile,
    report,
    spent_ms_per_dossier,
    verdict,
)


def test_percentiles_are_observed_values_by_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100 .. 1, unsorted on purpose

    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0, 1.0, 3.0], 50) == 3.0
    assert percentile([7.0, 1.0, 3.0], 99) == 7.0
    assert percentile([4.0], 1) == 4.0
    assert math.isnan(percentile([], 50))


def test_cpu_per_dossier_is_each_process_delta_over_the_dossiers() -> None:
    before = {"routing": 10.0, "kafka": 3.0}
    after = {"routing": 12.0, "kafka": 3.5, "notify": 0.25}  # notify appeared meanwhile

    assert spent_ms_per_dossier(before, after, 100) == {
        "routing": 20.0,
        "kafka": 5.0,
        "notify": 2.5,
    }
    assert all(math.isnan(ms) for ms in spent_ms_per_dossier(before, after, 0).values())


def test_hops_line_up_the_gateway_and_the_bare_processes() -> None:
    gateway = per_hop({"intake": 3.0, "routing": 10.0, "notify": 5.0, "postgres": 2.0})
    bare = per_hop({"bare-api": 1.0, "bare-router": 2.0, "bare-notify": 1.5, "odd": 0.5})

    assert gateway[HOPS["intake"]] == 3.0
    assert bare[HOPS["intake"]] == 1.0
    assert gateway[HOPS["routing"]] == 10.0
    assert bare[HOPS["routing"]] == 2.0
    assert gateway[HOPS["notify"]] == 5.0
    assert bare[HOPS["notify"]] == 1.5
    assert bare["odd"] == 0.5  # a process of no known hop keeps its name
    assert HOPS["postgres"] not in bare


BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def test_cpu_of_a_process_tree_counts_children_that_already_ended() -> None:
    # A parent whose child burns CPU and exits before we look, as PostgreSQL's backends do.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time\n"
            f"subprocess.run([sys.executable, '-c', {BURN!r}], check=True)\n"
            "print('done', flush=True)\n"
            "time.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == b"done"

        assert cpu_seconds(parent.pid) >= 0.3
        assert cpu_seconds(parent.pid, reaped=False) < 0.3
    finally:
        parent.kill()
        parent.wait()
    assert cpu_seconds(parent.pid) == 0.0  # gone: nothing, rather than an error


def _phase(pipeline: str, accepted: int, completed: int, refused: int = 0) -> Phase:
    phase = Phase(pipeline, "closed loop", offered=accepted + refused, accepted=accepted)
    phase.refused = {"HTTP 503": refused} if refused else {}
    phase.completed_ms = [100.0] * completed
    phase.end_to_end_seconds = 2.0
    phase.cpu_ms = {"routing" if pipeline == "gateway" else "bare-router": 4.0}
    return phase


def test_a_run_where_every_dossier_came_through_passes() -> None:
    out, err = io.StringIO(), io.StringIO()

    code = report([_phase("gateway", 10, 10)], [_phase("bare", 10, 10)], out, err)

    assert code == 0
    assert err.getvalue() == ""
    assert "throughput 1.000 (5.0 / 5.0 dossiers/s)" in out.getvalue()


def test_a_run_where_dossiers_never_arrive_says_so_and_fails() -> None:
    out, err = io.StringIO(), io.StringIO()
    gateway = _phase("gateway", 10, 7)

    code = report([gateway], [_phase("bare", 10, 10)], out, err)

    assert code == 1
    assert gateway.missing == 3
    assert "BENCH INCOMPLETE" in err.getvalue()
    assert "3 of 10 accepted dossiers never completed" in err.getvalue()


def test_refused_submissions_and_empty_phases_fail_too() -> None:
    problems = verdict([_phase("gateway", 10, 10, refused=2), _phase("bare", 0, 0)])

    assert any("2 of 12 submissions refused" in p for p in problems)
    assert any("bare" in p and "nothing was accepted" in p for p in problems)
    assert verdict([_phase("gateway", 5, 5)]) == []
