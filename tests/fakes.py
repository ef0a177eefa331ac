"""
Test doubles and builders for driving the pure core machines directly.

L{FakeEnvironment} is an L{IEnvironment} that records what a machine does
(messages sent, timers on a L{Clock}, exit and stall requests, log events)
instead of doing it.  Every message sent through it is encoded with the real
codec and decoded again, so a machine that produced something the wire
cannot carry fails the test at once.

The builders make the rest of a world around one machine: deterministic
keys for Olympus, replicas and clients, configurations, signed requests,
hand-made statements and proofs (Ed25519 is deterministic, so a statement
built here is byte-for-byte what the replica holding that key would sign),
and replicas already placed at a chain position by a sealed L{Assignment}.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

import attrs
from twisted.internet.task import Clock
from twisted.logger import Logger, LogPublisher, formatEvent
from zope.interface import implementer

from twisted_bcr import codec, crypto
from twisted_bcr.core.common import MAX_MESSAGE, OLYMPUS, replica_name
from twisted_bcr.core.replica import Replica
from twisted_bcr.interfaces import IEnvironment, IMachine, IMetrics
from twisted_bcr.messages import (
    Assignment,
    CheckpointProof,
    CheckpointStatement,
    ClientInfo,
    ClientRequest,
    Configuration,
    HistoryEntry,
    Operation,
    OrderStatement,
    ReconfigurationRequest,
    RegisterClient,
    RegisterReplica,
    ReplicaInfo,
    Request,
    ResultShuttle,
    ResultStatement,
    Sealed,
    Shuttle,
    Signed,
)
from twisted_bcr.metrics import NO_METRICS
from twisted_bcr.peers import Peer


@cache
def key_for(name: str) -> crypto.KeyPair:
    """A key pair derived from C{name}: the same name always gives the same key."""
    return crypto.KeyPair.from_seed(hashlib.sha256(f"fakes/{name}".encode()).digest())


OLYMPUS_KEY = key_for("olympus")
#: A key nobody in any configuration uses.
STRANGER_KEY = key_for("stranger")
#: Olympus's boot epoch in these tests.
EPOCH = b"e" * 16

#: Olympus as its peers know it: where it is and the key it authenticates with.
OLYMPUS_ADDRESS = Peer("olympus", OLYMPUS_KEY.verify_key_bytes)
#: An outsider with a valid key pair of its own, admitted nowhere.
STRANGER = Peer("stranger", STRANGER_KEY.verify_key_bytes)


def replica_address(index: int, number: int = 0) -> Peer:
    """The replica at C{index} of configuration C{number}: its address and key."""
    return Peer(f"replica-{number}.{index}", replica_key(index, number).verify_key_bytes)


def client_address(index: int) -> Peer:
    """Client C{index}: its address and key."""
    return Peer(f"client-{index}", client_key(index).verify_key_bytes)


def replica_key(index: int, number: int = 0) -> crypto.KeyPair:
    """The key of the replica at C{index} of configuration C{number}."""
    return key_for(f"replica {number}.{index}")


def client_key(index: int) -> crypto.KeyPair:
    """The key of client C{index}."""
    return key_for(f"client {index}")


# ---------------------------------------------------------------------------
# The fake environment


@attrs.frozen
class Sent:
    """One message a machine sent: where, what, and for sealed ones the body."""

    to: Peer
    message: object
    #: The decoded body of a L{Sealed} message (signature not checked), else None.
    inner: object | None


@implementer(IEnvironment)
class FakeEnvironment:
    """An L{IEnvironment} that records instead of acting."""

    def __init__(self, address: str | Peer, clock: Clock | None = None) -> None:
        #: The machine's own peer (key included) when it was built from one.
        self.peer = address if isinstance(address, Peer) else Peer(address, b"")
        self.address = self.peer.address
        self._random_count = 0
        self.clock = clock if clock is not None else Clock()
        #: Every log event, in order.
        self.events: list[dict[str, Any]] = []
        #: Events whose format string could not be rendered.
        self.format_errors: list[dict[str, Any]] = []
        self.log = Logger(
            namespace=f"tests.{address}", observer=LogPublisher(self._observe)
        )
        #: The machine whose C{timer_expired} timers call; set by the builder.
        self.machine: Any = None
        self.sent: list[Sent] = []
        #: Every send, exit and stall in order: C{("send", Sent)},
        #: C{("exit", (status, reason))}, C{("stall", seconds)}.
        self.actions: list[tuple[str, object]] = []
        self.exits: list[tuple[int, str]] = []
        self.stalls: list[float] = []
        #: Every C{start_timer} call as C{(key, seconds)}.
        self.timer_starts: list[tuple[str, float]] = []
        self.timers: dict[str, Any] = {}

    def _observe(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        text = formatEvent(event)
        if text.startswith("Unable to format event"):
            self.format_errors.append(event)

    # IEnvironment ----------------------------------------------------------

    def random_bytes(self, count: int) -> bytes:
        """Deterministic stand-ins: every call gives new bytes."""
        self._random_count += 1
        return hashlib.shake_256(f"{self.address}/{self._random_count}".encode()).digest(count)

    def send(self, to: Peer, message: object) -> None:
        frame = codec.encode(message)
        decoded = codec.decode_wire(frame)
        if decoded != message:
            raise AssertionError(f"{message!r} does not survive the codec")
        inner = None
        if isinstance(decoded, Sealed):
            inner = codec.decode_sealed_body(decoded.body)
        record = Sent(to, decoded, inner)
        self.sent.append(record)
        self.actions.append(("send", record))

    def start_timer(self, key: str, seconds: float) -> None:
        self.cancel_timer(key)
        self.timer_starts.append((key, seconds))
        self.timers[key] = self.clock.callLater(seconds, self._fire, key)

    def cancel_timer(self, key: str) -> None:
        call = self.timers.pop(key, None)
        if call is not None and call.active():
            call.cancel()

    def now(self) -> float:
        return self.clock.seconds()

    def exit(self, status: int, reason: str) -> None:
        self.exits.append((status, reason))
        self.actions.append(("exit", (status, reason)))

    def stall(self, seconds: float) -> None:
        self.stalls.append(seconds)
        self.actions.append(("stall", seconds))

    def _fire(self, key: str) -> None:
        del self.timers[key]
        self.machine.timer_expired(key)

    # Inspection ------------------------------------------------------------

    def take(self) -> list[Sent]:
        """Everything sent since the last call, and forget it."""
        sent, self.sent = self.sent, []
        return sent

    def sent_to(self, address: Peer) -> list[Sent]:
        """The messages sent to C{address} (not forgotten)."""
        return [s for s in self.sent if s.to == address]

    def of_type(self, cls: type) -> list[object]:
        """Sent messages (or sealed bodies) of class C{cls}, in order."""
        found = []
        for s in self.sent:
            if isinstance(s.message, cls):
                found.append(s.message)
            elif isinstance(s.inner, cls):
                found.append(s.inner)
        return found

    def events_named(self, name: str) -> list[dict[str, Any]]:
        """Log events whose C{event} key is C{name}."""
        return [e for e in self.events if e.get("event") == name]

    def active_timers(self) -> dict[str, float]:
        """Running timers: key -> time (on the clock) they expire."""
        return {key: call.getTime() for key, call in self.timers.items() if call.active()}


def open_sealed(sent: Sent, key: crypto.KeyPair) -> object:
    """The body of a sealed message after checking it was signed by C{key}."""
    assert isinstance(sent.message, Sealed), sent
    return crypto.Verifier().open_sealed(sent.message, key.verify_key_bytes)


# ---------------------------------------------------------------------------
# Configurations, requests, statements


def make_configuration(
    t: int = 1,
    clients: int = 2,
    number: int = 0,
    checkpt_interval: int = 100,
    head_timeout_ms: int = 3000,
    nonhead_timeout_ms: int = 3000,
) -> Configuration:
    """Configuration C{number}: 2t+1 replicas and C{clients} clients with known keys."""
    return Configuration(
        number=number,
        t=t,
        replicas=tuple(
            ReplicaInfo(replica_address(i, number).address, replica_key(i, number).verify_key_bytes)
            for i in range(2 * t + 1)
        ),
        clients=tuple(
            ClientInfo(i, client_address(i).address, client_key(i).verify_key_bytes)
            for i in range(clients)
        ),
        checkpt_interval=checkpt_interval,
        head_timeout_ms=head_timeout_ms,
        nonhead_timeout_ms=nonhead_timeout_ms,
    )


def operation(name: str, *args: str) -> Operation:
    """An operation, e.g. C{operation("put", "k", "v")}."""
    return Operation(name, tuple(args))


def sign_request(
    client: int, seq: int, name: str, *args: str, key: crypto.KeyPair | None = None
) -> Signed:
    """Client C{client}'s request number C{seq}, signed by it (or by C{key})."""
    request = Request(client, seq, operation(name, *args))
    return crypto.sign(key if key is not None else client_key(client), request)


def client_request(client: int, seq: int, name: str, *args: str) -> ClientRequest:
    """A L{ClientRequest} as client C{client} sends it."""
    return ClientRequest(sign_request(client, seq, name, *args))


def request_of(signed: Signed) -> Request:
    """The request inside a signed request."""
    request = codec.decode(signed.body, Request)
    assert isinstance(request, Request)
    return request


def order_statement(
    configuration: Configuration,
    slot: int,
    signed_request: Signed,
    position: int,
    *,
    op: Operation | None = None,
    key: crypto.KeyPair | None = None,
) -> Signed:
    """The order statement replica C{position} signs for C{slot}."""
    request = request_of(signed_request)
    statement = OrderStatement(
        configuration.number, slot, request.client, request.seq,
        op if op is not None else request.operation,
    )
    signer = key if key is not None else replica_key(position, configuration.number)
    return crypto.sign(signer, statement)


def result_statement(
    configuration: Configuration,
    slot: int,
    signed_request: Signed,
    position: int,
    result: str,
    *,
    op: Operation | None = None,
    key: crypto.KeyPair | None = None,
) -> Signed:
    """The result statement replica C{position} signs for C{slot} and C{result}."""
    request = request_of(signed_request)
    statement = ResultStatement(
        configuration.number, slot, request.client, request.seq,
        op if op is not None else request.operation, crypto.result_hash(result),
    )
    signer = key if key is not None else replica_key(position, configuration.number)
    return crypto.sign(signer, statement)


def order_proof(
    configuration: Configuration, slot: int, signed_request: Signed, count: int
) -> tuple[Signed, ...]:
    """The correct order proof of positions C{0..count-1}."""
    return tuple(
        order_statement(configuration, slot, signed_request, j) for j in range(count)
    )


def result_proof(
    configuration: Configuration,
    slot: int,
    signed_request: Signed,
    result: str,
    count: int,
) -> tuple[Signed, ...]:
    """The correct result proof of positions C{0..count-1}."""
    return tuple(
        result_statement(configuration, slot, signed_request, j, result)
        for j in range(count)
    )


def make_shuttle(
    configuration: Configuration,
    slot: int,
    signed_request: Signed,
    result: str,
    count: int,
) -> Shuttle:
    """A correct forward shuttle as it arrives at chain position C{count}."""
    return Shuttle(
        configuration.number,
        slot,
        signed_request,
        order_proof(configuration, slot, signed_request, count),
        result_proof(configuration, slot, signed_request, result, count),
    )


def make_result_shuttle(
    configuration: Configuration, slot: int, signed_request: Signed, result: str
) -> ResultShuttle:
    """A correct result shuttle with a complete result proof."""
    length = len(configuration.replicas)
    return ResultShuttle(
        configuration.number,
        slot,
        signed_request,
        result,
        result_proof(configuration, slot, signed_request, result, length),
    )


def checkpoint_statement(
    configuration: Configuration,
    slot: int,
    state_hash: bytes,
    position: int,
) -> Signed:
    """Replica C{position}'s signed checkpoint statement."""
    return crypto.sign(
        replica_key(position, configuration.number),
        CheckpointStatement(configuration.number, slot, state_hash),
    )


def checkpoint_proof(
    configuration: Configuration,
    slot: int,
    state_hash: bytes,
    positions: Iterable[int],
) -> CheckpointProof:
    """A checkpoint proof with the statements of C{positions}, in that order."""
    return CheckpointProof(
        configuration.number,
        slot,
        tuple(checkpoint_statement(configuration, slot, state_hash, j) for j in positions),
    )


def seal_from_olympus(
    message: object,
    key: crypto.KeyPair = OLYMPUS_KEY,
    *,
    to: Peer,
    epoch: bytes = EPOCH,
    configuration: int = -1,
) -> Sealed:
    """A control message for C{to} sealed as Olympus seals it."""
    return crypto.seal(
        key, OLYMPUS_ADDRESS.address, OLYMPUS, message,
        recipient=to.key, epoch=epoch, configuration=configuration,
    )


# ---------------------------------------------------------------------------
# Replicas


def make_assignment(
    configuration: Configuration,
    index: int,
    *,
    state: dict[str, str] | None = None,
    first_slot: int = 0,
    failures: str = "",
    recovered: Sequence[Sealed] = (),
) -> Assignment:
    """Olympus's assignment of position C{index} of C{configuration}."""
    return Assignment(
        configuration=configuration,
        index=index,
        state=dict(state or {}),
        first_slot=first_slot,
        failures=failures,
        recovered=tuple(recovered),
    )


def make_spare(
    configuration: Configuration,
    index: int,
    *,
    clock: Clock | None = None,
    fault_injection: bool = False,
    faults_factory: Any = None,
    metrics: IMetrics = NO_METRICS,
) -> tuple[Replica, FakeEnvironment]:
    """An unassigned replica that will hold the key of position C{index}."""
    env = FakeEnvironment(replica_address(index, configuration.number), clock)
    replica = Replica(
        env,
        replica_key(index, configuration.number),
        OLYMPUS_ADDRESS,
        identity=identity_key(index, configuration.number),
        fault_injection=fault_injection,
        faults_factory=faults_factory,
        metrics=metrics,
    )
    env.machine = replica
    return replica, env


def make_replica(
    configuration: Configuration,
    index: int,
    *,
    clock: Clock | None = None,
    state: dict[str, str] | None = None,
    first_slot: int = 0,
    failures: str = "",
    fault_injection: bool = False,
    faults_factory: Any = None,
    metrics: IMetrics = NO_METRICS,
) -> tuple[Replica, FakeEnvironment]:
    """
    A replica at position C{index} of C{configuration}, made ACTIVE by a
    sealed assignment from Olympus; what it sent so far is forgotten.
    """
    replica, env = make_spare(
        configuration, index, clock=clock,
        fault_injection=fault_injection, faults_factory=faults_factory, metrics=metrics,
    )
    assignment = make_assignment(
        configuration, index, state=state, first_slot=first_slot, failures=failures
    )
    replica.receive(
        OLYMPUS_ADDRESS,
        seal_from_olympus(assignment, to=replica_address(index, configuration.number)),
    )
    if replica.name != replica_name(configuration.number, index):
        raise AssertionError(f"assignment refused: {env.events}")
    env.take()
    return replica, env


class Chain:
    """
    All replicas of one configuration on fake environments sharing one
    clock, with a router that delivers what they send to each other.
    Messages to clients and Olympus are kept in L{outside}.
    """

    def __init__(self, configuration: Configuration, **replica_options: Any) -> None:
        self.configuration = configuration
        self.clock = Clock()
        self.replicas: list[Replica] = []
        self.envs: list[FakeEnvironment] = []
        for index in range(len(configuration.replicas)):
            replica, env = make_replica(
                configuration, index, clock=self.clock, **replica_options
            )
            self.replicas.append(replica)
            self.envs.append(env)
        self._by_address = {env.peer: (r, env) for r, env in zip(self.replicas, self.envs, strict=True)}
        #: (sender address, Sent) for everything addressed outside the chain.
        self.outside: list[tuple[str, Sent]] = []
        #: (sender address, Sent) for everything delivered inside the chain.
        self.delivered: list[tuple[str, Sent]] = []

    def pending(self) -> list[tuple[str, Sent]]:
        """Messages sent but not yet delivered, oldest first per sender."""
        return [(env.address, s) for env in self.envs for s in env.sent]

    def step(self) -> tuple[str, Sent] | None:
        """Deliver the oldest undelivered message of the first busy sender."""
        for env in self.envs:
            if env.sent:
                sent = env.sent.pop(0)
                target = self._by_address.get(sent.to)
                if target is None:
                    self.outside.append((env.address, sent))
                else:
                    self.delivered.append((env.address, sent))
                    target[0].receive(env.peer, sent.message)
                return env.address, sent
        return None

    def run(self, limit: int = 10_000) -> None:
        """Deliver until nothing is left to deliver."""
        for _ in range(limit):
            if self.step() is None:
                return
        raise AssertionError("the chain did not settle")

    def submit(self, request: ClientRequest, client: int = 0) -> None:
        """Client C{client} sends C{request} to the head."""
        self.replicas[0].receive(client_address(client), request)

    def outside_of_type(self, cls: type) -> list[object]:
        """Messages (or sealed bodies) of class C{cls} sent out of the chain."""
        found = []
        for _, s in self.outside:
            if isinstance(s.message, cls):
                found.append(s.message)
            elif isinstance(s.inner, cls):
                found.append(s.inner)
        return found


def reconfiguration_requests(env: FakeEnvironment) -> list[ReconfigurationRequest]:
    """Reconfiguration requests the machine of C{env} sent to Olympus."""
    return [
        s.inner for s in env.sent
        if s.to == OLYMPUS_ADDRESS and isinstance(s.inner, ReconfigurationRequest)
    ]


# ---------------------------------------------------------------------------
# Reconfiguration


def history_entry(
    configuration: Configuration,
    slot: int,
    signed_request: Signed,
    count: int | None = None,
) -> HistoryEntry:
    """
    A history entry for C{slot} holding C{signed_request} and the order
    statements of positions C{0..count-1} (default: the complete proof).
    """
    length = len(configuration.replicas) if count is None else count
    return HistoryEntry(slot, signed_request, order_proof(configuration, slot, signed_request, length))


def seal_from_replica(
    configuration: Configuration, index: int, message: object, epoch: bytes = EPOCH
) -> Sealed:
    """A control message sealed by replica C{index} of C{configuration}, as it seals it."""
    return crypto.seal(
        replica_key(index, configuration.number),
        replica_address(index, configuration.number).address,
        replica_name(configuration.number, index),
        message,
        recipient=OLYMPUS_KEY.verify_key_bytes, epoch=epoch,
        configuration=configuration.number,
    )


def identity_key(index: int, number: int = 0) -> crypto.KeyPair:
    """The admitted identity of the daemon that serves as replica C{number}.C{index}."""
    return key_for(f"identity {number}.{index}")


def register_replica_message(
    address: str, key: crypto.KeyPair, identity: crypto.KeyPair | None = None
) -> Sealed:
    """The sealed first registration of a spare at C{address} holding C{key}."""
    identity = identity if identity is not None else key_for(f"identity of {address}")
    message = RegisterReplica(address, key.verify_key_bytes, identity.verify_key_bytes)
    return crypto.seal(
        key, address, "spare", message, recipient=OLYMPUS_KEY.verify_key_bytes, epoch=b""
    )


def register_client_message(index: int) -> Sealed:
    """The sealed registration of client C{index}."""
    peer = client_address(index)
    message = RegisterClient(index, peer.address, client_key(index).verify_key_bytes)
    return crypto.seal(
        client_key(index), peer.address, f"client {index}", message,
        recipient=OLYMPUS_KEY.verify_key_bytes, epoch=b"",
    )


def wire_configuration(**options: Any) -> Configuration:
    """
    L{make_configuration}C{(**options)} with plain address strings in its
    replica and client entries, as L{ReplicaInfo} and L{ClientInfo} require
    (whether or not make_configuration puts whole L{Peer}s there).
    """
    configuration = make_configuration(**options)

    def plain(address: object) -> str:
        return address.address if isinstance(address, Peer) else str(address)

    return attrs.evolve(
        configuration,
        replicas=tuple(
            ReplicaInfo(plain(r.address), r.verify_key) for r in configuration.replicas
        ),
        clients=tuple(
            ClientInfo(c.index, plain(c.address), c.verify_key) for c in configuration.clients
        ),
    )


@implementer(IMachine)
class Outsider:
    """
    The machine of an outsider's node in the simulation: a process with a
    valid key of its own, admitted nowhere, that only records what reaches
    it (a test sends whatever it likes from its node).
    """

    def __init__(self) -> None:
        self.received: list[tuple[Peer, object]] = []

    def start(self) -> None:
        pass

    def receive(self, sender: Peer, message: object) -> None:
        self.received.append((sender, message))

    def timer_expired(self, key: str) -> None:
        pass

    def max_message_from(self, key: bytes) -> int:
        return MAX_MESSAGE
