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

import os
import platform
import statistics
import time
from typing import Any

import attrs

from twisted_bcr.config import Case
from twisted_bcr.workload import pseudorandom

#: perform900's first client seed; further clients count up from it.
FIRST_SEED = 190
DEFAULT_REQUESTS = 300


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
                "requests": summary["requests"],
                "throughput_ops_s": summary["throughput_ops_s"],
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
            "throughput_ops_s": median["throughput_ops_s"],
            "latency_ms": median["latency_ms"],
            "reconfiguration_s": _median_reconfiguration(results),
        },
        "ok": all(r["ok"] for r in results),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": _cpu_count(),
        },
    }


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
