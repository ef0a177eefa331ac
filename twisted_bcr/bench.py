# -*- test-case-name: tests.test_bench -*-
"""
C{bcr bench}: throughput and latency of a workload with real processes.

A benchmark runs the case N times in processes mode (SPEC §14 measures
perform900 this way) and reports each run's wall time from the start of the
run until every client has accepted every result, throughput, latency
percentiles and each process's peak memory, plus the median run.  Figures
come from real runs only; nothing here is used by the tests' assertions.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from twisted_bcr.config import Case
from twisted_bcr.workload import pseudorandom

#: perform900's first client seed; further clients count up from it.
FIRST_SEED = 190
DEFAULT_REQUESTS = 300
#: A guard against a reference version's run that hangs, not a speed bound.
REFERENCE_DEADLINE_S = 900.0


def scaled_case(
    case: Case,
    clients: int | None = None,
    requests: int | None = None,
    t: int | None = None,
) -> Case:
    """
    C{case} with a different number of clients, requests or C{t}.  When
    C{clients} or C{requests} is given, every client runs
    C{pseudorandom(190 + i, requests)} (perform900's seeds).
    """
    changes: dict[str, Any] = {}
    if t is not None:
        if t < 0:
            raise ValueError("--t must be at least 0")
        changes["t"] = t
    if clients is not None or requests is not None:
        count = clients if clients is not None else case.num_client
        per_client = requests if requests is not None else DEFAULT_REQUESTS
        if count < 1 or per_client < 1:
            raise ValueError("--clients and --requests must be at least 1")
        changes["num_client"] = count
        changes["workloads"] = tuple(
            tuple(pseudorandom(FIRST_SEED + i, per_client)) for i in range(count)
        )
        changes["workload_texts"] = tuple(
            f"pseudorandom({FIRST_SEED + i},{per_client})" for i in range(count)
        )
    return attrs.evolve(case, **changes) if changes else case


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["workload_s"])
    return ordered[(len(ordered) - 1) // 2]


def run_benchmark(
    case: Case,
    runs: int,
    log_dir: str | None = None,
    hosts: list[str] | None = None,
    kill_head_after: int | None = None,
) -> dict[str, Any]:
    """
    Run C{case} C{runs} times with real processes; return the JSON report.
    C{hosts} spreads the processes over several local addresses (SPEC §14's
    multi-host measurement on loopback "hosts").
    """
    from twisted_bcr import launch

    results = []
    for number in range(runs):
        run_dir = f"{log_dir}/run-{number}" if log_dir else None
        started = time.monotonic()
        summary = launch.run_case_blocking(
            case, log_dir=run_dir, hosts=hosts, kill_head_after=kill_head_after
        )
        wall = time.monotonic() - started
        results.append(
            {
                "ok": summary["ok"],
                "elapsed_s": summary["elapsed_s"],
                "workload_s": summary["workload_s"],
                "wall_with_startup_s": round(wall, 3),
                # From the run's start to its first request: start-up alone.
                "startup_s": round(summary["elapsed_s"] - summary["workload_s"], 3),
                "requests": summary["requests"],
                "throughput_ops_s": summary["throughput_ops_s"],
                "cpu_s": summary.get("cpu_s"),
                "cpu_ms_per_request": summary.get("cpu_ms_per_request"),
                "latency_ms": summary["latency_ms"],
                "peak_memory_kib": summary.get("peak_memory_kib", {}),
                "configurations": summary["configurations"],
                "reconfiguration_timing": summary.get("reconfiguration_timing"),
                "errors": summary["errors"],
            }
        )
    median = _median_run(results)
    return {
        "case": case.name,
        "t": case.t,
        "clients": case.num_client,
        "requests": sum(len(w) for w in case.workloads),
        "runs": results,
        "hosts": hosts or ["127.0.0.1"],
        "kill_head_after": kill_head_after,
        "median": {
            "workload_s": median["workload_s"],
            "elapsed_s": median["elapsed_s"],
            "wall_with_startup_s": statistics.median(
                r["wall_with_startup_s"] for r in results
            ),
            "startup_s": statistics.median(r["startup_s"] for r in results),
            "throughput_ops_s": median["throughput_ops_s"],
            "latency_ms": median["latency_ms"],
            "cpu_ms_per_request": _median_of(r.get("cpu_ms_per_request") for r in results),
            "peak_memory_kib": max(
                (kib for r in results for kib in r["peak_memory_kib"].values()), default=None
            ),
            "reconfiguration_s": _median_reconfiguration(results),
        },
        "ok": all(r["ok"] for r in results),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": _cpu_count(),
        },
    }


def _median_of(values: Iterable[float | None]) -> float | None:
    """The median of the values that are there, or None if none is."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summary_line(result: dict[str, Any]) -> str:
    """One line for a person: the median run of a benchmark."""
    median = result["median"]
    cpu = median.get("cpu_ms_per_request")
    memory = median.get("peak_memory_kib")
    return (
        f"{'OK' if result['ok'] else 'FAILED'}: {result['case']} (t={result['t']}, "
        f"{result['clients']} clients, {result['requests']} requests), median of "
        f"{len(result['runs'])}: wall {median['wall_with_startup_s']:.2f} s (start-up "
        f"{median['startup_s']:.2f} s, workload {median['workload_s']:.2f} s), "
        f"{median['throughput_ops_s']:.0f} req/s, latency p50 {median['latency_ms']['p50']:.1f}"
        f" / p99 {median['latency_ms']['p99']:.1f} ms"
        + (f", {cpu:.1f} ms CPU per request" if cpu is not None else "")
        + (f", peak {memory / 1024:.0f} MiB per process" if memory else "")
    )


#: The figures L{compare} sets side by side: (label, how to read it off a
#: benchmark's median), smaller is better for all but throughput.
COMPARED = (
    ("wall incl. start-up (s)", lambda m: m.get("wall_with_startup_s")),
    ("start-up (s)", lambda m: m.get("startup_s")),
    ("workload (s)", lambda m: m.get("workload_s")),
    ("throughput (req/s)", lambda m: m.get("throughput_ops_s")),
    ("latency p50 (ms)", lambda m: (m.get("latency_ms") or {}).get("p50")),
    ("latency p99 (ms)", lambda m: (m.get("latency_ms") or {}).get("p99")),
    ("CPU per request (ms)", lambda m: m.get("cpu_ms_per_request")),
)


def compare(
    ours: Callable[[], dict[str, Any]],
    theirs: Callable[[], dict[str, Any]],
    runs: int,
) -> dict[str, Any]:
    """
    Run both benchmarks C{runs} times each, one run at a time, alternating
    which goes first, and set their medians side by side with the ratios
    (ours / theirs): measured in one session on one machine, only the
    ratios mean anything elsewhere.
    """
    our_runs: list[dict[str, Any]] = []
    their_runs: list[dict[str, Any]] = []
    for number in range(runs):
        order = [(ours, our_runs), (theirs, their_runs)]
        for run, into in order if number % 2 == 0 else reversed(order):
            into.append(run())
    rows = []
    for label, read in COMPARED:
        mine = _median_of(read(r["median"]) for r in our_runs)
        other = _median_of(read(r["median"]) for r in their_runs)
        rows.append({
            "figure": label, "ours": mine, "theirs": other,
            "ratio": round(mine / other, 3) if mine is not None and other else None,
        })
    return {
        "runs": runs,
        "ok": all(r["ok"] for r in our_runs + their_runs),
        "figures": rows,
        "ours": our_runs,
        "theirs": their_runs,
    }


def reference_benchmark(
    bcr: str, arguments: list[str], directory: str
) -> Callable[[], dict[str, Any]]:
    """
    One run of another installed version's C{bcr bench ARGUMENTS --runs 1},
    its JSON read from a file in C{directory}.
    """
    counter = iter(range(1_000_000))

    def run() -> dict[str, Any]:
        output = os.path.join(directory, f"reference-{next(counter)}.json")
        done = subprocess.run(
            [bcr, "bench", *arguments, "--runs", "1", "--output", output],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            timeout=REFERENCE_DEADLINE_S,
        )
        try:
            with open(output, encoding="utf-8") as f:
                result: dict[str, Any] = json.load(f)
        except (OSError, ValueError):
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ValueError(
                f"{bcr} bench exited with status {done.returncode} and no result: {last}"
            ) from None
        return result

    return run


def compare_lines(comparison: dict[str, Any], reference: str) -> list[str]:
    """The comparison for a person: one line per figure, ratio last."""
    lines = [f"{'':24} {'this':>10} {'reference':>10} {'ratio':>7}   ({reference}, "
             f"{comparison['runs']} alternating runs each, medians)"]
    for row in comparison["figures"]:
        def shown(value: float | None) -> str:
            return "-" if value is None else f"{value:.3g}"
        ratio = "-" if row["ratio"] is None else f"x{row['ratio']:.2f}"
        lines.append(f"{row['figure']:24} {shown(row['ours']):>10} "
                     f"{shown(row['theirs']):>10} {ratio:>7}")
    return lines


def _median_reconfiguration(results: list[dict[str, Any]]) -> float | None:
    """The median time from reconfiguration request to the new configuration's first result."""
    timings = [
        r["reconfiguration_timing"]["request_to_first_result_s"]
        for r in results if r.get("reconfiguration_timing")
    ]
    return statistics.median(timings) if timings else None


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
