# -*- test-case-name: tests.test_supervise -*-
"""
Process supervision for C{bcr run}, in the spirit of
L{twisted.runner.procmon}: start daemons as children, know when one is
ready and how it ended, and stop them (SIGTERM, then SIGKILL).

A child is a daemon started through L{twisted_bcr.net.twistd} (twistd in the
foreground), its output in files of the run's directory.  Readiness is the
port file the daemon writes once it listens (what a systemd unit would
learn from C{sd_notify}); how it ended is its exit status, which says
whether it logged a failure (L{FAILURES_LOGGED}) or was ended by a
C{crash()} fault (L{CRASH_STATUS}).  Nothing here reads a log.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from attrs import define, field
from twisted.internet._posixstdio import StandardIO
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_bcr.core.replica import CRASH_STATUS
from twisted_bcr.forkserver import child_environment, start, take_early
from twisted_bcr.lifecycle import OneShot
from twisted_bcr.net.twistd import FAILURES_LOGGED

__all__ = [
    "Child",
    "Supervisor",
    "child_environment",
    "peak_memory_kib",
    "twistd_command",
]

#: How long after SIGTERM before SIGKILL, and after SIGKILL before giving up.
TERMINATE_GRACE_S = 5.0
#: The exit status recorded for a child whose fork server died before it
#: could say how the child ended (EX_OSERR).
FORK_SERVER_LOST = 71


class _ChildProtocol(ProcessProtocol):
    """Notes how a child process ended; its output goes straight to files."""

    def __init__(self) -> None:
        self.ended = OneShot()
        self.exit_code: int | None = None
        self.signal: int | None = None
        #: User + system CPU seconds it used, when its reaper could tell.
        self.cpu_s: float | None = None

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, (ProcessDone, ProcessTerminated)):
            self.exit_code = value.exitCode
            self.signal = value.signal
        self.ended.fire()


@define
class Child:
    """One daemon started by a L{Supervisor}."""

    name: str
    port_file: str
    output_files: list[str]
    protocol: _ChildProtocol
    transport: Any
    signalled: list[str] = field(factory=list)

    @property
    def running(self) -> bool:
        return not self.protocol.ended.fired

    @property
    def pid(self) -> int:
        return int(self.transport.pid or -1)

    def status_text(self) -> str:
        protocol = self.protocol
        if protocol.signal is not None:
            return f"killed by signal {protocol.signal}"
        return f"exit status {protocol.exit_code}"

    def failure_text(self) -> str | None:
        """
        Why the way it ended is an error of the run, or None: a clean exit,
        a C{crash()} fault and a signal (sent by us or a test) are not.
        """
        code = self.protocol.exit_code
        if self.running or self.protocol.signal is not None or code in (0, CRASH_STATUS):
            return None
        said = self.last_words()
        cause = f": {said}" if said else ""
        if code == FAILURES_LOGGED:
            return f"{self.name} logged failures{cause} (see {self.name}.log and .stderr)"
        return f"{self.name} ended with exit status {code}{cause} (see {self.name}.stderr)"

    def last_words(self) -> str:
        """
        The last line the child wrote to its standard error, without
        twistd's time and source prefix: shown to say why it failed (its
        exit status decided that), at most 300 characters.
        """
        if len(self.output_files) < 2:
            return ""
        try:
            with open(self.output_files[1], "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(f.tell() - 4096, 0))
                tail = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        if not lines:
            return ""
        last = lines[-1]
        if last.startswith("20") and "] " in last:
            last = last.split("] ", 1)[1]
        return last[:300]

    def ready_address(self) -> str | None:
        """HOST:PORT from the port file it writes once listening, or None yet."""
        if self.transport.pid is None:
            return None  # not forked yet: the port file may be a stale one
        try:
            with open(self.port_file, encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError:
            return None

    def send_signal(self, name: str) -> None:
        if self.running:
            try:
                self.transport.signalProcess(name)
            except OSError:
                return
            self.signalled.append(name)


def twistd_command() -> list[str]:
    """twistd under this very interpreter, with an exit status that counts failures."""
    return [sys.executable, "-m", "twisted_bcr.net.twistd"]


def peak_memory_kib(pid: int) -> int | None:
    """VmHWM of a process from /proc, in KiB; None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class _ForkedTransport:
    """What a L{Child} needs of its process, for a child of the fork server."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self._pending: list[str] = []
        #: Fires once forked (its pid known).
        self.forked = OneShot()

    def started(self, pid: int) -> None:
        self.pid = pid
        self.forked.fire()
        pending, self._pending = self._pending, []
        for name in pending:
            self.signalProcess(name)

    def signalProcess(self, name: str) -> None:
        if self.pid is None:
            # Forked any moment now: the signal goes as soon as it is.
            self._pending.append(name)
            return
        os.kill(self.pid, getattr(signal, f"SIG{name}"))


@implementer(IHalfCloseableProtocol)
class _AdoptedPipes(Protocol):
    """
    The fork server's pipes, read and written by the reactor like stdio.
    StandardIO closes neither descriptor: each is closed here once its
    direction is done (closing the write end is how the server learns it
    will be asked for no more children).
    """

    def __init__(self, server: ForkServer, process: Any, server_in: int, server_out: int) -> None:
        self._server = server
        self._process = process
        self._descriptors = {"in": server_in, "out": server_out}
        self._ended = False

    def _close(self, which: str) -> None:
        descriptor = self._descriptors.pop(which, None)
        if descriptor is not None:
            os.close(descriptor)

    def dataReceived(self, data: bytes) -> None:
        self._server.received(data)

    def writeConnectionLost(self) -> None:
        self._close("in")

    def readConnectionLost(self) -> None:
        # It closed its output: it is exiting (or gone).
        self._close("out")
        self._end()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._close("in")
        self._close("out")
        self._end()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            self._process.wait(timeout=TERMINATE_GRACE_S)
        except Exception:
            self._process.kill()
            self._process.wait()
        self._server.exited()


class _AdoptedProcess:
    """
    What L{ForkServer} needs of its process (started by
    L{twisted_bcr.forkserver.start}): its pipes, read and written by the
    reactor, and its pid for signals.
    """

    def __init__(
        self, reactor: Any, server: ForkServer, process: Any, server_in: int, server_out: int
    ) -> None:
        self._popen = process
        self._pipes = StandardIO(
            _AdoptedPipes(server, process, server_in, server_out),
            stdin=server_out, stdout=server_in, reactor=reactor,
        )

    @property
    def pid(self) -> int:
        return int(self._popen.pid)

    def write(self, data: bytes) -> None:
        self._pipes.write(data)

    def closeStdin(self) -> None:
        self._pipes.loseWriteConnection()

    def signalProcess(self, name: str) -> None:
        if self._popen.poll() is None:
            self._popen.send_signal(getattr(signal, f"SIG{name}"))


class ForkServer:
    """
    The launcher's end of L{twisted_bcr.forkserver}: asks it for children
    and learns from it when each was forked and how it ended.  It adopts
    the fork server C{launch_entry} started early for this directory, or
    starts one.
    """

    def __init__(self, reactor: Any, directory: str, environment: dict[str, str]) -> None:
        self._waiting: dict[str, tuple[_ChildProtocol, _ForkedTransport]] = {}
        self._buffer = b""
        self._count = 0
        self.ended = OneShot()
        #: Its own CPU seconds (importing for everyone), once it said so.
        self.cpu_s: float | None = None
        # Started before the launcher's imports (to overlap them), or now.
        started = take_early(directory) or start(directory, environment)
        self._process = _AdoptedProcess(reactor, self, *started)

    def spawn(self, argv: Sequence[str], stdout: str, stderr: str) -> tuple[Any, Any]:
        """Ask for C{twistd argv}; the protocol and transport its L{Child} uses."""
        protocol, transport = _ChildProtocol(), _ForkedTransport()
        if self.ended.fired:
            protocol.exit_code = 1
            protocol.ended.fire()
            return protocol, transport
        self._count += 1
        ident = str(self._count)
        self._waiting[ident] = (protocol, transport)
        request = {"spawn": ident, "argv": list(argv), "stdout": stdout, "stderr": stderr}
        self._process.write(json.dumps(request).encode() + b"\n")
        return protocol, transport

    def close(self) -> None:
        """No more children: it exits once those it has have ended."""
        if not self.ended.fired:
            self._process.closeStdin()

    def kill(self) -> None:
        if not self.ended.fired:
            try:
                self._process.signalProcess("KILL")
            except OSError:
                pass

    def received(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self._event(event)

    def _event(self, event: dict[str, Any]) -> None:
        if "started" in event:
            entry = self._waiting.get(str(event["started"]))
            if entry is not None:
                entry[1].started(int(event["pid"]))
        elif "ended" in event or "failed" in event:
            entry = self._waiting.pop(str(event.get("ended", event.get("failed"))), None)
            if entry is None:
                return
            protocol = entry[0]
            protocol.exit_code = event.get("exit_code", 1)
            protocol.signal = event.get("signal")
            cpu = event.get("cpu_s")
            protocol.cpu_s = float(cpu) if isinstance(cpu, (int, float)) else None
            protocol.ended.fire()
        elif "exiting" in event:
            cpu = event.get("cpu_s")
            self.cpu_s = float(cpu) if isinstance(cpu, (int, float)) else None

    def exited(self) -> None:
        """It has exited (killed?): its children can no longer be reported; say so."""
        waiting, self._waiting = self._waiting, {}
        for protocol, _ in waiting.values():
            protocol.exit_code = FORK_SERVER_LOST
            protocol.ended.fire()
        self.ended.fire()


class Supervisor:
    """The children of one run: start, watch, stop."""

    def __init__(
        self, reactor: Any, directory: str, log: Any, fork_server: bool = False
    ) -> None:
        self.reactor = reactor
        self._directory = directory
        self._log = log
        self._environment = child_environment()
        self.children: list[Child] = []
        self._use_fork_server = fork_server
        #: Forks every child from one pre-imported process; started with the first.
        self._fork_server: ForkServer | None = None

    def spawn(self, name: str, arguments: Sequence[str]) -> Child:
        """Start C{twistd -n <arguments>}; its output goes to files in the directory."""
        stdout_path = os.path.join(self._directory, f"{name}.stdout")
        stderr_path = os.path.join(self._directory, f"{name}.stderr")
        twistd_log = os.path.join(self._directory, f"{name}.twistd.log")
        command = twistd_command() + [
            "-n", "--pidfile=", f"--logfile={twistd_log}", *arguments,
        ]
        port_file = os.path.join(self._directory, f"{name}.port")
        # A port file left by an earlier run in this directory would make a
        # dead address look ready.
        try:
            os.unlink(port_file)
        except FileNotFoundError:
            pass
        if self._use_fork_server:
            if self._fork_server is None:
                self._fork_server = ForkServer(self.reactor, self._directory, self._environment)
            protocol, transport = self._fork_server.spawn(
                command[len(twistd_command()):], stdout_path, stderr_path
            )
        else:
            protocol = _ChildProtocol()
            with open(stdout_path, "ab") as out, open(stderr_path, "ab") as err, open(
                os.devnull, "rb"
            ) as null:
                transport = self.reactor.spawnProcess(
                    protocol, command[0], command, env=self._environment,
                    childFDs={0: null.fileno(), 1: out.fileno(), 2: err.fileno()},
                )
        child = Child(
            name=name,
            port_file=port_file,
            output_files=[stdout_path, stderr_path, twistd_log],
            protocol=protocol,
            transport=transport,
        )
        self.children.append(child)

        def started(_: object = None) -> None:
            self._log.info(
                "started {name} (pid {pid}): {command}", name=name, pid=child.pid,
                command=" ".join(command), event="bcr.spawn",
            )

        if isinstance(transport, _ForkedTransport):
            transport.forked.wait().addCallback(started)
        else:
            started()
        protocol.ended.wait().addCallback(
            lambda _: self._log.info(
                "{name} ended: {status}", name=name, status=child.status_text(),
                event="bcr.child_ended",
            )
        )
        return child

    async def exit_within(self, seconds: float, children: Sequence[Child] | None = None) -> None:
        """Wait at most C{seconds} for C{children} (default: all) to end."""
        waiting = [
            c.protocol.ended.wait()
            for c in (self.children if children is None else children) if c.running
        ]
        if not waiting:
            return
        all_ended = Deferred.fromCoroutine(_gather(waiting))
        all_ended.addTimeout(seconds, self.reactor)
        try:
            await all_ended
        except (TimeoutError, CancelledError):
            pass

    async def terminate_stragglers(self, grace_s: float = TERMINATE_GRACE_S) -> list[str]:
        """
        SIGTERM, then SIGKILL, whatever still runs, each followed by up to
        C{grace_s} for it to end; one error line per straggler.
        """
        errors = []
        for signal_name in ("TERM", "KILL"):
            running = [c for c in self.children if c.running]
            if not running:
                break
            for child in running:
                child.send_signal(signal_name)
                self._log.warn(
                    "sent SIG{signal} to {name}", signal=signal_name, name=child.name,
                    event="bcr.signal",
                )
                errors.append(f"{child.name} did not exit; sent SIG{signal_name}")
            await self.exit_within(grace_s)
        errors += [
            f"{c.name} (pid {c.pid}) survived SIGKILL" for c in self.children if c.running
        ]
        return errors

    def kill_all(self) -> None:
        for child in self.children:
            child.send_signal("KILL")

    def close(self) -> None:
        """No more children will be started (the fork server may exit)."""
        if self._fork_server is not None:
            self._fork_server.close()

    def cpu_seconds(self) -> dict[str, float] | None:
        """
        CPU seconds (user + system) of every child and of the fork server,
        as their reaper counted them; None unless every child and the fork
        server have ended and each was counted (only the fork server can
        tell, so not without one).
        """
        counted = {c.name: c.protocol.cpu_s for c in self.children}
        if any(c.running for c in self.children) or None in counted.values():
            return None
        seconds = {name: cpu for name, cpu in counted.items() if cpu is not None}
        if self._fork_server is not None:
            if self._fork_server.cpu_s is None:
                return None  # still running, or gone without saying
            seconds["forkserver"] = self._fork_server.cpu_s
        return seconds

    async def closed(self, seconds: float) -> None:
        """L{close}, then wait at most C{seconds} for the fork server to exit."""
        self.close()
        server = self._fork_server
        if server is None or server.ended.fired:
            return
        ended = server.ended.wait()
        ended.addTimeout(seconds, self.reactor)
        try:
            await ended
        except (TimeoutError, CancelledError):
            server.kill()

    def failures(self) -> list[str]:
        """How children ended that is an error of the run."""
        return [text for c in self.children if (text := c.failure_text()) is not None]


async def _gather(waiting: list[Deferred[Any]]) -> None:
    for d in waiting:
        await d
