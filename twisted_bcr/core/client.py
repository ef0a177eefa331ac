# -*- test-case-name: tests.test_core_client -*-
"""
The client state machine (SPEC §2.3, §5 steps 1 and 6, §6.1): pure.

A client registers its address and key with Olympus, receives the current
configuration, and runs its workload one request at a time.  It accepts a
result only when at least t+1 result statements, each validly signed by the
replica at its chain position, name its request and the hash of the result.
On a timeout it asks Olympus for the configuration and either resends to a
new head or retransmits to every replica.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from attrs import define, field
from zope.interface import implementer

from twisted_bcr import codec, crypto
from twisted_bcr.core.common import (
    MAX_MESSAGE,
    MAX_STRANGER_MESSAGE,
    client_name,
    count_matching_results,
    from_olympus,
    replica_keys,
)
from twisted_bcr.dictionary import apply_operation
from twisted_bcr.interfaces import IEnvironment, IMachine
from twisted_bcr.messages import (
    ClientRequest,
    Configuration,
    ConfigurationReply,
    ErrorMessage,
    GetConfiguration,
    Operation,
    ReconfigurationRequest,
    RegisterClient,
    Request,
    ResultFromOlympus,
    ResultMessage,
    ResultStatement,
    Sealed,
    Signed,
)
from twisted_bcr.peers import Peer, peer_of
from twisted_bcr.throttle import Throttle, clip

#: The shortest wait between two retransmissions, however small the
#: configured client timeout (SPEC §6.1 allows timeouts of 0 or 1 ms).
MINIMUM_TIMEOUT_S = 0.001

_REQUEST_TIMER = "request"
_REGISTRATION_TIMER = "registration"


@define
class ClientOutcome:
    """What one client saw: accepted results in workload order, and timing."""

    index: int
    operations: list[tuple[str, tuple[str, ...]]]
    results: list[str] = field(factory=list)
    slots: list[int] = field(factory=list)
    latencies_s: list[float] = field(factory=list)
    configurations_seen: list[int] = field(factory=list)
    retransmissions: int = 0
    finished: bool = False
    #: When the first request left and the last result was accepted
    #: (the binding's clock), to measure workload time apart from start-up.
    first_sent_at: float | None = None
    last_accepted_at: float | None = None
    #: Per accepted result, in workload order: when it was accepted (the
    #: binding's clock; it was sent C{latencies_s} earlier) and the number
    #: of the configuration the client was using (the run report's data).
    accepted_at: list[float] = field(factory=list)
    accepted_in: list[int] = field(factory=list)

    @property
    def accepted(self) -> int:
        return len(self.results)


class ClientWatcher(Protocol):
    """
    Who runs a client may follow it (the launcher does, to act when a
    configuration is in use or results come in): told from the protocol
    messages the client accepts, never from its log.
    """

    def configuration_used(self, client: int, configuration: Configuration) -> None:
        """Client C{client} now sends to C{configuration}."""

    def result_accepted(self, client: int, configuration: int, at: float) -> None:
        """Client C{client} accepted a result while using C{configuration}."""


@implementer(IMachine)
class Client:
    """One client running one workload."""

    def __init__(
        self,
        env: IEnvironment,
        index: int,
        operations: list[tuple[str, tuple[str, ...]]],
        key: crypto.KeyPair,
        olympus: Peer,
        timeout_ms: int,
        on_finished: Callable[[ClientOutcome], None],
        verifier: crypto.Verifier | None = None,
        watcher: ClientWatcher | None = None,
    ) -> None:
        self._env = env
        self._log = env.log
        self.index = index
        self.name = client_name(index)
        self._key = key
        self._olympus = olympus
        #: Olympus's boot epoch, learnt from its first message to us.
        self._olympus_epoch: bytes | None = None
        self._throttle = Throttle(env.now)
        self._timeout_s = max(timeout_ms / 1000, MINIMUM_TIMEOUT_S)
        self._on_finished = on_finished
        self._watcher = watcher
        self._verifier = verifier or crypto.Verifier()
        self.outcome = ClientOutcome(index, list(operations))
        self._configurations: dict[int, Configuration] = {}
        self.configuration: Configuration | None = None
        #: The client's own workload replayed on a dictionary of its own
        #: (SPEC §12.2), and the results that replay gave.
        self._model: dict[str, str] = {}
        self._model_results: list[str] = []
        self._signed_request: Signed | None = None
        self._sent_at = 0.0
        self._awaiting_configuration = False
        #: The pending configuration query was made on a timeout, so an
        #: unchanged answer means retransmit (SPEC §6.1); a query made on an
        #: error only looks for a new configuration.
        self._retransmit_on_reply = False

    # ------------------------------------------------------------------
    # IMachine

    def start(self) -> None:
        """Register with Olympus; the reply carries the configuration."""
        self._log.info(
            "{name} starting with {count} requests",
            name=self.name, count=len(self.outcome.operations),
            event="bcr.start", node=self.name,
            verify_key=self._key.verify_key_bytes.hex(),
        )
        self._register()

    def receive(self, sender: Peer, message: object) -> None:
        """
        Dispatch one wire message.  Results and errors count only from a
        replica of a configuration this client knows (which one is checked
        against the configuration the message names); sealed messages only
        from Olympus, or, for a result Olympus recovered, from a replica
        handing it on.
        """
        if isinstance(message, ResultMessage):
            if self._is_replica_of(sender, message.configuration):
                self._on_result(sender, message)
                return
        elif isinstance(message, Sealed):
            if sender.key == self._olympus.key or self._is_replica_of(sender, None):
                self._on_sealed(sender, message)
                return
        elif isinstance(message, ErrorMessage):
            if self._is_replica_of(sender, message.configuration):
                self._on_error(sender, message)
                return
        else:
            self._reject(sender, f"unexpected {type(message).__name__}")
            return
        self._reject(sender, f"dropped {type(message).__name__} from a peer that is not a replica")

    def _is_replica_of(self, sender: Peer, number: int | None) -> bool:
        """Is C{sender} a replica of configuration C{number} (of any, if None)?"""
        configurations = (
            self._configurations.values() if number is None
            else [c for c in (self._configurations.get(number),) if c is not None]
        )
        return any(sender.key == r.verify_key for c in configurations for r in c.replicas)

    def timer_expired(self, key: str) -> None:
        """Retry registration, or handle a request timeout (§6.1)."""
        if key == _REGISTRATION_TIMER:
            self._register()
        elif key == _REQUEST_TIMER and self._signed_request is not None:
            self._log.info(
                "{name} timed out waiting for {request_id}; asking Olympus "
                "for the configuration",
                name=self.name, request_id=self._request_id(),
                event="bcr.client_timeout", node=self.name,
            )
            self._ask_configuration(retransmit=True)
            self._env.start_timer(_REQUEST_TIMER, self._timeout_s)

    def max_message_from(self, key: bytes) -> int:
        # A result is as long as the value it reads, and values grow by
        # appends: Olympus and replicas of known configurations may send up
        # to the chain's bound, anyone else next to nothing.
        known = key == self._olympus.key or any(
            key == r.verify_key for c in self._configurations.values() for r in c.replicas
        )
        return MAX_MESSAGE if known else MAX_STRANGER_MESSAGE

    # ------------------------------------------------------------------

    def _reject(self, sender: Peer, reason: str) -> None:
        # A stranger can mint keys and connections: they share one allowance.
        known = sender.key == self._olympus.key or self._is_replica_of(sender, None)
        suppressed = self._throttle.allow(sender.key.hex() if known else "strangers")
        if suppressed is None:
            return
        self._log.warn(
            "{name} rejected input from {peer}: {reason}{suppressed_note}",
            name=self.name, peer=sender.address, reason=clip(reason),
            suppressed=suppressed,
            suppressed_note=f" ({suppressed} similar lines suppressed)" if suppressed else "",
            event="bcr.rejected", node=self.name,
        )

    def _seal(self, message: object) -> Sealed:
        return crypto.seal(
            self._key, self._env.address, self.name, message,
            recipient=self._olympus.key, epoch=self._olympus_epoch or b"",
            configuration=self.configuration.number if self.configuration else -1,
        )

    def _register(self) -> None:
        registration = RegisterClient(
            self.index, self._env.address, self._key.verify_key_bytes
        )
        self._env.send(self._olympus, self._seal(registration))
        self._env.start_timer(_REGISTRATION_TIMER, max(self._timeout_s, 1.0))

    def _ask_configuration(self, retransmit: bool) -> None:
        self._awaiting_configuration = True
        self._retransmit_on_reply = self._retransmit_on_reply or retransmit
        self._env.send(self._olympus, self._seal(GetConfiguration(self.index)))

    def _on_sealed(self, sender: Peer, sealed: Sealed) -> None:
        try:
            inner = from_olympus(
                self._verifier, sealed, self._olympus.key, self._key.verify_key_bytes,
                self._olympus_epoch,
            )
        except (crypto.BadSignature, codec.BadMessage) as e:
            self._reject(sender, f"sealed by {sealed.signer!r}: {e}")
            return
        if self._olympus_epoch is None:
            self._olympus_epoch = sealed.epoch
        if isinstance(inner, ResultFromOlympus):
            self._on_recovered_result(sender, inner)
        elif isinstance(inner, ConfigurationReply) and sender.key == self._olympus.key:
            self._on_configuration(inner.configuration)
        else:
            self._reject(sender, f"unexpected {type(inner).__name__} from Olympus")

    def _on_configuration(self, configuration: Configuration) -> None:
        self._env.cancel_timer(_REGISTRATION_TIMER)
        previous = self.configuration
        self._configurations[configuration.number] = configuration
        changed = previous is None or configuration.number > previous.number
        if changed:
            self.configuration = configuration
            self.outcome.configurations_seen.append(configuration.number)
            self._log.info(
                "{name} uses configuration {number}: {replicas}",
                name=self.name, number=configuration.number,
                replicas=[r.address for r in configuration.replicas],
                event="bcr.configuration", node=self.name,
            )
            if self._watcher is not None:
                self._watcher.configuration_used(self.index, configuration)
        self._awaiting_configuration = False
        retransmit, self._retransmit_on_reply = self._retransmit_on_reply, False
        if self._signed_request is None:
            if previous is None:
                self._send_next()
            return
        if changed:
            # Asked for or pushed by Olympus after a reconfiguration: the
            # outstanding request goes to the new head at once (SPEC §6.1).
            self._send_to_head()
        elif retransmit:
            self._retransmit()

    def _on_error(self, sender: Peer, error: ErrorMessage) -> None:
        self._log.info(
            "{name} got error {reason!r} for {client}:{seq} from {peer}",
            name=self.name, reason=error.reason, client=error.client, seq=error.seq,
            peer=sender.address, event="bcr.error", node=self.name,
        )
        # An error is a sign that reconfiguration is under way (§6.1).  If
        # the configuration has not changed yet, the request timer decides
        # when to retransmit: retransmitting on the answer would meet the
        # same errors and loop as fast as the network goes.
        if self._signed_request is not None and not self._awaiting_configuration:
            self._ask_configuration(retransmit=False)

    # ------------------------------------------------------------------
    # Requests and results

    def _request_id(self) -> str:
        return f"{self.index}:{self.outcome.accepted}"

    def _send_next(self) -> None:
        seq = self.outcome.accepted
        if seq >= len(self.outcome.operations):
            self._finish()
            return
        name, args = self.outcome.operations[seq]
        request = Request(self.index, seq, Operation(name, args))
        self._signed_request = crypto.sign(self._key, request)
        self._sent_at = self._env.now()
        if self.outcome.first_sent_at is None:
            self.outcome.first_sent_at = self._sent_at
        self._send_to_head()

    def _send_to_head(self) -> None:
        assert self.configuration is not None and self._signed_request is not None
        name, args = self.outcome.operations[self.outcome.accepted]
        head = peer_of(self.configuration.replicas[0])
        self._log.info(
            "{name} sends request {request_id} {operation} to the head of "
            "configuration {configuration}",
            name=self.name, request_id=self._request_id(),
            operation=str(Operation(name, args)),
            configuration=self.configuration.number,
            event="bcr.request", node=self.name,
        )
        self._env.send(head, ClientRequest(self._signed_request))
        self._env.start_timer(_REQUEST_TIMER, self._timeout_s)

    def _retransmit(self) -> None:
        assert self.configuration is not None and self._signed_request is not None
        self.outcome.retransmissions += 1
        self._log.info(
            "{name} retransmits {request_id} to all {count} replicas of "
            "configuration {configuration}",
            name=self.name, request_id=self._request_id(),
            count=len(self.configuration.replicas),
            configuration=self.configuration.number,
            event="bcr.retransmit", node=self.name,
        )
        message = ClientRequest(self._signed_request)
        for replica in self.configuration.replicas:
            self._env.send(peer_of(replica), message)

    def _on_result(self, sender: Peer, message: ResultMessage) -> None:
        seq = self.outcome.accepted
        if (
            self._signed_request is None
            or message.client != self.index
            or message.seq != seq
        ):
            self._log.info(
                "{name} ignores a duplicate or late result for {client}:{seq}",
                name=self.name, client=message.client, seq=message.seq,
                event="bcr.duplicate_result", node=self.name,
            )
            return
        configuration = self._configurations.get(message.configuration)
        if configuration is None:
            self._reject(sender, f"result from unknown configuration {message.configuration}")
            return
        name, args = self.outcome.operations[seq]
        expected = ResultStatement(
            message.configuration, message.slot, self.index, seq,
            Operation(name, args), crypto.result_hash(message.result),
        )
        matching, problems, contradicted = count_matching_results(
            self._verifier, message.result_proof, replica_keys(configuration), expected
        )
        if contradicted and matching > 0:
            self._report_misbehaviour(message, problems)
        if matching < configuration.t + 1:
            self._reject(
                sender,
                f"result for {self._request_id()} has {matching} matching "
                f"statements, {configuration.t + 1} needed: {problems}",
            )
            return
        self._accept(message.slot, message.result, problems)

    def _report_misbehaviour(self, message: ResultMessage, problems: list[str]) -> None:
        """Validly signed statements that contradict each other prove misbehaviour (§5.6)."""
        reason = (
            f"result proof for {self.index}:{message.seq} in configuration "
            f"{message.configuration} holds contradicting statements: {problems}"
        )
        self._log.warn(
            "{name} requests reconfiguration: {reason}", name=self.name, reason=reason,
            event="bcr.reconfiguration_request", node=self.name,
        )
        request = ReconfigurationRequest(
            message.configuration, self.name, reason, message.result_proof
        )
        self._env.send(self._olympus, self._seal(request))

    def _on_recovered_result(self, sender: Peer, voucher: ResultFromOlympus) -> None:
        """A result Olympus recovered in a reconfiguration (SPEC §9.6)."""
        if (
            self._signed_request is None
            or voucher.client != self.index
            or voucher.seq != self.outcome.accepted
        ):
            self._log.info(
                "{name} ignores a recovered result for {client}:{seq}",
                name=self.name, client=voucher.client, seq=voucher.seq,
                event="bcr.duplicate_result", node=self.name,
            )
            return
        # Olympus is trusted and sealed it: its word is the proof (SPEC §9.6 [D]).
        self._accept(voucher.slot, voucher.result, [], recovered=True)
        # The chain has changed under us; SPEC §6.1 asks to check at once.
        if not self._awaiting_configuration and not self.outcome.finished:
            self._ask_configuration(retransmit=False)

    def _accept(
        self, slot: int, result: str, problems: list[str], recovered: bool = False
    ) -> None:
        seq = self.outcome.accepted
        name, args = self.outcome.operations[seq]
        now = self._env.now()
        latency = now - self._sent_at
        self.outcome.last_accepted_at = now
        expected_by_model = apply_operation(self._model, name, args)
        self._model_results.append(expected_by_model)
        self._env.cancel_timer(_REQUEST_TIMER)
        self._signed_request = None
        self.outcome.results.append(result)
        self.outcome.slots.append(slot)
        self.outcome.latencies_s.append(latency)
        self.outcome.accepted_at.append(now)
        self.outcome.accepted_in.append(
            self.configuration.number if self.configuration is not None else -1
        )
        self._log.info(
            "{name} accepted {request_id} slot {slot}: {result!r} "
            "({ms:.1f} ms){how}{problems}",
            name=self.name, request_id=f"{self.index}:{seq}", slot=slot,
            result=result, ms=latency * 1000,
            how=", recovered by Olympus" if recovered else "",
            problems=f"; ignored {problems}" if problems else "",
            local_model_result=expected_by_model, recovered=recovered,
            event="bcr.accept", node=self.name,
        )
        if self._watcher is not None:
            self._watcher.result_accepted(
                self.index, self.configuration.number if self.configuration else -1, now
            )
        self._send_next()

    def _finish(self) -> None:
        self.outcome.finished = True
        # Meaningful only when no other client touches this client's keys;
        # the driver's slot-order replay is the check that decides a run.
        verdict = "Valid" if self._model_results == self.outcome.results else "Invalid"
        self._log.info(
            "{name} finished: {count} results {results!r}; replayed alone: "
            "{replayed!r}: {verdict}",
            name=self.name, count=self.outcome.accepted, results=self.outcome.results,
            replayed=self._model_results, verdict=verdict,
            event="bcr.client_done", node=self.name,
        )
        self._on_finished(self.outcome)
