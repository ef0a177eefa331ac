# -*- test-case-name: tests.test_processes -*-
"""
C{bcr run}: one case with real processes (DESIGN §1, §4; SPEC §1 "Run
lifecycle").

The launcher parses the case, makes a log directory, creates Olympus's key,
starts Olympus as a C{twistd -n bcr-olympus} child process and waits for its
port file, starts spare replicas as C{twistd -n bcr-replica} children, and
runs the clients and the driver in its own reactor, each on its own
L{TcpNode}.  When every client has finished, the driver asks Olympus to
retire the replicas and report; the launcher then stops Olympus, waits for
every child to exit (signalling the stragglers, first SIGTERM, then
SIGKILL), looks for tracebacks in every log, names each assigned spare's log
after its place (C{<case>-replica-<c>.<r>.log}, SPEC §13), and writes the
summary JSON of DESIGN §4 to C{<log dir>/summary.json}.

Every wait is bounded by one deadline for the whole run; a run that overruns
it ends with every process killed and C{ok} false.  No child outlives the
launcher's reactor: a system event trigger kills them at shutdown too
(Control-C included).

Log files are named after the case file (SPEC §13: C{<config>-<process>}),
e.g. C{failure_free-olympus.log}, C{failure_free-spare-2.log},
C{failure_free-client-0.log}.  Olympus reads the launcher's copy of the case,
C{<case>.case.txt} in the log directory, so a case built in memory (C{bcr
bench}) runs the same way as one read from a file.

L{run_case} runs under a caller's reactor (tests use it);
L{run_case_blocking} runs the launcher in a fresh interpreter
(C{python -m twisted_bcr.launch}) and can be called any number of times.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import site
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import attrs
from attrs import define, field
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    ensureDeferred,
    race,
    succeed,
)
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall, deferLater, react
from twisted.logger import (
    Logger,
    LogPublisher,
    eventsFromJSONLogFile,
)
from twisted.python.failure import Failure

import twisted_bcr
from twisted_bcr import crypto, faults
from twisted_bcr.admission import write_admission
from twisted_bcr.checking import build_summary
from twisted_bcr.config import Case, CaseError, parse_case
from twisted_bcr.core.client import Client, ClientOutcome
from twisted_bcr.core.driver import Driver
from twisted_bcr.files import make_private_directory, write_atomically
from twisted_bcr.logs import LogFiles
from twisted_bcr.messages import RunReport
from twisted_bcr.net.daemon import load_or_create_key
from twisted_bcr.net.node import TcpNode, parse_address
from twisted_bcr.peers import Peer

__all__ = [
    "ReadyInfo",
    "case_file_text",
    "main",
    "run_case",
    "run_case_blocking",
    "twistd_command",
]

_T = TypeVar("_T")

#: How often the launcher looks for a port file to appear.
POLL_INTERVAL_S = 0.05
#: How long children get to exit by themselves once the run is over.
EXIT_GRACE_S = 10.0
#: How long after SIGTERM before SIGKILL, and after SIGKILL before giving up.
TERMINATE_GRACE_S = 5.0

_REPLICA_NAME = re.compile(r"replica (\d+)\.(\d+)")


class _RunFailed(Exception):
    """The run cannot go on; the message is one line for the summary's errors."""


@define
class ReadyInfo:
    """
    What the C{on_ready} hook of L{run_case} learns once configuration 0 is
    set up: where Olympus and the replicas listen, in chain order, and the
    JSON log file of each replica.
    """

    log_dir: str
    olympus: str
    configuration: int
    replicas: list[str]
    replica_logs: list[str]
    #: The process id of each replica, to kill or stop it in a test.
    replica_pids: list[int]
    #: Olympus's process id (-1 when it runs elsewhere).
    olympus_pid: int = -1
    #: End the run now, as its deadline would, with this reason (a test
    #: that has seen what it waited for need not wait for a clock).
    end_run: Callable[[str], None] = lambda reason: None


class _OneShot:
    """Something that happens once; every L{wait} is its own Deferred."""

    def __init__(self) -> None:
        self.fired = False
        self.value: Any = None
        self._waiting: list[Deferred[Any]] = []

    def fire(self, value: Any = None) -> None:
        if self.fired:
            return
        self.fired, self.value = True, value
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(value)

    def wait(self) -> Deferred[Any]:
        if self.fired:
            return succeed(self.value)
        d: Deferred[Any] = Deferred(lambda d: self._waiting.remove(d))
        self._waiting.append(d)
        return d


class _ChildProtocol(ProcessProtocol):
    """Notes how a child process ended; its output goes straight to files."""

    def __init__(self) -> None:
        self.ended = _OneShot()
        self.exit_code: int | None = None
        self.signal: int | None = None

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, (ProcessDone, ProcessTerminated)):
            self.exit_code = value.exitCode
            self.signal = value.signal
        self.ended.fire()


@define
class _Child:
    """One twistd child process of the run."""

    name: str
    port_file: str
    output_files: list[str]
    protocol: _ChildProtocol
    transport: Any
    signalled: list[str] = field(factory=list)

    @property
    def running(self) -> bool:
        return not self.protocol.ended.fired

    def status_text(self) -> str:
        protocol = self.protocol
        if protocol.signal is not None:
            return f"killed by signal {protocol.signal}"
        return f"exit status {protocol.exit_code}"

    def send_signal(self, name: str) -> None:
        if self.running:
            try:
                self.transport.signalProcess(name)
            except OSError:
                return
            self.signalled.append(name)


def twistd_command() -> list[str]:
    """
    How to run twistd with this very interpreter: the C{twistd} script next
    to C{sys.executable} when there is one (a virtualenv or an installed
    wheel), else C{python -c} running twistd.
    """
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def _child_environment() -> dict[str, str]:
    """
    This process's environment, plus the directory twisted_bcr was imported
    from on PYTHONPATH when that is not an installed location (a source
    checkout), so children import the same code.
    """
    environment = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(twisted_bcr.__file__)))
    installed = {os.path.abspath(p) for p in site.getsitepackages()}
    user_site = site.getusersitepackages()
    if isinstance(user_site, str):
        installed.add(os.path.abspath(user_site))
    if package_parent not in installed:
        existing = environment.get("PYTHONPATH")
        environment["PYTHONPATH"] = (
            package_parent + os.pathsep + existing if existing else package_parent
        )
    return environment


def _default_log_dir(stem: str) -> str:
    timestamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = os.path.join("runs", f"{stem}-{timestamp}")
    candidate, n = base, 0
    while os.path.exists(candidate):
        n += 1
        candidate = f"{base}-{n}"
    return candidate


class _Run:
    """The state of one processes-mode run of one case."""

    def __init__(
        self,
        reactor: Any,
        case: Case,
        stem: str,
        case_file: str,
        log_dir: str,
        deadline_s: float,
        hosts: Sequence[str] | None,
        on_ready: Callable[[ReadyInfo], Awaitable[Any] | None] | None,
        spares: int = 0,
        kill_head_after: int | None = None,
        olympus: tuple[str, crypto.KeyPair, str] | None = None,
        fault_plugin_dirs: Sequence[str] = (),
    ) -> None:
        self.reactor = reactor
        # The daemons load the same plugins: the command line's and the case's.
        self.fault_plugin_dirs = [
            *(os.path.abspath(d) for d in fault_plugin_dirs), *case.fault_plugin_dirs
        ]
        #: An Olympus already running (with its own pool of spares), and its
        #: key: then the launcher starts no process, only clients and driver.
        self.external_olympus = olympus
        #: Unassigned spare replicas kept booted and registered at all times.
        self.spare_count = spares
        #: The kill-the-head scenario: SIGKILL configuration 0's head once its
        #: tail has sent this many results (bcr bench measures recovery).
        self.kill_head_after = kill_head_after
        self.killed_at: float | None = None
        #: Spare top-ups scheduled after reconfigurations, cancelled at the end.
        self._top_ups: list[Any] = []
        self.case = case
        self.stem = stem
        self.case_file = case_file
        self.log_dir = log_dir
        self.deadline_s = deadline_s
        self.hosts = list(hosts) if hosts else []
        self.on_ready = on_ready
        self.started_at = reactor.seconds()
        self.deadline_at = self.started_at + deadline_s
        self.errors: list[str] = []
        self.children: list[_Child] = []
        self.spares: list[_Child] = []
        self.nodes: list[TcpNode] = []
        self.clients: list[Client] = []
        self.finished_clients: set[int] = set()
        self.all_finished = _OneShot()
        self.finished_at: float | None = None
        self.report = _OneShot()
        self.olympus_gone = _OneShot()
        #: Fired (with a reason) by the on_ready hook's end_run.
        self.ended_early = _OneShot()
        self.olympus: _Child | None = None
        self.olympus_address = ""
        self.configurations: dict[int, list[str]] = {}
        self.ready_result: Deferred[Any] | None = None
        self.finishing = False
        self.driver: Driver | None = None
        self.interrupted = False
        #: Process name -> peak resident memory, recorded when every client is done.
        self.peak_memory_kib: dict[str, int] = {}
        #: Fires once the summary is written.
        self.done = _OneShot()
        self._olympus_key_bytes = b""
        self._environment = _child_environment()
        #: What the launcher admits at its own Olympus: the identity of every
        #: spare it starts and the key of every client it runs.
        self.admission_path = os.path.join(log_dir, "admitted")
        self._spare_identities: list[tuple[bytes, str]] = []
        self._client_keys = self._load_client_keys()

        self._log_files = LogFiles(log_dir, f"{stem}-launcher")
        self.log = Logger(namespace="bcr.launcher", observer=LogPublisher(self._log_files))

    # ------------------------------------------------------------------
    # Hosts

    def _host(self, index: int, assigned: tuple[int, ...]) -> str:
        """The host of the C{index}th process of a kind (loopback by default)."""
        if not self.hosts:
            return "127.0.0.1"
        if assigned and assigned[index % len(assigned)] < len(self.hosts):
            return self.hosts[assigned[index % len(assigned)]]
        return self.hosts[index % len(self.hosts)]

    # ------------------------------------------------------------------
    # Waiting, bounded by the run's deadline

    async def _wait(
        self, waitable: Deferred[_T], what: str, deadline_at: float | None = None
    ) -> _T:
        """
        C{waitable}'s result; L{_RunFailed} on the deadline (the run's unless
        given) or if Olympus dies.
        """
        deadline = _OneShot()
        # Only the run's own deadline can be brought forward by end_run.
        ended = self.ended_early.wait() if deadline_at is None else _OneShot().wait()
        deadline_at = self.deadline_at if deadline_at is None else deadline_at
        call = self.reactor.callLater(
            max(deadline_at - self.reactor.seconds(), 0.0), deadline.fire
        )
        try:
            index, result = await race(
                [waitable, self.olympus_gone.wait(), deadline.wait(), ended]
            )
        finally:
            if call.active():
                call.cancel()
            if not ended.called:
                ended.cancel()
        if index == 1:
            assert self.olympus is not None
            raise _RunFailed(
                f"Olympus ended ({self.olympus.status_text()}) while waiting for {what}"
            )
        if index == 2:
            raise _RunFailed(f"the deadline passed while waiting for {what}")
        if index == 3:
            raise _RunFailed(f"the run was ended ({result}) while waiting for {what}")
        return cast(_T, result)

    def _poll(self, predicate: Callable[[], bool]) -> Deferred[None]:
        """Fires once C{predicate()} is true; cancelling stops the polling."""
        loop = LoopingCall(lambda: loop.stop() if predicate() else None)
        loop.clock = self.reactor
        done = loop.start(POLL_INTERVAL_S, now=True)
        result: Deferred[None] = Deferred(lambda _: loop.stop() if loop.running else None)
        done.addCallbacks(
            lambda _: result.callback(None) if not result.called else None,
            lambda f: None,
        )
        return result

    # ------------------------------------------------------------------
    # Children

    def _spawn(self, name: str, arguments: list[str]) -> _Child:
        """Start C{twistd -n <arguments>}; its output goes to files in the log dir."""
        stdout_path = os.path.join(self.log_dir, f"{name}.stdout")
        stderr_path = os.path.join(self.log_dir, f"{name}.stderr")
        twistd_log = os.path.join(self.log_dir, f"{name}.twistd.log")
        command = twistd_command() + [
            "-n", "--pidfile=", f"--logfile={twistd_log}", *arguments,
        ]
        protocol = _ChildProtocol()
        with open(stdout_path, "ab") as out, open(stderr_path, "ab") as err, open(
            os.devnull, "rb"
        ) as null:
            transport = self.reactor.spawnProcess(
                protocol, command[0], command, env=self._environment,
                childFDs={0: null.fileno(), 1: out.fileno(), 2: err.fileno()},
            )
        child = _Child(
            name=name,
            port_file=os.path.join(self.log_dir, f"{name}.port"),
            output_files=[stdout_path, stderr_path, twistd_log],
            protocol=protocol,
            transport=transport,
        )
        self.children.append(child)
        self.log.info(
            "started {name} (pid {pid}): {command}", name=name, pid=transport.pid,
            command=" ".join(command), event="bcr.spawn",
        )
        protocol.ended.wait().addCallback(lambda _: self._child_ended(child))
        return child

    def _child_ended(self, child: _Child) -> None:
        self.log.info(
            "{name} ended: {status}", name=child.name, status=child.status_text(),
            event="bcr.child_ended",
        )
        if child is self.olympus:
            self.olympus_gone.fire()
        elif not self.finishing and child.protocol.exit_code != 0:
            # A crash() fault ends a replica like this; anything else that
            # went wrong leaves a traceback, found after the run.
            self.log.warn(
                "{name} ended before the end of the run: {status}", name=child.name,
                status=child.status_text(), event="bcr.child_died",
            )

    def _load_client_keys(self) -> list[crypto.KeyPair]:
        """
        Fresh client keys, or with an Olympus run by someone else, the keys
        in C{client-<i>.key} next to its key file, which its operator admits
        (docs/OPERATIONS.md); they are created on first use.
        """
        if self.external_olympus is None:
            return [crypto.KeyPair.generate() for _ in range(self.case.num_client)]
        directory = os.path.dirname(os.path.abspath(self.external_olympus[2]))
        return [
            load_or_create_key(os.path.join(directory, f"client-{index}.key"), "client key")
            for index in range(self.case.num_client)
        ]

    def _write_admission(self) -> None:
        clients = [
            (index, key.verify_key_bytes, f"client-{index}")
            for index, key in enumerate(self._client_keys)
        ]
        write_admission(self.admission_path, self._spare_identities, clients)

    async def _start_olympus_and_spares(self) -> crypto.KeyPair:
        """Olympus with a fresh key, and the chain's and the spare replicas."""
        key_file = os.path.join(self.log_dir, "olympus.key")
        olympus_key = crypto.KeyPair.generate()
        olympus_key.save(key_file)
        self._olympus_key_bytes = olympus_key.verify_key_bytes
        self._write_admission()
        await self._start_olympus(key_file)
        for _ in range(self.case.num_replicas + self.spare_count):
            self._spawn_spare(self._olympus_key_bytes)
        # Start the workload on a quiet machine: every spare has booted and
        # registered before the first request.
        await self._wait(
            self._poll(lambda: len(self._spare_addresses()) == len(self.spares)),
            "every replica process to listen",
        )
        return olympus_key

    async def _start_olympus(self, key_file: str) -> None:
        name = f"{self.stem}-olympus"
        host = self.hosts[0] if self.hosts else "127.0.0.1"
        self.olympus = self._spawn(
            name,
            [
                "bcr-olympus",
                "--case", self.case_file,
                "--name", name,
                "--listen", f"tcp:0:interface={host}",
                "--key-file", key_file,
                "--admission", self.admission_path,
                "--port-file", os.path.join(self.log_dir, f"{name}.port"),
                "--log-dir", self.log_dir,
                *self._fault_plugin_arguments(),
            ],
        )
        port_file = self.olympus.port_file
        await self._wait(self._poll(lambda: os.path.exists(port_file)), "Olympus to listen")
        with open(port_file, encoding="utf-8") as f:
            self.olympus_address = f.read().strip()
        self.log.info(
            "Olympus listens at {address}", address=self.olympus_address,
            event="bcr.olympus_ready",
        )

    def _spawn_spare(self, olympus_key: bytes) -> None:
        number = len(self.spares)
        name = f"{self.stem}-spare-{number}"
        host = self._host(number, self.case.replica_hosts)
        # Admitted before it starts: Olympus re-reads the file when it changes.
        identity_file = os.path.join(self.log_dir, f"{name}.identity")
        identity = crypto.KeyPair.generate()
        identity.save(identity_file)
        self._spare_identities.append((identity.verify_key_bytes, name))
        self._write_admission()
        arguments = [
            "bcr-replica",
            "--olympus", self.olympus_address,
            "--olympus-key", olympus_key.hex(),
            "--identity-key", identity_file,
            "--listen", f"tcp:0:interface={host}",
            "--name", name,
            "--port-file", os.path.join(self.log_dir, f"{name}.port"),
            "--log-dir", self.log_dir,
        ]
        if self.case.failures:
            arguments += ["--enable-fault-injection", *self._fault_plugin_arguments()]
        self.spares.append(self._spawn(name, arguments))

    def _fault_plugin_arguments(self) -> list[str]:
        return [f"--fault-plugins={d}" for d in self.fault_plugin_dirs]

    def _spare_addresses(self) -> dict[str, _Child]:
        """Address -> spare, for every spare that has written its port file."""
        found = {}
        for spare in self.spares:
            try:
                with open(spare.port_file, encoding="utf-8") as f:
                    found[f.read().strip()] = spare
            except OSError:
                continue
        return found

    # ------------------------------------------------------------------
    # In-process machines

    def _node(
        self, name: str, host: str, key: crypto.KeyPair, observers: Sequence[Any] = ()
    ) -> TcpNode:
        node = TcpNode(
            self.reactor,
            name,
            key=key,
            listen=f"tcp:0:interface={host}",
            log_dir=self.log_dir,
            log_stem=f"{self.stem}-{name}",
            observers=observers,
        )
        self.nodes.append(node)
        return node

    async def _start_clients_and_driver(self, olympus_key: crypto.KeyPair) -> None:
        case = self.case
        olympus = Peer(self.olympus_address, olympus_key.verify_key_bytes)
        for index, operations in enumerate(case.workloads):
            key = self._client_keys[index]
            node = self._node(
                f"client-{index}",
                self._host(index, case.client_hosts),
                key,
                observers=[self._client_event],
            )
            await node.listen()
            client = Client(
                node,
                index,
                list(operations),
                key,
                olympus,
                case.client_timeout_ms,
                self._client_finished,
            )
            self.clients.append(client)
            node.attach(client)
        # The driver is the operator: it authenticates with Olympus's own key.
        driver_node = self._node(
            "driver", self.hosts[0] if self.hosts else "127.0.0.1", olympus_key
        )
        await driver_node.listen()
        self.driver = Driver(driver_node, olympus, olympus_key, self.report.fire)
        driver_node.attach(self.driver)
        for node in self.nodes:
            node.start_machine()
        if case.num_client == 0:
            self._all_done()

    def _client_event(self, event: dict[str, Any]) -> None:
        """
        A log observer on every client: learn each configuration as soon as
        a client does, and act on it outside the logging call.
        """
        if event.get("event") != "bcr.configuration":
            return
        number = event.get("number")
        if not isinstance(number, int) or number in self.configurations:
            return
        self.configurations[number] = list(event.get("replicas", []))
        if number == 0 and self.on_ready is not None:
            # Created now, so the run cannot finish without waiting for it.
            self.ready_result = deferLater(self.reactor, 0, self._call_on_ready)
            self.ready_result.addErrback(self._on_ready_failed)
        self.reactor.callLater(0, self._new_configuration, number)

    def _new_configuration(self, number: int) -> None:
        self.log.info(
            "configuration {number} is {replicas}", number=number,
            replicas=self.configurations[number], event="bcr.configuration",
        )
        if number > 0:
            # Configuration `number` used up spares: boot new ones so that a
            # later reconfiguration still never waits for a process to start,
            # but not while the new chain takes over: booting 2t+1 Python
            # processes would take the CPU from the recovery itself.
            self._top_ups.append(
                self.reactor.callLater(SPARE_TOP_UP_DELAY_S, self._top_up_spares, number)
            )

    def _top_up_spares(self, number: int) -> None:
        if self.finishing:
            return
        wanted = (number + 1) * self.case.num_replicas + self.spare_count
        for _ in range(wanted - len(self.spares)):
            self._spawn_spare(self._olympus_key_bytes)

    def _call_on_ready(self) -> Deferred[Any]:
        assert self.on_ready is not None
        replicas = self.configurations[0]
        spares = self._spare_addresses()
        info = ReadyInfo(
            log_dir=self.log_dir,
            olympus=self.olympus_address,
            configuration=0,
            replicas=replicas,
            replica_logs=[
                os.path.join(self.log_dir, spares[a].name + ".json") if a in spares else ""
                for a in replicas
            ],
            replica_pids=[
                spares[a].transport.pid if a in spares else -1 for a in replicas
            ],
            end_run=self.ended_early.fire,
            olympus_pid=(
                self.olympus.transport.pid
                if self.olympus is not None and self.olympus.transport is not None
                else -1
            ),
        )
        return ensureDeferred(_as_coroutine(self.on_ready, info))

    def _on_ready_failed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        self.errors.append(f"the on_ready hook failed: {failure.getErrorMessage()}")
        self.log.failure("the on_ready hook failed", failure, event="bcr.run_failed")

    def _client_finished(self, outcome: ClientOutcome) -> None:
        self.finished_clients.add(outcome.index)
        if len(self.finished_clients) == self.case.num_client:
            self._all_done()

    def _all_done(self) -> None:
        self.finished_at = self.reactor.seconds()
        self.log.info(
            "every client has finished after {elapsed:.3f} s",
            elapsed=self.finished_at - self.started_at, event="bcr.clients_done",
        )
        self.all_finished.fire()

    # ------------------------------------------------------------------
    # The run

    async def run(self) -> dict[str, Any]:
        report: RunReport | None = None
        self.log.info(
            "running case {case} ({path}) in {log_dir}; deadline {deadline:.1f} s; "
            "hosts in the case {case_hosts}, used {hosts}",
            case=self.case.name, path=self.case.path, log_dir=self.log_dir,
            deadline=self.deadline_s, case_hosts=list(self.case.hosts),
            hosts=self.hosts or ["127.0.0.1"], event="bcr.run",
        )
        for warning in self.case.warnings:
            self.log.warn("{warning}", warning=warning, event="bcr.case_warning")
        trigger = self.reactor.addSystemEventTrigger(
            "before", "shutdown", self._at_shutdown
        )
        try:
            try:
                if self.external_olympus is not None:
                    self.olympus_address, olympus_key, _ = self.external_olympus
                    self._olympus_key_bytes = olympus_key.verify_key_bytes
                    self.log.info(
                        "using the running Olympus at {address} and its spares",
                        address=self.olympus_address, event="bcr.olympus_ready",
                    )
                else:
                    olympus_key = await self._start_olympus_and_spares()
                await self._start_clients_and_driver(olympus_key)
                killer = None
                if self.kill_head_after is not None:
                    killer = ensureDeferred(self._kill_head(self.kill_head_after))
                try:
                    await self._wait(self.all_finished.wait(), "every client to finish")
                    self.finishing = True
                    self._record_peak_memory()
                    if self.ready_result is not None:
                        await self._wait(self.ready_result, "the on_ready hook")
                    reason, deadline_at, done = "every client has finished", None, True
                except _RunFailed as e:
                    if self.olympus_gone.fired:
                        raise
                    # Still ask Olympus for its account: what it saw (e.g. that
                    # more than t replicas seem faulty) and the final states.
                    self.errors.append(str(e))
                    self.log.error("{error}", error=str(e), event="bcr.run_failed")
                    reason, done = "the run's deadline passed", False
                    deadline_at = self.reactor.seconds() + self.case.report_grace_s
                finally:
                    if killer is not None:
                        killer.cancel()
                self.finishing = True
                assert self.driver is not None
                self.driver.finish(reason, workload_done=done)
                report = await self._wait(
                    self.report.wait(), "Olympus's run report", deadline_at
                )
            except _RunFailed as e:
                self.errors.append(str(e))
                self.log.error("{error}", error=str(e), event="bcr.run_failed")
            except Exception as e:
                self.errors.append(f"launcher: {type(e).__name__}: {e}")
                self.log.failure("the launcher failed", event="bcr.run_failed")
            self.finishing = True
            await self._stop_everything()
        finally:
            if not self.interrupted:
                self.reactor.removeSystemEventTrigger(trigger)
        self._check_logs()
        self._name_replica_logs()
        elapsed = (self.finished_at or self.reactor.seconds()) - self.started_at
        summary = build_summary(
            self.case, "processes", [c.outcome for c in self.clients], report, elapsed,
            self.errors, faults_fired=self._faults_fired(),
        )
        summary["log_dir"] = self.log_dir
        summary["peak_memory_kib"] = self.peak_memory_kib
        timing = self._reconfiguration_timing()
        if timing is not None:
            summary["reconfiguration_timing"] = timing
        summary["hosts"] = {
            "case": list(self.case.hosts),
            "used": self.hosts or ["127.0.0.1"],
        }
        write_atomically(
            os.path.join(self.log_dir, "summary.json"),
            json.dumps(summary, indent=2, sort_keys=False) + "\n",
        )
        self.log.info(
            "run {verdict}: {errors}", verdict="passed" if summary["ok"] else "failed",
            errors=summary["errors"], event="bcr.summary",
        )
        self._log_files.close()
        self.done.fire()
        return summary

    async def _stop_everything(self) -> None:
        """
        Stop Olympus and every spare that was never placed in a
        configuration; let the replicas Olympus retired exit by themselves;
        signal stragglers (an error); close the in-process nodes.
        """
        for call in self._top_ups:
            if call.active():
                call.cancel()
        spares = self._spare_addresses()
        assigned = {
            id(spares[a]) for replicas in self.configurations.values()
            for a in replicas if a in spares
        }
        # Olympus retired every replica and idle spare when it finished the
        # run: let them exit by themselves first.  A SIGTERM racing with
        # that shutdown makes twistd log a ReactorNotRunning traceback.
        await self._children_exit(
            EXIT_GRACE_S if not self.errors else 1.0,
            [c for c in self.children if c is not self.olympus],
        )
        for child in self.children:
            if id(child) not in assigned:
                child.send_signal("TERM")
        await self._children_exit(EXIT_GRACE_S if not self.errors else 1.0)
        for signal_name in ("TERM", "KILL"):
            running = [c for c in self.children if c.running]
            if not running:
                break
            for child in running:
                child.send_signal(signal_name)
                self.log.warn(
                    "sent SIG{signal} to {name}", signal=signal_name, name=child.name,
                    event="bcr.signal",
                )
                self.errors.append(f"{child.name} did not exit; sent SIG{signal_name}")
            await self._children_exit(TERMINATE_GRACE_S)
        for child in self.children:
            if child.running:
                self.errors.append(f"{child.name} (pid {child.transport.pid}) survived SIGKILL")
        for node in self.nodes:
            await node.close()
            if node.machine_errors:
                self.errors.append(
                    f"{node.name}: {node.machine_errors} exception(s) in the machine"
                )

    async def _children_exit(
        self, seconds: float, children: Sequence[_Child] | None = None
    ) -> None:
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

    def _at_shutdown(self) -> Deferred[Any]:
        """
        The reactor is stopping under us (SIGTERM, Control-C): kill every
        child at once, then give the run a moment to write its summary.
        """
        self.interrupted = True
        self.errors.append("interrupted: the launcher is shutting down")
        self.log.warn("interrupted; killing every child", event="bcr.interrupted")
        for child in self.children:
            child.send_signal("KILL")
        waiting = self.done.wait()
        waiting.addTimeout(EXIT_GRACE_S, self.reactor)
        waiting.addErrback(lambda _: None)
        return waiting

    def _record_peak_memory(self) -> None:
        """Note each live process's peak resident memory (Linux only)."""
        for child in self.children:
            if child.running:
                kib = _peak_memory_kib(child.transport.pid)
                if kib is not None:
                    self.peak_memory_kib[child.name] = kib
        self.peak_memory_kib[f"{self.stem}-launcher"] = resource.getrusage(
            resource.RUSAGE_SELF
        ).ru_maxrss

    # ------------------------------------------------------------------
    # After the run

    def _check_logs(self) -> None:
        """Every traceback in any process's output or log is an error of the run."""
        paths = [p for child in self.children for p in child.output_files]
        paths += [
            os.path.join(self.log_dir, f"{c.name}.log") for c in self.children
        ]
        paths += [os.path.join(self.log_dir, f"{self.stem}-{n.name}.log") for n in self.nodes]
        for path in paths:
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            count = text.count("Traceback (most recent call last)")
            if count:
                last = _exception_line(text)
                self.errors.append(
                    f"{os.path.basename(path)}: {count} traceback(s), last: {last}"
                )

    async def _kill_head(self, results: int) -> None:
        """SIGKILL the head of configuration 0 once its tail sent C{results} results."""
        await self._poll(lambda: 0 in self.configurations)
        spares = self._spare_addresses()
        head, tail = (spares[a] for a in (self.configurations[0][0], self.configurations[0][-1]))
        tail_log = os.path.join(self.log_dir, tail.name + ".json")

        def enough_results() -> bool:
            return _count_events(tail_log, "message", "result_message") >= results

        await self._poll(enough_results)
        self.killed_at = self.reactor.seconds()
        head.send_signal("KILL")
        self.log.warn(
            "killed the head {name} (pid {pid}) after {results} results",
            name=head.name, pid=head.transport.pid, results=results, event="bcr.killed",
        )

    def _reconfiguration_timing(self) -> dict[str, Any] | None:
        """
        For the kill-the-head scenario: from the kill to the first
        reconfiguration request, and from that request to the first result
        of the new configuration (the issue's "reconfiguration time").
        """
        if self.killed_at is None or 1 not in self.configurations:
            return None
        requests = [
            e["log_time"] for e in self._olympus_events()
            if e.get("event") == "bcr.reconfiguration_request"
        ]
        spares = self._spare_addresses()
        first_results = []
        for address in self.configurations[1]:
            if address in spares:
                path = os.path.join(self.log_dir, spares[address].name + ".json")
                first_results += [
                    e["log_time"] for e in _read_events(path)
                    if e.get("message") == "result_message"
                ]
        if not requests or not first_results:
            return None
        # Log times are wall-clock; the kill time is the reactor's (also wall-clock).
        return {
            "kill_to_request_s": round(min(requests) - self.killed_at, 4),
            "request_to_first_result_s": round(min(first_results) - min(requests), 4),
        }

    def _olympus_events(self) -> list[dict[str, Any]]:
        return _read_events(os.path.join(self.log_dir, f"{self.stem}-olympus.json"))

    def _name_replica_logs(self) -> None:
        """Link each assigned spare's logs as C{<case>-replica-<c>.<r>.{log,json}}."""
        spares = self._spare_addresses()
        for event in self._olympus_events():
            if event.get("event") != "bcr.assign":
                continue
            match = _REPLICA_NAME.fullmatch(str(event.get("replica", "")))
            spare = spares.get(str(event.get("address", "")))
            if match is None or spare is None:
                continue
            place = f"{match.group(1)}.{match.group(2)}"
            for suffix in (".log", ".json"):
                source = os.path.join(self.log_dir, spare.name + suffix)
                target = os.path.join(self.log_dir, f"{self.stem}-replica-{place}{suffix}")
                if not os.path.exists(source) or os.path.exists(target):
                    continue
                try:
                    os.link(source, target)
                except OSError:
                    with open(source, "rb") as src, open(target, "wb") as dst:
                        dst.write(src.read())

    def _faults_fired(self) -> list[dict[str, Any]]:
        fired: list[dict[str, Any]] = []
        for spare in self.spares:
            for event in _read_events(os.path.join(self.log_dir, spare.name + ".json")):
                if event.get("event") == "bcr.fault_fired":
                    fired.append(
                        {
                            key: event[key]
                            for key in (
                                "configuration", "replica", "trigger", "failure", "byzantine"
                            )
                            if key in event
                        }
                    )
        return fired


def _peak_memory_kib(pid: int) -> int | None:
    """VmHWM of a process from /proc, in KiB; None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _read_events(path: str) -> list[dict[str, Any]]:
    """Every event of a JSON log file; none if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return list(eventsFromJSONLogFile(f))
    except OSError:
        return []


def _count_events(path: str, key: str, value: object) -> int:
    """How many events of a JSON log file being written have C{key} = C{value}."""
    try:
        with open(path, encoding="utf-8") as f:
            records = f.read().split("\x1e")
    except OSError:
        return 0
    # The field as twisted_bcr.logs writes it (no spaces after separators).
    needle = f"{json.dumps(key)}:{json.dumps(value)}"
    # Only complete records count; the last one may still be being written.
    return sum(1 for r in records if r.endswith("\n") and needle in r)


async def _gather(waiting: list[Deferred[Any]]) -> None:
    for d in waiting:
        await d


async def _as_coroutine(
    hook: Callable[[ReadyInfo], Awaitable[Any] | None], info: ReadyInfo
) -> Any:
    result = hook(info)
    if result is not None:
        return await result
    return None


def _exception_line(text: str) -> str:
    """The exception line following the last traceback in C{text}."""
    tail = text[text.rfind("Traceback (most recent call last)") :]
    for line in tail.splitlines()[1:]:
        if line and not line.startswith((" ", "\t")):
            return line.strip()[:200]
    return "?"


#: What the launcher appends to a case's stem for the copy Olympus reads.
_CASE_COPY = ".case"


def case_stem(case: Case) -> str:
    """
    The name log files of a run of C{case} start with: its file's base name
    (that of the original for the launcher's own copy of a case).
    """
    stem = case.file_stem
    return stem[: -len(_CASE_COPY)] if stem.endswith(_CASE_COPY) else stem


def case_file_text(case: Case) -> str:
    """C{case} written back in the course format (SPEC §10), comments aside."""
    lines = [
        f"# {case.name}: written by the bcr launcher from {case.path}",
        f"test_case_name = {case.name}",
        f"t = {case.t}",
        f"num_client = {case.num_client}",
        f"client_timeout = {case.client_timeout_ms}",
        f"head_timeout = {case.head_timeout_ms}",
        f"nonhead_timeout = {case.nonhead_timeout_ms}",
        f"checkpt_interval = {case.checkpt_interval}",
    ]
    lines += [f"workload[{i}] = {text}" for i, text in enumerate(case.workload_texts)]
    lines += [
        f"failures[{c},{r}] = {text}" for (c, r), text in sorted(case.failure_texts.items())
    ]
    if case.hosts:
        lines.append("hosts = " + ";".join(case.hosts))
    if case.client_hosts:
        lines.append("client_hosts = " + ";".join(map(str, case.client_hosts)))
    if case.replica_hosts:
        lines.append("replica_hosts = " + ";".join(map(str, case.replica_hosts)))
    if case.fault_plugin_dirs:
        lines.append("fault_plugins = " + ";".join(case.fault_plugin_dirs))
    return "\n".join(lines) + "\n"


def _write_case_file(case: Case, path: str, registry: faults.Registry) -> None:
    """
    Write C{case} to C{path} for Olympus to read, and check that it reads
    back as the same case (so the daemons run exactly what was asked).
    """
    write_atomically(path, case_file_text(case))
    written = parse_case(path, **registry.tables())
    same = attrs.evolve(
        written, path=case.path, warnings=case.warnings, ignored_keys=case.ignored_keys
    )
    if same != case:
        raise RuntimeError(f"{path} does not read back as the case it was written from")


#: How long after a reconfiguration the launcher boots replacement spares.
SPARE_TOP_UP_DELAY_S = 2.0

#: How much longer than the run's deadline a launcher process may take.
LAUNCHER_MARGIN_S = 30.0


def _prepare(
    case: Case | str, log_dir: str | None, fault_plugins: Sequence[str]
) -> tuple[Case, str, str, str]:
    """
    Check the case, make the log directory and write the launcher's copy of
    the case there (what Olympus reads); return the case, the log file stem,
    the directory and the copy's path.

    @raise CaseError: the case is unusable; nothing was created.
    @raise faults.PluginError: a fault plugin directory cannot be used.
    """
    if isinstance(case, str):
        case, registry = faults.load_case(case, fault_plugins)
    else:
        registry = faults.registry_for(case, fault_plugins)
    stem = case_stem(case)
    directory = os.path.abspath(log_dir if log_dir is not None else _default_log_dir(stem))
    make_private_directory(directory)
    case_file = os.path.join(directory, f"{stem}{_CASE_COPY}.txt")
    if os.path.abspath(case.path) != case_file:
        _write_case_file(case, case_file, registry)
    return case, stem, directory, case_file


async def run_case(
    reactor: Any,
    case: Case | str,
    log_dir: str | None = None,
    deadline_s: float | None = None,
    hosts: Sequence[str] | None = None,
    on_ready: Callable[[ReadyInfo], Awaitable[Any] | None] | None = None,
    spares: int | None = None,
    kill_head_after: int | None = None,
    olympus: str | None = None,
    olympus_key_file: str | None = None,
    fault_plugins: Sequence[str] = (),
) -> dict[str, Any]:
    """
    Run C{case} (a parsed case or the path of a case file) with real
    processes under C{reactor}; return its summary (DESIGN §4), also written
    to C{<log_dir>/summary.json}.

    Olympus reads the case from C{<log_dir>/<case>.case.txt}, which the
    launcher writes, so a case changed in memory (C{bcr bench}) runs too.

    @param log_dir: Where every log goes; default C{runs/<case>-<UTC time>}.
    @param deadline_s: Bound on the whole run; default from the case.
    @param hosts: Addresses to bind replicas (and Olympus, clients) to; by
        default everything runs on 127.0.0.1, whatever the case says.
    @param on_ready: Called with a L{ReadyInfo} once configuration 0 is set
        up; the run is not finished before what it returns has completed.
    @param spares: Spare replica processes kept booted beyond the current
        configuration, so that a reconfiguration never waits for a process
        to start; by default one configuration's worth (2t+1).
    @param kill_head_after: The kill-the-head scenario: SIGKILL the head of
        configuration 0 once its tail has sent this many results.
    @param olympus: The address of an Olympus already running for this case,
        with its own spares (a registered pool); the launcher then runs only
        the clients and the driver.  Needs C{olympus_key_file}, Olympus's
        private key, which ends the run.
    @raise ValueError: The running Olympus given cannot be used.
    @raise CaseError: The case file is unusable; nothing was started.
    """
    external = _external_olympus(olympus, olympus_key_file, kill_head_after)
    case, stem, directory, case_file = _prepare(case, log_dir, fault_plugins)
    if spares is None:
        spares = case.num_replicas
    if spares < 0:
        raise CaseError(case.path, f"cannot keep {spares} spares")
    run = _Run(
        reactor,
        case,
        stem,
        case_file,
        directory,
        deadline_s if deadline_s is not None else case.default_deadline_s,
        hosts,
        on_ready,
        spares,
        kill_head_after,
        external,
        fault_plugins,
    )
    return await run.run()


def _external_olympus(
    address: str | None, key_file: str | None, kill_head_after: int | None
) -> tuple[str, crypto.KeyPair, str] | None:
    """
    The running Olympus to use, checked before anything starts.

    @raise ValueError: a one-line reason.
    """
    if address is None and key_file is None:
        return None
    if address is None or key_file is None:
        raise ValueError("--olympus and --olympus-key-file go together")
    if kill_head_after is not None:
        raise ValueError("--kill-head-after needs replicas started by the launcher")
    try:
        parse_address(address)
        return address, crypto.KeyPair.load(key_file), key_file
    except (OSError, ValueError) as e:
        raise ValueError(f"Olympus {address}: {e}") from None


def run_case_blocking(
    case: Case | str,
    log_dir: str | None = None,
    deadline_s: float | None = None,
    hosts: Sequence[str] | None = None,
    spares: int | None = None,
    kill_head_after: int | None = None,
    olympus: str | None = None,
    olympus_key_file: str | None = None,
    fault_plugins: Sequence[str] = (),
) -> dict[str, Any]:
    """
    L{run_case} for callers without a reactor (the C{bcr} script, benchmarks):
    the run happens in a fresh interpreter (C{python -m twisted_bcr.launch}),
    so this can be called any number of times in one process.  Blocks until
    the run is over and returns its summary.

    @raise CaseError: The case file is unusable; nothing was started.
    @raise ValueError: The running Olympus given cannot be used.
    """
    _external_olympus(olympus, olympus_key_file, kill_head_after)
    case, stem, directory, case_file = _prepare(case, log_dir, fault_plugins)
    summary_path = os.path.join(directory, "summary.json")
    if os.path.exists(summary_path):
        os.unlink(summary_path)
    command = [sys.executable, "-m", "twisted_bcr.launch", case_file, "--log-dir", directory]
    if deadline_s is not None:
        command += ["--deadline", repr(deadline_s)]
    if hosts:
        command += ["--hosts", ";".join(hosts)]
    if spares is not None:
        command += ["--spares", str(spares)]
    if kill_head_after is not None:
        command += ["--kill-head-after", str(kill_head_after)]
    if olympus is not None and olympus_key_file is not None:
        command += ["--olympus", olympus, "--olympus-key-file", olympus_key_file]
    for directory in fault_plugins:
        command += ["--fault-plugins", os.path.abspath(directory)]
    started = time.monotonic()
    process = subprocess.Popen(command, env=_child_environment())
    # The launcher enforces the run's deadline itself; this bound only
    # catches a launcher that is stuck, which is then told to clean up.
    bound = (deadline_s if deadline_s is not None else case.default_deadline_s) + (
        EXIT_GRACE_S + 2 * TERMINATE_GRACE_S + LAUNCHER_MARGIN_S
    )
    try:
        status = process.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            status = process.wait(timeout=EXIT_GRACE_S + 2 * TERMINATE_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            status = process.wait()
    except BaseException:
        # Control-C reached the launcher too; let it kill its children and
        # write its summary before giving up on it.
        try:
            process.wait(timeout=EXIT_GRACE_S + 2 * TERMINATE_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
    try:
        with open(summary_path, encoding="utf-8") as f:
            summary: dict[str, Any] = json.load(f)
    except (OSError, ValueError) as e:
        summary = build_summary(
            case, "processes", [], None, time.monotonic() - started,
            [f"the launcher process ended with status {status} and no summary ({e})"],
        )
        summary["log_dir"] = directory
    return summary


def _options(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m twisted_bcr.launch",
        description="Run one case with real processes; write <log dir>/summary.json.",
    )
    parser.add_argument("case", help="case file (SPEC §10)")
    parser.add_argument("--log-dir", help="directory for every log and the summary")
    parser.add_argument("--deadline", type=float, help="seconds before the run is abandoned")
    parser.add_argument("--hosts", help="';'-separated addresses to bind to")
    parser.add_argument(
        "--spares", type=int, default=None,
        help="spare replicas kept ready [default: 2t+1, one configuration's worth]",
    )
    parser.add_argument(
        "--kill-head-after", type=int, default=None, metavar="RESULTS",
        help="SIGKILL configuration 0's head once its tail sent RESULTS results",
    )
    parser.add_argument("--olympus", help="HOST:PORT of an Olympus already running")
    parser.add_argument("--olympus-key-file", help="that Olympus's private key file")
    parser.add_argument(
        "--fault-plugins", action="append", default=[], metavar="DIR",
        help="also load fault plugins from DIR (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """C{python -m twisted_bcr.launch}: run one case; exit 0 exactly when it passed."""
    options = _options(sys.argv[1:] if argv is None else argv)
    try:
        case, _ = faults.load_case(options.case, options.fault_plugins)
        _external_olympus(options.olympus, options.olympus_key_file, options.kill_head_after)
    except ValueError as e:  # CaseError and PluginError included
        print(f"bcr run: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    hosts = [h.strip() for h in options.hosts.split(";") if h.strip()] if options.hosts else None

    async def run(reactor: Any) -> None:
        summary = await run_case(
            reactor, case, options.log_dir, options.deadline, hosts,
            spares=options.spares, kill_head_after=options.kill_head_after,
            olympus=options.olympus, olympus_key_file=options.olympus_key_file,
            fault_plugins=options.fault_plugins,
        )
        raise SystemExit(0 if summary["ok"] else 1)

    react(run)


if __name__ == "__main__":
    main()
