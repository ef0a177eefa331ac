"""
Tests for L{twisted_bcr.supervise} (starting, watching and stopping
daemons) and L{twisted_bcr.net.twistd} (twistd with an exit status that
says whether the daemon logged a failure), including
L{twisted_bcr.logs.FailureTally}, the count behind that status.

The process tests run real twistd children of tiny C{.tac} files; they wait
for events (a process ending, a connection), never for time.
"""

from __future__ import annotations

import os
import signal
import site
import sys
from typing import Any, cast

from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorProcess
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

import twisted_bcr
from twisted_bcr import supervise
from twisted_bcr.core.replica import CRASH_STATUS
from twisted_bcr.lifecycle import OneShot
from twisted_bcr.logs import FailureTally
from twisted_bcr.net.twistd import FAILURES_LOGGED
from twisted_bcr.supervise import (
    Child,
    Supervisor,
    _ChildProtocol,
    child_environment,
    twistd_command,
)

reactor: Any = _reactor

#: Safety bound on any single wait on a child process (they take a second).
WAIT_S = 120.0


def bounded(d: Deferred[Any], seconds: float = WAIT_S) -> Deferred[Any]:
    """C{d}, failing with TimeoutError if it has not fired after C{seconds}."""
    return d.addTimeout(seconds, reactor)


@implementer(ILogObserver)
class Recorder:
    """A log observer keeping every event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def failure_of(exception: BaseException) -> Failure:
    """A Failure with a traceback, as a C{log.failure} in an C{except} logs it."""
    try:
        raise exception
    except BaseException:
        return Failure()


class FailureTallyTests(SynchronousTestCase):
    """FailureTally counts logged tracebacks and critical events."""

    def test_counts_failures(self) -> None:
        """An event with a log_failure counts, whatever its level, and becomes last."""
        tally = FailureTally()
        tally({"log_level": LogLevel.error, "log_failure": failure_of(ZeroDivisionError("oops"))})
        tally({"log_level": LogLevel.info, "log_failure": failure_of(KeyError("k"))})
        self.assertEqual(tally.count, 2)
        self.assertEqual(tally.last, "KeyError: 'k'")

    def test_counts_critical_events(self) -> None:
        """A critical event without a failure counts; its formatted message becomes last."""
        tally = FailureTally()
        tally({"log_level": LogLevel.critical, "log_format": "lost {what}", "what": "olympus"})
        self.assertEqual((tally.count, tally.last), (1, "lost olympus"))

    def test_ignores_other_events(self) -> None:
        """Events below critical without a failure (and events without a level) do not count."""
        tally = FailureTally()
        for level in (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error):
            tally({"log_level": level, "log_format": "nothing to see"})
        tally({"log_format": "no level at all"})
        self.assertEqual((tally.count, tally.last), (0, ""))

    def test_keeps_last(self) -> None:
        """After several failures, last describes the most recent; ignored events keep it."""
        tally = FailureTally()
        tally({"log_level": LogLevel.critical, "log_format": "first"})
        tally({"log_level": LogLevel.error, "log_failure": failure_of(ValueError("second"))})
        tally({"log_level": LogLevel.info, "log_format": "ignored"})
        self.assertEqual((tally.count, tally.last), (2, "ValueError: second"))

    def test_last_is_bounded(self) -> None:
        """A long message is cut to 200 characters."""
        tally = FailureTally()
        tally({"log_level": LogLevel.error, "log_failure": failure_of(ValueError("x" * 500))})
        self.assertEqual(tally.last, ("ValueError: " + "x" * 500)[:200])

    def test_observes_a_logger(self) -> None:
        """As an observer of a Logger, it counts what Logger.failure logs in an except."""
        tally = FailureTally()
        log = Logger(observer=tally)
        log.info("fine")
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            log.failure("it broke")
        self.assertEqual((tally.count, tally.last), (1, "ZeroDivisionError: division by zero"))


class FakeTransport:
    """The part of a process transport a Child uses."""

    def __init__(self, pid: int | None = 1234, refuse: bool = False) -> None:
        self.pid = pid
        self.refuse = refuse
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        if self.refuse:
            raise OSError("no such process")
        self.signals.append(name)


def fake_child(
    name: str = "replica-0-1",
    reason: BaseException | None = None,
    port_file: str = "replica-0-1.port",
    transport: FakeTransport | None = None,
) -> Child:
    """A Child of a fake process, ended for C{reason} (a ProcessDone etc.) or still running."""
    protocol = _ChildProtocol()
    child = Child(
        name=name, port_file=port_file, output_files=[], protocol=protocol,
        transport=transport if transport is not None else FakeTransport(),
    )
    if reason is not None:
        protocol.processEnded(Failure(reason))
    return child


class ChildTests(SynchronousTestCase):
    """How a Child reads the way its process ended, and its readiness."""

    def test_clean_exit(self) -> None:
        """Exit status 0 is no failure."""
        child = fake_child(reason=ProcessDone(0))
        self.assertFalse(child.running)
        self.assertEqual(child.status_text(), "exit status 0")
        self.assertIsNone(child.failure_text())

    def test_crash_fault(self) -> None:
        """CRASH_STATUS, the exit of a crash() fault, is no failure."""
        self.assertEqual(CRASH_STATUS, 255)
        child = fake_child(reason=ProcessTerminated(exitCode=CRASH_STATUS))
        self.assertEqual(child.status_text(), "exit status 255")
        self.assertIsNone(child.failure_text())

    def test_signal(self) -> None:
        """A process killed by a signal (ours or a test's) is no failure."""
        child = fake_child(reason=ProcessTerminated(signal=signal.SIGKILL))
        self.assertEqual(child.status_text(), f"killed by signal {int(signal.SIGKILL)}")
        self.assertIsNone(child.failure_text())

    def test_running(self) -> None:
        """A process still running has no failure (yet)."""
        child = fake_child()
        self.assertTrue(child.running)
        self.assertIsNone(child.failure_text())

    def test_failures_logged(self) -> None:
        """FAILURES_LOGGED (70) says the child, named, logged failures."""
        self.assertEqual(FAILURES_LOGGED, 70)
        child = fake_child(reason=ProcessTerminated(exitCode=FAILURES_LOGGED))
        self.assertEqual(
            child.failure_text(),
            "replica-0-1 logged failures (see replica-0-1.log and .stderr)",
        )

    def test_other_status(self) -> None:
        """Any other non-zero status is a failure naming the child and its status."""
        child = fake_child(name="olympus", reason=ProcessTerminated(exitCode=1))
        self.assertEqual(child.status_text(), "exit status 1")
        self.assertEqual(
            child.failure_text(), "olympus ended with exit status 1 (see olympus.stderr)"
        )

    def test_cause_from_standard_error(self) -> None:
        """
        The failure line quotes the last line the child wrote to standard
        error, without twistd's prefix: a bind error names itself.
        """
        stderr = self.mktemp()
        with open(stderr, "w", encoding="utf-8") as f:
            f.write(
                "2026-12-03T01:57:57+0000 [twisted.scripts._twistd_unix.UnixAppLogger#info]"
                " reactor class: EPollReactor.\n"
                "2026-12-03T01:57:57+0000 [twisted_bcr.net.node#error] olympus could not"
                " start: Couldn't listen on 10.9.9.9:0: [Errno 99] Cannot assign requested"
                " address.\n\n"
            )
        child = fake_child(name="olympus", reason=ProcessTerminated(exitCode=1))
        child.output_files[:] = ["olympus.stdout", stderr]
        self.assertEqual(
            child.failure_text(),
            "olympus ended with exit status 1: olympus could not start: Couldn't listen on"
            " 10.9.9.9:0: [Errno 99] Cannot assign requested address. (see olympus.stderr)",
        )

    def test_ended_fires(self) -> None:
        """The protocol's ended fires once the process ended, with what ended it noted."""
        child = fake_child()
        ended = child.protocol.ended.wait()
        self.assertNoResult(ended)
        child.protocol.processEnded(Failure(ProcessTerminated(exitCode=3)))
        self.successResultOf(ended)
        self.assertEqual((child.protocol.exit_code, child.protocol.signal), (3, None))

    def test_pid(self) -> None:
        """pid is the transport's, or -1 once the transport has none (the process ended)."""
        self.assertEqual(fake_child(transport=FakeTransport(pid=77)).pid, 77)
        self.assertEqual(fake_child(transport=FakeTransport(pid=None)).pid, -1)

    def test_ready_address(self) -> None:
        """ready_address is the port file's stripped text; None without a file or text."""
        port_file = self.mktemp()
        child = fake_child(port_file=port_file)
        self.assertIsNone(child.ready_address())
        with open(port_file, "w", encoding="utf-8") as f:
            f.write("")
        self.assertIsNone(child.ready_address())
        with open(port_file, "w", encoding="utf-8") as f:
            f.write("127.0.0.1:4321\n")
        self.assertEqual(child.ready_address(), "127.0.0.1:4321")

    def test_send_signal(self) -> None:
        """A running child is signalled and the signal noted; an ended one is left alone."""
        transport = FakeTransport()
        child = fake_child(transport=transport)
        child.send_signal("TERM")
        self.assertEqual((transport.signals, child.signalled), (["TERM"], ["TERM"]))
        child.protocol.processEnded(Failure(ProcessTerminated(signal=signal.SIGTERM)))
        child.send_signal("KILL")
        self.assertEqual((transport.signals, child.signalled), (["TERM"], ["TERM"]))

    def test_send_signal_refused(self) -> None:
        """A signal the system refuses (the process just ended) is not noted as sent."""
        child = fake_child(transport=FakeTransport(refuse=True))
        child.send_signal("TERM")
        self.assertEqual(child.signalled, [])

    def test_failures(self) -> None:
        """Supervisor.failures lists the failure lines of its children, in order."""
        supervisor = Supervisor(reactor, ".", Logger(observer=Recorder()))
        supervisor.children = [
            fake_child("a", ProcessTerminated(exitCode=FAILURES_LOGGED)),
            fake_child("b", ProcessDone(0)),
            fake_child("c", ProcessTerminated(exitCode=2)),
            fake_child("d"),
        ]
        self.assertEqual(
            supervisor.failures(),
            ["a logged failures (see a.log and .stderr)",
             "c ended with exit status 2 (see c.stderr)"],
        )


class CommandTests(SynchronousTestCase):
    """The command and environment children run with."""

    def test_twistd_command(self) -> None:
        """Children run the twistd entry point under this very interpreter."""
        self.assertEqual(twistd_command(), [sys.executable, "-m", "twisted_bcr.net.twistd"])

    def package_parent(self) -> str:
        return os.path.dirname(os.path.dirname(os.path.abspath(twisted_bcr.__file__)))

    def test_source_checkout_on_path(self) -> None:
        """From a source checkout, its directory goes first on PYTHONPATH, before what was there."""
        self.patch(os, "environ", {"PYTHONPATH": "/elsewhere", "OTHER": "kept"})
        self.patch(site, "getsitepackages", lambda: ["/site"])
        self.patch(site, "getusersitepackages", lambda: "/user-site")
        environment = child_environment()
        self.assertEqual(environment["PYTHONPATH"], self.package_parent() + os.pathsep + "/elsewhere")
        self.assertEqual(environment["OTHER"], "kept")

    def test_source_checkout_no_path(self) -> None:
        """Without a PYTHONPATH, it is the checkout's directory alone."""
        self.patch(os, "environ", {})
        self.patch(site, "getsitepackages", lambda: ["/site"])
        self.patch(site, "getusersitepackages", lambda: "/user-site")
        self.assertEqual(child_environment(), {"PYTHONPATH": self.package_parent()})

    def test_installed(self) -> None:
        """An installed package needs no PYTHONPATH: the environment is passed as is."""
        self.patch(os, "environ", {"PYTHONPATH": "/elsewhere"})
        self.patch(site, "getsitepackages", lambda: [self.package_parent()])
        self.assertEqual(child_environment(), {"PYTHONPATH": "/elsewhere"})
        self.patch(os, "environ", {})
        self.patch(site, "getsitepackages", lambda: [])
        self.patch(site, "getusersitepackages", lambda: self.package_parent())
        self.assertEqual(child_environment(), {})


_FAILING_TAC = """\
from twisted.application.service import Application
from twisted.internet import reactor
from twisted.logger import Logger

application = Application("supervise-test")

def fail_then_stop():
    try:
        1 / 0
    except ZeroDivisionError:
        Logger().failure("the tac failed on purpose")
    reactor.stop()

reactor.callWhenRunning(fail_then_stop)
"""

_FAILING_THEN_TERMINATED_TAC = """\
import os, signal

from twisted.application.service import Application
from twisted.internet import reactor
from twisted.logger import Logger

application = Application("supervise-test")

def fail_then_terminate():
    try:
        1 / 0
    except ZeroDivisionError:
        Logger().failure("the tac failed on purpose")
    os.kill(os.getpid(), signal.SIGTERM)

reactor.callWhenRunning(fail_then_terminate)
"""

_CLEAN_TAC = """\
from twisted.application.service import Application
from twisted.internet import reactor

application = Application("supervise-test")
reactor.callWhenRunning(reactor.stop)
"""

#: Runs until signalled; once running, writes its port file and tells the
#: test by connecting to it.
_RUNNING_TAC = """\
from twisted.application.service import Application
from twisted.internet import reactor
from twisted.internet.protocol import ClientFactory, Protocol

application = Application("supervise-test")

def ready():
    with open({port_file!r}, "w") as f:
        f.write("127.0.0.1:4321\\n")
    reactor.connectTCP("127.0.0.1", {test_port}, ClientFactory.forProtocol(Protocol))

reactor.callWhenRunning(ready)
"""


class _Notifying(Protocol):
    """Fires its factory's connected on connection and lost once the connection is gone."""

    def __init__(self, notify: _NotifyingFactory) -> None:
        self.notify = notify

    def connectionMade(self) -> None:
        self.notify.connected.fire()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.notify.lost.fire()


class _NotifyingFactory(Factory):
    """Tells when the (one) child connected, and when that connection is gone."""

    def __init__(self) -> None:
        self.connected = OneShot()
        self.lost = OneShot()

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        return _Notifying(self)


def listening_port(port: IListeningPort) -> int:
    return cast(IPv4Address, port.getHost()).port


class SupervisorProcessTests(TestCase):
    """A Supervisor running real twistd children of tiny .tac files."""

    #: Above the bounds of the waits inside, which give clearer errors.
    timeout = 4 * WAIT_S

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        recorder = Recorder()
        self.events = recorder.events
        self.supervisor = Supervisor(reactor, self.directory, Logger(observer=recorder))
        self.addCleanup(self.kill_children)

    async def kill_children(self) -> None:
        """Leave no child behind, even when a test fails."""
        self.supervisor.kill_all()
        for child in self.supervisor.children:
            await bounded(child.protocol.ended.wait())

    def write_tac(self, name: str, text: str) -> str:
        path = os.path.join(self.directory, f"{name}.tac")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def read(self, name: str) -> str:
        with open(os.path.join(self.directory, name), encoding="utf-8") as f:
            return f.read()

    async def spawn_sleeper(self) -> tuple[Child, _NotifyingFactory]:
        """A child that runs until signalled, once it has connected to the test."""
        factory = _NotifyingFactory()
        port: IListeningPort = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        port_file = os.path.join(self.directory, "sleeper.port")
        tac = _RUNNING_TAC.format(port_file=port_file, test_port=listening_port(port))
        child = self.supervisor.spawn("sleeper", ["-y", self.write_tac("sleeper", tac)])
        await bounded(factory.connected.wait())
        return child, factory

    def test_interfaces(self) -> None:
        """The trial reactor can spawn processes (so the tests below run for real)."""
        self.assertTrue(IReactorProcess.providedBy(reactor))

    async def test_failure_logged(self) -> None:
        """A daemon that logged a failure exits FAILURES_LOGGED, read as a failure of the run."""
        child = self.supervisor.spawn("failing", ["-y", self.write_tac("failing", _FAILING_TAC)])
        self.assertTrue(child.running)
        await bounded(child.protocol.ended.wait())
        self.assertEqual((child.protocol.exit_code, child.protocol.signal), (FAILURES_LOGGED, None))
        self.assertEqual(child.status_text(), "exit status 70")
        self.assertEqual(
            child.failure_text(),
            "failing logged failures: 1 failure(s) logged; last: ZeroDivisionError:"
            " division by zero (see failing.log and .stderr)",
        )
        self.assertEqual(self.supervisor.failures(), [child.failure_text()])
        # twistd's own log has the traceback.
        self.assertIn("the tac failed on purpose", self.read("failing.twistd.log"))
        self.assertIn("ZeroDivisionError: division by zero", self.read("failing.twistd.log"))

    async def test_failure_count_on_stderr(self) -> None:
        """The entry point says on stderr (where failure_text points) what it counted."""
        child = self.supervisor.spawn("failing", ["-y", self.write_tac("failing", _FAILING_TAC)])
        await bounded(child.protocol.ended.wait())
        self.assertEqual(child.protocol.exit_code, FAILURES_LOGGED)
        self.assertIn(
            "1 failure(s) logged; last: ZeroDivisionError: division by zero",
            self.read("failing.stderr"),
        )

    async def test_failure_survives_sigterm(self) -> None:
        """A daemon that logged a failure and is then stopped by SIGTERM still exits FAILURES_LOGGED."""
        child = self.supervisor.spawn(
            "terminated", ["-y", self.write_tac("terminated", _FAILING_THEN_TERMINATED_TAC)]
        )
        await bounded(child.protocol.ended.wait())
        self.assertEqual((child.protocol.exit_code, child.protocol.signal), (FAILURES_LOGGED, None))
        self.assertIn("1 failure(s) logged", self.read("terminated.stderr"))

    async def test_stale_port_file_removed(self) -> None:
        """A port file an earlier run left under the child's name is gone before the child starts."""
        stale = os.path.join(self.directory, "clean.port")
        with open(stale, "w", encoding="utf-8") as f:
            f.write("127.0.0.1:1\n")
        child = self.supervisor.spawn("clean", ["-y", self.write_tac("clean", _CLEAN_TAC)])
        self.assertIsNone(child.ready_address())
        await self.supervisor.exit_within(WAIT_S)

    async def test_clean_exit(self) -> None:
        """A daemon that logged no failure exits 0: no failure of the run."""
        child = self.supervisor.spawn("clean", ["-y", self.write_tac("clean", _CLEAN_TAC)])
        await self.supervisor.exit_within(WAIT_S)
        self.assertFalse(child.running)
        self.assertEqual((child.protocol.exit_code, child.protocol.signal), (0, None))
        self.assertEqual(child.status_text(), "exit status 0")
        self.assertIsNone(child.failure_text())
        self.assertEqual(self.supervisor.failures(), [])
        self.assertNotIn("failure(s) logged", self.read("clean.stderr"))

    async def test_spawn_command_and_files(self) -> None:
        """spawn runs twistd in the foreground, without a pid file, logging to the directory."""
        tac = self.write_tac("clean", _CLEAN_TAC)
        child = self.supervisor.spawn("clean", ["-y", tac])
        await bounded(child.protocol.ended.wait())
        twistd_log = os.path.join(self.directory, "clean.twistd.log")
        self.assertEqual(child.port_file, os.path.join(self.directory, "clean.port"))
        self.assertEqual(
            child.output_files,
            [os.path.join(self.directory, "clean.stdout"),
             os.path.join(self.directory, "clean.stderr"), twistd_log],
        )
        self.assertTrue(all(os.path.exists(p) for p in child.output_files))
        [started] = [e for e in self.events if e.get("event") == "bcr.spawn"]
        self.assertEqual(
            started["command"],
            " ".join(twistd_command() + ["-n", "--pidfile=", f"--logfile={twistd_log}", "-y", tac]),
        )
        self.assertEqual(started["name"], "clean")
        # Logged once the process ended, with how.
        [ended] = [e for e in self.events if e.get("event") == "bcr.child_ended"]
        self.assertEqual((ended["name"], ended["status"]), ("clean", "exit status 0"))
        self.assertEqual(self.supervisor.children, [child])

    async def test_terminate_straggler(self) -> None:
        """
        terminate_stragglers sends SIGTERM to a child still running and
        returns an error line naming it; ended by that signal, the child has
        no failure of its own.
        """
        # A straggler that is slow to die must not be taken for one ignoring SIGTERM.
        self.patch(supervise, "TERMINATE_GRACE_S", WAIT_S)
        child, factory = await self.spawn_sleeper()
        self.assertTrue(child.running)
        self.assertEqual(child.ready_address(), "127.0.0.1:4321")

        errors = await bounded(Deferred.fromCoroutine(self.supervisor.terminate_stragglers()))
        self.assertEqual(errors, ["sleeper did not exit; sent SIGTERM"])
        self.assertEqual(child.signalled, ["TERM"])
        self.assertFalse(child.running)
        self.assertEqual(child.protocol.signal, signal.SIGTERM)
        self.assertEqual(child.status_text(), f"killed by signal {int(signal.SIGTERM)}")
        self.assertIsNone(child.failure_text())
        self.assertEqual(
            [(e["name"], e["signal"]) for e in self.events if e.get("event") == "bcr.signal"],
            [("sleeper", "TERM")],
        )
        await bounded(factory.lost.wait())

    async def test_nothing_to_terminate(self) -> None:
        """With every child ended, terminate_stragglers signals nobody and returns no error."""
        child = self.supervisor.spawn("clean", ["-y", self.write_tac("clean", _CLEAN_TAC)])
        await bounded(child.protocol.ended.wait())
        self.assertEqual(await self.supervisor.terminate_stragglers(), [])
        self.assertEqual(child.signalled, [])

    async def test_exit_within_bounded(self) -> None:
        """exit_within returns (without an error) once its bound passes, the child still running."""
        factory = _NotifyingFactory()
        port: IListeningPort = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        tac = _RUNNING_TAC.format(
            port_file=os.path.join(self.directory, "sleeper.port"), test_port=listening_port(port)
        )
        child = self.supervisor.spawn("sleeper", ["-y", self.write_tac("sleeper", tac)])
        await bounded(factory.connected.wait())
        await self.supervisor.exit_within(0)
        self.assertTrue(child.running)
        await self.kill_children()
        self.assertEqual(child.protocol.signal, signal.SIGKILL)
        await bounded(factory.lost.wait())
