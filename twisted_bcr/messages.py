# -*- test-case-name: tests.test_codec -*-
"""
Every message and signed statement of the protocol, as frozen attrs types.

These classes are pure data. Their canonical byte encoding (used on the wire
*and* as the bytes that get signed) lives in L{twisted_bcr.codec}; each class
carries a one-byte C{TAG} that the codec writes in front of it, and its fields
are encoded in declaration order.  Field types are restricted to what the codec
understands: C{int}, C{str}, C{bytes}, C{bool}, C{Optional[X]},
C{tuple[X, ...]}, C{dict[str, str]} and other classes of this module.

Naming follows SPEC §4: statements are the things replicas sign; a L{Signed}
is the canonical encoding of a statement (or of a client's request, or of a
whole control message) together with the Ed25519 signature over exactly those
bytes.  Proofs are tuples of L{Signed} in chain order.
"""

from __future__ import annotations

from typing import ClassVar

from attrs import frozen

# ---------------------------------------------------------------------------
# Building blocks


@frozen
class Operation:
    """One dictionary operation: C{put}, C{get}, C{append} or C{slice}."""

    TAG: ClassVar[int] = 1
    name: str
    args: tuple[str, ...]

    def __str__(self) -> str:
        return "{}({})".format(self.name, ",".join(repr(a) for a in self.args))


@frozen
class Request:
    """What a client asks for; travels signed by the client (SPEC §2.4)."""

    TAG: ClassVar[int] = 2
    client: int
    seq: int
    operation: Operation

    @property
    def request_id(self) -> str:
        """The request id of SPEC §4: C{"<client>:<seq>"}."""
        return f"{self.client}:{self.seq}"


@frozen
class Signed:
    """
    Canonical bytes of a statement, request or control message, and the
    Ed25519 signature over exactly those bytes.  Who must have signed is
    decided by the verifier from context (chain position, sender role).
    """

    TAG: ClassVar[int] = 3
    body: bytes
    signature: bytes


@frozen
class OrderStatement:
    """C{<order, s, o>} signed by a replica, bound to its configuration."""

    TAG: ClassVar[int] = 4
    configuration: int
    slot: int
    client: int
    seq: int
    operation: Operation


@frozen
class ResultStatement:
    """C{<result, o, hash(r)>} signed by a replica; C{result_hash} is raw SHA-256."""

    TAG: ClassVar[int] = 5
    configuration: int
    slot: int
    client: int
    seq: int
    operation: Operation
    result_hash: bytes


@frozen
class CheckpointStatement:
    """C{<checkpoint, s, hash(state after s)>} signed by a replica."""

    TAG: ClassVar[int] = 6
    configuration: int
    slot: int
    state_hash: bytes


@frozen
class CheckpointProof:
    """Checkpoint statements for one slot, from chain positions C{0..k}."""

    TAG: ClassVar[int] = 7
    configuration: int
    slot: int
    statements: tuple[Signed, ...]


@frozen
class HistoryEntry:
    """One slot of a replica's history: the signed request and its order proof."""

    TAG: ClassVar[int] = 8
    slot: int
    request: Signed
    order_proof: tuple[Signed, ...]


@frozen
class ReplicaInfo:
    """Where a replica of a configuration listens and the key it signs with."""

    TAG: ClassVar[int] = 9
    address: str
    verify_key: bytes


@frozen
class ClientInfo:
    """Where a client listens and the key it signs its requests with."""

    TAG: ClassVar[int] = 10
    index: int
    address: str
    verify_key: bytes


@frozen
class Configuration:
    """
    One configuration of the chain as Olympus hands it out (signed by
    Olympus inside a L{Sealed} envelope).  Parameters every replica needs
    travel with it, so a spare needs nothing but Olympus's address and key.
    """

    TAG: ClassVar[int] = 11
    number: int
    t: int
    replicas: tuple[ReplicaInfo, ...]
    clients: tuple[ClientInfo, ...]
    checkpt_interval: int
    head_timeout_ms: int
    nonhead_timeout_ms: int


@frozen
class ClientResult:
    """A replica's most recent result for one client, with its signed statement."""

    TAG: ClassVar[int] = 12
    client: int
    seq: int
    result: str
    statement: Signed


@frozen
class RegistrationBinding:
    """
    What a spare's identity key signs to answer Olympus's challenge: this
    fresh replica key, at this address, for this Olympus boot and nonce.
    """

    TAG: ClassVar[int] = 13
    olympus_key: bytes
    epoch: bytes
    nonce: bytes
    verify_key: bytes
    address: str


# ---------------------------------------------------------------------------
# Data plane: clients and replicas


@frozen
class ClientRequest:
    """A signed request sent by a client straight to a replica."""

    TAG: ClassVar[int] = 20
    request: Signed


@frozen
class ForwardedRequest:
    """A client's signed request forwarded by a non-head to the head (§6.2)."""

    TAG: ClassVar[int] = 21
    request: Signed


@frozen
class Shuttle:
    """Forward shuttle, head to tail: request, slot and the proofs so far."""

    TAG: ClassVar[int] = 22
    configuration: int
    slot: int
    request: Signed
    order_proof: tuple[Signed, ...]
    result_proof: tuple[Signed, ...]


@frozen
class ResultMessage:
    """A result with its result proof, sent to the client that asked."""

    TAG: ClassVar[int] = 23
    configuration: int
    slot: int
    client: int
    seq: int
    result: str
    result_proof: tuple[Signed, ...]


@frozen
class ResultShuttle:
    """
    Backward shuttle, tail to head: the result and its complete result
    proof.  It carries no order proof (see docs/DECISIONS.md).
    """

    TAG: ClassVar[int] = 24
    configuration: int
    slot: int
    request: Signed
    result: str
    result_proof: tuple[Signed, ...]


@frozen
class ErrorMessage:
    """A replica's refusal to serve a request (e.g. it is immutable)."""

    TAG: ClassVar[int] = 25
    configuration: int
    client: int
    seq: int
    reason: str


@frozen
class CheckpointMessage:
    """Checkpoint shuttle, head to tail, with the statements so far."""

    TAG: ClassVar[int] = 26
    proof: CheckpointProof


@frozen
class CompletedCheckpoint:
    """A completed checkpoint proof travelling from the tail to the head."""

    TAG: ClassVar[int] = 27
    proof: CheckpointProof


# ---------------------------------------------------------------------------
# Control plane: everything to or from Olympus travels inside a Sealed
# envelope signed by its sender (Olympus, a replica, or a client).


@frozen
class Sealed:
    """
    A control message signed by its sender: C{body} is the canonical
    encoding of the inner message, C{signer} names the key that must verify
    it (C{"olympus"}, C{"spare"}, C{"replica c.i"} or C{"client <i>"}) and
    C{sender} is the address to answer to.

    So that no sealed message can be replayed to anyone else or into
    another run, it names its C{recipient} (the recipient's verify key),
    Olympus's boot C{epoch} (empty only in a first registration, before the
    sender has heard from Olympus) and the C{configuration} it is about
    (-1 for none).  The signature covers every field: it is over the
    canonical encoding of this envelope with an empty C{signature}.
    """

    TAG: ClassVar[int] = 40
    sender: str
    signer: str
    recipient: bytes
    epoch: bytes
    configuration: int
    body: bytes
    signature: bytes


@frozen
class RegisterReplica:
    """
    A fresh spare announces its address, the fresh key it will sign with
    (C{verify_key}) and the long-term identity key an operator admitted
    (C{identity_key}).  Olympus answers with a L{RegistrationChallenge}.
    """

    TAG: ClassVar[int] = 41
    address: str
    verify_key: bytes
    identity_key: bytes


@frozen
class RegisterClient:
    """A client announces its address and public key to Olympus."""

    TAG: ClassVar[int] = 42
    index: int
    address: str
    verify_key: bytes


@frozen
class GetConfiguration:
    """A client asks Olympus for the current configuration."""

    TAG: ClassVar[int] = 43
    client: int


@frozen
class ConfigurationReply:
    """Olympus's answer to a client: the current configuration."""

    TAG: ClassVar[int] = 44
    configuration: Configuration


@frozen
class Assignment:
    """
    Olympus places a spare at position C{index} of C{configuration}: the
    set-up of configuration 0, or the C{new_configuration} message (the
    paper's C{inithist}) of a later one.  C{failures} is the raw text of
    C{failures[c,r]} from the case file, or empty.  C{recovered} holds, per
    client, Olympus's sealed L{ResultFromOlympus} for the last request the
    old configuration executed for it: the new replicas answer a resend of
    that request with it instead of executing it again.
    """

    TAG: ClassVar[int] = 45
    configuration: Configuration
    index: int
    state: dict[str, str]
    first_slot: int
    failures: str
    recovered: tuple[Sealed, ...]


@frozen
class ReconfigurationRequest:
    """A replica or client asks Olympus to reconfigure (SPEC §7)."""

    TAG: ClassVar[int] = 46
    configuration: int
    requester: str
    reason: str
    proof: tuple[Signed, ...]


@frozen
class WedgeRequest:
    """Olympus tells the replicas of a configuration to become immutable."""

    TAG: ClassVar[int] = 47
    configuration: int


@frozen
class Wedged:
    """A wedged replica's history since its last completed checkpoint (§9.2)."""

    TAG: ClassVar[int] = 48
    configuration: int
    index: int
    history: tuple[HistoryEntry, ...]
    checkpoint: CheckpointProof | None


@frozen
class CatchUp:
    """Olympus sends a quorum member the operations it has not executed."""

    TAG: ClassVar[int] = 49
    configuration: int
    entries: tuple[HistoryEntry, ...]


@frozen
class CaughtUp:
    """A caught-up replica's state hash and its most recent result per client."""

    TAG: ClassVar[int] = 50
    configuration: int
    index: int
    state_hash: bytes
    client_results: tuple[ClientResult, ...]


@frozen
class GetRunningState:
    """Olympus asks a quorum member for its whole dictionary."""

    TAG: ClassVar[int] = 51
    configuration: int


@frozen
class RunningState:
    """A replica's whole dictionary, for Olympus to hash and hand on."""

    TAG: ClassVar[int] = 52
    configuration: int
    index: int
    state: dict[str, str]


@frozen
class ResultFromOlympus:
    """
    A result recovered during reconfiguration (§9.6): request C{client:seq}
    executed at C{slot}, vouched for by the t+1 result statements of the
    quorum.  Olympus seals it; anyone (Olympus, or a new replica answering a
    resend) may hand the sealed envelope to the client.
    """

    TAG: ClassVar[int] = 53
    client: int
    seq: int
    slot: int
    result: str
    statements: tuple[Signed, ...]


@frozen
class Shutdown:
    """Olympus retires a replica: log the final dictionary and exit."""

    TAG: ClassVar[int] = 54
    configuration: int


@frozen
class FinalState:
    """A retiring replica's final dictionary and last executed slot."""

    TAG: ClassVar[int] = 55
    configuration: int
    index: int
    state: dict[str, str]
    last_slot: int


@frozen
class FinishRun:
    """
    The driver asks Olympus to retire every live replica and report.  When
    the workload is done, Olympus first lets the work in flight finish
    (L{Quiesce}), with any reconfiguration it asks for; a run that failed
    or was ended early is retired at once.
    """

    TAG: ClassVar[int] = 56
    reason: str
    workload_done: bool = True


@frozen
class Placement:
    """
    In a L{RunReport}: the spare (its address and admitted identity key)
    Olympus placed at position C{index} of configuration C{configuration}.
    """

    TAG: ClassVar[int] = 14
    configuration: int
    index: int
    address: str
    identity_key: bytes


@frozen
class FaultFired:
    """
    A replica tells Olympus that one pair of its C{failures[c,r]} line
    fired (SPEC §11), before the failure acts, so the run report can say
    which faults were injected.  C{byzantine}: the failure changes state or
    what the replica sends (it is left out of the agreement check).
    """

    TAG: ClassVar[int] = 63
    configuration: int
    index: int
    trigger: str
    failure: str
    byzantine: bool


@frozen
class RunReport:
    """
    Olympus's account of a run for the driver: final states and history.
    C{silent} lists the replicas of the last configuration that sent no
    final state by the deadline (crashed, or stalled): Olympus does not
    wait for a crashed process (SPEC §11.2).
    """

    TAG: ClassVar[int] = 57
    configuration: int
    final_states: tuple[FinalState, ...]
    reconfigurations_json: str
    errors: tuple[str, ...]
    silent: tuple[int, ...]
    #: Which registered spare took each place of each configuration.
    placements: tuple[Placement, ...] = ()
    #: Every fault a replica reported firing (L{FaultFired}), by place.
    faults_fired: tuple[FaultFired, ...] = ()
    #: When Olympus received each of C{faults_fired}, in the same order:
    #: microseconds on Olympus's clock (the run report's timeline).
    faults_fired_at_us: tuple[int, ...] = ()


@frozen
class RegistrationChallenge:
    """Olympus's fresh nonce for a spare to sign with its identity key."""

    TAG: ClassVar[int] = 58
    nonce: bytes


@frozen
class RegistrationResponse:
    """
    The spare's answer: its identity key's signature over the
    L{RegistrationBinding} of the challenge's nonce.
    """

    TAG: ClassVar[int] = 59
    nonce: bytes
    signature: bytes


@frozen
class Ready:
    """
    A replica took up its position: Olympus tells clients about a
    configuration only once all of it is ready (or a step timeout passed),
    so no request or shuttle reaches a replica that is still a spare.
    """

    TAG: ClassVar[int] = 60
    configuration: int
    index: int


@frozen
class Quiesce:
    """
    Olympus, winding up a run: finish the work in flight (result shuttles
    on their way back, open checkpoints) and say so, but keep serving: what
    that work reveals may still need a reconfiguration.
    """

    TAG: ClassVar[int] = 61
    configuration: int


@frozen
class Quiescent:
    """
    A replica's answer to L{Quiesce}: nothing is in flight (C{drained}), or
    its drain deadline passed with work still in flight.
    """

    TAG: ClassVar[int] = 62
    configuration: int
    index: int
    drained: bool


# ---------------------------------------------------------------------------
# The connection handshake (twisted_bcr.net.handshake): the first frames on
# every connection, before any wire message.


@frozen
class Hello:
    """The key this end will prove it holds, and a fresh nonce."""

    TAG: ClassVar[int] = 70
    version: int
    verify_key: bytes
    nonce: bytes


@frozen
class HandshakeProof:
    """The signature over the handshake transcript (docs/SECURITY.md)."""

    TAG: ClassVar[int] = 71
    signature: bytes


#: Messages that may appear at the top of a frame.
WIRE_MESSAGES: tuple[type, ...] = (
    ClientRequest,
    ForwardedRequest,
    Shuttle,
    ResultMessage,
    ResultShuttle,
    ErrorMessage,
    CheckpointMessage,
    CompletedCheckpoint,
    Sealed,
)

#: Messages that travel only inside a L{Sealed} envelope.
SEALED_MESSAGES: tuple[type, ...] = (
    RegisterReplica,
    RegisterClient,
    GetConfiguration,
    ConfigurationReply,
    Assignment,
    ReconfigurationRequest,
    WedgeRequest,
    Wedged,
    CatchUp,
    CaughtUp,
    GetRunningState,
    RunningState,
    ResultFromOlympus,
    Shutdown,
    FinalState,
    FinishRun,
    RunReport,
    RegistrationChallenge,
    RegistrationResponse,
    Ready,
    Quiesce,
    Quiescent,
    FaultFired,
)

#: The frames of the connection handshake.
HANDSHAKE_MESSAGES: tuple[type, ...] = (Hello, HandshakeProof)

#: Things that are signed as a L{Signed} body.
SIGNED_BODIES: tuple[type, ...] = (
    Request,
    OrderStatement,
    ResultStatement,
    CheckpointStatement,
    RegistrationBinding,
)

#: Every class the codec knows, by tag.
ALL_TYPES: tuple[type, ...] = (
    (
        Operation,
        Request,
        Signed,
        OrderStatement,
        ResultStatement,
        CheckpointStatement,
        CheckpointProof,
        HistoryEntry,
        ReplicaInfo,
        ClientInfo,
        Configuration,
        ClientResult,
        RegistrationBinding,
        Placement,
    )
    + WIRE_MESSAGES
    + SEALED_MESSAGES
    + HANDSHAKE_MESSAGES
)


def message_name(message: object) -> str:
    """The protocol name of a message as used in logs and triggers (SPEC §4)."""
    return _NAMES.get(type(message), type(message).__name__)


_NAMES: dict[type, str] = {
    ClientRequest: "client_request",
    ForwardedRequest: "forwarded_request",
    Shuttle: "shuttle",
    ResultMessage: "result_message",
    ResultShuttle: "result_shuttle",
    ErrorMessage: "error",
    CheckpointMessage: "checkpoint",
    CompletedCheckpoint: "completed_checkpoint",
    RegisterReplica: "register_replica",
    RegisterClient: "register_client",
    GetConfiguration: "get_configuration",
    ConfigurationReply: "configuration",
    Assignment: "new_configuration",
    ReconfigurationRequest: "reconfiguration_request",
    WedgeRequest: "wedge_request",
    Wedged: "wedged",
    CatchUp: "catch_up",
    CaughtUp: "caught_up",
    GetRunningState: "get_running_state",
    RunningState: "running_state",
    ResultFromOlympus: "result_from_olympus",
    Shutdown: "shutdown",
    FinalState: "final_state",
    FinishRun: "finish_run",
    RunReport: "run_report",
    RegistrationChallenge: "registration_challenge",
    RegistrationResponse: "registration_response",
    Ready: "ready",
    Quiesce: "quiesce",
    Quiescent: "quiescent",
    FaultFired: "fault_fired",
    Hello: "hello",
    HandshakeProof: "handshake_proof",
}
