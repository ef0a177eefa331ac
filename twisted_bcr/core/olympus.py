# -*- test-case-name: tests.test_core_olympus -*-
"""
Olympus, the trusted configuration service (SPEC §2.1, §9): pure.

Olympus keeps a pool of registered spare replicas and the registered
clients, admitting only the identities its L{IAdmission} lists: a spare
proves its admitted identity by signing a fresh challenge, a client by
authenticating with the very key listed for its index.  Once it has 2t+1
spares and every client of the case, it sets up configuration 0: it assigns
each spare its chain position with a signed L{Assignment}, and tells the
clients about the configuration once every replica said it is L{Ready}.
It answers clients' configuration queries, receives reconfiguration
requests, and at the end of a run retires every replica and reports their
final dictionaries to whoever holds its key (the driver).

Every message arrives with the authenticated L{Peer} that sent it; the role
of that key (spare, replica c.i, client i, Olympus itself) decides, by
L{Olympus.ACCEPTS}, what it may say.

On an accepted reconfiguration request it runs SPEC §9: it wedges the
chain, validates wedged messages, tries candidate quorums in a fixed order
(the decisions are in L{twisted_bcr.core.reconfiguration}), catches the
quorum up, hands clients the results t+1 members vouch for, takes a running
state whose hash matches, and starts the next configuration from spares,
carrying those results so that no request is executed twice.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from attrs import define, evolve, field
from zope.interface import implementer

from twisted_bcr import codec, crypto
from twisted_bcr.config import Case
from twisted_bcr.core.common import (
    ALWAYS,
    MAX_CLIENT_MESSAGE,
    MAX_MESSAGE,
    MAX_STRANGER_MESSAGE,
    OLYMPUS,
    ProofError,
    Rule,
    replica_keys,
    replica_name,
    unseal,
)
from twisted_bcr.core.reconfiguration import (
    QuorumPlan,
    WedgedReplica,
    candidate_quorums,
    plan_quorum,
    validate_wedged,
    vouched_results,
)
from twisted_bcr.core.run_end import ANNOUNCE_TIMER, FINISH_TIMER, RunEnd
from twisted_bcr.interfaces import IAdmission, IEnvironment, IMachine, IMetrics
from twisted_bcr.messages import (
    Assignment,
    CatchUp,
    CaughtUp,
    ClientInfo,
    Configuration,
    ConfigurationReply,
    FaultFired,
    FinalState,
    FinishRun,
    GetConfiguration,
    GetRunningState,
    Placement,
    Quiescent,
    Ready,
    ReconfigurationRequest,
    RegisterClient,
    RegisterReplica,
    RegistrationBinding,
    RegistrationChallenge,
    RegistrationResponse,
    ReplicaInfo,
    ResultStatement,
    RunningState,
    Sealed,
    Shutdown,
    Signed,
    Wedged,
    WedgeRequest,
    message_name,
)
from twisted_bcr.metrics import NO_METRICS
from twisted_bcr.peers import Peer, peer_of
from twisted_bcr.throttle import Throttle, clip

#: A spare not heard from for this long is taken for dead.  Waiting spares
#: register again at least every 30 s (REGISTRATION_INTERVAL_MAX_S).
SPARE_SILENCE_LIMIT_S = 95.0

#: The most spares Olympus keeps registered; more are refused until some
#: are used or forgotten.
MAX_SPARES = 256

#: The most registration challenges outstanding for one admitted identity,
#: and how long one stays valid.  Anyone may name an admitted identity (its
#: key is public), so challenges are bounded per identity, never in total:
#: an outsider naming every identity holds at most this many slots of each,
#: and cannot fill a shared table to keep real spares out.
MAX_CHALLENGES_PER_IDENTITY = 4
CHALLENGE_LIFETIME_S = 30.0
#: Challenges one registering key may get per challenge lifetime, and how
#: many keys' budgets are tracked.
CHALLENGES_PER_KEY = 2
MAX_CHALLENGING_KEYS = 4096

NONCE_BYTES = 32
EPOCH_BYTES = 16

_WEDGE_TIMER = "wedge"
_STEP_TIMER = "step"



@define
class _Challenge:
    """A registration waiting for the spare's identity to sign C{nonce}."""

    nonce: bytes
    spare: ReplicaInfo
    identity_key: bytes
    issued_at: float


@define
class _Attempt:
    """One candidate quorum being caught up and asked for its running state."""

    plan: QuorumPlan
    caught_up: dict[int, CaughtUp] = field(factory=dict)
    state_hash: bytes | None = None
    #: Members asked for their running state, in the order asked.
    asked: list[int] = field(factory=list)

    @property
    def stage(self) -> str:
        return "catch_up" if self.state_hash is None else "running_state"


@define
class _Reconfiguration:
    """Olympus's state while it replaces configuration C{number} (SPEC §9)."""

    number: int
    requested_by: list[str]
    reason: str
    started_at: float
    wedged: dict[int, WedgedReplica] = field(factory=dict)
    invalid: dict[int, str] = field(factory=dict)
    tried: set[tuple[int, ...]] = field(factory=set)
    attempt: _Attempt | None = None
    #: A quorum that passed every step: the state and slot to start from.
    ready: tuple[QuorumPlan, dict[str, str], tuple[Sealed, ...]] | None = None
    #: Why no quorum can be formed, once Olympus has run out of candidates.
    hopeless: str | None = None
    wedge_step_over: bool = False
    #: When the quorum that is being (or was last) tried got its catch-up
    #: lists, and when a running state was chosen: the phases of the record.
    quorum_at: float | None = None
    state_at: float | None = None


# Who may send what: predicates over (olympus, sender, sealed message).


def _self_certifying(olympus: Olympus, sender: Peer, message: Any) -> bool:
    # A registration names the key it comes from; admission is checked next.
    return bool(sender.key == message.verify_key)


def _challenged(olympus: Olympus, sender: Peer, message: Any) -> bool:
    return sender.key in olympus._challenges


def _registered_client(olympus: Olympus, sender: Peer, message: Any) -> bool:
    client = olympus.clients.get(message.client)
    return client is not None and client.verify_key == sender.key


def _replica_at_its_position(olympus: Olympus, sender: Peer, message: Any) -> bool:
    # Its key must be the one Olympus gave the position the message claims.
    return olympus._positions.get(sender.key) == (message.configuration, message.index)


def _replica_or_client(olympus: Olympus, sender: Peer, message: Any) -> bool:
    return sender.key in olympus._positions or any(
        c.verify_key == sender.key for c in olympus.clients.values()
    )


def _olympus_itself(olympus: Olympus, sender: Peer, message: Any) -> bool:
    # Only whoever holds Olympus's own key (the driver) ends a run.
    return sender.key == olympus._key.verify_key_bytes


#: What a sender may seal before it has heard Olympus's epoch (empty epoch).
_FIRST_CONTACT = (RegisterReplica, RegisterClient, FinishRun)


@define
class _Refused:
    """The refused registrations of one client index: how many, and a few keys."""

    count: int = 0
    fingerprints: list[str] = field(factory=list)


#: How many refused keys per client index the run report names.
REFUSED_KEYS_NAMED = 3


@implementer(IMachine)
class Olympus:
    """The configuration service of one case."""

    def __init__(
        self,
        env: IEnvironment,
        case: Case,
        key: crypto.KeyPair,
        admission: IAdmission,
        verifier: crypto.Verifier | None = None,
        metrics: IMetrics = NO_METRICS,
    ) -> None:
        self._env = env
        self._metrics = metrics
        self._log = env.log
        self._case = case
        self._key = key
        self._admission = admission
        self._verifier = verifier or crypto.Verifier()
        self._throttle = Throttle(env.now)
        self.name = OLYMPUS
        #: This boot of Olympus: every message it seals names it, so none
        #: can be replayed into another boot.
        self.epoch = env.random_bytes(EPOCH_BYTES)
        self.spares: list[ReplicaInfo] = []
        #: When each spare (by key) last registered: spares repeat it while they wait.
        self._spare_seen: dict[bytes, float] = {}
        #: The admitted identity behind each registered spare's key.
        self._spare_identity: dict[bytes, bytes] = {}
        #: Outstanding challenges by the replica key they were sent to, and
        #: the replica keys challenged for each identity, oldest first.
        self._challenges: dict[bytes, _Challenge] = {}
        self._challenged_for: dict[bytes, deque[bytes]] = {}
        #: At most CHALLENGES_PER_KEY challenges per registering key per
        #: challenge lifetime.
        self._challenge_budget = Throttle(
            env.now, burst=CHALLENGES_PER_KEY, interval_s=CHALLENGE_LIFETIME_S,
            max_keys=MAX_CHALLENGING_KEYS,
        )
        self.clients: dict[int, ClientInfo] = {}
        #: Registrations refused per client index of the case, for the report.
        self._refused_clients: dict[int, _Refused] = {}
        self.configuration: Configuration | None = None
        #: The newest configuration clients have been told about.
        self.announced = -1
        self._unready: set[int] = set()
        #: Every configuration so far, by number, and the slot each began at.
        self.configurations: dict[int, Configuration] = {}
        self._first_slots: dict[int, int] = {}
        #: Replica key -> (configuration, position), for every configuration.
        self._positions: dict[bytes, tuple[int, int]] = {}
        #: One record per reconfiguration, as in the summary JSON (DESIGN §4).
        self.reconfigurations: list[dict[str, object]] = []
        self.reconfiguring: _Reconfiguration | None = None
        #: Problems Olympus saw that the run report must carry.
        self.errors: list[str] = []
        #: The end of the run, and the account its report carries.
        self._end = RunEnd(self)

    @property
    def replicas_needed(self) -> int:
        return 2 * self._case.t + 1

    # ------------------------------------------------------------------
    # IMachine

    def start(self) -> None:
        """Log the settings and wait for spares and clients to register."""
        case = self._case
        self._log.info(
            "olympus starting for case {case}: t={t}, {clients} clients, "
            "timeouts client/head/nonhead {client_timeout}/{head_timeout}/"
            "{nonhead_timeout} ms, checkpoint every {checkpt_interval} slots",
            case=case.name, t=case.t, clients=case.num_client,
            client_timeout=case.client_timeout_ms, head_timeout=case.head_timeout_ms,
            nonhead_timeout=case.nonhead_timeout_ms,
            checkpt_interval=case.checkpt_interval,
            verify_key=self._key.verify_key_bytes.hex(), epoch=self.epoch.hex(),
            event="bcr.start", node=self.name,
        )

    def receive(self, sender: Peer, message: object) -> None:
        """Olympus accepts only sealed control messages, by L{ACCEPTS}."""
        if not isinstance(message, Sealed):
            self._reject(sender, f"unexpected {type(message).__name__}")
            return
        try:
            # Signed by the key that authenticated the connection, for us.
            inner = unseal(self._verifier, message, sender.key, self._key.verify_key_bytes)
        except (crypto.BadSignature, codec.BadMessage) as e:
            self._failed_check(sender, "sealed", f"sealed by {message.signer!r}: {e}")
            return
        rule = self.ACCEPTS.get(type(inner))
        if rule is None:
            self._reject(sender, f"unexpected {type(inner).__name__}")
            return
        if message.epoch != self.epoch and not (
            message.epoch == b"" and isinstance(inner, _FIRST_CONTACT)
        ):
            self._reject(sender, f"{message_name(inner)} sealed in another Olympus epoch")
            return
        if not rule.allowed(self, sender, inner):
            self._reject(
                sender, f"dropped {message_name(inner)} from a peer that is not {rule.sender}",
                "not_allowed",
            )
            return
        # Replies go where the (signed) envelope says the sender listens.
        rule.handler(self, Peer(message.sender, sender.key), self._name_of(sender.key), inner)

    def timer_expired(self, key: str) -> None:
        """A reconfiguration step, an announcement or the end-of-run collection timed out."""
        if key == _WEDGE_TIMER:
            self._wedge_step_expired()
        elif key == _STEP_TIMER:
            self._attempt_step_expired()
        elif key == ANNOUNCE_TIMER:
            self._log.warn(
                "olympus: replicas {unready} of configuration {number} did not say "
                "they are ready within the step timeout; announcing it anyway",
                unready=sorted(self._unready),
                number=self.configuration.number if self.configuration else -1,
                event="bcr.unready", node=self.name,
            )
            self._announce()
        elif key == FINISH_TIMER:
            self._end.timer_expired()

    def max_message_from(self, key: bytes) -> int:
        name = self._name_of(key)
        if name == OLYMPUS or name.startswith("replica "):
            return MAX_MESSAGE
        if name.startswith("client "):
            return MAX_CLIENT_MESSAGE
        return MAX_STRANGER_MESSAGE

    # ------------------------------------------------------------------

    def _is_stranger(self, key: bytes) -> bool:
        """A key with no role here: no configuration, client or registered spare."""
        return self._name_of(key) == "spare" and key not in self._spare_identity

    def _failed_check(self, sender: Peer, kind: str, reason: str) -> None:
        """
        Refuse a message whose signature check failed.  Only a peer with a
        role here moves the verification counter operators alert on: a
        stranger, who can mint keys at will, only adds a rejected message.
        """
        if not self._is_stranger(sender.key):
            self._metrics.verification_failed(kind)
        self._reject(sender, reason, "verification")

    def _reject(self, sender: Peer, reason: str, why: str = "unexpected") -> None:
        # Counted whether or not the log line is suppressed.
        self._metrics.message_rejected(why)
        # Per key for registered peers; strangers, who can mint keys and
        # connections at will, share one allowance.
        suppressed = self._throttle.allow(
            "strangers" if self._is_stranger(sender.key) else sender.key.hex()
        )
        if suppressed is None:
            return
        self._log.warn(
            "olympus rejected input from {peer}: {reason}{suppressed_note}",
            peer=sender.address, reason=clip(reason), suppressed=suppressed,
            suppressed_note=f" ({suppressed} similar lines suppressed)" if suppressed else "",
            event="bcr.rejected", node=self.name,
        )

    def _seal(self, message: object, to: bytes, configuration: int = -1) -> Sealed:
        return crypto.seal(
            self._key, self._env.address, OLYMPUS, message,
            recipient=to, epoch=self.epoch, configuration=configuration,
        )

    def _send_sealed(self, to: Peer, message: object, configuration: int = -1) -> None:
        self._env.send(to, self._seal(message, to.key, configuration))

    def _name_of(self, key: bytes) -> str:
        """The role a key has here, as logs and records name it."""
        if key == self._key.verify_key_bytes:
            return OLYMPUS
        position = self._positions.get(key)
        if position is not None:
            return replica_name(*position)
        for client in self.clients.values():
            if client.verify_key == key:
                return f"client {client.index}"
        return "spare"

    # ------------------------------------------------------------------
    # Registration and configuration 0

    def _on_register_replica(self, sender: Peer, signer: str, message: RegisterReplica) -> None:
        key = message.verify_key
        if key in self._positions:
            # Sent before its assignment arrived: it is no spare any more.
            return
        if key in self._spare_identity:
            if self._spare_identity[key] == message.identity_key:
                # A spare waiting for work says it is still alive.
                self._spare_seen[key] = self._env.now()
            return
        if not self._admission.admits_replica(message.identity_key):
            self._reject(
                sender,
                f"spare registration with identity {message.identity_key.hex()[:16]}, "
                f"which is not admitted",
                "not_admitted",
            )
            return
        if len(self._live_spares()) >= MAX_SPARES:
            self._reject(
                sender, f"spare registration: {MAX_SPARES} spares already registered",
                "over_limit",
            )
            return
        if self._challenge_budget.allow(key.hex()) is None:
            # Each challenge may be a connection to an address the registrant
            # chose: one key (one authenticated connection) must not make
            # Olympus open them at will.  A real spare needs one, or two if
            # the first was lost; more takes new connections and keys.
            self._reject(
                sender, "spare registration: this key was challenged already", "over_limit"
            )
            return
        challenge = _Challenge(
            nonce=self._env.random_bytes(NONCE_BYTES),
            spare=ReplicaInfo(message.address, key),
            identity_key=message.identity_key,
            issued_at=self._env.now(),
        )
        self._remember_challenge(challenge)
        # To the address it claims, checked by the binding to be held by
        # this key: a spare cannot register an address it does not serve.
        self._send_sealed(peer_of(challenge.spare), RegistrationChallenge(challenge.nonce))

    def _remember_challenge(self, challenge: _Challenge) -> None:
        key = challenge.spare.verify_key
        keys = self._challenged_for.setdefault(challenge.identity_key, deque())
        if key in keys:
            keys.remove(key)
        keys.append(key)
        self._challenges[key] = challenge
        while len(keys) > MAX_CHALLENGES_PER_IDENTITY:
            self._challenges.pop(keys.popleft(), None)

    def _forget_challenge(self, challenge: _Challenge) -> None:
        key = challenge.spare.verify_key
        self._challenges.pop(key, None)
        keys = self._challenged_for.get(challenge.identity_key)
        if keys is not None and key in keys:
            keys.remove(key)
            if not keys:
                del self._challenged_for[challenge.identity_key]

    def _on_registration_response(
        self, sender: Peer, signer: str, message: RegistrationResponse
    ) -> None:
        challenge = self._challenges[sender.key]
        self._forget_challenge(challenge)
        if self._env.now() - challenge.issued_at > CHALLENGE_LIFETIME_S:
            self._reject(sender, "registration response to an expired challenge")
            return
        binding = RegistrationBinding(
            self._key.verify_key_bytes, self.epoch, challenge.nonce,
            challenge.spare.verify_key, challenge.spare.address,
        )
        try:
            if message.nonce != challenge.nonce:
                raise crypto.BadSignature("answers another challenge")
            self._verifier.verify(
                Signed(codec.encode(binding), message.signature),
                challenge.identity_key, RegistrationBinding,
            )
        except (crypto.BadSignature, codec.BadMessage) as e:
            self._failed_check(sender, "registration", f"registration response: {e}")
            return
        if not self._admission.admits_replica(challenge.identity_key):
            self._reject(
                sender, "registration response from an identity no longer admitted",
                "not_admitted",
            )
            return
        self._add_spare(challenge.spare, challenge.identity_key)

    def _add_spare(self, info: ReplicaInfo, identity_key: bytes) -> None:
        # One spare per identity and per address: a newer registration is a
        # daemon restarted by systemd, and the old process is gone.
        replaced = [
            s for s in self.spares
            if s.address == info.address or self._spare_identity.get(s.verify_key) == identity_key
        ]
        for old in replaced:
            self._forget_spare(old)
        self.spares.append(info)
        self._metrics.spares(len(self.spares))
        self._spare_identity[info.verify_key] = identity_key
        self._spare_seen[info.verify_key] = self._env.now()
        self._log.info(
            "olympus registered spare {address} ({count} spares){restarted}",
            address=info.address, count=len(self.spares),
            restarted=", replacing the previous process there" if replaced else "",
            verify_key=info.verify_key.hex(), identity_key=identity_key.hex(),
            event="bcr.spare", node=self.name,
        )
        if self._end.retiring:
            # Too late to serve: retire it like the spares that were idle.
            self._send_sealed(peer_of(info), Shutdown(-1))
            return
        self._maybe_set_up()
        if self.reconfiguring is not None and self.reconfiguring.ready is not None:
            self._install_next()

    def _forget_spare(self, spare: ReplicaInfo) -> None:
        self.spares.remove(spare)
        self._metrics.spares(len(self.spares))
        self._spare_seen.pop(spare.verify_key, None)
        self._spare_identity.pop(spare.verify_key, None)

    def _on_register_client(self, sender: Peer, signer: str, message: RegisterClient) -> None:
        if self._admission.client_key(message.index) != message.verify_key:
            if 0 <= message.index < self._case.num_client:
                # Bounded by the case's clients, however many keys try.  No
                # answer goes back: it would go to an address the sender
                # chose.  The run report names the cause instead.
                refused = self._refused_clients.setdefault(message.index, _Refused())
                refused.count += 1
                fingerprint = message.verify_key.hex()[:16]
                if (
                    fingerprint not in refused.fingerprints
                    and len(refused.fingerprints) < REFUSED_KEYS_NAMED
                ):
                    refused.fingerprints.append(fingerprint)
            self._reject(
                sender, f"client {message.index} registration with a key not admitted for it",
                "not_admitted",
            )
            return
        if not 0 <= message.index < self._case.num_client:
            self._reject(sender, f"client index {message.index} is not in the case")
            return
        self.clients[message.index] = ClientInfo(
            message.index, message.address, message.verify_key
        )
        self._log.info(
            "olympus registered client {index} at {address}",
            index=message.index, address=message.address,
            verify_key=message.verify_key.hex(), event="bcr.client", node=self.name,
        )
        if self.configuration is not None and self.announced == self.configuration.number:
            self._send_configuration(self.clients[message.index])
        else:
            self._maybe_set_up()

    def _maybe_set_up(self) -> None:
        """Set up configuration 0 once every client and enough spares are here."""
        if (
            self.configuration is not None
            or len(self.clients) < self._case.num_client
            or len(self._live_spares()) < self.replicas_needed
        ):
            return
        self._install(0, {}, first_slot=0)

    def _live_spares(self) -> list[ReplicaInfo]:
        """
        The spares heard from recently whose identity is still admitted,
        oldest registration first; a spare that stopped re-registering (its
        process died) or was revoked is forgotten.
        """
        now = self._env.now()
        for spare in list(self.spares):
            silent_for = now - self._spare_seen.get(spare.verify_key, now)
            identity = self._spare_identity.get(spare.verify_key, b"")
            if silent_for > SPARE_SILENCE_LIMIT_S:
                why = f"not heard from for {silent_for:.0f} s"
            elif not self._admission.admits_replica(identity):
                why = f"its identity {identity.hex()[:16]} is no longer admitted"
            else:
                continue
            self._forget_spare(spare)
            self._log.warn(
                "olympus forgets spare {address}: {why}", address=spare.address, why=why,
                event="bcr.spare_lost", node=self.name,
            )
        return self.spares

    def _install(
        self,
        number: int,
        state: dict[str, str],
        first_slot: int,
        recovered: tuple[Sealed, ...] = (),
    ) -> None:
        """Take 2t+1 spares and make them configuration C{number}."""
        case = self._case
        chosen = self._live_spares()[: self.replicas_needed]
        for index, spare in enumerate(chosen):
            self._end.placed(
                Placement(number, index, spare.address, self._spare_identity[spare.verify_key])
            )
            self._forget_spare(spare)
        configuration = Configuration(
            number=number,
            t=case.t,
            replicas=tuple(chosen),
            clients=tuple(sorted(self.clients.values(), key=lambda c: c.index)),
            checkpt_interval=case.checkpt_interval,
            head_timeout_ms=case.head_timeout_ms,
            nonhead_timeout_ms=case.nonhead_timeout_ms,
        )
        self.configuration = configuration
        self._metrics.configuration(number)
        self.configurations[number] = configuration
        self._first_slots[number] = first_slot
        for index, replica in enumerate(chosen):
            self._positions[replica.verify_key] = (number, index)
        self._log.info(
            "olympus set up configuration {number}: {replicas}, first slot "
            "{first_slot}, {keys} keys in the initial state",
            number=number, replicas=[r.address for r in chosen],
            first_slot=first_slot, keys=len(state),
            event="bcr.new_configuration", node=self.name,
        )
        self._unready = set(range(len(chosen)))
        for index, replica in enumerate(chosen):
            assignment = Assignment(
                configuration=configuration,
                index=index,
                state=state,
                first_slot=first_slot,
                failures=case.failure_text_for(number, index),
                recovered=recovered,
            )
            self._log.info(
                "olympus assigns {address} as {replica}",
                address=replica.address, replica=replica_name(number, index),
                event="bcr.assign", node=self.name,
            )
            self._send_sealed(peer_of(replica), assignment, number)
        self._env.start_timer(ANNOUNCE_TIMER, self._case.step_timeout_s)

    def _on_ready(self, sender: Peer, signer: str, message: Ready) -> None:
        if self.configuration is None or message.configuration != self.configuration.number:
            return
        self._unready.discard(message.index)
        if (
            not self._unready and self.announced < message.configuration
            and self.reconfiguring is None and not self._end.started
        ):
            self._announce()

    def _announce(self) -> None:
        """Tell every client about the configuration just set up."""
        self._env.cancel_timer(ANNOUNCE_TIMER)
        assert self.configuration is not None
        self.announced = self.configuration.number
        for client in sorted(self.clients.values(), key=lambda c: c.index):
            self._send_configuration(client)

    def _send_configuration(self, client: ClientInfo) -> None:
        assert self.configuration is not None
        self._send_sealed(
            peer_of(client), ConfigurationReply(self.configuration), self.configuration.number
        )

    def _on_get_configuration(
        self, sender: Peer, signer: str, message: GetConfiguration
    ) -> None:
        client = self.clients[message.client]
        if self.configuration is None or self.announced != self.configuration.number:
            # It will hear of the configuration when it is announced.
            return
        self._log.info(
            "olympus tells client {index} configuration {number}",
            index=message.client, number=self.configuration.number,
            event="bcr.get_configuration", node=self.name,
        )
        self._send_configuration(client)

    # ------------------------------------------------------------------
    # Reconfiguration (SPEC §7, §9)

    def _on_reconfiguration_request(
        self, sender: Peer, signer: str, message: ReconfigurationRequest
    ) -> None:
        current = self.configuration
        self._metrics.reconfiguration_request_received(
            "client" if signer.startswith("client ") else "replica"
        )
        self._log.warn(
            "olympus received a reconfiguration request from {requester} for "
            "configuration {configuration}: {reason}",
            requester=signer, configuration=message.configuration,
            reason=clip(message.reason, 400), event="bcr.reconfiguration_request",
            node=self.name,
        )
        if current is None or message.configuration != current.number:
            self._ignore_request(signer, "it names an old configuration")
            return
        if signer.startswith("client ") and not self._proves_misbehaviour(message):
            self._ignore_request(signer, "a client's request needs a proof of misbehaviour")
            return
        if signer.startswith("replica ") and not signer.startswith(
            f"replica {current.number}."
        ):
            self._ignore_request(signer, "it comes from a replica of an old configuration")
            return
        if self.reconfiguring is not None:
            if signer not in self.reconfiguring.requested_by:
                self.reconfiguring.requested_by.append(signer)
            self._ignore_request(signer, "a reconfiguration is already running")
            return
        if self._end.retiring:
            self._ignore_request(signer, "the run's replicas are being retired")
            return
        # A configuration being replaced is not announced any more.
        self._env.cancel_timer(ANNOUNCE_TIMER)
        self.reconfiguring = _Reconfiguration(
            number=current.number,
            requested_by=[signer],
            reason=clip(message.reason, 400),
            started_at=self._env.now(),
        )
        self._metrics.reconfiguration_started()
        self._log.warn(
            "olympus reconfigures configuration {number}: wedging its replicas",
            number=current.number, event="bcr.wedge", node=self.name,
        )
        for replica in current.replicas:
            self._send_sealed(peer_of(replica), WedgeRequest(current.number), current.number)
        self._env.start_timer(_WEDGE_TIMER, self._case.step_timeout_s)
        self._end.reconfiguration_started()

    def _ignore_request(self, signer: str, why: str) -> None:
        self._log.info(
            "olympus ignores the reconfiguration request of {requester}: {why}",
            requester=signer, why=why, event="bcr.request_ignored", node=self.name,
        )

    def _proves_misbehaviour(self, message: ReconfigurationRequest) -> bool:
        """
        A client's proof (SPEC §7): result statements of the current
        configuration, at their chain positions, two of which are validly
        signed and contradict each other about the same request.
        """
        assert self.configuration is not None
        keys = replica_keys(self.configuration)
        seen: dict[tuple[int, int, int], ResultStatement] = {}
        for position, signed in enumerate(message.proof[: len(keys)]):
            try:
                statement = self._verifier.verify(signed, keys[position], ResultStatement)
            except (crypto.BadSignature, codec.BadMessage):
                continue
            if statement.configuration != self.configuration.number:
                continue
            key = (statement.client, statement.seq, statement.slot)
            other = seen.setdefault(key, statement)
            if other != statement:
                return True
        return False

    def _on_wedged(self, sender: Peer, signer: str, message: Wedged) -> None:
        state = self.reconfiguring
        if state is None or message.configuration != state.number or signer != replica_name(
            message.configuration, message.index
        ):
            self._reject(sender, f"wedged message of {signer} outside a reconfiguration")
            return
        if message.index in state.wedged or message.index in state.invalid:
            self._reject(sender, f"second wedged message of {signer}")
            return
        configuration = self.configurations[state.number]
        client_keys = {c.index: c.verify_key for c in configuration.clients}
        try:
            wedged = validate_wedged(
                self._verifier, message, configuration, self._first_slots[state.number],
                client_keys,
            )
        except ProofError as e:
            self._metrics.verification_failed("wedged")
            state.invalid[message.index] = str(e)
            self._log.warn(
                "olympus: wedged message of {replica} is invalid: {reason}",
                replica=signer, reason=str(e), index=message.index,
                event="bcr.wedged", valid=False, node=self.name,
            )
            self._search()
            return
        state.wedged[message.index] = wedged
        self._metrics.wedged_message_received()
        self._log.info(
            "olympus: wedged message of {replica} is valid: {length} history entries "
            "after checkpoint slot {checkpoint}",
            replica=signer, length=len(wedged.history), checkpoint=wedged.checkpoint_slot,
            index=message.index, last_slot=wedged.last_slot,
            event="bcr.wedged", valid=True, node=self.name,
        )
        self._search()

    def _wedge_step_expired(self) -> None:
        state = self.reconfiguring
        if state is None:
            return
        state.wedge_step_over = True
        missing = [
            i for i in range(self.replicas_needed)
            if i not in state.wedged and i not in state.invalid
        ]
        self._log.info(
            "olympus: no wedged message from replicas {missing} within the step "
            "timeout; still listening for them",
            missing=missing, event="bcr.wedge_timeout", node=self.name,
        )
        self._search()

    def _search(self) -> None:
        """Try the next candidate quorum, unless one is being tried (SPEC §9.4)."""
        state = self.reconfiguring
        if state is None or state.attempt is not None or state.ready is not None:
            return
        for quorum in candidate_quorums(list(state.wedged), self._case.t, state.tried):
            state.tried.add(quorum)
            try:
                plan = plan_quorum([state.wedged[i] for i in quorum])
            except ProofError as e:
                self._metrics.verification_failed("quorum")
                self._log.info(
                    "olympus: quorum {quorum} is not consistent: {reason}",
                    quorum=list(quorum), reason=str(e), event="bcr.quorum_rejected",
                    node=self.name,
                )
                continue
            self._start_attempt(plan)
            return
        heard = len(state.wedged) + len(state.invalid)
        if (heard == self.replicas_needed or state.wedge_step_over) and state.hopeless is None:
            # Said once; a wedged message arriving later may still save the
            # day, and the run report carries this only if nothing does.
            state.hopeless = (
                f"more than t={self._case.t} replicas of configuration {state.number} "
                f"seem faulty: no quorum of {self._case.t + 1} can be formed from "
                f"{len(state.wedged)} valid wedged messages (invalid: "
                f"{sorted(state.invalid)}, tried: {sorted(state.tried)})"
            )
            self._log.error(
                "olympus: {problem}; still waiting", problem=state.hopeless,
                event="bcr.no_quorum", node=self.name,
            )

    def _start_attempt(self, plan: QuorumPlan) -> None:
        state = self.reconfiguring
        assert state is not None
        state.attempt = _Attempt(plan)
        self._metrics.reconfiguration_phase("quorum", self._env.now() - state.started_at)
        state.quorum_at = self._env.now()
        configuration = self.configurations[state.number]
        self._log.info(
            "olympus tries quorum {quorum}: checkpoint slot {checkpoint}, LH of "
            "{length} entries ending at slot {last_slot}; catch-up lists {lists}",
            quorum=list(plan.quorum), checkpoint=plan.checkpoint_slot,
            length=len(plan.longest_history), last_slot=plan.last_slot,
            lists={str(i): [e.slot for e in entries] for i, entries in plan.catch_up.items()},
            event="bcr.quorum", node=self.name,
        )
        for index in plan.quorum:
            catch_up = CatchUp(state.number, plan.catch_up[index])
            self._send_sealed(peer_of(configuration.replicas[index]), catch_up, state.number)
            if catch_up.entries:
                # A correct member executes what it is sent, whether or not
                # this attempt succeeds or its caught_up arrives in time:
                # later candidates must count those slots as its history, or
                # their LH could end before them and its hash never match.
                member = state.wedged[index]
                state.wedged[index] = evolve(
                    member, history=member.history + catch_up.entries
                )
        self._env.start_timer(_STEP_TIMER, self._case.step_timeout_s)

    def _fail_attempt(self, reason: str) -> None:
        state = self.reconfiguring
        assert state is not None and state.attempt is not None
        self._log.warn(
            "olympus: quorum {quorum} failed: {reason}",
            quorum=list(state.attempt.plan.quorum), reason=reason,
            event="bcr.quorum_failed", node=self.name,
        )
        self._env.cancel_timer(_STEP_TIMER)
        state.attempt = None
        self._search()

    def _on_caught_up(self, sender: Peer, signer: str, message: CaughtUp) -> None:
        state = self.reconfiguring
        attempt = state.attempt if state is not None else None
        if (
            state is None or attempt is None or attempt.stage != "catch_up"
            or message.configuration != state.number
            or message.index not in attempt.plan.quorum
            or signer != replica_name(state.number, message.index)
        ):
            self._reject(sender, f"caught_up from {signer} that nobody asked for")
            return
        attempt.caught_up[message.index] = message
        self._log.info(
            "olympus: {replica} caught up, state hash {hash}",
            replica=signer, hash=message.state_hash.hex(), event="bcr.caught_up",
            node=self.name,
        )
        if len(attempt.caught_up) < len(attempt.plan.quorum):
            return
        hashes = {m.state_hash for m in attempt.caught_up.values()}
        if len(hashes) != 1:
            self._metrics.verification_failed("caught_up")
            self._fail_attempt(
                "caught-up state hashes differ: "
                + ", ".join(
                    f"{i}: {m.state_hash.hex()[:16]}"
                    for i, m in sorted(attempt.caught_up.items())
                )
            )
            return
        attempt.state_hash = hashes.pop()
        self._metrics.reconfiguration_phase("caught_up", self._env.now() - state.started_at)
        self._env.cancel_timer(_STEP_TIMER)
        self._ask_running_state()

    def _ask_running_state(self) -> None:
        state = self.reconfiguring
        assert state is not None and state.attempt is not None
        attempt = state.attempt
        remaining = [i for i in attempt.plan.quorum if i not in attempt.asked]
        if not remaining:
            self._fail_attempt("no member returned a running state with the agreed hash")
            return
        index = remaining[0]
        attempt.asked.append(index)
        self._log.info(
            "olympus asks {replica} for its running state",
            replica=replica_name(state.number, index), event="bcr.get_running_state",
            node=self.name,
        )
        replica = self.configurations[state.number].replicas[index]
        self._send_sealed(peer_of(replica), GetRunningState(state.number), state.number)
        self._env.start_timer(_STEP_TIMER, self._case.step_timeout_s)

    def _attempt_step_expired(self) -> None:
        state = self.reconfiguring
        if state is None or state.attempt is None:
            return
        attempt = state.attempt
        if attempt.stage == "catch_up":
            silent = [i for i in attempt.plan.quorum if i not in attempt.caught_up]
            self._fail_attempt(f"replicas {silent} did not answer catch_up in time")
        else:
            self._log.warn(
                "olympus: {replica} did not send its running state in time",
                replica=replica_name(state.number, attempt.asked[-1]),
                event="bcr.running_state_timeout", node=self.name,
            )
            self._ask_running_state()

    def _on_running_state(self, sender: Peer, signer: str, message: RunningState) -> None:
        state = self.reconfiguring
        attempt = state.attempt if state is not None else None
        if (
            state is None or attempt is None or attempt.stage != "running_state"
            or message.configuration != state.number or not attempt.asked
            or message.index != attempt.asked[-1]
            or signer != replica_name(state.number, message.index)
        ):
            self._reject(sender, f"running_state from {signer} that nobody asked for")
            return
        self._env.cancel_timer(_STEP_TIMER)
        if crypto.state_hash(message.state) != attempt.state_hash:
            self._metrics.verification_failed("running_state")
            self._log.warn(
                "olympus: the running state of {replica} does not match the caught-up hash",
                replica=signer, event="bcr.running_state", matches=False, node=self.name,
            )
            self._ask_running_state()
            return
        self._log.info(
            "olympus chose the running state of {replica}: {keys} keys",
            replica=signer, keys=len(message.state), event="bcr.running_state",
            matches=True, node=self.name,
        )
        configuration = self.configurations[state.number]
        vouchers = [
            voucher
            for voucher in vouched_results(self._verifier, attempt.caught_up, configuration)
            if voucher.client in self.clients
        ]
        # Each sealed for the client it is about: the new chain hands it on.
        recovered = tuple(
            self._seal(voucher, self.clients[voucher.client].verify_key, state.number)
            for voucher in vouchers
        )
        for voucher, sealed in zip(vouchers, recovered, strict=True):
            self._log.info(
                "olympus sends client {client} the result of {client}:{seq}: "
                "{result!r} (slot {slot})",
                client=voucher.client, seq=voucher.seq, result=voucher.result,
                slot=voucher.slot, event="bcr.result_from_olympus", node=self.name,
            )
            self._env.send(peer_of(self.clients[voucher.client]), sealed)
        state.ready = (attempt.plan, dict(message.state), recovered)
        self._metrics.reconfiguration_phase("running_state", self._env.now() - state.started_at)
        state.state_at = self._env.now()
        state.attempt = None
        self._install_next()

    def _install_next(self) -> None:
        """Start the new configuration from the chosen state, once spares suffice."""
        state = self.reconfiguring
        assert state is not None and state.ready is not None
        if len(self._live_spares()) < self.replicas_needed:
            self._log.warn(
                "olympus waits for spares: {have} registered, {need} needed",
                have=len(self.spares), need=self.replicas_needed,
                event="bcr.waiting_for_spares", node=self.name,
            )
            return
        plan, running_state, recovered = state.ready
        old = self.configurations[state.number]
        self._install(state.number + 1, running_state, plan.last_slot + 1, recovered)
        for replica in old.replicas:
            self._send_sealed(peer_of(replica), Shutdown(old.number), old.number)
        record = {
            "from": old.number,
            "to": old.number + 1,
            "requested_by": state.requested_by,
            "reason": state.reason,
            "quorum": list(plan.quorum),
            "lh_length": len(plan.longest_history),
            "checkpoint_slot": plan.checkpoint_slot,
            "first_slot": plan.last_slot + 1,
            "quorums_tried": len(state.tried),
            # The binding's clock (wall-clock seconds with real processes).
            "started_at": state.started_at,
            "duration_s": round(self._env.now() - state.started_at, 6),
            # The phases, on the same clock: wedging until the quorum that
            # succeeded was chosen, catching up and choosing a running state
            # until state_at, then installing the new configuration.
            "quorum_at": state.quorum_at,
            "state_at": state.state_at,
        }
        self.reconfigurations.append(record)
        self._metrics.reconfiguration_completed(self._env.now() - state.started_at)
        self.reconfiguring = None
        self._env.cancel_timer(_WEDGE_TIMER)
        self._end.configuration_installed()
        self._log.info(
            "olympus finished reconfiguration {from_} -> {to} in {duration_s} s",
            from_=old.number, to=old.number + 1, duration_s=record["duration_s"],
            record=record, event="bcr.reconfigured", node=self.name,
        )
        # Clients hear of it once its replicas are ready (_on_ready).

    # ------------------------------------------------------------------
    # End of run: in L{RunEnd}

    def _on_finish_run(self, sender: Peer, signer: str, message: FinishRun) -> None:
        self._end.on_finish_run(sender, message)

    def _on_quiescent(self, sender: Peer, signer: str, message: Quiescent) -> None:
        self._end.on_quiescent(signer, message)

    def _on_final_state(self, sender: Peer, signer: str, message: FinalState) -> None:
        self._end.on_final_state(sender, signer, message)

    def _on_fault_fired(self, sender: Peer, signer: str, message: FaultFired) -> None:
        self._end.on_fault_fired(sender, signer, message)

    def registration_errors(self) -> list[str]:
        """Why clients of the case never registered, if Olympus refused them."""
        # The keys are named: anyone may send a registration for any
        # index, so the operator must see whose key was refused.
        return [
            f"client {index} never registered: Olympus refused {refused.count} "
            f"registration(s) with a key not admitted for client {index} (keys "
            f"{', '.join(refused.fingerprints)}; docs/SECURITY.md, admission)"
            for index, refused in sorted(self._refused_clients.items())
            if index not in self.clients
        ]

    def abandon_reconfiguration(self) -> None:
        """Give up the reconfiguration in flight, if any: the run reports it as an error."""
        state = self.reconfiguring
        if state is None:
            return
        self.errors.append(
            f"the run ended while configuration {state.number} was being reconfigured: "
            + (
                state.hopeless
                or f"{len(state.wedged)} valid wedged messages, quorums tried: "
                f"{sorted(state.tried)}"
            )
        )
        self._env.cancel_timer(_WEDGE_TIMER)
        self._env.cancel_timer(_STEP_TIMER)
        self.reconfiguring = None

    #: What Olympus accepts from whom (docs/SECURITY.md): the sender's
    #: authenticated key decides, never a name it gives itself.
    ACCEPTS: dict[type, Rule] = {
        RegisterReplica: Rule("the key it registers", _self_certifying, ALWAYS,
                              _on_register_replica),
        RegistrationResponse: Rule("a challenged spare", _challenged, ALWAYS,
                                   _on_registration_response),
        RegisterClient: Rule("the key it registers", _self_certifying, ALWAYS,
                             _on_register_client),
        GetConfiguration: Rule("that registered client", _registered_client, ALWAYS,
                               _on_get_configuration),
        ReconfigurationRequest: Rule("a replica or a client", _replica_or_client, ALWAYS,
                                     _on_reconfiguration_request),
        Ready: Rule("the replica at that position", _replica_at_its_position, ALWAYS,
                    _on_ready),
        Wedged: Rule("the replica at that position", _replica_at_its_position, ALWAYS,
                     _on_wedged),
        CaughtUp: Rule("the replica at that position", _replica_at_its_position, ALWAYS,
                       _on_caught_up),
        RunningState: Rule("the replica at that position", _replica_at_its_position,
                           ALWAYS, _on_running_state),
        Quiescent: Rule("the replica at that position", _replica_at_its_position, ALWAYS,
                        _on_quiescent),
        FinalState: Rule("the replica at that position", _replica_at_its_position, ALWAYS,
                         _on_final_state),
        FaultFired: Rule("the replica at that position", _replica_at_its_position, ALWAYS,
                         _on_fault_fired),
        FinishRun: Rule("Olympus's own key", _olympus_itself, ALWAYS, _on_finish_run),
    }
