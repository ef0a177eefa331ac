"""
Tests for L{twisted_bcr.bench}'s bookkeeping: the median, the summary line
and the side-by-side comparison.  No test times anything: the runs here
are fakes with made-up figures (real runs are benchmarks, not tests).
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.test_cli import run_cli
from twisted_bcr.bench import compare, compare_lines, reference_benchmark, summary_line


def result(wall: float, cpu: float | None = 5.0, ok: bool = True) -> dict[str, Any]:
    """A benchmark result of one run with these figures."""
    median = {
        "wall_with_startup_s": wall, "startup_s": 0.5, "workload_s": wall - 0.5,
        "throughput_ops_s": 100.0, "latency_ms": {"p50": 10.0, "p99": 20.0},
        "cpu_ms_per_request": cpu, "peak_memory_kib": 40960,
    }
    return {
        "ok": ok, "case": "perform900", "t": 2, "clients": 3, "requests": 900,
        "runs": [{}], "median": median,
    }


class CompareTests(SynchronousTestCase):
    """compare runs both sides in turn, alternating, and divides their medians."""

    def test_alternates_and_divides(self) -> None:
        calls: list[str] = []
        ours = iter([result(2.0), result(4.0), result(3.0)])
        theirs = iter([result(6.0), result(8.0), result(4.0)])

        def run_ours() -> dict[str, Any]:
            calls.append("ours")
            return next(ours)

        def run_theirs() -> dict[str, Any]:
            calls.append("theirs")
            return next(theirs)

        comparison = compare(run_ours, run_theirs, runs=3)
        self.assertEqual(calls, ["ours", "theirs", "theirs", "ours", "ours", "theirs"])
        wall = comparison["figures"][0]
        self.assertEqual(
            (wall["figure"], wall["ours"], wall["theirs"], wall["ratio"]),
            ("wall incl. start-up (s)", 3.0, 6.0, 0.5),
        )
        self.assertTrue(comparison["ok"])

    def test_missing_figures(self) -> None:
        """A figure the reference does not report has no ratio; a failed run fails the whole."""
        comparison = compare(lambda: result(2.0), lambda: result(4.0, cpu=None, ok=False), 1)
        [cpu] = [f for f in comparison["figures"] if f["figure"] == "CPU per request (ms)"]
        self.assertEqual((cpu["ours"], cpu["theirs"], cpu["ratio"]), (5.0, None, None))
        self.assertFalse(comparison["ok"])
        lines = compare_lines(comparison, "old/bcr")
        self.assertIn("old/bcr", lines[0])
        self.assertTrue(any(line.startswith("CPU per request") and line.endswith("-")
                            for line in lines), lines)


class SummaryLineTests(SynchronousTestCase):
    def test_line(self) -> None:
        self.assertEqual(
            summary_line(result(3.0)),
            "OK: perform900 (t=2, 3 clients, 900 requests), median of 1: wall 3.00 s "
            "(start-up 0.50 s, workload 2.50 s), 100 req/s, latency p50 10.0 / p99 20.0 ms,"
            " 5.0 ms CPU per request, peak 40 MiB per process",
        )


def fake_bcr(test: SynchronousTestCase, body: str) -> str:
    """An executable standing in for another version's bcr."""
    path = os.path.abspath(test.mktemp())
    with open(path, "w", encoding="utf-8") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, stat.S_IRWXU)
    return path


class ReferenceTests(SynchronousTestCase):
    """The other version runs as its own bcr, its JSON read from --output."""

    def test_reads_its_output(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        written = json.dumps(result(7.0))
        script = fake_bcr(self, f"""
while [ "$#" -gt 0 ]; do
  if [ "$1" = --output ]; then printf '%s' '{written}' > "$2"; fi
  shift
done
""")
        run = reference_benchmark(script, ["case.txt"], directory)
        self.assertEqual(run()["median"]["wall_with_startup_s"], 7.0)

    def test_failure_is_one_line(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        script = fake_bcr(self, "echo 'bcr: no such option' >&2\nexit 2\n")
        run = reference_benchmark(script, ["case.txt"], directory)
        error = self.assertRaises(ValueError, run)
        self.assertEqual(
            str(error), f"{script} bench exited with status 2 and no result: bcr: no such option"
        )

    def test_refused_through_bcr(self) -> None:
        """bcr bench --compare with no executable there: one line, status 1, nothing run."""
        status, out, err = run_cli("bench", "--compare", "/nonexistent/bcr")
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(err, "bcr: --compare '/nonexistent/bcr': not an executable bcr\n")
