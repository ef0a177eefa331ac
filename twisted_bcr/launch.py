# -*- test-case-name: tests.test_processes -*-
"""
C{bcr run}: one case with real processes (DESIGN §1, §4; SPEC §1 "Run
lifecycle"; docs/LIFECYCLE.md).

This is the processes binding of L{twisted_bcr.lifecycle}: the phases and
their deadlines are the lifecycle's; here is how they are carried out with
real processes.  L{_Daemons} starts Olympus (C{twistd -n bcr-olympus}, with a
fresh key) and the spare replicas (C{twistd -n bcr-replica}) as children of
a L{Supervisor}, admitting exactly the spares and clients it starts;
L{_ProcessesRun} runs the clients and the driver in this reactor, each on
its own L{TcpNode}, and follows the clients through the L{ClientWatcher}
interface.  At the end Olympus retires the replicas and reports; the
launcher lets them exit, stops Olympus and the idle spares (SIGTERM, then
SIGKILL for stragglers), names each placed spare's log after its place
(C{<case>-replica-<c>.<r>.log}, SPEC §13) from the report's placements, and
writes the summary JSON of DESIGN §4 to C{<log dir>/summary.json}.

What decides control or the verdict comes from protocol messages (the run
report, the clients' results) and from the children's exit statuses; no log
file is read.  Every wait is bounded by the run's deadline; no child
outlives the launcher's reactor (a shutdown trigger kills them, Control-C
included).

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
import resource
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import attrs
from attrs import define, frozen
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    ensureDeferred,
    race,
)
from twisted.internet.task import LoopingCall, deferLater, react
from twisted.logger import Logger, LogPublisher
from twisted.python.failure import Failure

from twisted_bcr import crypto, faults
from twisted_bcr.admission import write_admission
from twisted_bcr.checking import build_summary
from twisted_bcr.config import Case, parse_case
from twisted_bcr.core.client import Client, ClientOutcome
from twisted_bcr.core.driver import Driver
from twisted_bcr.files import make_private_directory, write_atomically
from twisted_bcr.forkserver import cpu_seconds
from twisted_bcr.lifecycle import (
    OneShot,
    Progress,
    RunAbandoned,
    RunFailed,
    RunSpec,
    run_lifecycle,
)
from twisted_bcr.logs import LogFiles
from twisted_bcr.messages import Configuration, RunReport
from twisted_bcr.net.daemon import load_or_create_key
from twisted_bcr.net.node import TcpNode, parse_address
from twisted_bcr.peers import Peer
from twisted_bcr.report import record_run
from twisted_bcr.supervise import (
    TERMINATE_GRACE_S,
    Child,
    Supervisor,
    child_environment,
    peak_memory_kib,
)

__all__ = [
    "Progress",
    "ReadyInfo",
    "case_file_text",
    "main",
    "run_case",
    "run_case_blocking",
]

_T = TypeVar("_T")

#: How often the launcher looks for a daemon's port file (its readiness).
POLL_INTERVAL_S = 0.05
#: How long children get to exit by themselves once the run is over.
EXIT_GRACE_S = 10.0
#: How long after a reconfiguration the launcher boots replacement spares.
SPARE_TOP_UP_DELAY_S = 2.0
#: How often the launcher reports its progress to C{bcr}.
PROGRESS_INTERVAL_S = 0.25
#: However late a stop is, a signalled child gets this long to be reaped.
MINIMUM_SIGNAL_GRACE_S = 0.2
#: How much longer than the run's deadline a launcher process may take.
LAUNCHER_MARGIN_S = 30.0


@define
class ReadyInfo:
    """
    What the C{on_ready} hook of L{run_case} learns once configuration 0 is
    in use: where Olympus and the replicas listen, in chain order, and the
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


@frozen
class ProcessesOptions:
    """How a run's processes are laid out, beside its L{RunSpec}."""

    stem: str
    case_file: str
    log_dir: str
    hosts: tuple[str, ...] = ()
    kill_head_after: int | None = None
    #: An Olympus already running (address, its key, the key's file), with
    #: its own pool of spares: then the launcher starts no process.
    external_olympus: tuple[str, crypto.KeyPair, str] | None = None
    fault_plugin_dirs: tuple[str, ...] = ()
    #: Write a L{Progress} line to standard output a few times a second.
    progress: bool = False
    #: Fork every daemon from one pre-imported process (L{twisted_bcr.forkserver})
    #: rather than start each as a fresh interpreter.
    fork_server: bool = True
    #: When the run began for the person who asked for it (epoch seconds,
    #: the reactor's clock): the deadline counts from here, so that it
    #: bounds the launcher's own start-up too.  Default: the launcher's start.
    started_at: float | None = None

    def host(self, index: int, assigned: tuple[int, ...]) -> str:
        """The host of the C{index}th process of a kind (loopback by default)."""
        if not self.hosts:
            return "127.0.0.1"
        if assigned and assigned[index % len(assigned)] < len(self.hosts):
            return self.hosts[assigned[index % len(assigned)]]
        return self.hosts[index % len(self.hosts)]

    @property
    def first_host(self) -> str:
        return self.hosts[0] if self.hosts else "127.0.0.1"


class _Daemons:
    """Olympus and the spare replicas of one run, as supervised children."""

    def __init__(
        self,
        spec: RunSpec,
        options: ProcessesOptions,
        supervisor: Supervisor,
        client_keys: Sequence[crypto.KeyPair],
        log: Logger,
    ) -> None:
        self._spec = spec
        self._options = options
        self._supervisor = supervisor
        self._log = log
        self.olympus: Child | None = None
        self.olympus_address = ""
        self.olympus_key = crypto.KeyPair.generate()
        self.spares: list[Child] = []
        #: The admitted identity key of each spare, in the order started.
        self.identities: list[bytes] = []
        self.olympus_gone = OneShot()
        self.admission_path = os.path.join(options.log_dir, "admitted")
        self._clients = [
            (index, key.verify_key_bytes, f"client-{index}")
            for index, key in enumerate(client_keys)
        ]
        self._top_ups: list[Any] = []
        self.finishing = False

    async def start(self, wait: Callable[[Deferred[None], str], Awaitable[None]]) -> None:
        """Olympus, then the chain's and the spare replicas, each ready (listening)."""
        directory = self._options.log_dir
        key_file = os.path.join(directory, "olympus.key")
        self.olympus_key.save(key_file)
        self._write_admission()
        name = f"{self._options.stem}-olympus"
        self.olympus = self._supervisor.spawn(name, [
            "bcr-olympus",
            "--case", self._options.case_file,
            "--name", name,
            "--listen", f"tcp:0:interface={self._options.first_host}",
            "--key-file", key_file,
            "--admission", self.admission_path,
            "--port-file", os.path.join(directory, f"{name}.port"),
            "--log-dir", directory,
            *self._fault_plugin_arguments(),
        ])
        self.olympus.protocol.ended.wait().addCallback(lambda _: self.olympus_gone.fire())
        olympus = self.olympus
        await wait(_poll(self._supervisor.reactor, lambda: olympus.ready_address() is not None), "Olympus to listen")
        self.olympus_address = olympus.ready_address() or ""
        self._log.info(
            "Olympus listens at {address}", address=self.olympus_address,
            event="bcr.olympus_ready",
        )
        for _ in range(self._spec.case.num_replicas + self._spec.spares):
            self._spawn_spare()
        # Start the workload on a quiet machine: every spare has booted
        # before the first request.
        await wait(
            _poll(self._supervisor.reactor, lambda: all(s.ready_address() is not None for s in self.spares)),
            "every replica process to listen",
        )

    def _write_admission(self) -> None:
        spares = [
            (key, spare.name) for key, spare in zip(self.identities, self.spares, strict=True)
        ]
        write_admission(self.admission_path, spares, self._clients)

    def _fault_plugin_arguments(self) -> list[str]:
        return [f"--fault-plugins={d}" for d in self._options.fault_plugin_dirs]

    def _spawn_spare(self) -> None:
        number = len(self.spares)
        directory = self._options.log_dir
        name = f"{self._options.stem}-spare-{number}"
        # Admitted before it starts: Olympus re-reads the file when it changes.
        identity_file = os.path.join(directory, f"{name}.identity")
        identity = crypto.KeyPair.generate()
        identity.save(identity_file)
        arguments = [
            "bcr-replica",
            "--olympus", self.olympus_address,
            "--olympus-key", self.olympus_key.verify_key_bytes.hex(),
            "--identity-key", identity_file,
            "--listen",
            f"tcp:0:interface={self._options.host(number, self._spec.case.replica_hosts)}",
            "--name", name,
            "--port-file", os.path.join(directory, f"{name}.port"),
            "--log-dir", directory,
        ]
        if self._spec.case.failures:
            arguments += ["--enable-fault-injection", *self._fault_plugin_arguments()]
        self.identities.append(identity.verify_key_bytes)
        self.spares.append(self._supervisor.spawn(name, arguments))
        self._write_admission()

    def configuration_started(self, number: int) -> None:
        """
        Configuration C{number} used up spares: boot new ones so that a
        later reconfiguration never waits for a process to start, but not
        while the new chain takes over: booting 2t+1 Python processes would
        take the CPU from the recovery itself.
        """
        if number > 0 and self.olympus is not None:
            self._top_ups.append(
                self._supervisor.reactor.callLater(
                    SPARE_TOP_UP_DELAY_S, self._top_up, number
                )
            )

    def _top_up(self, number: int) -> None:
        if self.finishing:
            return
        wanted = (number + 1) * self._spec.case.num_replicas + self._spec.spares
        for _ in range(wanted - len(self.spares)):
            self._spawn_spare()

    def by_address(self) -> dict[str, Child]:
        """Address -> spare, for every spare that is listening."""
        return {a: s for s in self.spares if (a := s.ready_address()) is not None}

    def placed(self, report: RunReport | None, seen: dict[int, list[str]]) -> list[Child]:
        """The spares placed in a configuration (by the report, else as clients saw)."""
        if report is not None:
            by_identity = dict(zip(self.identities, self.spares, strict=True))
            return [
                by_identity[p.identity_key] for p in report.placements
                if p.identity_key in by_identity
            ]
        spares = self.by_address()
        return [spares[a] for replicas in seen.values() for a in replicas if a in spares]

    async def stop(self, placed: Sequence[Child], quick: bool, stop_by: float) -> list[str]:
        """
        Let the replicas Olympus retired exit by themselves (a SIGTERM
        racing with their shutdown makes twistd log a ReactorNotRunning
        traceback), then stop Olympus and every spare never placed, then
        signal stragglers (an error); all within the time left until
        C{stop_by} (the run's deadline), each step getting a share of it.
        """
        self.finishing = True
        for call in self._top_ups:
            if call.active():
                call.cancel()
        supervisor = self._supervisor

        def share(parts: int) -> float:
            return max(stop_by - float(supervisor.reactor.seconds()), 0.0) / parts

        grace = min(1.0 if quick else EXIT_GRACE_S, share(4))
        await supervisor.exit_within(grace, [c for c in self.spares])
        for child in supervisor.children:
            if child not in placed:
                child.send_signal("TERM")
        await supervisor.exit_within(min(grace, share(3)))
        errors = await supervisor.terminate_stragglers(
            min(TERMINATE_GRACE_S, max(share(2), MINIMUM_SIGNAL_GRACE_S))
        )
        await supervisor.closed(max(share(1), MINIMUM_SIGNAL_GRACE_S))
        return errors

    def link_replica_logs(self, report: RunReport) -> None:
        """Link each placed spare's logs as C{<case>-replica-<c>.<r>.{log,json}}."""
        by_identity = dict(zip(self.identities, self.spares, strict=True))
        directory = self._options.log_dir
        for placement in report.placements:
            spare = by_identity.get(placement.identity_key)
            if spare is None:
                continue
            place = f"{placement.configuration}.{placement.index}"
            for suffix in (".log", ".json"):
                source = os.path.join(directory, spare.name + suffix)
                target = os.path.join(
                    directory, f"{self._options.stem}-replica-{place}{suffix}"
                )
                if not os.path.exists(source) or os.path.exists(target):
                    continue
                try:
                    os.link(source, target)
                except OSError:
                    with open(source, "rb") as src, open(target, "wb") as dst:
                        dst.write(src.read())


def _poll(reactor: Any, predicate: Callable[[], bool]) -> Deferred[None]:
    """Fires once C{predicate()} is true; cancelling stops the polling."""
    loop = LoopingCall(lambda: loop.stop() if predicate() else None)
    loop.clock = reactor
    done = loop.start(POLL_INTERVAL_S, now=True)
    result: Deferred[None] = Deferred(lambda _: loop.stop() if loop.running else None)
    done.addCallbacks(
        lambda _: result.callback(None) if not result.called else None,
        lambda f: None,
    )
    return result


class _ProcessesRun:
    """
    The processes binding of L{run_lifecycle}: clients and driver in this
    reactor, Olympus and the replicas as L{_Daemons}.
    """

    mode = "processes"

    def __init__(
        self,
        reactor: Any,
        spec: RunSpec,
        options: ProcessesOptions,
        on_ready: Callable[[ReadyInfo], Awaitable[Any] | None] | None,
    ) -> None:
        self.reactor = reactor
        self.spec = spec
        self.options = options
        self.on_ready = on_ready
        self.started_at = reactor.seconds()
        #: The instant the spec's phase bounds (seconds from the start) count from.
        self.origin = options.started_at if options.started_at is not None else self.started_at
        self.deadline_at = self.origin + spec.deadline_s
        self._log_files = LogFiles(options.log_dir, f"{options.stem}-launcher")
        self.log = Logger(namespace="bcr.launcher", observer=LogPublisher(self._log_files))
        self.supervisor = Supervisor(
            reactor, options.log_dir, self.log, fork_server=options.fork_server
        )
        self.client_keys = _client_keys(spec.case.num_client, options.external_olympus)
        self.daemons = _Daemons(spec, options, self.supervisor, self.client_keys, self.log)
        self.nodes: list[TcpNode] = []
        self.clients: list[Client] = []
        self.driver: Driver | None = None
        self.all_finished = OneShot()
        self.finished_at: float | None = None
        self.report = OneShot()
        #: Fired (with a reason) by the on_ready hook's end_run.
        self.ended_early = OneShot()
        self.ready_result: Deferred[Any] | None = None
        #: Errors only this binding sees (the lifecycle keeps its own).
        self.errors: list[str] = []
        self.any_error = False
        self._interrupted = False
        self._done = OneShot()
        self._progress: LoopingCall | None = None
        #: Every configuration a client used: number -> addresses in chain order.
        self.configurations: dict[int, list[str]] = {}
        #: Results accepted per configuration, and when the first one came.
        self.kill_head = (
            _KillHead(reactor, self.log, options.kill_head_after)
            if options.kill_head_after is not None else None
        )
        self.peak_memory_kib: dict[str, int] = {}

    # ------------------------------------------------------------------
    # RunBinding

    async def wait(
        self,
        waitable: Deferred[_T],
        what: str,
        until_s: float | None = None,
        within_s: float | None = None,
        may_end_early: bool = False,
    ) -> _T:
        deadline = OneShot()
        ended = self.ended_early.wait() if may_end_early else OneShot().wait()
        deadline_at = self.origin + (
            self.spec.workload_until_s if until_s is None else until_s
        )
        if within_s is not None:
            deadline_at = min(deadline_at, self.reactor.seconds() + within_s)
        call = self.reactor.callLater(
            max(deadline_at - self.reactor.seconds(), 0.0), deadline.fire
        )
        try:
            index, result = await race(
                [waitable, self.daemons.olympus_gone.wait(), deadline.wait(), ended]
            )
        finally:
            if call.active():
                call.cancel()
            if not ended.called:
                ended.cancel()
        if index == 1:
            assert self.daemons.olympus is not None
            raise RunAbandoned(
                f"Olympus ended ({self.daemons.olympus.status_text()}) while waiting for {what}"
            )
        if index == 2:
            raise RunFailed(f"the deadline passed while waiting for {what}")
        if index == 3:
            raise RunFailed(f"the run was ended ({result}) while waiting for {what}")
        return cast(_T, result)

    async def start(self) -> None:
        external = self.options.external_olympus
        if external is None:
            await self.daemons.start(self.wait)
        else:
            self.daemons.olympus_address, self.daemons.olympus_key, _ = external
            self.log.info(
                "using the running Olympus at {address} and its spares",
                address=self.daemons.olympus_address, event="bcr.olympus_ready",
            )
        await self._start_clients_and_driver()
        if self.options.progress:
            self._progress = LoopingCall(self._report_progress)
            self._progress.clock = self.reactor
            self._progress.start(PROGRESS_INTERVAL_S)
        if self.kill_head is not None:
            self.kill_head.start(self.daemons, self.configurations)

    def workload_done(self) -> Deferred[Any]:
        async def done() -> None:
            await self.all_finished.wait()
            if self.ready_result is not None:
                await self.ready_result

        return ensureDeferred(done())

    def finish(self, reason: str, workload_done: bool) -> None:
        if self._progress is not None and self._progress.running:
            self._report_progress()
            self._progress.stop()
        self.daemons.finishing = True
        if self.kill_head is not None:
            self.kill_head.cancel()
        if workload_done:
            self.peak_memory_kib = _peak_memory(self.supervisor.children, self.options.stem)
        assert self.driver is not None
        self.driver.finish(reason, workload_done=workload_done)

    def run_report(self) -> Deferred[RunReport]:
        return self.report.wait()

    async def stop(self, until_s: float) -> list[str]:
        errors = []
        if self.options.external_olympus is None:
            errors = await self.daemons.stop(
                self.daemons.placed(self.report.value, self.configurations),
                quick=self.any_error or bool(self.errors),
                stop_by=self.origin + until_s,
            )
        for node in self.nodes:
            await node.close()
            if node.machine_errors:
                errors.append(f"{node.name}: {node.machine_errors} exception(s) in the machine")
        return self.errors + errors + self.supervisor.failures()

    def outcomes(self) -> list[ClientOutcome]:
        return [client.outcome for client in self.clients]

    def elapsed_s(self) -> float:
        return float((self.finished_at or self.reactor.seconds()) - self.started_at)

    def failed(self, error: str, failure: Failure | None = None) -> None:
        self.any_error = True
        if failure is not None:
            self.log.failure("{error}", failure, error=error, event="bcr.run_failed")
        else:
            self.log.error("{error}", error=error, event="bcr.run_failed")

    # ------------------------------------------------------------------
    # In-process machines, and the ClientWatcher they report to

    def _node(self, name: str, host: str, key: crypto.KeyPair) -> TcpNode:
        node = TcpNode(
            self.reactor, name, key=key, listen=f"tcp:0:interface={host}",
            log_dir=self.options.log_dir, log_stem=f"{self.options.stem}-{name}",
        )
        self.nodes.append(node)
        return node

    async def _start_clients_and_driver(self) -> None:
        case = self.spec.case
        olympus_key = self.daemons.olympus_key
        olympus = Peer(self.daemons.olympus_address, olympus_key.verify_key_bytes)
        for index, operations in enumerate(case.workloads):
            key = self.client_keys[index]
            node = self._node(f"client-{index}", self.options.host(index, case.client_hosts), key)
            await node.listen()
            client = Client(
                node, index, list(operations), key, olympus, case.client_timeout_ms,
                self._client_finished, watcher=self,
            )
            self.clients.append(client)
            node.attach(client)
        # The driver is the operator: it authenticates with Olympus's own key.
        driver_node = self._node("driver", self.options.first_host, olympus_key)
        await driver_node.listen()
        self.driver = Driver(driver_node, olympus, olympus_key, self.report.fire)
        driver_node.attach(self.driver)
        for node in self.nodes:
            node.start_machine()
        if case.num_client == 0:
            self._all_done()

    def configuration_used(self, client: int, configuration: Configuration) -> None:
        number = configuration.number
        if number in self.configurations:
            return
        self.configurations[number] = [r.address for r in configuration.replicas]
        self.log.info(
            "configuration {number} is {replicas}", number=number,
            replicas=self.configurations[number], event="bcr.configuration",
        )
        self.daemons.configuration_started(number)
        if number == 0 and self.on_ready is not None:
            # Created now, so the run cannot finish without waiting for it.
            self.ready_result = deferLater(self.reactor, 0, self._call_on_ready)
            self.ready_result.addErrback(self._on_ready_failed)

    def result_accepted(self, client: int, configuration: int, at: float) -> None:
        if self.kill_head is not None:
            self.kill_head.result_accepted(configuration, at)

    def _report_progress(self) -> None:
        progress = Progress.of(
            self.outcomes(), self.configurations, self.reactor.seconds() - self.started_at
        )
        sys.stdout.write(progress.as_line() + "\n")
        sys.stdout.flush()

    def _client_finished(self, outcome: ClientOutcome) -> None:
        if all(c.outcome.finished for c in self.clients):
            self._all_done()

    def _all_done(self) -> None:
        if self.all_finished.fired:
            return
        self.finished_at = self.reactor.seconds()
        self.log.info(
            "every client has finished after {elapsed:.3f} s",
            elapsed=self.finished_at - self.started_at, event="bcr.clients_done",
        )
        self.all_finished.fire()

    # ------------------------------------------------------------------
    # Hooks of tests and benchmarks

    def _call_on_ready(self) -> Deferred[Any]:
        assert self.on_ready is not None
        info = _ready_info(
            self.daemons, self.options.log_dir, self.configurations[0], self.ended_early.fire
        )
        return ensureDeferred(_as_coroutine(self.on_ready, info))

    def _on_ready_failed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        self.errors.append(f"the on_ready hook failed: {failure.getErrorMessage()}")
        self.failed(self.errors[-1], failure)

    # ------------------------------------------------------------------
    # The whole run

    async def run(self) -> dict[str, Any]:
        case = self.spec.case
        self.log.info(
            "running case {case} ({path}) in {log_dir}; deadline {deadline:.1f} s; "
            "hosts in the case {case_hosts}, used {hosts}",
            case=case.name, path=case.path, log_dir=self.options.log_dir,
            deadline=self.spec.deadline_s, case_hosts=list(case.hosts),
            hosts=list(self.options.hosts) or ["127.0.0.1"], event="bcr.run",
        )
        for warning in case.warnings:
            self.log.warn("{warning}", warning=warning, event="bcr.case_warning")
        trigger = self.reactor.addSystemEventTrigger("before", "shutdown", self._at_shutdown)
        try:
            summary = await run_lifecycle(self, self.spec)
        finally:
            if not self._interrupted:
                self.reactor.removeSystemEventTrigger(trigger)
        report = self.report.value
        if report is not None:
            self.daemons.link_replica_logs(report)
        summary["log_dir"] = self.options.log_dir
        # From the run's start (bcr's) to every process stopped: what the
        # deadline bounds.
        summary["run_s"] = round(self.reactor.seconds() - self.origin, 3)
        summary["cpu_s"] = _cpu_seconds(
            self.supervisor.cpu_seconds() if self.options.external_olympus is None else None
        )
        summary["peak_memory_kib"] = self.peak_memory_kib
        timing = self.kill_head.timing(report) if self.kill_head is not None else None
        if timing is not None:
            summary["reconfiguration_timing"] = timing
        summary["hosts"] = {
            "case": list(case.hosts), "used": list(self.options.hosts) or ["127.0.0.1"],
        }
        # The run report's data: requests.csv and the summary's timeline.
        record_run(
            summary, self.options.log_dir, self.outcomes(), report, self.started_at,
            simulated=False,
        )
        write_atomically(
            os.path.join(self.options.log_dir, "summary.json"),
            json.dumps(summary, indent=2, sort_keys=False) + "\n",
        )
        self.log.info(
            "run {verdict}: {errors}", verdict="passed" if summary["ok"] else "failed",
            errors=summary["errors"], event="bcr.summary",
        )
        self._log_files.close()
        self._done.fire()
        return summary

    def _at_shutdown(self) -> Deferred[Any]:
        """
        The reactor is stopping under us (SIGTERM, Control-C): kill every
        child at once, then give the run a moment to write its summary.
        """
        self._interrupted = True
        self.errors.append("interrupted: the launcher is shutting down")
        self.failed(self.errors[-1])
        self.supervisor.kill_all()
        self.supervisor.close()
        waiting = self._done.wait()
        waiting.addTimeout(EXIT_GRACE_S, self.reactor)
        waiting.addErrback(lambda _: None)
        return waiting


class _KillHead:
    """
    The kill-the-head scenario (C{bcr bench --kill-head-after}): SIGKILL the
    head of configuration 0 once clients accepted C{results} of its results,
    and time the recovery.
    """

    def __init__(self, reactor: Any, log: Logger, results: int) -> None:
        self._reactor = reactor
        self._log = log
        self._wanted = results
        self._accepted: dict[int, int] = {}
        self._first_result_at: dict[int, float] = {}
        self._enough = OneShot()
        self._killer: Deferred[None] | None = None
        self.killed_at: float | None = None

    def start(self, daemons: _Daemons, configurations: dict[int, list[str]]) -> None:
        async def kill() -> None:
            await self._enough.wait()
            head = daemons.by_address().get(configurations[0][0])
            if head is None:
                return
            self.killed_at = self._reactor.seconds()
            head.send_signal("KILL")
            self._log.warn(
                "killed the head {name} (pid {pid}) after {results} results",
                name=head.name, pid=head.pid, results=self._accepted[0], event="bcr.killed",
            )

        self._killer = ensureDeferred(kill())

    def cancel(self) -> None:
        if self._killer is not None:
            self._killer.cancel()

    def result_accepted(self, configuration: int, at: float) -> None:
        self._accepted[configuration] = self._accepted.get(configuration, 0) + 1
        self._first_result_at.setdefault(configuration, at)
        if configuration == 0 and self._accepted[0] >= self._wanted:
            self._enough.fire()

    def timing(self, report: RunReport | None) -> dict[str, Any] | None:
        """
        From the kill to the reconfiguration request Olympus acted on, and
        from then to the first result a client accepted from the new
        configuration (the "reconfiguration time").
        """
        if self.killed_at is None or report is None or 1 not in self._first_result_at:
            return None
        records = json.loads(report.reconfigurations_json)
        if not records:
            return None
        # Olympus's clock and ours are both the wall clock of this machine.
        requested_at = float(records[0]["started_at"])
        return {
            "kill_to_request_s": round(requested_at - self.killed_at, 4),
            "request_to_first_result_s": round(self._first_result_at[1] - requested_at, 4),
        }


def _client_keys(
    count: int, external_olympus: tuple[str, crypto.KeyPair, str] | None
) -> list[crypto.KeyPair]:
    """
    Fresh client keys, or with an Olympus run by someone else, the keys in
    C{client-<i>.key} next to its key file, which its operator admits
    (docs/OPERATIONS.md); they are created on first use.
    """
    if external_olympus is None:
        return [crypto.KeyPair.generate() for _ in range(count)]
    directory = os.path.dirname(os.path.abspath(external_olympus[2]))
    return [
        load_or_create_key(os.path.join(directory, f"client-{index}.key"), "client key")
        for index in range(count)
    ]


def _cpu_seconds(daemons: dict[str, float] | None) -> dict[str, Any]:
    """
    The run's CPU time, user + system, as the kernel counted it: this
    launcher (clients and driver included) and every daemon (C{daemons},
    None where they could not all be counted: no fork server, or a daemon
    still running); C{total} only when everything was counted.
    """
    launcher = cpu_seconds(resource.getrusage(resource.RUSAGE_SELF))
    return {
        "launcher": launcher,
        "daemons": daemons,
        "total": round(launcher + sum(daemons.values()), 4) if daemons is not None else None,
    }


def _peak_memory(children: Sequence[Child], stem: str) -> dict[str, int]:
    """Each live child's peak resident memory, and this process's (Linux only)."""
    found = {}
    for child in children:
        if child.running:
            kib = peak_memory_kib(child.pid)
            if kib is not None:
                found[child.name] = kib
    found[f"{stem}-launcher"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return found


def _ready_info(
    daemons: _Daemons, log_dir: str, replicas: list[str], end_run: Callable[[str], None]
) -> ReadyInfo:
    spares = daemons.by_address()
    olympus = daemons.olympus
    return ReadyInfo(
        log_dir=log_dir,
        olympus=daemons.olympus_address,
        configuration=0,
        replicas=replicas,
        replica_logs=[
            os.path.join(log_dir, spares[a].name + ".json") if a in spares else ""
            for a in replicas
        ],
        replica_pids=[spares[a].pid if a in spares else -1 for a in replicas],
        end_run=end_run,
        olympus_pid=olympus.pid if olympus is not None else -1,
    )


async def _as_coroutine(
    hook: Callable[[ReadyInfo], Awaitable[Any] | None], info: ReadyInfo
) -> Any:
    result = hook(info)
    if result is not None:
        return await result
    return None


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


def _spec(
    case: Case | str, deadline_s: float | None, spares: int | None, fault_plugins: Sequence[str]
) -> tuple[Case, RunSpec]:
    """
    The case (read if a path) and its checked run spec, before anything is
    created.

    @raise CaseError: the case or the options cannot make a run.
    @raise faults.PluginError: a fault plugin directory cannot be used.
    """
    if isinstance(case, str):
        case, _ = faults.load_case(case, fault_plugins)
    spec = RunSpec.checked(
        case,
        deadline_s if deadline_s is not None else case.default_deadline_s,
        spares if spares is not None else case.num_replicas,
    )
    return case, spec


def _default_log_dir(stem: str) -> str:
    timestamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = os.path.join("runs", f"{stem}-{timestamp}")
    candidate, n = base, 0
    while os.path.exists(candidate):
        n += 1
        candidate = f"{base}-{n}"
    return candidate


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
    progress: bool = False,
    started_at: float | None = None,
    fork_server: bool = True,
) -> dict[str, Any]:
    """
    Run C{case} (a parsed case or the path of a case file) with real
    processes under C{reactor}; return its summary (DESIGN §4), also written
    to C{<log_dir>/summary.json}.

    Olympus reads the case from C{<log_dir>/<case>.case.txt}, which the
    launcher writes, so a case changed in memory (C{bcr bench}) runs too.

    @param log_dir: Where every log goes; default C{runs/<case>-<UTC time>}.
    @param deadline_s: Bound on the whole run, wall-clock, every phase
        included; default from the case.
    @param hosts: Addresses to bind replicas (and Olympus, clients) to; by
        default everything runs on 127.0.0.1, whatever the case says.
    @param on_ready: Called with a L{ReadyInfo} once configuration 0 is set
        up; the run is not finished before what it returns has completed.
    @param spares: Spare replica processes kept booted beyond the current
        configuration, so that a reconfiguration never waits for a process
        to start; by default one configuration's worth (2t+1).
    @param kill_head_after: The kill-the-head scenario: SIGKILL the head of
        configuration 0 once clients accepted this many of its results.
    @param olympus: The address of an Olympus already running for this case,
        with its own spares (a registered pool); the launcher then runs only
        the clients and the driver.  Needs C{olympus_key_file}, Olympus's
        private key, which ends the run.
    @raise ValueError: The running Olympus given cannot be used.
    @raise CaseError: The case file is unusable; nothing was started.
    """
    external = _external_olympus(olympus, olympus_key_file, kill_head_after)
    case, spec = _spec(case, deadline_s, spares, fault_plugins)
    case, stem, directory, case_file = _prepare(case, log_dir, fault_plugins)
    options = ProcessesOptions(
        stem=stem,
        case_file=case_file,
        log_dir=directory,
        hosts=tuple(hosts or ()),
        kill_head_after=kill_head_after,
        external_olympus=external,
        # The daemons load the same plugins: the command line's and the case's.
        fault_plugin_dirs=(
            *(os.path.abspath(d) for d in fault_plugins), *case.fault_plugin_dirs
        ),
        progress=progress,
        started_at=started_at,
        fork_server=fork_server,
    )
    return await _ProcessesRun(reactor, spec, options, on_ready).run()


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
    on_progress: Callable[[Progress], None] | None = None,
    fork_server: bool = True,
) -> dict[str, Any]:
    """
    L{run_case} for callers without a reactor (the C{bcr} script, benchmarks):
    the run happens in a fresh interpreter (C{python -m twisted_bcr.launch}),
    so this can be called any number of times in one process.  Blocks until
    the run is over and returns its summary.

    @param on_progress: Called with the run's L{Progress} a few times a
        second while the launcher runs.
    @raise CaseError: The case file is unusable; nothing was started.
    @raise ValueError: The running Olympus given cannot be used.
    """
    started_at = time.time()
    _external_olympus(olympus, olympus_key_file, kill_head_after)
    case, _ = _spec(case, deadline_s, spares, fault_plugins)
    case, stem, directory, case_file = _prepare(case, log_dir, fault_plugins)
    summary_path = os.path.join(directory, "summary.json")
    if os.path.exists(summary_path):
        os.unlink(summary_path)
    command = [
        sys.executable, "-m", "twisted_bcr.launch_entry", case_file, "--log-dir", directory,
        "--started-at", repr(started_at),
    ]
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
    for plugin_dir in fault_plugins:
        command += ["--fault-plugins", os.path.abspath(plugin_dir)]
    if on_progress is not None:
        command.append("--progress")
    if not fork_server:
        command.append("--no-fork-server")
    started = time.monotonic()
    process = subprocess.Popen(
        command, env=child_environment(),
        stdout=subprocess.PIPE if on_progress is not None else None,
    )
    # The launcher enforces the run's deadline itself; this bound only
    # catches a launcher that is stuck, which is then told to clean up.
    bound = (deadline_s if deadline_s is not None else case.default_deadline_s) + (
        EXIT_GRACE_S + 2 * TERMINATE_GRACE_S + LAUNCHER_MARGIN_S
    )
    interrupted = False

    def forward_sigterm(signum: int, frame: Any) -> None:
        # SIGTERM reached only us: the launcher must end its whole tree.
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        raise KeyboardInterrupt

    previous = (
        signal.signal(signal.SIGTERM, forward_sigterm)
        if threading.current_thread() is threading.main_thread() else None
    )
    try:
        status = _wait_for_launcher(process, bound, on_progress)
    except subprocess.TimeoutExpired:
        status = _stop_launcher(process, first_wait_s=0.0)
    except KeyboardInterrupt:
        # Control-C reached the launcher too (or SIGTERM was forwarded):
        # let it kill its children and write its summary, then report it.
        interrupted = True
        status = _stop_launcher(process, first_wait_s=EXIT_GRACE_S + 2 * TERMINATE_GRACE_S)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    try:
        with open(summary_path, encoding="utf-8") as f:
            summary: dict[str, Any] = json.load(f)
    except (OSError, ValueError) as e:
        summary = build_summary(
            case, "processes", [], None, time.monotonic() - started,
            [f"the launcher process ended with status {status} and no summary ({e})"],
        )
        summary["log_dir"] = directory
    if interrupted:
        summary["interrupted"] = True
    if _count_own_cpu(summary):
        # The file says what the caller is told.
        write_atomically(summary_path, json.dumps(summary, indent=2, sort_keys=False) + "\n")
    return summary


def _count_own_cpu(summary: dict[str, Any]) -> bool:
    """
    Add this process's CPU (C{bcr}'s, or a benchmark's) to the run's, and
    per request; whether there was a run's to add to.
    """
    cpu = summary.get("cpu_s")
    if not isinstance(cpu, dict):
        return False
    cpu["caller"] = cpu_seconds(resource.getrusage(resource.RUSAGE_SELF))
    if cpu.get("total") is not None:
        cpu["total"] = round(cpu["total"] + cpu["caller"], 4)
        requests = summary.get("requests") or 0
        summary["cpu_ms_per_request"] = (
            round(cpu["total"] * 1000 / requests, 3) if requests else None
        )
    return True


def _wait_for_launcher(
    process: subprocess.Popen[bytes],
    bound: float,
    on_progress: Callable[[Progress], None] | None,
) -> int:
    """
    The launcher's exit status, reading its progress lines meanwhile.

    @raise subprocess.TimeoutExpired: C{bound} seconds passed.
    """
    if on_progress is None or process.stdout is None:
        return process.wait(timeout=bound)
    give_up_at = time.monotonic() + bound
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            left = give_up_at - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(process.args, bound)
            if not selector.select(timeout=left):
                continue
            line = process.stdout.readline()
            if not line:
                break
            progress = Progress.from_line(line)
            if progress is not None:
                on_progress(progress)
    return process.wait(timeout=max(give_up_at - time.monotonic(), 0.0))


def _stop_launcher(process: subprocess.Popen[bytes], first_wait_s: float) -> int:
    """
    Let the launcher process end by itself within C{first_wait_s}; else
    SIGTERM (it then kills its children and writes its summary), and SIGKILL
    if even that does not end it.
    """
    try:
        return process.wait(timeout=first_wait_s)
    except subprocess.TimeoutExpired:
        pass
    process.terminate()
    try:
        return process.wait(timeout=EXIT_GRACE_S + 2 * TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _options(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m twisted_bcr.launch",
        description="Run one case with real processes; write <log dir>/summary.json.",
    )
    parser.add_argument("case", help="case file (SPEC §10)")
    parser.add_argument("--log-dir", help="directory for every log and the summary")
    parser.add_argument("--deadline", type=float, help="seconds before the run is abandoned")
    parser.add_argument(
        "--started-at", type=float, default=None, metavar="EPOCH",
        help="when the run began (time.time()); the deadline counts from here",
    )
    parser.add_argument("--hosts", help="';'-separated addresses to bind to")
    parser.add_argument(
        "--spares", type=int, default=None,
        help="spare replicas kept ready [default: 2t+1, one configuration's worth]",
    )
    parser.add_argument(
        "--kill-head-after", type=int, default=None, metavar="RESULTS",
        help="SIGKILL configuration 0's head once clients accepted RESULTS results",
    )
    parser.add_argument("--olympus", help="HOST:PORT of an Olympus already running")
    parser.add_argument("--olympus-key-file", help="that Olympus's private key file")
    parser.add_argument(
        "--fault-plugins", action="append", default=[], metavar="DIR",
        help="also load fault plugins from DIR (repeatable)",
    )
    parser.add_argument(
        "--no-fork-server", dest="fork_server", action="store_false",
        help="start each daemon as a fresh interpreter, not forked from a pre-imported one",
    )
    parser.add_argument(
        "--progress", action="store_true",
        help="write a JSON progress line to standard output a few times a second",
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
            fault_plugins=options.fault_plugins, progress=options.progress,
            started_at=options.started_at, fork_server=options.fork_server,
        )
        raise SystemExit(0 if summary["ok"] else 1)

    react(run)


if __name__ == "__main__":
    main()
