# -*- test-case-name: tests.test_simulation -*-
"""
The deterministic simulation binding (DESIGN §2): a whole cluster, Olympus,
replicas, clients and driver, in one process on a L{twisted.internet.task.Clock}.

Every message really goes through the codec (encoded at send, decoded at
delivery), every signature is real, and all randomness (network latencies,
keys, nonces) comes from one seed, so the same seed gives the same run event
for event.  Channels are FIFO per (sender, receiver) pair, like TCP.  The
network can crash and stall nodes and drop, delay or partition messages
between nodes; a test schedules such faults on the clock.

Like the processes binding, the network authenticates: every node has a
key, a message is delivered only if the node at the address it was sent to
has the key the sender expected (a failed handshake otherwise), and the
receiver learns the sender's true key.  A test models an outsider by adding
a node with a key of its own (L{SimulatedNetwork.add_node}) and sending
whatever it likes from there.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.logger import (
    ILogObserver,
    Logger,
    LogPublisher,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_bcr import codec, crypto, faults
from twisted_bcr.admission import AdmittedKeys
from twisted_bcr.config import Case
from twisted_bcr.core.client import Client, ClientOutcome
from twisted_bcr.core.driver import Driver
from twisted_bcr.core.olympus import Olympus
from twisted_bcr.core.replica import Replica, fault_plan_factory
from twisted_bcr.files import make_private_directory, write_atomically
from twisted_bcr.interfaces import IEnvironment, IMachine, IMetrics
from twisted_bcr.lifecycle import (
    OneShot,
    Progress,
    RunFailed,
    RunSpec,
    result_now,
    run_lifecycle,
)
from twisted_bcr.logs import LogFiles
from twisted_bcr.messages import RunReport
from twisted_bcr.metrics import NO_METRICS
from twisted_bcr.peers import Peer
from twisted_bcr.report import record_run, timeline

#: How often, in wall seconds, a simulation reports its progress.
PROGRESS_INTERVAL_S = 0.25
#: One-way message latency range of the simulated network, in seconds.
DEFAULT_LATENCY_S = (0.0001, 0.0005)


_T = TypeVar("_T")


def seeded_key(seed: int, name: str) -> crypto.KeyPair:
    """A key pair derived from the run's seed, so reruns sign identically."""
    return crypto.KeyPair.from_seed(hashlib.sha256(f"{seed}/{name}".encode()).digest())


@implementer(IEnvironment)
class SimulatedNode:
    """One machine's environment inside a L{SimulatedNetwork}."""

    def __init__(
        self, network: SimulatedNetwork, address: str, key: bytes, publisher: LogPublisher
    ):
        self.network = network
        self.address = address
        #: The verify key this node authenticates with.
        self.key = key
        self.publisher = publisher
        self.log = Logger(namespace=f"bcr.{address}", observer=publisher)
        self.machine: IMachine | None = None
        self.alive = True
        self.stalled_until = 0.0
        self.exit_status: int | None = None
        self._timers: dict[str, IDelayedCall] = {}

    def send(self, to: Peer, message: object) -> None:
        if self.alive:
            self.network.transmit(self.address, to, codec.encode(message))

    def random_bytes(self, count: int) -> bytes:
        return self.network.random_bytes(count)

    def start_timer(self, key: str, seconds: float) -> None:
        self.cancel_timer(key)
        # Started by a handler of a process that sleep() stalls: it would have
        # run after the stall, so the timer starts then.
        seconds += max(0.0, self.stalled_until - self.network.clock.seconds())
        self._timers[key] = self.network.clock.callLater(seconds, self._fire, key)

    def cancel_timer(self, key: str) -> None:
        call = self._timers.pop(key, None)
        if call is not None and call.active():
            call.cancel()

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        if not self.alive:
            return
        delay = self.stalled_until - self.network.clock.seconds()
        if delay > 0:
            # A stalled process handles its expired timers when it wakes up.
            self._timers[key] = self.network.clock.callLater(delay, self._fire, key)
            return
        assert self.machine is not None
        self.machine.timer_expired(key)

    def now(self) -> float:
        return self.network.clock.seconds()

    def exit(self, status: int, reason: str) -> None:
        self.log.info(
            "{node} exits with status {status}: {reason}",
            node=self.address, status=status, reason=reason, event="bcr.exit",
        )
        self.crash(status)

    def crash(self, status: int = 255) -> None:
        """The process is gone: no more deliveries, timers or sends."""
        self.alive = False
        self.exit_status = status
        for key in list(self._timers):
            self.cancel_timer(key)

    def stall(self, seconds: float) -> None:
        self.stalled_until = max(self.stalled_until, self.network.clock.seconds() + seconds)


@define
class _Link:
    """Delivery state of one (sender, receiver) channel."""

    last_delivery: float = 0.0
    dropped: bool = False
    extra_delay: float = 0.0


class SimulatedNetwork:
    """In-memory FIFO channels between L{SimulatedNode}s, driven by a Clock."""

    def __init__(
        self,
        seed: int,
        clock: Clock | None = None,
        latency_s: tuple[float, float] = DEFAULT_LATENCY_S,
    ) -> None:
        self.clock = clock or Clock()
        self.random = random.Random(seed)
        # Nonces and epochs draw from their own stream, so that they do not
        # shift the latencies a seed gives.
        self._bytes = random.Random(f"bytes/{seed}")
        self.latency_s = latency_s
        self.nodes: dict[str, SimulatedNode] = {}
        self._links: dict[tuple[str, str], _Link] = {}
        #: Frames that could not be decoded or reached no live node.
        self.undeliverable: list[tuple[str, str, str]] = []
        #: Every kill and stall, in order, for the summary.
        self.injected: list[dict[str, Any]] = []
        #: Called after each step of L{run_until}; it must not change the run.
        self.on_step: Callable[[], None] | None = None

    def add_node(
        self, address: str, observers: list[ILogObserver], key: bytes
    ) -> SimulatedNode:
        """A node at C{address} that authenticates with the verify key C{key}."""
        publisher = LogPublisher(*observers)
        node = SimulatedNode(self, address, key, publisher)
        self.nodes[address] = node
        return node

    def random_bytes(self, count: int) -> bytes:
        """C{count} bytes from the seed's stream of nonces."""
        return self._bytes.randbytes(count)

    def link(self, sender: str, receiver: str) -> _Link:
        return self._links.setdefault((sender, receiver), _Link())

    # Faults a test may schedule ----------------------------------------

    def crash(self, address: str) -> None:
        """The process at C{address} dies now (like SIGKILL)."""
        self.nodes[address].log.info(
            "{node} is killed", node=address, event="bcr.killed"
        )
        self.injected.append({"at_s": round(self.clock.seconds(), 6), "kill": address})
        self.nodes[address].crash()

    def stall(self, address: str, seconds: float) -> None:
        """The process at C{address} stops for C{seconds} (like SIGSTOP, SIGCONT)."""
        self.nodes[address].log.info(
            "{node} is stopped for {seconds} s", node=address, seconds=seconds,
            event="bcr.stopped",
        )
        self.injected.append(
            {"at_s": round(self.clock.seconds(), 6), "stall": address, "seconds": seconds}
        )
        self.nodes[address].stall(seconds)

    def drop(self, sender: str, receiver: str) -> None:
        """Lose every message from C{sender} to C{receiver} from now on."""
        self.link(sender, receiver).dropped = True

    def delay(self, sender: str, receiver: str, seconds: float) -> None:
        """Add C{seconds} to every message from C{sender} to C{receiver}."""
        self.link(sender, receiver).extra_delay = seconds

    def partition(self, side_a: list[str], side_b: list[str]) -> None:
        """Drop every message between the two sides, both ways."""
        for a in side_a:
            for b in side_b:
                self.link(a, b).dropped = True
                self.link(b, a).dropped = True

    def heal(self) -> None:
        """Undo every partition, drop and delay."""
        for link in self._links.values():
            link.dropped = False
            link.extra_delay = 0.0

    # Delivery -------------------------------------------------------------

    def transmit(self, sender: str, to: Peer, frame: bytes) -> None:
        receiver = to.address
        link = self.link(sender, receiver)
        if link.dropped:
            return
        low, high = self.latency_s
        # A process that sleep() stalls while it handles a message sends what
        # that handler sends once it wakes (SPEC §11.2: it sleeps first).
        source = self.nodes.get(sender)
        departure = max(self.clock.seconds(), source.stalled_until if source else 0.0)
        arrival = departure + self.random.uniform(low, high) + link.extra_delay
        # FIFO per channel, like a TCP connection.
        arrival = max(arrival, link.last_delivery)
        link.last_delivery = arrival
        self.clock.callLater(
            arrival - self.clock.seconds(), self._deliver, sender, to, frame
        )

    def _deliver(self, sender: str, to: Peer, frame: bytes) -> None:
        receiver = to.address
        node = self.nodes.get(receiver)
        if node is None or not node.alive:
            self.undeliverable.append((sender, receiver, "no live node"))
            return
        if node.key != to.key:
            # The handshake would fail: the process there is someone else.
            self.undeliverable.append((sender, receiver, "not the key expected there"))
            return
        delay = node.stalled_until - self.clock.seconds()
        if delay > 0:
            # Queue behind the stall; a later message of the same channel
            # was scheduled later still, so order is kept.
            link = self.link(sender, receiver)
            link.last_delivery = max(link.last_delivery, node.stalled_until)
            self.clock.callLater(delay, self._deliver, sender, to, frame)
            return
        try:
            message = codec.decode_wire(frame)
        except codec.BadMessage as e:
            self.undeliverable.append((sender, receiver, str(e)))
            return
        assert node.machine is not None
        node.machine.receive(Peer(sender, self.nodes[sender].key), message)

    def run_until(self, done: Callable[[], bool], deadline_s: float) -> bool:
        """Advance the clock event by event until C{done()} or the deadline."""
        clock = self.clock
        while not done():
            calls = clock.getDelayedCalls()
            if not calls:
                return False
            next_time = min(call.getTime() for call in calls)
            if next_time > deadline_s:
                clock.advance(max(0.0, deadline_s - clock.seconds()))
                return done()
            clock.advance(max(0.0, next_time - clock.seconds()))
            if self.on_step is not None:
                self.on_step()
        return True


@define
class SimulatedCluster:
    """A whole case wired up in a L{SimulatedNetwork}, ready to run."""

    case: Case
    seed: int
    network: SimulatedNetwork
    olympus: Olympus
    replicas: list[Replica]
    clients: list[Client]
    driver: Driver
    outcomes: dict[int, ClientOutcome] = field(factory=dict)
    report: RunReport | None = None
    all_done_at: float | None = None
    workload_finished: OneShot = field(factory=OneShot)
    reported: OneShot = field(factory=OneShot)

    def replicas_of(self, number: int) -> list[Replica]:
        """The replicas of configuration C{number}, in chain order."""
        by_address = {r.address: r for r in self.replicas}
        configuration = self.olympus.configurations[number]
        return [by_address[info.address] for info in configuration.replicas]


def _observers_for(log_dir: str | None, stem: str, files: list[LogFiles]) -> list[ILogObserver]:
    if log_dir is None:
        return []
    log_files = LogFiles(log_dir, stem)
    files.append(log_files)
    return [log_files]


def build_cluster(
    case: Case,
    seed: int,
    log_dir: str | None = None,
    spares: int = 0,
    open_files: list[Any] | None = None,
    extra_observers: list[ILogObserver] | None = None,
    registry: faults.Registry | None = None,
    metrics: Callable[[str], IMetrics] | None = None,
) -> SimulatedCluster:
    """
    Create every node of C{case} (2t+1 replicas plus C{spares} spares).

    @param metrics: The sink of the machine at each address ('olympus',
        'spare-N'); by default they count nothing.
    """
    sink: Callable[[str], IMetrics] = metrics or (lambda address: NO_METRICS)
    files = open_files if open_files is not None else []
    network = SimulatedNetwork(seed)
    extra = list(extra_observers or [])

    def node(address: str, key: crypto.KeyPair) -> SimulatedNode:
        observers = _observers_for(log_dir, f"{case.file_stem}-{address}", files)
        return network.add_node(address, observers + extra, key.verify_key_bytes)

    plans = fault_plan_factory(registry or faults.registry_for(case))
    olympus_key = seeded_key(seed, "olympus")
    olympus_peer = Peer("olympus", olympus_key.verify_key_bytes)
    spare_count = 2 * case.t + 1 + spares
    identities = [seeded_key(seed, f"identity/spare-{n}") for n in range(spare_count)]
    client_keys = [seeded_key(seed, f"client-{i}") for i in range(case.num_client)]
    # The simulation admits exactly the processes it creates, like bcr run.
    admission = AdmittedKeys(
        frozenset(identity.verify_key_bytes for identity in identities),
        {i: key.verify_key_bytes for i, key in enumerate(client_keys)},
    )
    olympus = Olympus(
        node("olympus", olympus_key), case, olympus_key, admission, metrics=sink("olympus")
    )
    network.nodes["olympus"].machine = olympus
    replicas = []
    for n in range(spare_count):
        address = f"spare-{n}"
        key = seeded_key(seed, address)
        replica = Replica(
            node(address, key),
            key,
            olympus_peer,
            identity=identities[n],
            fault_injection=True,
            faults_factory=plans,
            metrics=sink(address),
        )
        network.nodes[address].machine = replica
        replicas.append(replica)
    cluster = SimulatedCluster(
        case=case, seed=seed, network=network, olympus=olympus, replicas=replicas,
        clients=[], driver=None,  # type: ignore[arg-type]
    )

    def on_finished(outcome: ClientOutcome) -> None:
        cluster.outcomes[outcome.index] = outcome
        if len(cluster.outcomes) == case.num_client:
            cluster.all_done_at = network.clock.seconds()
            cluster.workload_finished.fire()

    def on_report(report: RunReport) -> None:
        cluster.report = report
        cluster.reported.fire(report)

    for index, operations in enumerate(case.workloads):
        address = f"client-{index}"
        client = Client(
            node(address, client_keys[index]),
            index,
            list(operations),
            client_keys[index],
            olympus_peer,
            case.client_timeout_ms,
            on_finished,
        )
        network.nodes[address].machine = client
        cluster.clients.append(client)
    # The driver holds Olympus's key: it is the operator's own process.
    cluster.driver = Driver(node("driver", olympus_key), olympus_peer, olympus_key, on_report)
    network.nodes["driver"].machine = cluster.driver
    return cluster


def default_spares(case: Case, chaos: int = 0) -> int:
    """
    Enough spares that no reconfiguration a run may need waits for one: a
    configuration's worth for each configuration the case's failures name,
    for each chaos fault, and one more.
    """
    named = max((c for c, _ in case.failure_texts), default=-1) + 1
    return (named + chaos + 1) * case.num_replicas


def schedule_chaos(cluster: SimulatedCluster, count: int) -> None:
    """
    Schedule C{count} environmental faults drawn from the run's seed: each
    kills, or stalls past the timeouts, a random replica of whatever
    configuration is current at a random moment of the run.  At most t
    faults hit one configuration, so every run should still pass: a seed
    whose run fails is a reproducible bug report.
    """
    rng = random.Random(f"chaos/{cluster.seed}")
    case = cluster.case
    requests = sum(len(w) for w in case.workloads)
    # Roughly when the failure-free run would end, in simulated seconds.
    window_s = 0.005 + requests * 0.0006
    hits: dict[int, int] = {}

    def strike(kill: bool, position: int, stall_steps: float) -> None:
        configuration = cluster.olympus.configuration
        if (
            configuration is None
            or cluster.all_done_at is not None  # the workload is over
            or hits.get(configuration.number, 0) >= case.t
        ):
            return
        hits[configuration.number] = hits.get(configuration.number, 0) + 1
        address = configuration.replicas[position % len(configuration.replicas)].address
        if kill:
            cluster.network.crash(address)
        else:
            cluster.network.stall(address, stall_steps * case.step_timeout_s)

    for _ in range(count):
        cluster.network.clock.callLater(
            rng.uniform(0.005, window_s), strike,
            rng.random() < 0.5, rng.randrange(case.num_replicas), rng.uniform(1.5, 3.0),
        )


class _SimulatedRun:
    """The simulation binding of L{run_lifecycle}: every wait runs the network."""

    mode = "simulation"

    def __init__(self, cluster: SimulatedCluster, spec: RunSpec) -> None:
        self._cluster = cluster
        self._spec = spec

    async def start(self) -> None:
        cluster = self._cluster
        machines: list[IMachine] = [cluster.olympus, *cluster.replicas, *cluster.clients]
        for machine in machines:
            machine.start()
        if self._spec.case.num_client == 0:
            cluster.all_done_at = cluster.network.clock.seconds()
            cluster.workload_finished.fire()

    def workload_done(self) -> Deferred[Any]:
        return self._cluster.workload_finished.wait()

    def finish(self, reason: str, workload_done: bool) -> None:
        self._cluster.driver.finish(reason, workload_done=workload_done)

    def run_report(self) -> Deferred[RunReport]:
        return self._cluster.reported.wait()

    async def wait(
        self,
        waitable: Deferred[_T],
        what: str,
        until_s: float,
        within_s: float | None = None,
        may_end_early: bool = False,
    ) -> _T:
        # The clock starts at 0 with the run; nothing here ends a run early.
        clock = self._cluster.network.clock
        deadline = until_s if within_s is None else min(until_s, clock.seconds() + within_s)
        self._cluster.network.run_until(lambda: waitable.called, deadline)
        if not waitable.called:
            waitable.addErrback(lambda _: None)
            waitable.cancel()
            raise RunFailed(
                f"the deadline ({deadline:.1f} s, simulated) passed while waiting for {what}"
            )
        return await waitable

    async def stop(self, until_s: float) -> list[str]:
        return []

    def outcomes(self) -> list[ClientOutcome]:
        return [client.outcome for client in self._cluster.clients]

    def elapsed_s(self) -> float:
        cluster = self._cluster
        done = cluster.all_done_at
        return float(done if done is not None else cluster.network.clock.seconds())

    def failed(self, error: str, failure: Failure | None = None) -> None:
        if failure is not None:
            failure.raiseException()  # a bug in the simulation: let the test see it


class _ProgressReporter:
    """
    Reports a simulation's progress every L{PROGRESS_INTERVAL_S} of wall
    time (as the network's C{on_step}), and once more at the end.
    """

    def __init__(
        self, cluster: SimulatedCluster, on_progress: Callable[[Progress], None]
    ) -> None:
        self._cluster = cluster
        self._on_progress = on_progress
        self._started = time.monotonic()
        self._next_at = self._started + PROGRESS_INTERVAL_S

    def __call__(self) -> None:
        now = time.monotonic()
        if now >= self._next_at:
            self._next_at = now + PROGRESS_INTERVAL_S
            self.report()

    def report(self) -> None:
        configuration = self._cluster.olympus.configuration
        self._on_progress(Progress.of(
            [c.outcome for c in self._cluster.clients],
            [configuration.number] if configuration is not None else [],
            time.monotonic() - self._started,
        ))


def simulate(
    case: Case,
    seed: int = 0,
    log_dir: str | None = None,
    deadline_s: float | None = None,
    prepare: Callable[[SimulatedCluster], None] | None = None,
    spares: int | None = None,
    chaos: int = 0,
    registry: faults.Registry | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    metrics: Callable[[str], IMetrics] | None = None,
) -> dict[str, Any]:
    """
    Run C{case} in simulation and return its summary (DESIGN §4).

    @param prepare: Called with the cluster before it starts, to schedule
        faults on C{cluster.network}.
    @param spares: Spare replicas beyond configuration 0; by default one
        configuration's worth per reconfiguration the run may need.
    @param chaos: How many random kills and stalls of replicas to inject,
        drawn from the seed (see L{schedule_chaos}).
    @param registry: The fault plugins the case's failures name; by default
        the built-ins.
    @param on_progress: Called a few times a second of wall time with how
        far the run is (its C{elapsed_s} is wall time, for a person
        watching); it only reads, so the run stays the seed's.
    @param metrics: As for L{build_cluster}.
    """
    spec = RunSpec.checked(
        case,
        deadline_s if deadline_s is not None else case.default_deadline_s,
        spares if spares is not None else default_spares(case, chaos),
    )
    files: list[Any] = []
    if log_dir is not None:
        make_private_directory(log_dir)
    try:
        cluster = build_cluster(
            case, seed, log_dir, spares=spec.spares, open_files=files, registry=registry,
            metrics=metrics,
        )
        if chaos:
            schedule_chaos(cluster, chaos)
        reporter = _ProgressReporter(cluster, on_progress) if on_progress else None
        cluster.network.on_step = reporter
        if prepare is not None:
            prepare(cluster)
        # Every wait of the simulated binding runs the network until it is
        # over, so the whole lifecycle completes before ensureDeferred returns.
        summary = result_now(ensureDeferred(run_lifecycle(_SimulatedRun(cluster, spec), spec)))
        if reporter is not None:
            reporter.report()
        summary["injected"] = cluster.network.injected
        summary["timeline"] = timeline(cluster.report, 0.0, simulated=True)
        if log_dir is not None:
            # Like bcr run's: the summary and the run report's data
            # (the simulated clock starts at 0 with the run).
            record_run(summary, log_dir, [c.outcome for c in cluster.clients],
                       cluster.report, 0.0, simulated=True)
            write_atomically(
                os.path.join(log_dir, "summary.json"), json.dumps(summary, indent=2) + "\n"
            )
        return summary
    finally:
        for f in files:
            f.close()
