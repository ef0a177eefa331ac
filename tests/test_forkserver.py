"""
Tests for L{twisted_bcr.forkserver}: daemons forked from one pre-imported
process are real processes, supervised like those started afresh.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from twisted.internet import reactor
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from tests import test_supervise
from tests.test_supervise import (
    _CLEAN_TAC,
    WAIT_S,
    Recorder,
    bounded,
)
from twisted_bcr import forkserver
from twisted_bcr.supervise import FORK_SERVER_LOST, Supervisor, child_environment


# The module, not the class: imported by name, trial would run it here too.
class ForkedSupervisorProcessTests(test_supervise.SupervisorProcessTests):
    """Every supervisor test with real children, the children forked by the fork server."""

    #: Start the fork server before the supervisor, as C{launch_entry} does.
    start_early = False

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        if self.start_early:
            forkserver.start_early(self.directory)
        recorder = Recorder()
        self.events = recorder.events
        self.supervisor = Supervisor(
            reactor, self.directory, Logger(observer=recorder), fork_server=True
        )
        self.addCleanup(self.kill_children)

    async def kill_children(self) -> None:
        await super().kill_children()
        await self.supervisor.closed(WAIT_S)

    async def test_forked_from_the_server(self) -> None:
        """The child's parent is the fork server, whose command line names the run directory."""
        child = self.supervisor.spawn("clean", ["-y", self.write_tac("clean", _CLEAN_TAC)])
        server = self.supervisor._fork_server
        assert server is not None
        await bounded(child.protocol.ended.wait())
        self.assertGreater(child.pid, 0)
        self.assertNotEqual(child.pid, server._process.pid)
        with open(f"/proc/{server._process.pid}/cmdline", "rb") as f:
            self.assertIn(self.directory.encode(), f.read())
        # The kernel's count of the child's CPU, and the server's own once
        # it has exited.
        self.assertGreater(child.protocol.cpu_s or 0, 0)
        self.assertIsNone(self.supervisor.cpu_seconds())
        await self.supervisor.closed(WAIT_S)
        self.assertEqual(set(self.supervisor.cpu_seconds() or {}), {"clean", "forkserver"})

    async def test_server_lost(self) -> None:
        """
        If the fork server dies, its children can no longer be reported: a
        child still running is recorded as ended with FORK_SERVER_LOST (an
        error of the run, not a hang), and later spawns fail at once.
        """
        child, factory = await self.spawn_sleeper()
        pid = child.pid
        server = self.supervisor._fork_server
        assert server is not None
        server._process.signalProcess("KILL")
        await bounded(server.ended.wait())
        self.assertFalse(child.running)
        self.assertEqual(child.protocol.exit_code, FORK_SERVER_LOST)
        self.assertIsNotNone(child.failure_text())
        os.kill(pid, signal.SIGKILL)  # orphaned now: ours to end
        await bounded(factory.lost.wait())
        late = self.supervisor.spawn("late", ["-y", self.write_tac("late", _CLEAN_TAC)])
        self.assertFalse(late.running)
        self.assertEqual(late.protocol.exit_code, 1)


class EarlyForkServerTests(ForkedSupervisorProcessTests):
    """
    Every supervisor test with real children, forked by a fork server that
    was started before the supervisor existed (as C{launch_entry} does, to
    overlap its imports with the launcher's) and adopted by it.
    """

    start_early = True

    async def kill_children(self) -> None:
        # Adopted even if no test spawned anything: then it exits too.
        if self.supervisor._fork_server is None:
            self.supervisor.spawn("clean", ["-y", self.write_tac("clean", _CLEAN_TAC)])
        await super().kill_children()
        server = self.supervisor._fork_server
        assert server is not None
        self.assertTrue(server.ended.fired)

    async def test_adopted(self) -> None:
        """The early fork server is the one used, and reports CPU as the other does."""
        assert forkserver._early is not None
        early_pid = forkserver._early[1].pid
        child = self.supervisor.spawn("clean", ["-y", self.write_tac("clean", _CLEAN_TAC)])
        server = self.supervisor._fork_server
        assert server is not None
        self.assertEqual(server._process.pid, early_pid)
        await bounded(child.protocol.ended.wait())
        self.assertEqual(child.protocol.exit_code, 0)
        await self.supervisor.closed(WAIT_S)
        self.assertEqual(set(self.supervisor.cpu_seconds() or {}), {"clean", "forkserver"})
        self.assertIsNone(forkserver.take_early(self.directory))


class PreloadProcessTests(SynchronousTestCase):
    """The fork server's preload imports the daemons' code but installs no reactor."""

    def test_no_reactor(self) -> None:
        done = subprocess.run(
            [sys.executable, "-c",
             "import sys; from twisted_bcr.forkserver import preload; preload(); "
             "print('twisted.internet.reactor' in sys.modules, "
             "'twisted_bcr.replica.tap' in sys.modules, 'nacl.signing' in sys.modules)"],
            capture_output=True, text=True, env=child_environment(), timeout=WAIT_S,
        )
        self.assertEqual((done.returncode, done.stdout.strip()), (0, "False True True"),
                         done.stderr)
