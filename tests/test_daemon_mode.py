"""
Tests for C{twistd} without C{--nodaemon}: a daemon that cannot start tells
the waiting parent why (L{twisted_bcr.net.daemon.report_start_failure}), so
the parent exits 1 with the cause instead of waiting for ever, and a daemon
that starts writes its pid file and stops on SIGTERM.

The process tests run the real C{twistd} script; every wait has a deadline
that only guards against a hang.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from twisted.application.service import Service
from twisted.internet import reactor as _reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.test_processes import poll
from twisted_bcr.net.daemon import STATUS_PIPE_BYTES, _DaemonService, report_start_failure
from twisted_bcr.supervise import child_environment

reactor: Any = _reactor

CASE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "etc", "cases",
    "failure_free.txt",
)
#: Guard against a hang only: the processes take about a second.
WAIT_S = 60.0


def twistd_script() -> list[str]:
    """Twisted's own C{twistd} next to this interpreter, else the same code with C{-c}."""
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def is_running(pid: int) -> bool:
    """Whether C{pid} is a live process (a zombie waiting to be reaped is not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def processes_naming(marker: str) -> list[int]:
    """The live processes whose command line contains C{marker}."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read()
        except OSError:
            continue
        if marker.encode() in command and is_running(int(entry)):
            found.append(int(entry))
    return found


class StatusPipeTests(SynchronousTestCase):
    """L{report_start_failure} on a twistd options mapping."""

    def options(self) -> tuple[usage.Options, int, str]:
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        pidfile = self.mktemp()
        with open(pidfile, "w") as f:
            f.write(str(os.getpid()))
        options = usage.Options()
        options["statusPipe"] = write
        options["pidfile"] = pidfile
        return options, read, pidfile

    def test_reports_once(self) -> None:
        """The cause goes to the pipe as twistd's parent expects it, once; the pid file goes."""
        options, read, pidfile = self.options()
        report_start_failure(options, "Couldn't listen on 127.0.0.1:1: in use.")
        self.assertEqual(os.read(read, 200), b"1 Couldn't listen on 127.0.0.1:1: in use.")
        # The write end is closed: end of file.
        self.assertEqual(os.read(read, 200), b"")
        self.assertIsNone(options["statusPipe"])
        self.assertFalse(os.path.exists(pidfile))
        report_start_failure(options, "again")

    def test_long_cause(self) -> None:
        """A cause longer than the parent reads is cut, visibly, to fit."""
        options, read, _ = self.options()
        report_start_failure(options, "x" * 500)
        message = os.read(read, 500)
        self.assertEqual(len(message), STATUS_PIPE_BYTES)
        self.assertTrue(message.endswith(b"..."))

    def test_other_pid_file(self) -> None:
        """A pid file naming another process is left alone."""
        options, _, pidfile = self.options()
        with open(pidfile, "w") as f:
            f.write("1")
        report_start_failure(options, "cause")
        self.assertTrue(os.path.exists(pidfile))

    def test_no_pipe(self) -> None:
        """Without a status pipe (C{--nodaemon}, C{twist}) nothing happens."""
        options = usage.Options()
        options["pidfile"] = "/nonexistent/x.pid"
        report_start_failure(options, "cause")
        self.assertNotIn("statusPipe", options)


class _Child(Service):
    """A child service that records its start, and can fail it."""

    def __init__(self, top: _DaemonService, fail: bool) -> None:
        self.top, self.fail, self.started = top, fail, False

    def startService(self) -> None:
        super().startService()
        self.started = True
        if self.fail:
            self.top.start_failed(Failure(RuntimeError("cannot listen")))


class StartOrderTests(SynchronousTestCase):
    """Once a child of the daemon could not start, no later child starts."""

    def test_no_start_after_a_failure(self) -> None:
        top = _DaemonService(None)
        first, second = _Child(top, fail=True), _Child(top, fail=False)
        first.setServiceParent(top)
        second.setServiceParent(top)
        top.startService()
        self.assertTrue(first.started)
        self.assertFalse(second.started)
        self.assertTrue(top.failed)

    def test_all_start(self) -> None:
        top = _DaemonService(None)
        children = [_Child(top, fail=False) for _ in range(2)]
        for child in children:
            child.setServiceParent(top)
        top.startService()
        self.assertEqual([c.started for c in children], [True, True])


class DaemonizingTwistdTests(TestCase):
    """Olympus under the real, daemonizing C{twistd}."""

    timeout = 3 * WAIT_S

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.admission = os.path.join(self.directory, "admitted")
        with open(self.admission, "w") as f:
            f.write("# nobody\n")
        self.pidfile = os.path.join(self.directory, "twistd.pid")
        self.addCleanup(self.kill_leftovers)

    def kill_leftovers(self) -> None:
        """SIGKILL any daemon of this test that is still there."""
        for pid in processes_naming(self.directory):
            os.kill(pid, signal.SIGKILL)

    async def twistd(self, listen: str) -> tuple[str, int]:
        """Run daemonizing twistd; its parent's output and exit status."""
        arguments = [
            f"--pidfile={self.pidfile}",
            f"--logfile={os.path.join(self.directory, 'twistd.log')}",
            "bcr-olympus", "--case", CASE, "--admission", self.admission,
            "--listen", listen, "--log-dir", self.directory,
            "--port-file", os.path.join(self.directory, "port"),
        ]
        command = twistd_script()
        d = getProcessOutputAndValue(
            command[0], command[1:] + arguments, env=child_environment(),
            path=self.directory,
        )
        out, err, status = await d.addTimeout(WAIT_S, reactor)
        return (out + err).decode("utf-8", "replace"), status

    async def test_start_failure(self) -> None:
        """A port already in use: the parent exits 1 naming it, and no daemon stays."""
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        output, status = await self.twistd(f"tcp:{number}:interface=127.0.0.1")
        self.assertEqual(status, 1, output)
        self.assertIn(f"Couldn't listen on 127.0.0.1:{number}", output)
        self.assertIn("Address already in use", output)
        await poll(lambda: not processes_naming(self.directory), WAIT_S)
        self.assertFalse(os.path.exists(self.pidfile))

    async def test_twist_start_failure(self) -> None:
        """Under C{twist} (the systemd units), the cause reaches standard output: the journal."""
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        twist = os.path.join(os.path.dirname(sys.executable), "twist")
        command = [twist] if os.access(twist, os.X_OK) else [sys.executable, "-m", "twisted"]
        d = getProcessOutputAndValue(
            command[0], command[1:] + [
                "--log-format=text", "bcr-olympus", "--case", CASE,
                "--admission", self.admission, "--log-dir", self.directory,
                "--listen", f"tcp:{number}:interface=127.0.0.1",
            ],
            env=child_environment(), path=self.directory,
        )
        out, err, status = await d.addTimeout(WAIT_S, reactor)
        self.assertEqual(status, 1, (out, err))
        self.assertIn(
            f"olympus could not start: Couldn't listen on 127.0.0.1:{number}".encode(), out
        )

    async def test_start_and_stop(self) -> None:
        """A daemon that starts: status 0, a pid file, and SIGTERM stops it."""
        output, status = await self.twistd("tcp:0:interface=127.0.0.1")
        self.assertEqual(status, 0, output)
        with open(self.pidfile, encoding="ascii") as f:
            pid = int(f.read())
        self.assertTrue(is_running(pid))
        await poll(lambda: os.path.exists(os.path.join(self.directory, "port")), WAIT_S)
        os.kill(pid, signal.SIGTERM)
        await poll(lambda: not is_running(pid), WAIT_S)
        # twistd removes its pid file on a clean shutdown.
        self.assertFalse(os.path.exists(self.pidfile))
