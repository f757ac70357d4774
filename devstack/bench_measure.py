"""What `make bench` computes from what it observed: percentiles, CPU spent per dossier by
each process of a stack (and so by each hop), and whether every dossier made it.

Sampling the processes is the only part that touches the system; the rest is plain
arithmetic on what was sampled, so it is tested on its own (tests/unit/test_bench_measure.py).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import psutil

from devstack.replicas import split_name

# Each process of either pipeline, by the hop it carries: the table compares like with like.
HOPS: dict[str, str] = {
    "intake": "submit: HTTP in -> Kafka",
    "bare-api": "submit: HTTP in -> Kafka",
    "routing": "route: Kafka -> agency, outcome -> Kafka",
    "bare-router": "route: Kafka -> agency, outcome -> Kafka",
    "notify": "notify: Kafka -> SMTP",
    "bare-notify": "notify: Kafka -> SMTP",
    "kafka": "Kafka broker",
    "postgres": "PostgreSQL",
    "identity": "identity (tokens)",
    "sandbox": "agency + mail server (far end)",
    "bench": "load generator (+ the OTLP sink, gateway)",
}


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank q-th percentile (0 < q <= 100): a value that was observed, not an
    interpolation; NaN when nothing was observed."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def cpu_seconds(pid: int, reaped: bool = True) -> float:
    """User + system CPU of a process and everything it forked that still runs, plus, with
    `reaped`, its children that ended and were waited for (PostgreSQL's backends): summed
    over a tree, the figure only grows, whoever exits between two samples."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in tree:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
        if reaped:
            total += times.children_user + times.children_system
    return total


def sample(pids: Mapping[str, int], own_name: str = "bench") -> dict[str, float]:
    """CPU seconds so far of each named process tree, and of this process (its own threads
    only: the stack's processes are its children too, but counted under their own names)."""
    seconds = {name: cpu_seconds(pid) for name, pid in pids.items()}
    own = psutil.Process().cpu_times()
    seconds[own_name] = own.user + own.system
    return seconds


def spent_ms_per_dossier(
    before: Mapping[str, float], after: Mapping[str, float], dossiers: int
) -> dict[str, float]:
    """Milliseconds of CPU each process spent per dossier between two samples."""
    if dossiers <= 0:
        return {name: math.nan for name in after}
    return {name: max(0.0, after[name] - before.get(name, 0.0)) * 1000 / dossiers for name in after}


def per_hop(per_process: Mapping[str, float]) -> dict[str, float]:
    """The same milliseconds summed by hop (HOPS); a process of no known hop keeps its name."""
    hops: dict[str, float] = {}
    for name, ms in per_process.items():
        hop = HOPS.get(split_name(name)[0], name)  # replicas ("intake-2") add to their hop
        hops[hop] = hops.get(hop, 0.0) + ms
    return hops


@dataclass
class Phase:
    """One measured load on one pipeline: what was offered, what came through, and when."""

    pipeline: str
    load: str
    offered: int
    # Refused or unanswered submissions: status or exception name -> how many.
    refused: dict[str, int] = field(default_factory=dict)
    # Submissions told to come back later (429/503 with Retry-After) and submitted again,
    # as an agency system does: status -> how many times.
    told_later: dict[str, int] = field(default_factory=dict)
    accepted: int = 0
    submit_seconds: float = 0.0
    # Per accepted dossier: submit -> the agency took it, submit -> its completion mail.
    delivered_ms: list[float] = field(default_factory=list)
    completed_ms: list[float] = field(default_factory=list)
    # Latency of each stage of a dossier's way, by stage, in the order travelled.
    stages_ms: dict[str, list[float]] = field(default_factory=dict)
    # First submit -> last completion mail.
    end_to_end_seconds: float = 0.0
    cpu_ms: dict[str, float] = field(default_factory=dict)
    # What the far end took per accepted dossier besides the transfer: emails, SMS, ...
    far_end: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def missing(self) -> int:
        """Accepted dossiers whose completion never reached the citizen's mailbox."""
        return self.accepted - len(self.completed_ms)

    @property
    def throughput(self) -> float:
        """Dossiers completed per second, end to end."""
        done = len(self.completed_ms)
        return done / self.end_to_end_seconds if self.end_to_end_seconds > 0 else 0.0

    def lines(self) -> list[str]:
        d, c = self.delivered_ms, self.completed_ms
        accepted = self.accepted / self.submit_seconds if self.submit_seconds > 0 else 0.0
        out = [
            f"{self.pipeline}, {self.load}",
            f"  accepted         {self.accepted} of {self.offered} in {self.submit_seconds:.2f} s"
            f" = {accepted:.0f}/s"
            + (f"   told to come back later {self.told_later}" if self.told_later else "")
            + (f"   REFUSED {self.refused}" if self.refused else ""),
            f"  completed        {len(c)} in {self.end_to_end_seconds:.2f} s"
            f" = {self.throughput:.1f} dossiers/s end to end",
            f"  submit->delivered to agency  p50 {percentile(d, 50):6.0f} ms"
            f"   p99 {percentile(d, 99):6.0f} ms   ({len(d)} delivered)",
            f"  submit->completion mail      p50 {percentile(c, 50):6.0f} ms"
            f"   p99 {percentile(c, 99):6.0f} ms",
        ]
        if self.stages_ms:
            out.append(
                "  by stage p50/p99 "
                + "; ".join(
                    f"{stage} {percentile(ms, 50):.0f}/{percentile(ms, 99):.0f} ms"
                    for stage, ms in self.stages_ms.items()
                )
            )
        if self.cpu_ms:
            total = sum(self.cpu_ms.values())
            shares = sorted(self.cpu_ms.items(), key=lambda kv: -kv[1])
            listed = ", ".join(f"{name} {ms:.2f}" for name, ms in shares)
            out.append(f"  CPU ms/dossier   {total:.2f} in all: {listed}")
        if self.far_end:
            took = ", ".join(f"{n:.2f} {what}" for what, n in self.far_end.items())
            out.append(f"  the far end took per dossier: {took}")
        out += [f"  {note}" for note in self.notes]
        return out


def comparison(gateway: Phase, bare: Phase) -> list[str]:
    """Gateway against bare on the same load: the ratio, and CPU per dossier hop by hop."""
    ratio = gateway.throughput / bare.throughput if bare.throughput > 0 else math.nan

    def p50_p99(values: Sequence[float]) -> str:
        return f"{percentile(values, 50):.0f}/{percentile(values, 99):.0f} ms"

    out = [
        f"gateway/bare, {gateway.load}: throughput {ratio:.3f}"
        f" ({gateway.throughput:.1f} / {bare.throughput:.1f} dossiers/s)",
        f"  p50/p99 submit->delivered to agency  gateway {p50_p99(gateway.delivered_ms)},"
        f" bare {p50_p99(bare.delivered_ms)}",
        f"  p50/p99 submit->completion mail      gateway {p50_p99(gateway.completed_ms)},"
        f" bare {p50_p99(bare.completed_ms)}",
        f"  {'CPU ms per dossier, by hop':44} {'gateway':>8} {'bare':>8}",
    ]
    g, b = per_hop(gateway.cpu_ms), per_hop(bare.cpu_ms)
    for hop in [*g, *(h for h in b if h not in g)]:
        out.append(f"  {hop:44} {g.get(hop, 0.0):8.2f} {b.get(hop, 0.0):8.2f}")
    out.append(f"  {'all processes':44} {sum(g.values()):8.2f} {sum(b.values()):8.2f}")
    return out


def verdict(phases: Sequence[Phase]) -> list[str]:
    """What went wrong, plainly, one line each; empty when every dossier came through."""
    problems: list[str] = []
    for phase in phases:
        where = f"{phase.pipeline}, {phase.load}"
        if phase.refused:
            refused = sum(phase.refused.values())
            problems.append(f"{where}: {refused} of {phase.offered} submissions refused")
        if phase.missing:
            problems.append(
                f"{where}: {phase.missing} of {phase.accepted} accepted dossiers never "
                "completed (no completion mail)"
            )
        if phase.accepted == 0:
            problems.append(f"{where}: nothing was accepted")
    return problems


def report(
    gateway: Sequence[Phase],
    bare: Sequence[Phase],
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Print gateway/bare for each load and what went wrong; the exit code: 1 unless every
    dossier of every phase came through, as a partial run must not pass for a result."""
    for g, b in zip(gateway, bare, strict=True):
        print("\n" + "\n".join(comparison(g, b)), file=out, flush=True)
    problems = verdict([*gateway, *bare])
    if not problems:
        return 0
    print("\nBENCH INCOMPLETE: some dossiers never came through", file=err)
    print("\n".join(f"  {problem}" for problem in problems), file=err)
    return 1
