# -*- test-case-name: tests.test_core_replica -*-
"""
The replica state machine (SPEC §2.2, §5, §6.2, §8): pure, driven by
L{receive} and L{timer_expired}, acting only through its L{IEnvironment}.

A replica process starts as a spare: it registers its address, its fresh
replica key and its long-term identity key with Olympus, answers Olympus's
challenge with the identity key, and waits, PENDING, for an L{Assignment}
that places it at one position of one configuration.  From then on it
orders (head), checks and extends (middle, tail) shuttles, answers clients,
validates result shuttles and takes part in checkpoints.  When Olympus
retires it, it reports its final dictionary and exits.

Every message arrives with the L{Peer} the binding authenticated, and
L{Replica.ACCEPTS} says, in one table, which peer may send which message in
which mode: a shuttle only from the predecessor, a result shuttle only from
the successor, control messages only from Olympus.  Anything else is
dropped with a rate-limited log line and is never evidence of misbehaviour.

Fault injection hooks in through L{twisted_bcr.faults}; reconfiguration
(wedge, catch-up, running state) is the recovery layer's part of this class.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from attrs import evolve
from zope.interface import implementer

from twisted_bcr import codec, crypto
from twisted_bcr.core.common import (
    MAX_CLIENT_MESSAGE,
    MAX_MESSAGE,
    MAX_STRANGER_MESSAGE,
    Mode,
    ProofError,
    Rule,
    check_checkpoint_proof,
    check_request,
    check_statements,
    from_olympus,
    is_checkpoint_slot,
    replica_keys,
    replica_name,
    requesting_client,
)
from twisted_bcr.dictionary import apply_operation
from twisted_bcr.faults import NO_FAULTS, FaultHooks, FaultPlan, Registry
from twisted_bcr.interfaces import IEnvironment, IMachine, IMetrics, IMisbehave
from twisted_bcr.messages import (
    Assignment,
    CatchUp,
    CaughtUp,
    CheckpointMessage,
    CheckpointProof,
    CheckpointStatement,
    ClientRequest,
    ClientResult,
    CompletedCheckpoint,
    Configuration,
    ErrorMessage,
    FaultFired,
    FinalState,
    ForwardedRequest,
    GetRunningState,
    HistoryEntry,
    OrderStatement,
    Quiesce,
    Quiescent,
    Ready,
    ReconfigurationRequest,
    RegisterReplica,
    RegistrationBinding,
    RegistrationChallenge,
    RegistrationResponse,
    Request,
    ResultFromOlympus,
    ResultMessage,
    ResultShuttle,
    ResultStatement,
    RunningState,
    Sealed,
    Shutdown,
    Shuttle,
    Signed,
    Wedged,
    WedgeRequest,
    message_name,
)
from twisted_bcr.metrics import NO_METRICS
from twisted_bcr.peers import Peer, peer_of
from twisted_bcr.throttle import Throttle, clip

#: How many requests of one client the head lets be in the chain at once
#: (ordered here, result shuttle not yet back).  A correct client has one
#: request outstanding, but the result shuttles of several earlier ones may
#: still be on their way back to the head (the simulation's random delays
#: show two).  A client that pipelines beyond this is refused, so it
#: cannot queue everyone else's requests behind its own.
MAX_IN_FLIGHT_PER_CLIENT = 16

#: How many result shuttles a replica keeps for answering retransmissions.
DEFAULT_RESULT_CACHE_SIZE = 10_000

_DRAIN_TIMER = "drain"
_REGISTRATION_TIMER = "register"

#: A spare registers again after 1 s, then 2, 4, ... up to this (seconds).
REGISTRATION_INTERVAL_FIRST_S = 1.0
REGISTRATION_INTERVAL_MAX_S = 30.0


def drain_deadline_s(configuration: Configuration) -> float:
    """
    How long a retiring replica waits for in-flight work: one step timeout.
    Olympus waits twice that for final states, so a replica that drains
    until its deadline still reports in time.
    """
    return max(configuration.head_timeout_ms, configuration.nonhead_timeout_ms) / 1000

ClientKey = tuple[int, int]

_ALL_MODES = frozenset(Mode)
_SET_UP = frozenset({Mode.ACTIVE, Mode.IMMUTABLE})


def _from_olympus(replica: Replica, sender: Peer, message: object) -> bool:
    return sender.key == replica._olympus.key


def _from_predecessor(replica: Replica, sender: Peer, message: object) -> bool:
    return replica.index > 0 and sender.key == replica._keys[replica.index - 1]


def _from_successor(replica: Replica, sender: Peer, message: object) -> bool:
    return not replica.is_tail and sender.key == replica._keys[replica.index + 1]


def _from_chain(replica: Replica, sender: Peer, message: object) -> bool:
    return sender.key in replica._keys and sender.key != replica._key.verify_key_bytes


def _from_requesting_client(replica: Replica, sender: Peer, message: Any) -> bool:
    # A client sends only its own requests; anyone else's copy is noise.
    return replica._client_keys.get(requesting_client(message.request)) == sender.key


@implementer(IMachine)
class Replica:
    """One replica of one configuration (it starts as an unassigned spare)."""

    def __init__(
        self,
        env: IEnvironment,
        key: crypto.KeyPair,
        olympus: Peer,
        *,
        identity: crypto.KeyPair,
        verifier: crypto.Verifier | None = None,
        fault_injection: bool = False,
        faults_factory: Callable[[Replica, str], FaultHooks] | None = None,
        result_cache_size: int = DEFAULT_RESULT_CACHE_SIZE,
        metrics: IMetrics = NO_METRICS,
    ) -> None:
        """
        @param key: The fresh key this process signs statements with.
        @param olympus: Olympus's address and key.
        @param identity: The long-term key an operator admitted at Olympus;
            it signs nothing but the answer to Olympus's challenge.
        @param metrics: Where to count what happens (nothing, by default).
        """
        self._env = env
        self._metrics = metrics
        self._log = env.log
        self._key = key
        self._identity = identity
        self._olympus = olympus
        #: Olympus's boot epoch, learnt from its first message to us.
        self._olympus_epoch: bytes | None = None
        self._verifier = verifier or crypto.Verifier()
        self._fault_injection = fault_injection
        self._faults_factory = faults_factory
        self.faults: FaultHooks = NO_FAULTS
        self._result_cache_size = result_cache_size
        self._throttle = Throttle(env.now)

        self.mode = Mode.PENDING
        self.configuration: Configuration | None = None
        self.index = -1
        self.name = f"spare {env.address}"
        self.state: dict[str, str] = {}
        #: Order proofs since the last completed checkpoint, by slot.
        self.history: dict[int, HistoryEntry] = {}
        self.next_slot = 0
        self.last_executed = -1
        self.checkpoint: CheckpointProof | None = None
        self._keys: list[bytes] = []
        self._chain: list[Peer] = []
        self._client_keys: dict[int, bytes] = {}
        self._clients: dict[int, Peer] = {}
        #: (client, seq) -> slot, for every request ordered here.
        self._ordered: dict[ClientKey, int] = {}
        #: slot -> hash of the result this replica computed, until its result
        #: shuttle has been checked against it.
        self._my_result_hashes: dict[int, bytes] = {}
        self._result_cache: OrderedDict[ClientKey, ResultShuttle] = OrderedDict()
        #: Requests whose result must go to the client when the result shuttle
        #: arrives (retransmissions, §6.2 cases 3 and 5).
        self._awaiting_client: set[ClientKey] = set()
        self.last_results: dict[int, ClientResult] = {}
        #: slot -> state hash recorded right after executing a checkpoint slot.
        self._checkpoint_hashes: dict[int, bytes] = {}
        #: client -> (seq, Olympus's sealed voucher) inherited from the old
        #: configuration: that request must not be executed again.
        self._recovered: dict[int, tuple[int, Sealed]] = {}
        #: Olympus has asked us to retire; we do once the chain has drained.
        self._retiring = False
        #: Olympus asked for a Quiescent once nothing is in flight.
        self._quiescing = False
        self._registration_interval_s = REGISTRATION_INTERVAL_FIRST_S
        #: At the head: when each slot whose result is not back was ordered.
        self._ordered_at: dict[int, float] = {}

    # ------------------------------------------------------------------
    # IMachine

    def start(self) -> None:
        """Register with Olympus as a fresh spare."""
        self._log.info(
            "{name} starting, registering with Olympus at {olympus}",
            name=self.name,
            olympus=self._olympus.address,
            event="bcr.start",
            node=self.name,
            verify_key=self._key.verify_key_bytes.hex(),
            identity_key=self._identity.verify_key_bytes.hex(),
            fault_injection=self._fault_injection,
        )
        self._register()

    def _register(self) -> None:
        """
        (Re-)register as a spare.  A spare repeats this until it is assigned,
        with a growing interval: Olympus may not be up yet (daemons started
        by systemd in any order), a message may be lost, and the repetition
        tells Olympus this spare is still alive.
        """
        registration = RegisterReplica(
            self._env.address, self._key.verify_key_bytes, self._identity.verify_key_bytes
        )
        # Sealed for no particular boot of Olympus: the one that answers
        # challenges us, in its own epoch.
        self._send(self._olympus, self._seal(registration, epoch=b""), "register_replica")
        self._env.start_timer(_REGISTRATION_TIMER, self._registration_interval_s)
        self._registration_interval_s = min(
            2 * self._registration_interval_s, REGISTRATION_INTERVAL_MAX_S
        )

    def receive(self, sender: Peer, message: object) -> None:
        """Dispatch one wire message by L{ACCEPTS}."""
        rule = self._rule_for(self.ACCEPTS, sender, message, "")
        if rule is None:
            return
        if not rule.allowed(self, sender, message):
            self._drop(
                sender, f"{message_name(message)} from a peer that is not {rule.sender}",
                "not_allowed",
            )
            return
        rule.handler(self, sender, message)
        if self._quiescing and (self._drained() or self.mode is Mode.IMMUTABLE):
            self._quiescent()
        if self._retiring and self._drained():
            self._retire()

    def _rule_for(
        self, table: dict[type, Rule], sender: Peer, message: object, source: str
    ) -> Rule | None:
        """C{message}'s row in C{table} if it is handled in our mode; else dropped, None."""
        rule = table.get(type(message))
        if rule is None:
            self._drop(sender, f"unexpected {type(message).__name__}{source}")
        elif self.mode not in rule.modes:
            self._drop(sender, f"{message_name(message)} while {self.mode.value}")
        else:
            return rule
        return None

    def timer_expired(self, key: str) -> None:
        """A timer expired: C{<kind>[:<client>:<seq>]}, dispatched by L{TIMERS}."""
        kind, _, request_id = key.partition(":")
        self.TIMERS[kind](self, kind, request_id)

    def _registration_due(self, kind: str, request_id: str) -> None:
        if self.mode is Mode.PENDING:
            self._register()

    def _drain_deadline(self, kind: str, request_id: str) -> None:
        self._log.warn(
            "{name} {doing} with work in flight: results pending for slots "
            "{slots}, checkpoints pending for slots {checkpoints}",
            name=self.name, doing="retires" if self._retiring else "reports quiescent",
            slots=sorted(self._my_result_hashes),
            checkpoints=sorted(self._checkpoint_hashes),
            event="bcr.drain_timeout", node=self.name,
        )
        if self._quiescing:
            self._quiescent()
        if self._retiring:
            self._retire()

    def _result_shuttle_overdue(self, kind: str, request_id: str) -> None:
        """A retransmitted request's result shuttle did not come (§6.2 cases 3, 5)."""
        client, seq = request_id.split(":")
        self._awaiting_client.discard((int(client), int(seq)))
        self._request_reconfiguration(
            f"{kind} timeout waiting for the result shuttle of {request_id}"
        )

    def max_message_from(self, key: bytes) -> int:
        if key == self._olympus.key or key in self._keys:
            return MAX_MESSAGE
        if key in self._client_keys.values():
            return MAX_CLIENT_MESSAGE
        return MAX_STRANGER_MESSAGE

    # ------------------------------------------------------------------
    # Helpers

    def _send(self, to: Peer, message: object, kind: str, **fields: object) -> None:
        self._log.info(
            "{name} sends {message} to {to}",
            name=self.name,
            message=kind,
            to=to.address,
            event="bcr.send",
            node=self.name,
            **fields,
        )
        self._env.send(to, message)

    def _reject(self, sender: Peer, reason: str, why: str = "unexpected") -> None:
        """
        Log a message we refused after reading it; the text may be hostile.
        C{why} is the kind of refusal, for L{IMetrics.message_rejected}.
        """
        self._metrics.message_rejected(why)
        suppressed = self._throttle.allow(self._throttle_key(sender))
        if suppressed is None:
            return
        self._log.warn(
            "{name} rejected input from {peer}: {reason}{suppressed_note}",
            name=self.name,
            peer=sender.address,
            reason=clip(reason),
            suppressed=suppressed,
            suppressed_note=f" ({suppressed} similar lines suppressed)" if suppressed else "",
            event="bcr.rejected",
            node=self.name,
        )

    def _throttle_key(self, sender: Peer) -> str:
        # Per key for peers with a role here; every stranger shares one
        # allowance, since a stranger can mint keys and connections at will.
        if sender.key == self._olympus.key or sender.key in self._keys:
            return sender.key.hex()
        if sender.key in self._client_keys.values():
            return sender.key.hex()
        return "strangers"

    def _drop(self, sender: Peer, reason: str, why: str = "unexpected") -> None:
        """A message from a peer not allowed to send it: never evidence."""
        self._reject(sender, f"dropped {reason}", why)

    def _failed_check(self, sender: Peer, kind: str, reason: str) -> None:
        """
        Refuse a message whose C{kind} of signature or statement check
        failed.  Only a peer with a role here moves the verification
        counter operators alert on: a stranger's garbage is only a
        rejected message.
        """
        if self._throttle_key(sender) != "strangers":
            self._metrics.verification_failed(kind)
        self._reject(sender, reason, "verification")

    def _sign(self, statement: object) -> Signed:
        signed = crypto.sign(self._key, statement)
        self._verifier.trust_own(signed, self._key.verify_key_bytes, statement)
        return signed

    def _seal(self, message: object, epoch: bytes | None = None) -> Sealed:
        return crypto.seal(
            self._key, self._env.address,
            self.name if self.configuration is not None else "spare", message,
            recipient=self._olympus.key,
            epoch=self._olympus_epoch or b"" if epoch is None else epoch,
            configuration=self.configuration.number if self.configuration else -1,
        )

    @property
    def address(self) -> str:
        """Where this replica is reached (it registered this with Olympus)."""
        return self._env.address

    @property
    def is_head(self) -> bool:
        return self.index == 0

    @property
    def is_tail(self) -> bool:
        return self.configuration is not None and self.index == len(self._keys) - 1

    def _peer_at(self, index: int) -> Peer:
        return self._chain[index]

    def _request_reconfiguration(self, reason: str) -> None:
        """Tell Olympus this configuration cannot go on (SPEC §7)."""
        if self.configuration is None:
            return
        self._log.warn(
            "{name} requests reconfiguration: {reason}",
            name=self.name,
            reason=clip(reason, 400),
            event="bcr.reconfiguration_request",
            node=self.name,
            configuration=self.configuration.number,
        )
        self._metrics.reconfiguration_requested()
        request = ReconfigurationRequest(
            self.configuration.number, self.name, reason, ()
        )
        self._send(self._olympus, self._seal(request), "reconfiguration_request")

    def report_fault_fired(self, fired: FaultFired) -> None:
        """Tell Olympus a fault of ours fired, for the run report (SPEC §11)."""
        self._send(self._olympus, self._seal(fired), "fault_fired")

    # ------------------------------------------------------------------
    # Control plane from Olympus

    def _on_sealed(self, sender: Peer, sealed: Sealed) -> None:
        try:
            # A spare follows whichever boot of Olympus challenges or
            # assigns it (Olympus may have restarted while it waited); once
            # placed, it holds to the boot that placed it.
            inner = from_olympus(
                self._verifier, sealed, self._olympus.key, self._key.verify_key_bytes,
                None if self.mode is Mode.PENDING else self._olympus_epoch,
            )
        except (crypto.BadSignature, codec.BadMessage) as e:
            self._failed_check(sender, "sealed", f"sealed by {sealed.signer!r}: {e}")
            return
        if self.mode is Mode.PENDING:
            self._olympus_epoch = sealed.epoch
        rule = self._rule_for(self.CONTROL, sender, inner, " from Olympus")
        if rule is not None:
            rule.handler(self, sender, inner)

    def _on_challenge(self, sender: Peer, challenge: RegistrationChallenge) -> None:
        """Prove to Olympus that our admitted identity vouches for this process."""
        assert self._olympus_epoch is not None
        binding = RegistrationBinding(
            self._olympus.key, self._olympus_epoch, challenge.nonce,
            self._key.verify_key_bytes, self._env.address,
        )
        signature = self._identity.sign_bytes(codec.encode(binding))
        self._send(
            self._olympus, self._seal(RegistrationResponse(challenge.nonce, signature)),
            "registration_response",
        )

    def _on_assignment(self, sender: Peer, assignment: Assignment) -> None:
        configuration = assignment.configuration
        if not (
            0 <= assignment.index < len(configuration.replicas)
            and configuration.replicas[assignment.index].verify_key
            == self._key.verify_key_bytes
        ):
            self._reject(sender, f"assignment to position {assignment.index}, which is not ours")
            return
        if assignment.failures and (
            not self._fault_injection or self._faults_factory is None
        ):
            why = (
                "this daemon was not started with fault injection enabled"
                if not self._fault_injection
                else "it was given no way to build fault plans"
            )
            self._log.error(
                "{name} refuses an assignment carrying failures {failures!r}: {why}",
                name=self.name,
                failures=assignment.failures,
                why=why,
                event="bcr.assignment_refused",
                node=self.name,
            )
            return
        self._env.cancel_timer(_REGISTRATION_TIMER)
        self.configuration = configuration
        self.index = assignment.index
        self.name = replica_name(configuration.number, assignment.index)
        self._keys = replica_keys(configuration)
        self._chain = [peer_of(info) for info in configuration.replicas]
        self._client_keys = {c.index: c.verify_key for c in configuration.clients}
        self._clients = {c.index: peer_of(c) for c in configuration.clients}
        self.state = dict(assignment.state)
        self.next_slot = assignment.first_slot
        self.last_executed = assignment.first_slot - 1
        self._take_recovered_results(assignment.recovered)
        if self._faults_factory is not None and assignment.failures:
            try:
                self.faults = self._faults_factory(self, assignment.failures)
            except ValueError as e:
                self._log.error(
                    "{name} cannot carry out its failures {failures!r}: {why}",
                    name=self.name, failures=assignment.failures, why=str(e),
                    event="bcr.assignment_refused", node=self.name,
                )
                self.configuration = None
                return
        # The set-up of configuration 0 is not a new-configuration message
        # (SPEC §11.1); extra_op() here acts on the state just installed.
        if configuration.number > 0 and not self.faults.received("new_configuration", None):
            self._log.warn(
                "{name} ignores its new configuration and stays pending",
                name=self.name, event="bcr.ignored", node=self.name,
            )
            return
        self.mode = Mode.ACTIVE
        self._metrics.configuration(configuration.number)
        self._metrics.chain_position(self.index)
        self._log.info(
            "{name} active: configuration {configuration}, position {index} of "
            "{length}, first slot {first_slot}, {keys} keys in state",
            name=self.name,
            configuration=configuration.number,
            index=self.index,
            length=len(self._keys),
            first_slot=assignment.first_slot,
            keys=len(self.state),
            failures=assignment.failures,
            chain=[r.address for r in configuration.replicas],
            event="bcr.assigned",
            node=self.name,
        )
        self._send(
            self._olympus, self._seal(Ready(configuration.number, self.index)), "ready"
        )

    def _take_recovered_results(self, recovered: tuple[Sealed, ...]) -> None:
        """
        Olympus's vouchers for the last request the old configuration executed
        for each client: answer a resend of that request with the voucher
        instead of executing it again, and make the result our own most
        recent result statement for that client (SPEC §9.5 needs one).
        """
        assert self.configuration is not None
        for sealed in recovered:
            try:
                # Sealed for the client it is about, which the new chain
                # hands it to when it resends (SPEC §9.6).
                voucher = from_olympus(
                    self._verifier, sealed, self._olympus.key, sealed.recipient,
                    self._olympus_epoch,
                )
                if not isinstance(voucher, ResultFromOlympus) or not voucher.statements:
                    raise codec.BadMessage(f"unexpected {type(voucher).__name__}")
                if self._client_keys.get(voucher.client) != sealed.recipient:
                    raise codec.BadMessage(f"voucher for client {voucher.client} sealed for another")
                vouched = codec.decode(voucher.statements[0].body, ResultStatement)
                assert isinstance(vouched, ResultStatement)
            except (crypto.BadSignature, codec.BadMessage) as e:
                self._failed_check(self._olympus, "recovered_result", f"recovered result: {e}")
                continue
            own = self._sign(
                ResultStatement(
                    self.configuration.number, voucher.slot, voucher.client, voucher.seq,
                    vouched.operation, crypto.result_hash(voucher.result),
                )
            )
            self.last_results[voucher.client] = ClientResult(
                voucher.client, voucher.seq, voucher.result, own
            )
            self._recovered[voucher.client] = (voucher.seq, sealed)

    # ------------------------------------------------------------------
    # Reconfiguration (SPEC §9.2, §9.5, §9.7)

    def _from_current_olympus(self, sender: Peer, kind: str, configuration: int) -> bool:
        """Is an Olympus message of type C{kind} for our configuration?"""
        if self.mode is Mode.PENDING:
            # Never set up (or its new_configuration was dropped, SPEC §11.2):
            # a PENDING replica ignores wedge requests and what follows (§9.2).
            self._reject(sender, f"{kind} while pending")
            return False
        if self.configuration is None or configuration != self.configuration.number:
            self._reject(sender, f"{kind} for configuration {configuration}")
            return False
        return True

    def _on_wedge_request(self, sender: Peer, message: WedgeRequest) -> None:
        if not self.faults.received("wedge_request", None):
            return
        if not self._from_current_olympus(sender, "wedge_request", message.configuration):
            return
        assert self.configuration is not None
        self.mode = Mode.IMMUTABLE
        self._metrics.wedged()
        # Results still on their way are the reconfiguration's now.
        self._ordered_at.clear()
        for client_key in list(self._awaiting_client):
            self._stop_awaiting(client_key)
        history = self.faults.tamper(
            "wedged", tuple(self.history[slot] for slot in sorted(self.history))
        )
        checkpoint_slot = self.checkpoint.slot if self.checkpoint is not None else None
        self._log.info(
            "{name} is wedged: immutable; sends its history of {length} entries "
            "after checkpoint slot {checkpoint}",
            name=self.name, length=len(history), checkpoint=checkpoint_slot,
            slots=[entry.slot for entry in history], event="bcr.wedged", node=self.name,
        )
        wedged = Wedged(self.configuration.number, self.index, history, self.checkpoint)
        self._send(self._olympus, self._seal(wedged), "wedged")

    def _on_catch_up(self, sender: Peer, message: CatchUp) -> None:
        if not self.faults.received("catch_up", None):
            return
        if not self._from_current_olympus(sender, "catch_up", message.configuration):
            return
        assert self.configuration is not None
        executed: list[int] = []
        executed_before = self.last_executed
        for entry in message.entries:
            # Exactly the list Olympus sends, on top of our state (SPEC §9.5):
            # Olympus built it from our wedged history, so a replica that hid
            # executed slots from it executes them again and its state hash
            # gives it away.  Only a hole is refused.
            expected = executed_before + 1 if not executed else executed[-1] + 1
            if entry.slot > expected or (executed and entry.slot != expected):
                self._log.warn(
                    "{name} cannot catch up: slot {slot} after {last}",
                    name=self.name, slot=entry.slot, last=expected - 1,
                    event="bcr.catch_up_hole", node=self.name,
                )
                break
            if entry.slot <= executed_before:
                self._log.warn(
                    "{name} is sent slot {slot} to catch up on, but executed it already",
                    name=self.name, slot=entry.slot,
                    event="bcr.catch_up_again", node=self.name,
                )
            # Olympus checked the request and its order proof.
            request = codec.decode(entry.request.body, Request)
            assert isinstance(request, Request)
            result = apply_operation(
                self.state, request.operation.name, request.operation.args
            )
            self._metrics.slot_executed()
            self.last_executed = entry.slot
            self.history[entry.slot] = entry
            statement = self._sign(
                ResultStatement(
                    self.configuration.number, entry.slot, request.client, request.seq,
                    request.operation, crypto.result_hash(result),
                )
            )
            self.last_results[request.client] = ClientResult(
                request.client, request.seq, result, statement
            )
            executed.append(entry.slot)
        state_hash = crypto.state_hash(self.state)
        self._log.info(
            "{name} caught up on slots {slots}: state hash {hash}",
            name=self.name, slots=executed, hash=state_hash.hex(),
            event="bcr.caught_up", node=self.name,
        )
        caught_up = CaughtUp(
            self.configuration.number, self.index, state_hash,
            tuple(self.last_results[client] for client in sorted(self.last_results)),
        )
        self._send(self._olympus, self._seal(caught_up), "caught_up")

    def _on_get_running_state(self, sender: Peer, message: GetRunningState) -> None:
        if not self.faults.received("get_running_state", None):
            return
        if not self._from_current_olympus(sender, "get_running_state", message.configuration):
            return
        assert self.configuration is not None
        running = RunningState(self.configuration.number, self.index, dict(self.state))
        self._send(self._olympus, self._seal(running), "running_state",
                   keys=len(self.state))

    def _on_quiesce(self, sender: Peer, quiesce: Quiesce) -> None:
        if not self._from_current_olympus(sender, "quiesce", quiesce.configuration):
            return
        assert self.configuration is not None
        if self._drained() or self.mode is Mode.IMMUTABLE:
            # Wedged: whatever is still in flight is the reconfiguration's.
            self._quiescent()
            return
        self._quiescing = True
        self._drain_before("reports quiescent", "bcr.quiescing")

    def _quiescent(self) -> None:
        """Tell Olympus that this replica's work in flight is done (or overdue)."""
        assert self.configuration is not None
        self._quiescing = False
        if not self._retiring:
            self._env.cancel_timer(_DRAIN_TIMER)
        quiescent = Quiescent(self.configuration.number, self.index, self._drained())
        self._send(self._olympus, self._seal(quiescent), "quiescent",
                   drained=quiescent.drained)

    def _on_shutdown(self, sender: Peer, shutdown: Shutdown) -> None:
        if self.configuration is None:
            self._log.info(
                "{name} retired unassigned", name=self.name,
                event="bcr.retired", node=self.name,
            )
            self._env.exit(0, "retired unassigned by Olympus")
            return
        number = self.configuration.number
        if shutdown.configuration != number:
            self._log.warn(
                "{name} ignores shutdown for configuration {c}",
                name=self.name, c=shutdown.configuration,
                event="bcr.ignored", node=self.name,
            )
            return
        if self._retiring:
            return
        self._retiring = True
        if self._drained() or self.mode is Mode.IMMUTABLE:
            # A wedged replica has nothing left in flight that matters.
            self._retire()
            return
        self._drain_before("retiring", "bcr.draining")

    def _drain_before(self, doing: str, event: str) -> None:
        """
        Let the work already in the chain finish first: result shuttles on
        their way back and checkpoints not yet completed (a run's last
        checkpoint is started only when the last result is back at the
        head).  The deadline keeps a broken chain from holding us forever.
        """
        assert self.configuration is not None
        self._log.info(
            "{name} {doing} once results for slots {slots} and checkpoints for "
            "slots {checkpoints} are done",
            name=self.name, doing=doing, slots=sorted(self._my_result_hashes),
            checkpoints=sorted(self._checkpoint_hashes), event=event, node=self.name,
        )
        self._env.start_timer(_DRAIN_TIMER, drain_deadline_s(self.configuration))

    def _drained(self) -> bool:
        """No result shuttle is still owed to us and no checkpoint is open."""
        return not self._my_result_hashes and not self._checkpoint_hashes

    def _retire(self) -> None:
        """Report the final dictionary to Olympus and exit (SPEC §9.7, §13)."""
        assert self.configuration is not None
        self._retiring = False
        self._env.cancel_timer(_DRAIN_TIMER)
        self._log.info(
            "{name} shutting down; final dictionary {state!r}, last slot {last_slot}",
            name=self.name,
            state=dict(sorted(self.state.items())),
            last_slot=self.last_executed,
            event="bcr.final_state",
            node=self.name,
        )
        final = FinalState(
            self.configuration.number, self.index, dict(self.state), self.last_executed
        )
        self._send(self._olympus, self._seal(final), "final_state")
        self._env.exit(0, "retired by Olympus")

    # ------------------------------------------------------------------
    # Requests from clients and forwarded by non-heads (§5 step 2, §6.2)

    def _check_client_request(self, sender: Peer, signed: Signed) -> Request | None:
        try:
            return check_request(self._verifier, signed, self._client_keys)
        except (crypto.BadSignature, codec.BadMessage) as e:
            # Bad authentication proves nothing about anyone: drop it.
            self._failed_check(sender, "request", f"client request: {e}")
            return None

    def _on_client_request(self, sender: Peer, message: ClientRequest) -> None:
        self._metrics.request_received("client")
        # Counted before it is checked: invalid messages count too (SPEC §11.1).
        if not self.faults.received("client_request", requesting_client(message.request)):
            return
        request = self._check_client_request(sender, message.request)
        if request is None:
            return
        self._handle_request(sender, message.request, request, forwarded=False)

    def _on_forwarded_request(self, sender: Peer, message: ForwardedRequest) -> None:
        self._metrics.request_received("forwarded")
        if not self.faults.received("forwarded_request", requesting_client(message.request)):
            return
        request = self._check_client_request(sender, message.request)
        if request is None:
            return
        self._log.info(
            "{name} received forwarded_request {request_id} from {peer}",
            name=self.name,
            request_id=request.request_id,
            peer=sender.address,
            event="bcr.receive",
            message="forwarded_request",
            node=self.name,
        )
        if not self.is_head:
            self._reject(sender, "forwarded request at a non-head")
            return
        self._handle_request(sender, message.request, request, forwarded=True)

    def _handle_request(
        self, sender: Peer, signed: Signed, request: Request, forwarded: bool
    ) -> None:
        """The cases of SPEC §6.2, in order; a first-time request is case 4."""
        client_key = (request.client, request.seq)
        recovered = self._recovered.get(request.client)
        if recovered is not None and request.seq <= recovered[0]:
            if request.seq == recovered[0]:
                # Executed by the old configuration: exactly once (SPEC §9.7).
                self._log_case(request, "result recovered by Olympus")
                self._send(
                    self._clients[request.client], recovered[1],
                    "result_from_olympus", request_id=request.request_id,
                )
            else:
                self._log_case(request, "older than a recovered result; ignored")
            return
        cached = self._result_cache.get(client_key)
        if cached is not None:
            self._log_case(request, "cached result")
            self._send_result_to_client(cached, request)
            return
        if self.mode is Mode.IMMUTABLE:
            self._log_case(request, "immutable")
            assert self.configuration is not None
            error = ErrorMessage(
                self.configuration.number, request.client, request.seq, "immutable"
            )
            self._send(self._clients[request.client], error, "error",
                       request_id=request.request_id)
            return
        if self._stale(request):
            # Its result is neither cached nor still on its way, so waiting
            # for it could only end in a timeout: a reconfiguration that a
            # client could force at will by resending an old request.
            self._log_case(request, "executed here, result no longer cached; ignored")
            return
        if self.is_head:
            if client_key in self._ordered:
                self._log_case(request, "head, already ordered")
                self._await_result_shuttle(client_key, "head")
                return
            if self._in_flight(request.client) >= MAX_IN_FLIGHT_PER_CLIENT:
                # Refused, not ordered: a correct client only gets here if
                # result shuttles are very late, and then retransmits.
                self._reject(
                    sender,
                    f"request {request.request_id}: {MAX_IN_FLIGHT_PER_CLIENT} requests "
                    f"of client {request.client} are still in the chain",
                    "over_limit",
                )
                return
            if forwarded:
                self._log_case(request, "head, new")
            self._order(sender, signed, request, forwarded)
            return
        self._log_case(request, "non-head, forward")
        self._await_result_shuttle(client_key, "nonhead")
        self._send(
            self._peer_at(0),
            ForwardedRequest(signed),
            "forwarded_request",
            request_id=request.request_id,
        )

    def _in_flight(self, client: int) -> int:
        """How many of C{client}'s requests this replica executed and awaits the result shuttle of."""
        count = 0
        for slot in self._my_result_hashes:
            entry = self.history.get(slot)
            if entry is not None and requesting_client(entry.request) == client:
                count += 1
        return count

    def _stale(self, request: Request) -> bool:
        """
        Did this replica execute C{request} (or a later request of its
        client) with no result shuttle for it still to come?  A correct
        client has one request outstanding and never resends an older one;
        its latest result stays in the cache unless many thousand other
        results came after it (docs/DECISIONS.md).
        """
        latest = self.last_results.get(request.client)
        if latest is None or request.seq > latest.seq:
            return False
        if request.seq < latest.seq:
            return True
        slot = self._ordered.get((request.client, request.seq))
        return slot is None or slot not in self._my_result_hashes

    def _log_case(self, request: Request, case: str) -> None:
        self._log.info(
            "{name} received {request_id} again: retransmission case '{case}'",
            name=self.name,
            case=case,
            request_id=request.request_id,
            event="bcr.retransmission",
            node=self.name,
        )

    def _await_result_shuttle(self, client_key: ClientKey, kind: str) -> None:
        assert self.configuration is not None
        if client_key in self._awaiting_client:
            # One timer per (replica, request), and a repeated retransmission
            # must not restart it: a client retransmitting more often than
            # the timeout would otherwise postpone it forever (SPEC §6.2).
            return
        self._awaiting_client.add(client_key)
        timeout_ms = (
            self.configuration.head_timeout_ms
            if kind == "head"
            else self.configuration.nonhead_timeout_ms
        )
        self._env.start_timer(f"{kind}:{client_key[0]}:{client_key[1]}", timeout_ms / 1000)

    def _stop_awaiting(self, client_key: ClientKey) -> bool:
        """Stop the timer of a request whose result is here; was one running?"""
        if client_key not in self._awaiting_client:
            return False
        self._awaiting_client.discard(client_key)
        for kind in ("head", "nonhead"):
            self._env.cancel_timer(f"{kind}:{client_key[0]}:{client_key[1]}")
        return True

    def _order(self, sender: Peer, signed: Signed, request: Request, forwarded: bool) -> None:
        """The head assigns the next slot and starts the shuttle (§5 step 2)."""
        slot = self.next_slot
        self.next_slot += 1
        self._metrics.slot_ordered()
        self._ordered_at[slot] = self._env.now()
        received = "forwarded_request" if forwarded else "client_request"
        self._execute_and_pass_on(sender, received, signed, request, slot, (), ())

    # ------------------------------------------------------------------
    # Forward shuttles (§5 steps 3 and 4)

    def _on_shuttle(self, sender: Peer, shuttle: Shuttle) -> None:
        if not self.faults.received("shuttle", requesting_client(shuttle.request)):
            return
        try:
            request = check_request(self._verifier, shuttle.request, self._client_keys)
        except (crypto.BadSignature, codec.BadMessage) as e:
            self._failed_check(sender, "request", f"shuttle for slot {shuttle.slot}: {e}")
            self._request_reconfiguration(
                f"shuttle for slot {shuttle.slot} carries a request no replica may order: {e}"
            )
            return
        if self.mode is Mode.IMMUTABLE:
            self._log.info(
                "{name} received shuttle {request_id} slot {slot} from {peer} but "
                "is immutable and does not execute it",
                name=self.name, request_id=request.request_id, slot=shuttle.slot,
                peer=sender.address, event="bcr.ignored", message="shuttle", node=self.name,
            )
            return
        problem = self._shuttle_problem(shuttle, request)
        if problem is not None:
            self._failed_check(sender, "shuttle", f"shuttle for slot {shuttle.slot}: {problem}")
            self._request_reconfiguration(f"shuttle for slot {shuttle.slot}: {problem}")
            return
        self._execute_and_pass_on(
            sender, "shuttle", shuttle.request, request, shuttle.slot,
            shuttle.order_proof, shuttle.result_proof,
        )

    def _shuttle_problem(self, shuttle: Shuttle, request: Request) -> str | None:
        """What is wrong with a shuttle arriving at this position, if anything."""
        assert self.configuration is not None
        number = self.configuration.number
        if shuttle.configuration != number:
            return f"names configuration {shuttle.configuration}, this is {number}"
        slot = shuttle.slot
        if slot <= self.last_executed:
            existing = self.history.get(slot)
            if existing is not None and existing.request == shuttle.request:
                return "duplicate of an executed slot"
            return f"slot {slot} already ordered with a different operation"
        if slot != self.last_executed + 1:
            return f"hole: slot {slot} after {self.last_executed}"
        if len(shuttle.order_proof) != self.index:
            return f"order proof has {len(shuttle.order_proof)} statements, expected {self.index}"
        if len(shuttle.result_proof) != self.index:
            return f"result proof has {len(shuttle.result_proof)} statements, expected {self.index}"
        expected_order = OrderStatement(
            number, slot, request.client, request.seq, request.operation
        )
        try:
            orders = check_statements(
                self._verifier, shuttle.order_proof, self._keys, OrderStatement
            )
            results = check_statements(
                self._verifier, shuttle.result_proof, self._keys, ResultStatement
            )
        except ProofError as e:
            return str(e)
        for position, order in enumerate(orders):
            if order != expected_order:
                return f"order statement {position} contradicts the signed request"
        for position, result in enumerate(results):
            if (
                result.configuration, result.slot, result.client, result.seq,
                result.operation,
            ) != (number, slot, request.client, request.seq, request.operation):
                return f"result statement {position} is for another operation"
        return None

    def _execute_and_pass_on(
        self,
        sender: Peer,
        received: str,
        signed: Signed,
        request: Request,
        slot: int,
        order_proof: tuple[Signed, ...],
        result_proof: tuple[Signed, ...],
    ) -> None:
        """
        Execute slot C{slot}, add our statements, and hand the shuttle on.
        This is the hot path, so receiving, executing and sending are one
        log event (SPEC §13 asks for every field, not for separate lines).
        """
        assert self.configuration is not None
        number = self.configuration.number
        result = apply_operation(self.state, request.operation.name, request.operation.args)
        self._metrics.slot_executed()
        result_hash = crypto.result_hash(result)
        for position, signed_result in enumerate(result_proof):
            statement = self._verifier.verify(signed_result, self._keys[position], ResultStatement)
            if statement.result_hash != result_hash:
                # Undo is impossible, but we sign and forward nothing.
                self.last_executed = slot
                reason = (
                    f"result statement {position} for slot {slot} disagrees "
                    f"with our result {result!r}"
                )
                self._metrics.verification_failed("result_statement")
                self._log.warn(
                    "{name} {reason}", name=self.name, reason=reason,
                    event="bcr.misbehaviour", node=self.name,
                )
                self._request_reconfiguration(reason)
                return
        self.last_executed = slot
        client_key = (request.client, request.seq)
        self._ordered[client_key] = slot
        order_statement = OrderStatement(
            number, slot, request.client, request.seq, request.operation
        )
        result_statement = ResultStatement(
            number, slot, request.client, request.seq, request.operation, result_hash
        )
        signed_order_statement = self._sign(order_statement)
        signed_result_statement = self._sign(result_statement)
        # A failure changes the statements that go out (SPEC §11.2), not
        # this replica's own records: its history and most recent result
        # statement keep what it really signed.
        sent_order_statement, sent_result_statement = self.faults.tamper(
            "own_statements", (signed_order_statement, signed_result_statement)
        )
        self.history[slot] = HistoryEntry(
            slot, signed, order_proof + (signed_order_statement,)
        )
        order_proof = order_proof + (sent_order_statement,)
        result_proof = result_proof + (sent_result_statement,)
        self._my_result_hashes[slot] = result_hash
        self.last_results[request.client] = ClientResult(
            request.client, request.seq, result, signed_result_statement
        )
        if is_checkpoint_slot(slot, self.configuration.checkpt_interval):
            self._checkpoint_hashes[slot] = crypto.state_hash(self.state)
        if not self.is_tail:
            successor = self._peer_at(self.index + 1)
            self._env.send(
                successor, Shuttle(number, slot, signed, order_proof, result_proof)
            )
            self._log_step(sender, received, request, slot, result, f"shuttle to {successor}")
            return
        # At the tail the same (maybe tampered) proof goes to the client and back.
        result_proof = self.faults.tamper("result_proof", result_proof)
        result_shuttle = ResultShuttle(number, slot, signed, result, result_proof)
        # To the client first, then the result shuttle (SPEC §5 step 4).  The
        # result message has an event of its own: perform900 counts them.
        self._send_result_to_client(result_shuttle, request)
        # A tail that forwarded a retransmission of this request has just
        # answered the client itself: its non-head timer must not fire.
        self._stop_awaiting(client_key)
        self._cache_result(client_key, result_shuttle)
        self._my_result_hashes.pop(slot, None)
        sent = "the result to the client"
        if not self.is_head:
            predecessor = self._peer_at(self.index - 1)
            self._env.send(predecessor, result_shuttle)
            sent += f", result_shuttle to {predecessor}"
        self._log_step(sender, received, request, slot, result, sent)
        if self.is_head:
            self._result_reached_head(slot)

    def _log_step(
        self, sender: Peer, received: str, request: Request, slot: int, result: str,
        sent: str,
    ) -> None:
        self._log.info(
            "{name} received {received} {request_id} from {peer}, executed it at "
            "slot {slot}: {operation} -> {result!r}; sent {sent}",
            name=self.name, received=received, request_id=request.request_id,
            peer=sender.address, slot=slot, operation=str(request.operation), result=result,
            sent=sent, event="bcr.execute", message=received, node=self.name,
        )

    @staticmethod
    def _result_message(result_shuttle: ResultShuttle, request: Request) -> ResultMessage:
        return ResultMessage(
            result_shuttle.configuration,
            result_shuttle.slot,
            request.client,
            request.seq,
            result_shuttle.result,
            result_shuttle.result_proof,
        )

    def _send_result_to_client(self, result_shuttle: ResultShuttle, request: Request) -> None:
        # Any result message, also one answered from the cache, is "the next
        # outgoing result message" of SPEC §11.2.
        message = self._result_message(result_shuttle, request)
        proof = self.faults.tamper("result_proof", message.result_proof)
        if proof is not message.result_proof:
            message = evolve(message, result_proof=proof)
        self._metrics.result_sent()
        self._send(
            self._clients[request.client],
            self.faults.tamper("result_message", message),
            "result_message",
            request_id=request.request_id,
            slot=result_shuttle.slot,
            result=result_shuttle.result,
        )

    def _cache_result(self, client_key: ClientKey, result_shuttle: ResultShuttle) -> None:
        self._result_cache[client_key] = result_shuttle
        if len(self._result_cache) > self._result_cache_size:
            self._result_cache.popitem(last=False)

    # ------------------------------------------------------------------
    # Result shuttles (§5 step 5)

    def _on_result_shuttle(self, sender: Peer, shuttle: ResultShuttle) -> None:
        if not self.faults.received("result_shuttle", requesting_client(shuttle.request)):
            return
        try:
            request = check_request(self._verifier, shuttle.request, self._client_keys)
        except (crypto.BadSignature, codec.BadMessage) as e:
            self._failed_check(
                sender, "request", f"result shuttle for slot {shuttle.slot}: {e}"
            )
            return
        if self.mode is Mode.IMMUTABLE:
            self._log.info(
                "{name} received result_shuttle {request_id} slot {slot} from {peer} "
                "but is immutable", name=self.name, request_id=request.request_id,
                slot=shuttle.slot, peer=sender.address, event="bcr.ignored",
                message="result_shuttle", node=self.name,
            )
            return
        problem = self._result_shuttle_problem(shuttle, request)
        if problem is not None:
            self._failed_check(
                sender, "result_shuttle", f"result shuttle for slot {shuttle.slot}: {problem}"
            )
            self._request_reconfiguration(
                f"result shuttle for slot {shuttle.slot}: {problem}"
            )
            return
        client_key = (request.client, request.seq)
        self._my_result_hashes.pop(shuttle.slot, None)
        self._cache_result(client_key, shuttle)
        if self._stop_awaiting(client_key):
            self._send_result_to_client(shuttle, request)
        sent = "nothing (head)"
        if not self.is_head:
            # What goes out may carry a tampered proof; the cache keeps what
            # arrived.
            outgoing_proof = self.faults.tamper("result_proof", shuttle.result_proof)
            if outgoing_proof is not shuttle.result_proof:
                shuttle = evolve(shuttle, result_proof=outgoing_proof)
            predecessor = self._peer_at(self.index - 1)
            self._env.send(predecessor, shuttle)
            sent = f"result_shuttle to {predecessor}"
        # One event for the hot path: received, checked, cached, passed on.
        self._log.info(
            "{name} received result_shuttle {request_id} slot {slot} from {peer}, "
            "checked and cached it; sent {sent}",
            name=self.name, request_id=request.request_id, slot=shuttle.slot,
            peer=sender.address, sent=sent, event="bcr.result_shuttle",
            message="result_shuttle", node=self.name,
        )
        if self.is_head:
            self._result_reached_head(shuttle.slot)

    def _result_shuttle_problem(
        self, shuttle: ResultShuttle, request: Request
    ) -> str | None:
        assert self.configuration is not None
        number = self.configuration.number
        if shuttle.configuration != number:
            return f"names configuration {shuttle.configuration}, this is {number}"
        length = len(self._keys)
        if len(shuttle.result_proof) != length:
            return f"result proof has {len(shuttle.result_proof)} of {length} statements"
        own_hash = self._my_result_hashes.get(shuttle.slot)
        if own_hash is None:
            existing = self.history.get(shuttle.slot)
            if existing is None or existing.request != shuttle.request:
                return f"slot {shuttle.slot} was not executed here for this request"
            return "duplicate result shuttle"
        result_hash = crypto.result_hash(shuttle.result)
        if result_hash != own_hash:
            return f"result {shuttle.result!r} differs from the result computed here"
        expected_result = ResultStatement(
            number, shuttle.slot, request.client, request.seq, request.operation,
            own_hash,
        )
        try:
            results = check_statements(
                self._verifier, shuttle.result_proof, self._keys, ResultStatement
            )
        except ProofError as e:
            return str(e)
        for position, statement in enumerate(results):
            if statement != expected_result:
                return f"result statement {position} contradicts the result"
        return None

    # ------------------------------------------------------------------
    # Checkpoints (§8)

    def _result_reached_head(self, slot: int) -> None:
        """The head starts a checkpoint once a checkpoint slot's result is back."""
        assert self.configuration is not None
        ordered_at = self._ordered_at.pop(slot, None)
        if ordered_at is not None:
            self._metrics.shuttle_completed(self._env.now() - ordered_at)
        if not is_checkpoint_slot(slot, self.configuration.checkpt_interval):
            return
        state_hash = self._checkpoint_hashes.get(slot)
        if state_hash is None:
            return
        statement = CheckpointStatement(self.configuration.number, slot, state_hash)
        proof = CheckpointProof(self.configuration.number, slot, (self._sign(statement),))
        self._log.info(
            "{name} starts checkpoint at slot {slot}",
            name=self.name, slot=slot, event="bcr.checkpoint_start", node=self.name,
            state_hash=state_hash.hex(),
        )
        # The head counts the checkpoint it initiates as a received one (§8).
        if not self.faults.received("checkpoint", None):
            return
        self._pass_checkpoint_on(proof)

    def _pass_checkpoint_on(self, proof: CheckpointProof) -> None:
        if not self.is_tail:
            self._send(
                self._peer_at(self.index + 1), CheckpointMessage(proof), "checkpoint",
                slot=proof.slot,
            )
            return
        # The tail counts the completed proof it creates as a received one (§8).
        if not self.faults.received("completed_checkpoint", None):
            return
        self._complete_checkpoint(proof)

    def _on_checkpoint(self, sender: Peer, message: CheckpointMessage) -> None:
        if not self.faults.received("checkpoint", None):
            return
        proof = message.proof
        self._log.info(
            "{name} received checkpoint for slot {slot} with {count} statements",
            name=self.name, slot=proof.slot, count=len(proof.statements),
            event="bcr.receive", message="checkpoint", node=self.name,
        )
        if self.mode is Mode.IMMUTABLE:
            return
        problem = self._checkpoint_problem(proof, self.index)
        if problem is not None:
            self._failed_check(sender, "checkpoint", f"checkpoint for slot {proof.slot}: {problem}")
            self._request_reconfiguration(f"checkpoint for slot {proof.slot}: {problem}")
            return
        assert self.configuration is not None
        statement = CheckpointStatement(
            self.configuration.number, proof.slot, self._checkpoint_hashes[proof.slot]
        )
        extended = CheckpointProof(
            proof.configuration, proof.slot, proof.statements + (self._sign(statement),)
        )
        self._pass_checkpoint_on(extended)

    def _checkpoint_problem(self, proof: CheckpointProof, required: int) -> str | None:
        assert self.configuration is not None
        if proof.configuration != self.configuration.number:
            return f"names configuration {proof.configuration}"
        state_hash = self._checkpoint_hashes.get(proof.slot)
        if state_hash is None:
            return f"slot {proof.slot} is not a checkpoint slot executed here"
        try:
            check_checkpoint_proof(self._verifier, proof, self._keys, required, state_hash)
        except ProofError as e:
            return str(e)
        return None

    def _on_completed_checkpoint(self, sender: Peer, message: CompletedCheckpoint) -> None:
        if not self.faults.received("completed_checkpoint", None):
            return
        proof = message.proof
        self._log.info(
            "{name} received completed_checkpoint for slot {slot}",
            name=self.name, slot=proof.slot,
            event="bcr.receive", message="completed_checkpoint", node=self.name,
        )
        if self.mode is Mode.IMMUTABLE:
            return
        problem = self._checkpoint_problem(proof, len(self._keys))
        if problem is not None:
            self._failed_check(
                sender, "completed_checkpoint",
                f"completed checkpoint for slot {proof.slot}: {problem}",
            )
            self._request_reconfiguration(
                f"completed checkpoint for slot {proof.slot}: {problem}"
            )
            return
        self._complete_checkpoint(proof)

    def _complete_checkpoint(self, proof: CheckpointProof) -> None:
        """Truncate the history up to the checkpoint and pass the proof back."""
        dropped = [slot for slot in self.history if slot <= proof.slot]
        for slot in dropped:
            del self.history[slot]
        for slot in [s for s in self._checkpoint_hashes if s <= proof.slot]:
            del self._checkpoint_hashes[slot]
        self.checkpoint = proof
        self._metrics.checkpoint_completed()
        self._log.info(
            "{name} completed checkpoint at slot {slot}: history truncated by "
            "{dropped} entries, {kept} kept",
            name=self.name, slot=proof.slot, dropped=len(dropped),
            kept=len(self.history), event="bcr.checkpoint_completed", node=self.name,
        )
        if not self.is_head:
            outgoing = evolve(
                proof, statements=self.faults.tamper("completed_checkpoint", proof.statements)
            )
            self._send(
                self._peer_at(self.index - 1), CompletedCheckpoint(outgoing),
                "completed_checkpoint", slot=proof.slot,
            )

    #: What this replica accepts, from whom, in which modes (docs/SECURITY.md).
    #: Data-plane messages reach a replica only once it is set up: Olympus
    #: announces a configuration to clients only when its replicas are
    #: ready, so nothing legitimate arrives earlier.
    ACCEPTS: dict[type, Rule] = {
        Sealed: Rule("Olympus", _from_olympus, _ALL_MODES, _on_sealed),
        ClientRequest: Rule(
            "the client that signed it", _from_requesting_client, _SET_UP, _on_client_request
        ),
        ForwardedRequest: Rule("a chain member", _from_chain, _SET_UP, _on_forwarded_request),
        Shuttle: Rule("our predecessor", _from_predecessor, _SET_UP, _on_shuttle),
        ResultShuttle: Rule("our successor", _from_successor, _SET_UP, _on_result_shuttle),
        CheckpointMessage: Rule("our predecessor", _from_predecessor, _SET_UP, _on_checkpoint),
        CompletedCheckpoint: Rule(
            "our successor", _from_successor, _SET_UP, _on_completed_checkpoint
        ),
    }

    #: Every timer by kind: registration, drain deadline, and the head's and
    #: non-heads' wait for a result shuttle (keys C{head:<client>:<seq>}).
    TIMERS: dict[str, Callable[[Replica, str, str], None]] = {
        _REGISTRATION_TIMER: _registration_due,
        _DRAIN_TIMER: _drain_deadline,
        "head": _result_shuttle_overdue,
        "nonhead": _result_shuttle_overdue,
    }

    #: What Olympus may tell this replica, in which modes.  Wedge requests,
    #: catch-up and running-state queries are taken in every mode: a
    #: replica that ignored its new configuration still counts them for its
    #: fault triggers (SPEC §11.1) and then refuses them itself.
    CONTROL: dict[type, Rule] = {
        RegistrationChallenge: Rule(
            "Olympus", _from_olympus, frozenset({Mode.PENDING}), _on_challenge
        ),
        Assignment: Rule("Olympus", _from_olympus, frozenset({Mode.PENDING}), _on_assignment),
        Quiesce: Rule("Olympus", _from_olympus, _SET_UP, _on_quiesce),
        Shutdown: Rule("Olympus", _from_olympus, _ALL_MODES, _on_shutdown),
        WedgeRequest: Rule("Olympus", _from_olympus, _ALL_MODES, _on_wedge_request),
        CatchUp: Rule("Olympus", _from_olympus, _ALL_MODES, _on_catch_up),
        GetRunningState: Rule("Olympus", _from_olympus, _ALL_MODES, _on_get_running_state),
    }


@implementer(IMisbehave)
class ReplicaMisbehaviour:
    """
    The narrow API failures act through (L{IMisbehave}), over one replica.
    Fault plugins get this object, never the replica itself.
    """

    def __init__(self, replica: Replica) -> None:
        self._replica = replica
        #: The fault plan this serves, which counts drops and keeps armings.
        self.plan: FaultPlan | None = None

    @property
    def name(self) -> str:
        return self._replica.name

    @property
    def is_head(self) -> bool:
        return self._replica.is_head

    @property
    def is_tail(self) -> bool:
        return self._replica.is_tail

    @property
    def t(self) -> int:
        assert self._replica.configuration is not None
        return self._replica.configuration.t

    @property
    def index(self) -> int:
        return self._replica.index

    @property
    def configuration(self) -> int:
        assert self._replica.configuration is not None
        return self._replica.configuration.number

    def crash(self) -> None:
        assert self.plan is not None
        self.plan.drop()
        self._replica._env.exit(CRASH_STATUS, "crash() fault")

    def sleep(self, seconds: float) -> None:
        self._replica._env.stall(seconds)

    def drop(self) -> None:
        assert self.plan is not None
        self.plan.drop()

    def apply(self, name: str, args: tuple[str, ...]) -> None:
        result = apply_operation(self._replica.state, name, args)
        self.log(f"applied {name}{args} outside the protocol -> {result!r}")

    def skip_slot(self) -> None:
        self._replica.next_slot += 1
        self.log(f"skipped a slot: the next one is {self._replica.next_slot}")

    def arm(self, text: str, point: str, tamper: Any) -> None:
        assert self.plan is not None
        self.plan.arm(text, point, tamper)

    def sign(self, statement: object) -> Signed:
        return self._replica._sign(statement)

    def corrupt(self, signed: Any) -> Any:
        return crypto.corrupt(signed)

    def decode(self, signed: Any) -> object:
        return codec.decode(signed.body)

    def log(self, message: str) -> None:
        self._replica._log.info(
            "{name} {message}", name=self.name, message=message,
            event="bcr.misbehaving", node=self.name,
        )


#: The exit status of a crash() fault: os._exit(-1), as the course did.
CRASH_STATUS = 255


def fault_plan_factory(registry: Registry) -> Callable[[Replica, str], FaultHooks]:
    """
    What the bindings give a replica started with fault injection on: it
    turns the failures text of an assignment into that replica's plan.

    @raise ValueError: (from the factory) the text names unknown faults.
    """

    def make(replica: Replica, text: str) -> FaultHooks:
        misbehave = ReplicaMisbehaviour(replica)
        plan = FaultPlan.from_text(
            text, registry, misbehave, replica._log, replica.report_fault_fired
        )
        misbehave.plan = plan
        return plan

    return make
