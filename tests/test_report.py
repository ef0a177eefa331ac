"""
Tests for L{twisted_bcr.report}: the data a run records for its report
(C{requests.csv}, the summary's C{timeline}), the report built from a run
directory, and C{bcr report} / C{--no-report} through the installed script.
"""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.test_cli import bcr_command
from twisted_bcr.config import parse_case_text
from twisted_bcr.core.client import ClientOutcome
from twisted_bcr.examples import resolve_case
from twisted_bcr.faults import load_case
from twisted_bcr.messages import FaultFired, RunReport
from twisted_bcr.report import (
    CHARTS,
    REPORT_DIRECTORY,
    REQUEST_COLUMNS,
    REQUESTS_FILE,
    ReportError,
    build_report,
    load_run,
    record_run,
    requests_csv,
    timeline,
)
from twisted_bcr.simulation import simulate

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STARTED_AT = 1000.0


def bcr(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run the installed C{bcr} with C{argv}; its status and output."""
    return subprocess.run(
        [*bcr_command(), *argv], capture_output=True, text=True, timeout=300, check=False
    )


def outcome(index: int, accepted_at: list[float], latencies_s: list[float],
            configurations: list[int]) -> ClientOutcome:
    """Client C{index}'s outcome: one put per accepted result, slots 2i, 2i+1, ..."""
    return ClientOutcome(
        index=index,
        operations=[("put", ("k", "v"))] * len(accepted_at),
        results=["OK"] * len(accepted_at),
        slots=[2 * n + index for n in range(len(accepted_at))],
        latencies_s=latencies_s,
        accepted_at=accepted_at,
        accepted_in=configurations,
        finished=True,
    )


def synthetic_outcomes() -> list[ClientOutcome]:
    """Two clients, 50 results each, stalled by a reconfiguration from 1001.0 to 1001.5."""
    outcomes = []
    for index in (1, 0):
        at, times, latencies, configurations = STARTED_AT + 0.5, [], [], []
        for n in range(50):
            latency = 0.002 + 0.0001 * ((n * 7 + index) % 13)
            if n == 25:
                latency = 0.6  # waited for the reconfiguration
            at += latency
            times.append(at)
            latencies.append(latency)
            configurations.append(0 if at < STARTED_AT + 1.5 else 1)
        outcomes.append(outcome(index, times, latencies, configurations))
    return outcomes


def synthetic_report() -> RunReport:
    """Olympus's report of that run: one fault, received at 1000.99."""
    fired = FaultFired(0, 1, "shuttle(0,3)", "crash()", False)
    return RunReport(
        configuration=1, final_states=(), reconfigurations_json="[]", errors=(),
        silent=(), faults_fired=(fired,), faults_fired_at_us=(1_000_990_000,),
    )


def synthetic_summary() -> dict[str, Any]:
    """A summary as a run writes it, with one reconfiguration and one fault."""
    return {
        "case": "synthetic", "mode": "processes", "ok": True, "elapsed_s": 2.0,
        "workload_s": 1.5, "requests": 100, "throughput_ops_s": 66.7,
        "latency_ms": {"p50": 2.5, "p90": 3.0, "p99": 600.0, "max": 600.0},
        "configurations": 2,
        "reconfigurations": [
            {
                "from": 0, "to": 1, "requested_by": ["replica 0.2"],
                "reason": "replica 0.1 <crashed> & was silent", "quorum": [0, 2],
                "started_at": 1001.0, "duration_s": 0.5, "quorum_at": 1001.3,
                "state_at": 1001.45,
            }
        ],
        "faults_fired": [
            {"configuration": 0, "replica": 1, "trigger": "shuttle(0,3)",
             "failure": "crash()", "byzantine": False},
        ],
        "clients": [{"index": 0, "requests": 50}, {"index": 1, "requests": 50}],
        "errors": [],
    }


def write_run_directory(directory: str, with_requests: bool = True) -> None:
    """A finished run's directory as the launcher leaves it."""
    os.makedirs(directory)
    summary = synthetic_summary()
    if with_requests:
        record_run(summary, directory, synthetic_outcomes(), synthetic_report(),
                   STARTED_AT, simulated=False)
    else:
        summary["timeline"] = timeline(synthetic_report(), STARTED_AT, simulated=False)
    with open(os.path.join(directory, "summary.json"), "w") as f:
        json.dump(summary, f)


class RunDataTests(SynchronousTestCase):
    """What a run records for its report."""

    def test_requests_csv(self) -> None:
        """One row per accepted result, by client; times relative to the run's start, in s; latency in ms."""
        text = requests_csv(
            [outcome(1, [1002.0], [0.25], [3]),
             outcome(0, [1000.5, 1000.75], [0.5, 0.125], [0, 0])],
            STARTED_AT,
        )
        self.assertEqual(
            text.splitlines(),
            [
                ",".join(REQUEST_COLUMNS),
                "0,0,0,0,0.000000,0.500000,500.000",
                "0,1,2,0,0.625000,0.750000,125.000",
                "1,0,1,3,1.750000,2.000000,250.000",
            ],
        )

    def test_timeline(self) -> None:
        """The timeline names the clock, its origin and Olympus's time for each fired fault."""
        self.assertEqual(
            timeline(synthetic_report(), STARTED_AT, simulated=False),
            {"clock": "wall-clock", "started_at": STARTED_AT, "faults_fired_at": [1000.99],
             "requests_file": REQUESTS_FILE},
        )

    def test_timeline_without_stamps(self) -> None:
        """Faults without their times (an older Olympus) get None, and no report means no faults."""
        report = synthetic_report()
        unstamped = RunReport(
            configuration=1, final_states=(), reconfigurations_json="[]", errors=(),
            silent=(), faults_fired=report.faults_fired,
        )
        self.assertEqual(timeline(unstamped, 0.0, True)["faults_fired_at"], [None])
        self.assertEqual(timeline(None, 0.0, True)["faults_fired_at"], [])

    def test_unwritable_requests_file(self) -> None:
        """A requests file that cannot be written is noted in the summary, not raised."""
        summary: dict[str, Any] = {}
        record_run(summary, os.path.join(self.mktemp(), "missing"), synthetic_outcomes(),
                   None, STARTED_AT, simulated=False)
        self.assertIsNone(summary["timeline"]["requests_file"])
        self.assertIn("requests_problem", summary["timeline"])


def png_size(path: str) -> tuple[int, int]:
    """The width and height of the PNG at C{path}; fails the test unless it is one."""
    with open(path, "rb") as f:
        data = f.read()
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
    assert data[12:16] == b"IHDR", f"{path} has no IHDR chunk"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def check_report(test: SynchronousTestCase, directory: str, index: str) -> str:
    """C{index} is the report of C{directory}: every chart a PNG it shows; its HTML."""
    test.assertEqual(index, os.path.join(directory, REPORT_DIRECTORY, "index.html"))
    with open(index, encoding="utf-8") as f:
        page = f.read()
    for name, _ in CHARTS:
        width, height = png_size(os.path.join(directory, REPORT_DIRECTORY, name))
        test.assertGreater(width, 100)
        test.assertGreater(height, 100)
        test.assertIn(f'src="{name}"', page)
    # Static and self-contained: no script, no resource from the network.
    test.assertNotIn("<script", page)
    test.assertNotIn("://", page)
    return page


class BuildReportTests(SynchronousTestCase):
    """The report of a run directory: PNG charts in a small static page."""

    def test_synthetic_run(self) -> None:
        """A run directory with a reconfiguration and a fault gives every chart and both tables."""
        directory = self.mktemp()
        write_run_directory(directory)
        page = check_report(self, directory, build_report(directory))
        self.assertIn("PASS", page)
        # The reconfiguration's start and phases, and the fault's time,
        # relative to the run's start.
        self.assertIn("<td>1.0000</td><td>0.3000</td><td>0.1500</td><td>0.0500</td>"
                      "<td>0.5000</td>", page)
        self.assertIn("<td>0.9900</td><td>0.1</td><td>shuttle(0,3)</td><td>crash()</td>", page)
        # Escaped, not interpreted.
        self.assertIn("replica 0.1 &lt;crashed&gt; &amp; was silent", page)

    def test_loaded_requests(self) -> None:
        """The report reads back every row the run wrote."""
        directory = self.mktemp()
        write_run_directory(directory)
        run = load_run(directory)
        self.assertIsNone(run.requests_problem)
        self.assertEqual(len(run.requests), 100)
        self.assertEqual(sorted(set(run.requests.client)), [0, 1])
        self.assertEqual(max(run.requests.latency_ms), 600.0)

    def test_rebuild(self) -> None:
        """Building again replaces the report."""
        directory = self.mktemp()
        write_run_directory(directory)
        first = build_report(directory)
        os.unlink(os.path.join(directory, REPORT_DIRECTORY, "timeline.png"))
        self.assertEqual(build_report(directory), first)
        png_size(os.path.join(directory, REPORT_DIRECTORY, "timeline.png"))

    def test_without_requests(self) -> None:
        """Without requests.csv (a launcher that died) the report still comes, and says what is missing."""
        directory = self.mktemp()
        write_run_directory(directory, with_requests=False)
        page = check_report(self, directory, build_report(directory))
        self.assertIn(f"the run recorded no {REQUESTS_FILE}", page)

    def test_bad_requests(self) -> None:
        """An unreadable requests.csv is named on the page, not raised."""
        directory = self.mktemp()
        write_run_directory(directory)
        with open(os.path.join(directory, REQUESTS_FILE), "w") as f:
            f.write("not,the,header\n")
        page = check_report(self, directory, build_report(directory))
        self.assertIn(f"{REQUESTS_FILE} is unreadable", page)

    def test_not_a_run_directory(self) -> None:
        """A directory without a summary, a file, a missing path and a bad summary: one-line errors."""
        empty = self.mktemp()
        os.makedirs(empty)
        plain = self.mktemp()
        with open(plain, "w") as f:
            f.write("x")
        bad = self.mktemp()
        os.makedirs(bad)
        with open(os.path.join(bad, "summary.json"), "w") as f:
            f.write("[1, 2")
        other = self.mktemp()
        os.makedirs(other)
        with open(os.path.join(other, "summary.json"), "w") as f:
            json.dump({"something": "else"}, f)
        for directory in (empty, plain, self.mktemp(), bad, other):
            error = self.assertRaises(ReportError, build_report, directory)
            self.assertEqual(len(str(error).splitlines()), 1, str(error))
            self.assertIn(directory, str(error))
        self.assertFalse(os.path.exists(os.path.join(empty, REPORT_DIRECTORY)))


class HostileDirectoryTests(SynchronousTestCase):
    """A run directory may be someone else's: the report neither follows nor waits."""

    def test_report_symlink_is_refused(self) -> None:
        """A planted report symlink is refused; what it points at is untouched."""
        directory = self.mktemp()
        write_run_directory(directory)
        victim = os.path.abspath(self.mktemp())
        os.makedirs(victim)
        with open(os.path.join(victim, "index.html"), "w") as f:
            f.write("mine")
        os.symlink(victim, os.path.join(directory, REPORT_DIRECTORY))
        error = self.assertRaises(ReportError, build_report, directory)
        self.assertIn("symbolic link", str(error))
        self.assertEqual(os.listdir(victim), ["index.html"])
        with open(os.path.join(victim, "index.html")) as f:
            self.assertEqual(f.read(), "mine")

    def test_fifo_summary_is_refused(self) -> None:
        """A FIFO (or a device) as summary.json is refused at once, not waited on."""
        directory = self.mktemp()
        write_run_directory(directory)
        os.unlink(os.path.join(directory, "summary.json"))
        os.mkfifo(os.path.join(directory, "summary.json"))
        error = self.assertRaises(ReportError, build_report, directory)
        self.assertIn("not a regular file", str(error))

    def test_symlinked_inputs_are_not_followed(self) -> None:
        """Inputs that are symlinks (to /dev/zero, say) are not read."""
        directory = self.mktemp()
        write_run_directory(directory)
        os.unlink(os.path.join(directory, REQUESTS_FILE))
        os.symlink("/dev/zero", os.path.join(directory, REQUESTS_FILE))
        page = check_report(self, directory, build_report(directory))
        self.assertIn(f"{REQUESTS_FILE} is unreadable", page)

    def test_nonsense_summary_through_bcr(self) -> None:
        """A summary that parses but holds nonsense: one line, status 1, no traceback."""
        directory = self.mktemp()
        write_run_directory(directory)
        path = os.path.join(directory, "summary.json")
        with open(path) as f:
            summary = json.load(f)
        summary["timeline"] = [1, 2, 3]
        summary["reconfigurations"] = [{"from": "x"}]
        with open(path, "w") as f:
            json.dump(summary, f)
        done = bcr("report", directory)
        self.assertEqual(done.returncode, 1, done.stderr)
        [line] = done.stderr.splitlines()
        self.assertTrue(line.startswith("bcr: "), line)
        self.assertNotIn("Traceback", done.stderr)


class SimulatedRunTests(SynchronousTestCase):
    """A simulated run with a log directory records what its report needs."""

    def run_case(self, name: str) -> tuple[str, dict[str, Any]]:
        directory = self.mktemp()
        case, registry = load_case(resolve_case(name))
        summary = simulate(case, seed=1, log_dir=directory, registry=registry)
        return directory, summary

    def test_recorded(self) -> None:
        """summary.json and requests.csv: one row per result, on the simulated clock from 0."""
        directory, summary = self.run_case("catch_up_crash")
        with open(os.path.join(directory, "summary.json")) as f:
            self.assertEqual(json.load(f), summary)
        self.assertEqual(summary["timeline"]["clock"], "simulated")
        self.assertEqual(summary["timeline"]["started_at"], 0.0)
        with open(os.path.join(directory, REQUESTS_FILE), newline="") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(len(rows), summary["requests"])
        for row in rows:
            sent, accepted = float(row["sent_s"]), float(row["accepted_s"])
            self.assertLessEqual(0.0, sent)
            self.assertLessEqual(sent, accepted)
            self.assertLessEqual(accepted, summary["elapsed_s"] + 1e-6)
        latencies = sorted(float(row["latency_ms"]) for row in rows)
        self.assertAlmostEqual(latencies[-1], summary["latency_ms"]["max"], places=2)
        self.assertEqual([row["configuration"] for row in rows][-1],
                         str(summary["configurations"] - 1))

    def test_fault_and_phase_times(self) -> None:
        """Each fault is stamped when Olympus received it, before the reconfiguration it caused; phases are in order."""
        directory, summary = self.run_case("catch_up_crash")
        fired_at = summary["timeline"]["faults_fired_at"]
        self.assertEqual(len(fired_at), len(summary["faults_fired"]))
        self.assertEqual(len(fired_at), 3)
        first = summary["reconfigurations"][0]
        # 0.1 change_operation() leads to the first reconfiguration.
        self.assertLess(fired_at[0], first["started_at"])
        for record in summary["reconfigurations"]:
            self.assertLessEqual(record["started_at"], record["quorum_at"])
            self.assertLessEqual(record["quorum_at"], record["state_at"])
            self.assertLessEqual(
                record["state_at"], record["started_at"] + record["duration_s"] + 1e-6
            )

    def test_report(self) -> None:
        """The report of a simulated run says its time is simulated."""
        directory, _ = self.run_case("catch_up_crash")
        page = check_report(self, directory, build_report(directory))
        self.assertIn("(simulated)", page)
        self.assertIn("s, simulated", page)

    def test_without_log_dir(self) -> None:
        """Without a log directory, nothing is written, but the summary still has its timeline."""
        case = parse_case_text("t = 1\nnum_client = 1\nworkload[0] = put('a','b')\n", "x.txt")
        summary = simulate(case)
        self.assertEqual(summary["timeline"]["clock"], "simulated")


class CommandTests(SynchronousTestCase):
    """Through the installed bcr script."""

    def test_simulate_writes_report(self) -> None:
        """bcr simulate --log-dir writes the report once the verdict is known, and the table shows it."""
        directory = self.mktemp()
        done = bcr("simulate", "catch_up_crash", "--log-dir", directory)
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        index = os.path.join(directory, REPORT_DIRECTORY, "index.html")
        # The table's "report" row (a long path is folded over lines).
        self.assertIn("report" + index, "".join(done.stdout.split()))
        self.assertTrue(done.stdout.splitlines()[-1].startswith("PASS: "), done.stdout)
        check_report(self, directory, index)

    def test_no_report(self) -> None:
        """--no-report writes the data but no report."""
        directory = self.mktemp()
        done = bcr("simulate", "--log-dir", directory, "--no-report", "--quiet")
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        self.assertTrue(os.path.exists(os.path.join(directory, REQUESTS_FILE)))
        self.assertFalse(os.path.exists(os.path.join(directory, REPORT_DIRECTORY)))
        # bcr report builds it afterwards and prints where.
        rebuilt = bcr("report", directory)
        self.assertEqual((rebuilt.returncode, rebuilt.stderr), (0, ""))
        index = os.path.join(directory, REPORT_DIRECTORY, "index.html")
        self.assertEqual(rebuilt.stdout, index + "\n")
        check_report(self, directory, index)

    def test_report_failure_keeps_verdict(self) -> None:
        """A report that cannot be written is one line on standard error; the verdict and status stay."""
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, REPORT_DIRECTORY), "w") as f:
            f.write("in the way")
        done = bcr("simulate", "--log-dir", directory, "--quiet")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertTrue(done.stdout.startswith("PASS: "), done.stdout)
        [line] = done.stderr.splitlines()
        self.assertTrue(line.startswith("bcr: no run report: "), line)
        self.assertIn(REPORT_DIRECTORY, line)

    def test_not_a_run_directory(self) -> None:
        """bcr report on a directory that is not a run's: one line on standard error, status 1."""
        empty = self.mktemp()
        os.makedirs(empty)
        for directory in (empty, os.path.join(empty, "missing")):
            done = bcr("report", directory)
            self.assertEqual(done.returncode, 1)
            self.assertEqual(done.stdout, "")
            [line] = done.stderr.splitlines()
            self.assertTrue(line.startswith(f"bcr: {directory}"), line)
            self.assertNotIn("Traceback", done.stderr)

    def test_run_writes_report(self) -> None:
        """bcr run (real processes) writes the data and the report into its log directory."""
        directory = self.mktemp()
        done = bcr("run", "failure_free", "--log-dir", directory, "--quiet")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        with open(os.path.join(directory, "summary.json")) as f:
            summary = json.load(f)
        self.assertEqual(summary["timeline"]["clock"], "wall-clock")
        run = load_run(directory)
        self.assertEqual(len(run.requests), summary["requests"])
        self.assertGreater(min(run.requests.sent_s), 0.0)
        check_report(self, directory, os.path.join(directory, REPORT_DIRECTORY, "index.html"))
