"""
Tests for the bcr console script, through the installed C{bcr} (as a user
runs it): one-line errors, exit statuses, summaries, the live progress line.
"""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import time

from rich.console import Console
from twisted.trial.unittest import SynchronousTestCase

from twisted_bcr.lifecycle import Progress
from twisted_bcr.supervise import child_environment
from twisted_bcr.verdict import PROGRESS_AFTER_S, LiveProgress

CASES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "etc", "cases")

#: A guard against a hung command, not a speed requirement.
COMMAND_DEADLINE_S = 300.0


def bcr_command() -> list[str]:
    """The installed C{bcr} script next to this interpreter, else the same code with C{-m}."""
    script = os.path.join(os.path.dirname(sys.executable), "bcr")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "twisted_bcr.cli"]


def run_cli(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run C{bcr argv...}; return its status, standard output and standard error."""
    done = subprocess.run(
        bcr_command() + list(argv), capture_output=True, text=True,
        env={**child_environment(), **(env or {})}, timeout=COMMAND_DEADLINE_S,
    )
    return done.returncode, done.stdout, done.stderr


def run_cli_on_a_terminal(*argv: str, env: dict[str, str]) -> tuple[int, str]:
    """Run C{bcr argv...} with a pseudo-terminal as its output; its status and output."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            bcr_command() + list(argv), stdin=subprocess.DEVNULL, stdout=terminal,
            stderr=terminal, env={**child_environment(), **env, "COLUMNS": "120"},
        )
    finally:
        os.close(terminal)
    output = b""
    give_up_at = time.monotonic() + COMMAND_DEADLINE_S
    try:
        while time.monotonic() < give_up_at:
            readable, _, _ = select.select([controller], [], [], 1.0)
            if not readable:
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
    status = process.wait(timeout=max(give_up_at - time.monotonic(), 1.0))
    return status, output.decode("utf-8", "replace")


class SimulateCommandTests(SynchronousTestCase):
    """bcr simulate runs a case and exits 0 exactly when it passed."""

    def test_passing_case(self) -> None:
        """A passing case prints PASS, writes its summary and exits 0."""
        summary_path = self.mktemp()
        status, out, err = run_cli(
            "simulate", os.path.join(CASES, "checkpoint.txt"), "--seed", "3",
            "--summary", summary_path, "--quiet",
        )
        self.assertEqual((status, err), (0, ""))
        self.assertTrue(out.startswith("PASS: checkpoint (simulation)"))
        with open(summary_path) as f:
            summary = json.load(f)
        self.assertTrue(summary["ok"])
        self.assertEqual(summary["clients"][0]["results"][-1], "luke warm")

    def test_warnings_on_standard_error(self) -> None:
        """The case parser's warnings reach the terminal, with the user's file and line."""
        path = self.mktemp() + ".txt"
        with open(os.path.join(CASES, "checkpoint.txt"), encoding="utf-8") as source:
            text = source.read()
        with open(path, "w", encoding="utf-8") as case_file:
            case_file.write(text + "checkpt_interval = 3\nclient_timeout = 0\n")
        status, out, err = run_cli("simulate", path, "--quiet")
        self.assertEqual(status, 0, err)
        lines = err.splitlines()
        last = len(text.split("\n"))
        # Both keys were in the file already: two duplicates, then the zero timeout.
        self.assertEqual(len(lines), 3, err)
        self.assertTrue(lines[0].startswith(f"bcr: warning: {path}:{last}: duplicate key"), err)
        self.assertTrue(
            lines[1].startswith(f"bcr: warning: {path}:{last + 1}: duplicate key"), err
        )
        self.assertIn(f"{path}:{last + 1}: client_timeout = 0", lines[2])

    def test_missing_file(self) -> None:
        """An unreadable case file is one line on standard error and status 1."""
        status, out, err = run_cli("simulate", "/nonexistent/case.txt")
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(len(err.splitlines()), 1)
        self.assertTrue(err.startswith("bcr: /nonexistent/case.txt"))

    def test_bad_case(self) -> None:
        """An unknown operation is refused with file, line and text."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("t = 1\nnum_client = 1\nworkload[0] = put('a','b'); reconfig()\n")
        status, out, err = run_cli("simulate", path)
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(err.count("\n"), 1)
        self.assertIn(f"{path}:3: unknown operation 'reconfig'", err)

    def test_case_with_failures(self) -> None:
        """A case with failures lines runs them: shuttle_change_operation passes with one reconfiguration."""
        summary_path = self.mktemp()
        status, out, err = run_cli(
            "simulate", os.path.join(CASES, "shuttle_change_operation.txt"),
            "--summary", summary_path, "--quiet",
        )
        self.assertEqual((status, err), (0, ""))
        with open(summary_path) as f:
            summary = json.load(f)
        self.assertEqual(summary["configurations"], 2)
        self.assertEqual(
            summary["faults_fired"],
            [{"configuration": 0, "replica": 3, "trigger": "shuttle(0,6)",
              "failure": "change_operation()", "byzantine": True}],
        )

    def test_missing_plugin_directory(self) -> None:
        """A fault plugin directory that does not exist is one line and status 1."""
        status, out, err = run_cli(
            "simulate", os.path.join(CASES, "checkpoint.txt"), "--fault-plugins", "/nonexistent"
        )
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(err, "bcr: fault plugin directory '/nonexistent' does not exist\n")


class RunCommandTests(SynchronousTestCase):
    """bcr run refuses bad input before starting any process."""

    def test_withdrawn_failure(self) -> None:
        """omit_send() is refused with one line and status 1, and no log directory appears."""
        path = self.mktemp()
        log_dir = self.mktemp()
        with open(path, "w") as f:
            f.write(
                "t = 1\nnum_client = 1\nworkload[0] = get('a')\n"
                "failures[0,1] = shuttle(0,1), omit_send()\n"
            )
        status, out, err = run_cli("run", path, "--log-dir", log_dir)
        self.assertEqual((status, out), (1, ""))
        self.assertIn(f"{path}:4: unknown failure 'omit_send'", err)
        self.assertFalse(os.path.exists(log_dir))

    def test_missing_t(self) -> None:
        """A case without t is refused naming the file and the key."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("num_client = 1\nworkload[0] = get('a')\n")
        status, out, err = run_cli("run", path)
        self.assertEqual(status, 1)
        self.assertEqual(err, f"bcr: {path}: missing required key 't'\n")


NOOP_PLUGIN = '''
"""A failure that only says it fired, for the fault_plugins key test."""
from attrs import frozen
from twisted.plugin import IPlugin
from zope.interface import implementer

from twisted_bcr.interfaces import IFailure


@implementer(IPlugin, IFailure)
@frozen
class Noop:
    name: str = "noop"
    arity: int = 0
    stage: int = 3

    def fire(self, misbehave, args, text):
        misbehave.log(f"{text}: does nothing")


noop = Noop()
'''


class FaultPluginKeyTests(SynchronousTestCase):
    """A case file can name its own fault plugin directories (key fault_plugins)."""

    def test_case_names_its_plugins(self) -> None:
        """A failure from a directory the case names is usable by name, and fires."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "mine"))
        with open(os.path.join(directory, "mine", "bcr_test_noop_key.py"), "w") as f:
            f.write(NOOP_PLUGIN)
        case = os.path.join(directory, "case.txt")
        with open(case, "w") as f:
            f.write(
                "t = 1\nnum_client = 1\nworkload[0] = put('a','b'); get('a')\n"
                "fault_plugins = mine\nfailures[0,1] = shuttle(0,1), noop()\n"
            )
        summary_path = self.mktemp()
        status, out, err = run_cli("simulate", case, "--summary", summary_path, "--quiet")
        self.assertEqual((status, err), (0, ""))
        with open(summary_path) as f:
            summary = json.load(f)
        self.assertEqual(
            summary["faults_fired"],
            [{"configuration": 0, "replica": 1, "trigger": "shuttle(0,1)", "failure": "noop()",
              "byzantine": True}],
        )
        # Without the key, the name is unknown: refused with file and line.
        with open(case, "w") as f:
            f.write(
                "t = 1\nnum_client = 1\nworkload[0] = put('a','b')\n"
                "failures[0,1] = shuttle(0,1), noop()\n"
            )
        status, out, err = run_cli("simulate", case)
        self.assertEqual(status, 1)
        self.assertIn(f"{case}:4: unknown failure 'noop'", err)


def case_file(test: SynchronousTestCase, text: str) -> str:
    """A case file holding C{text}, in a fresh temporary path."""
    path = test.mktemp() + ".txt"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


ONE_CLIENT = "t = 1\nnum_client = 1\nworkload[0] = put('a','b'); get('a')\n"


class RefusalTests(SynchronousTestCase):
    """
    What cannot make a good run is refused before anything starts: one line
    naming the problem, status 1, no traceback, no log directory made.
    """

    def assertRefused(self, argv: list[str], expected: str) -> None:
        log_dir = self.mktemp()
        status, out, err = run_cli(*argv, "--log-dir", log_dir, "--quiet")
        self.assertEqual((status, out), (1, ""), err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith("bcr: "), err)
        self.assertIn(expected, err)
        self.assertNotIn("Traceback", err)
        self.assertFalse(os.path.exists(log_dir))

    def test_too_many_requests(self) -> None:
        """A workload beyond the case's request bound is refused before it is generated."""
        path = case_file(self, "t = 1\nnum_client = 1\nworkload[0] = pseudorandom(1,1000000000)\n")
        for command in ("run", "simulate"):
            with self.subTest(command=command):
                self.assertRefused(
                    [command, path], f"{path}:3: 1000000000 requests is too many"
                )

    def test_requests_bounded_in_all(self) -> None:
        """The bound holds for all workloads together, not only for each."""
        path = case_file(
            self,
            "t = 1\nnum_client = 2\nworkload[0] = pseudorandom(1,600000)\n"
            "workload[1] = pseudorandom(2,600000)\n",
        )
        self.assertRefused(["simulate", path], f"{path}:4: 600000 requests is too many")

    def test_t_bounded(self) -> None:
        """t beyond the bound (2t+1 replicas and as many spares) is refused."""
        path = case_file(self, "t = 100\nnum_client = 1\nworkload[0] = get('a')\n")
        self.assertRefused(["run", path], f"{path}:1: t may be at most 10")

    def test_clients_bounded(self) -> None:
        """More clients than the bound are refused."""
        path = case_file(self, "t = 1\nnum_client = 1000\n")
        self.assertRefused(["simulate", path], f"{path}:2: num_client may be at most 256")

    def test_no_clients(self) -> None:
        """A case without clients cannot make a run, in either binding."""
        path = case_file(self, "t = 1\nnum_client = 0\n")
        for command in ("run", "simulate"):
            with self.subTest(command=command):
                self.assertRefused([command, path], "a run needs at least one client")

    def test_deadline_positive(self) -> None:
        """A deadline that is not positive is refused."""
        path = case_file(self, ONE_CLIENT)
        for command, deadline in (("run", "-5"), ("simulate", "0")):
            with self.subTest(command=command):
                self.assertRefused(
                    [command, path, "--deadline", deadline], "the deadline must be positive"
                )

    def test_unusable_log_dir(self) -> None:
        """A log directory that cannot be made is refused with its reason."""
        path = case_file(self, ONE_CLIENT)
        blocker = os.path.abspath(self.mktemp())
        with open(blocker, "w", encoding="utf-8"):
            pass
        for command in ("run", "simulate"):
            with self.subTest(command=command):
                status, out, err = run_cli(
                    command, path, "--log-dir", os.path.join(blocker, "logs"), "--quiet"
                )
                self.assertEqual((status, out), (1, ""), err)
                self.assertEqual(
                    err, f"bcr: --log-dir {os.path.join(blocker, 'logs')}: {blocker} is not a directory\n"
                )

    def test_unwritable_summary(self) -> None:
        """A summary file that cannot be written is refused before the run, not lost after it."""
        path = case_file(self, ONE_CLIENT)
        blocker = os.path.abspath(self.mktemp())
        with open(blocker, "w", encoding="utf-8"):
            pass
        summary = os.path.join(blocker, "summary.json")
        status, out, err = run_cli("simulate", path, "--summary", summary, "--quiet")
        self.assertEqual((status, out), (1, ""), err)
        self.assertEqual(err, f"bcr: --summary {summary}: {blocker} is not a directory\n")


class PackagedCaseTests(SynchronousTestCase):
    """The example cases ship in the package: named from any directory, listed by bcr cases."""

    def setUp(self) -> None:
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        here = os.getcwd()
        os.chdir(elsewhere)
        self.addCleanup(os.chdir, here)

    def test_lists_every_example(self) -> None:
        """One line per case of etc/cases, with its size, then where they are."""
        status, out, err = run_cli("cases")
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        names = sorted(f[:-4] for f in os.listdir(CASES) if f.endswith(".txt"))
        self.assertEqual([line.split()[0] for line in lines[:-1]], names)
        self.assertIn("t=2, 3 client(s), 900 request(s), no failures", out)
        self.assertTrue(lines[-1].startswith("(in "), lines[-1])

    def test_named_case_from_another_directory(self) -> None:
        """A packaged case runs by name, with or without .txt, wherever bcr is started."""
        for name in ("trailing_checkpoint", "trailing_checkpoint.txt"):
            with self.subTest(name=name):
                status, out, err = run_cli("simulate", name, "--quiet")
                self.assertEqual((status, err), (0, ""))
                self.assertTrue(out.startswith("PASS: trailing_checkpoint (simulation)"), out)

    def test_default_case_from_another_directory(self) -> None:
        """With no case, bcr simulate runs the packaged failure-free case."""
        status, out, err = run_cli("simulate", "--quiet")
        self.assertEqual((status, err), (0, ""))
        self.assertTrue(out.startswith("PASS: failure_free (simulation): 16 requests"), out)

    def test_a_file_wins_over_a_packaged_name(self) -> None:
        """A file in the working directory is what a bare name means, if it exists."""
        with open("perform900", "w", encoding="utf-8") as f:
            f.write("t = 0\nnum_client = 1\nworkload[0] = get('x')\n")
        status, out, err = run_cli("simulate", "perform900", "--quiet")
        self.assertEqual((status, err), (0, ""))
        self.assertIn("1 requests", out)


class OutputTests(SynchronousTestCase):
    """A person reads a short table; --json gives the whole summary; the last line is the verdict."""

    def test_table_by_default(self) -> None:
        """The table names the verdict, the work, the configurations and the faults that fired, in plain text."""
        status, out, err = run_cli("simulate", os.path.join(CASES, "trailing_checkpoint.txt"))
        self.assertEqual((status, err), (0, ""))
        lines = [line.rstrip() for line in out.splitlines()]
        self.assertEqual(lines[0].split(), ["verdict", "PASS"])
        self.assertIn("requests        4 of 4 accepted, 1 client(s), 0 retransmission(s)", lines)
        self.assertIn("configurations  2, 0 -> 1 asked by replica 0.1", lines)
        self.assertIn("faults fired    0.1 shuttle(0,0), extra_op()", lines)
        self.assertTrue(any("(simulated)" in line for line in lines if line.startswith("latency")))
        self.assertNotIn("\x1b[", out)
        self.assertTrue(lines[-1].startswith("PASS: trailing_checkpoint (simulation): 4 requests"))
        self.assertIn("s (simulated)", lines[-1])

    def test_json(self) -> None:
        """--json prints the summary as JSON, then the verdict line."""
        status, out, err = run_cli(
            "simulate", os.path.join(CASES, "trailing_checkpoint.txt"), "--json"
        )
        self.assertEqual((status, err), (0, ""))
        *document, last = out.rstrip("\n").split("\n")
        summary = json.loads("\n".join(document))
        self.assertEqual(summary["faults_fired"][0]["failure"], "extra_op()")
        self.assertTrue(last.startswith("PASS: "))

    def test_failed_run_lists_its_errors(self) -> None:
        """Each error of a failed run is a row of the table."""
        path = case_file(self, ONE_CLIENT)
        status, out, err = run_cli("simulate", path, "--deadline", "0.0001")
        self.assertEqual(status, 1, err)
        self.assertIn("FAIL", out.splitlines()[0])
        self.assertIn("errors          the deadline", out)
        self.assertTrue(out.splitlines()[-1].startswith("FAIL: "))


def progress(results: int, elapsed_s: float, configuration: int = 0) -> Progress:
    return Progress(
        results=results, requests=16, configuration=configuration, elapsed_s=elapsed_s
    )


class LiveProgressTests(SynchronousTestCase):
    """The live line: shown once a run has lasted a second, then kept up to date."""

    def live(self) -> tuple[LiveProgress, io.StringIO]:
        output = io.StringIO()
        console = Console(file=output, force_terminal=True, width=120)
        return LiveProgress(output, console=console), output

    def test_short_run_shows_nothing(self) -> None:
        """Reports within the first second draw nothing: short runs stay quiet."""
        live, output = self.live()
        live(progress(3, 0.25))
        live(progress(16, PROGRESS_AFTER_S / 2))
        live.close()
        self.assertEqual(output.getvalue(), "")

    def test_long_run_shows_results_rate_and_configuration(self) -> None:
        """After a second: results done of all, the rate, the configuration in use."""
        live, output = self.live()
        live(progress(4, PROGRESS_AFTER_S))
        live(progress(12, PROGRESS_AFTER_S + 2.0, configuration=1))
        live.close()
        text = output.getvalue()
        self.assertIn("12/16", text)
        self.assertIn("4 req/s", text)
        self.assertIn("configuration 1, 1 reconfiguration(s)", text)


class TerminalTests(SynchronousTestCase):
    """What the installed bcr draws on a terminal, and only there."""

    def test_progress_line_on_a_terminal(self) -> None:
        """
        On a terminal, bcr simulate draws the live line (here from the first
        report on), then the table and the verdict.
        """
        status, output = run_cli_on_a_terminal(
            "simulate", "checkpoint", env={"BCR_PROGRESS_AFTER_S": "0"}
        )
        self.assertEqual(status, 0, output)
        self.assertIn("results", output)
        self.assertIn("req/s, configuration 0", output)
        self.assertIn("PASS: checkpoint (simulation)", output)

    def test_no_progress_line_in_a_pipe_or_with_json(self) -> None:
        """Into a pipe, or with --json on a terminal, no live line is drawn."""
        status, out, err = run_cli("simulate", "checkpoint", env={"BCR_PROGRESS_AFTER_S": "0"})
        self.assertEqual((status, err), (0, ""))
        self.assertNotIn("req/s,", out)
        status, output = run_cli_on_a_terminal(
            "simulate", "checkpoint", "--json", env={"BCR_PROGRESS_AFTER_S": "0"}
        )
        self.assertEqual(status, 0, output)
        self.assertNotIn("req/s,", output)
        summary, _ = json.JSONDecoder().raw_decode(output)
        self.assertEqual(summary["case"], "checkpoint")
