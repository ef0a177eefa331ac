# -*- test-case-name: tests.test_core_olympus -*-
"""
Olympus, the trusted configuration service (SPEC §2.1, §9): pure.

Olympus keeps a pool of registered spare replicas and the registered
clients.  Once it has 2t+1 spares and every client of the case, it sets up
configuration 0: it assigns each spare its chain position with a signed
L{Assignment}.  It answers clients' configuration queries, receives
reconfiguration requests, and at the end of a run retires every replica and
reports their final dictionaries to whoever holds its key (the driver).

The reconfiguration protocol itself (wedge, quorum, catch-up, running state,
new configuration) belongs to the recovery layer; L{_on_reconfiguration_request}
is where it starts.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from attrs import define, field
from zope.interface import implementer

from twisted_bcr import codec, crypto
from twisted_bcr.config import Case
from twisted_bcr.core.common import OLYMPUS, replica_name, unseal
from twisted_bcr.interfaces import IEnvironment, IMachine
from twisted_bcr.messages import (
    Assignment,
    ClientInfo,
    Configuration,
    ConfigurationReply,
    FinalState,
    FinishRun,
    GetConfiguration,
    ReconfigurationRequest,
    RegisterClient,
    RegisterReplica,
    ReplicaInfo,
    RunReport,
    Sealed,
    Shutdown,
)

_FINISH_TIMER = "finish"


@define
class _Finishing:
    """A run being wound up: who asked, and the final states collected so far."""

    driver: str
    expected: int
    final_states: dict[int, FinalState] = field(factory=dict)
    errors: list[str] = field(factory=list)
    reported: bool = False


@implementer(IMachine)
class Olympus:
    """The configuration service of one case."""

    def __init__(
        self,
        env: IEnvironment,
        case: Case,
        key: crypto.KeyPair,
        verifier: crypto.Verifier | None = None,
    ) -> None:
        self._env = env
        self._log = env.log
        self._case = case
        self._key = key
        self._verifier = verifier or crypto.Verifier()
        self.name = OLYMPUS
        self.spares: list[ReplicaInfo] = []
        self.clients: dict[int, ClientInfo] = {}
        self.configuration: Configuration | None = None
        #: One record per reconfiguration, as in the summary JSON (DESIGN §4).
        self.reconfigurations: list[dict[str, object]] = []
        self._finishing: _Finishing | None = None

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
            verify_key=self._key.verify_key_bytes.hex(),
            event="bcr.start", node=self.name,
        )

    def receive(self, sender: str, message: object) -> None:
        """Olympus accepts only sealed control messages."""
        if not isinstance(message, Sealed):
            self._reject(sender, f"unexpected {type(message).__name__}")
            return
        try:
            inner = self._open(message)
        except (crypto.BadSignature, codec.BadMessage, LookupError, ValueError) as e:
            # ValueError: a malformed signer name such as "client x".
            self._reject(sender, f"sealed by {message.signer!r}: {e}")
            return
        handler = self._handlers.get(type(inner))
        if handler is None:
            self._reject(sender, f"unexpected {type(inner).__name__} from {message.signer}")
            return
        handler(self, message.sender, message.signer, inner)

    def timer_expired(self, key: str) -> None:
        """Only the end-of-run collection is timed here."""
        if key == _FINISH_TIMER and self._finishing is not None:
            finishing = self._finishing
            missing = [
                i for i in range(finishing.expected) if i not in finishing.final_states
            ]
            finishing.errors.append(
                f"no final state from replicas {missing} before the deadline"
            )
            self._report()

    # ------------------------------------------------------------------

    def _reject(self, sender: str, reason: str) -> None:
        self._log.warn(
            "olympus rejected input from {peer}: {reason}",
            peer=sender, reason=reason, event="bcr.rejected", node=self.name,
        )

    def _seal(self, message: object) -> Sealed:
        return crypto.seal(self._key, self._env.address, OLYMPUS, message)

    def _open(self, sealed: Sealed) -> object:
        """Verify a sealed message with the key its signer name stands for."""
        signer = sealed.signer
        if signer in ("spare",) or signer.startswith("client "):
            # Registrations are self-certifying: the key is in the body, and
            # a client's later messages must match the key it registered.
            inner = codec.decode_sealed_body(sealed.body)
            if isinstance(inner, (RegisterReplica, RegisterClient)):
                return unseal(self._verifier, sealed, inner.verify_key)
            if signer.startswith("client "):
                info = self.clients[int(signer.split()[1])]
                return unseal(self._verifier, sealed, info.verify_key)
            raise crypto.BadSignature("a spare may only register")
        if signer == OLYMPUS:
            return unseal(self._verifier, sealed, self._key.verify_key_bytes)
        if signer.startswith("replica "):
            number, index = (int(x) for x in signer.split()[1].split("."))
            if self.configuration is None or number != self.configuration.number:
                raise LookupError("not a replica of the current configuration")
            if not 0 <= index < len(self.configuration.replicas):
                raise LookupError(f"no replica {index} in the current configuration")
            key = self.configuration.replicas[index].verify_key
            return unseal(self._verifier, sealed, key)
        raise LookupError("unknown signer")

    # ------------------------------------------------------------------
    # Registration and configuration 0

    def _on_register_replica(self, sender: str, signer: str, message: RegisterReplica) -> None:
        if any(s.address == message.address for s in self.spares):
            self._reject(sender, f"spare {message.address} registered twice")
            return
        self.spares.append(ReplicaInfo(message.address, message.verify_key))
        self._log.info(
            "olympus registered spare {address} ({count} spares)",
            address=message.address, count=len(self.spares),
            verify_key=message.verify_key.hex(), event="bcr.spare", node=self.name,
        )
        self._maybe_set_up()

    def _on_register_client(self, sender: str, signer: str, message: RegisterClient) -> None:
        known = self.clients.get(message.index)
        if known is not None and known.verify_key != message.verify_key:
            self._reject(sender, f"client {message.index} registered with another key")
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
        if self.configuration is not None:
            self._send_configuration(self.clients[message.index])
        else:
            self._maybe_set_up()

    def _maybe_set_up(self) -> None:
        """Set up configuration 0 once every client and enough spares are here."""
        if (
            self.configuration is not None
            or len(self.clients) < self._case.num_client
            or len(self.spares) < self.replicas_needed
        ):
            return
        self._install(0, {}, first_slot=0)
        for client in sorted(self.clients.values(), key=lambda c: c.index):
            self._send_configuration(client)

    def _install(self, number: int, state: dict[str, str], first_slot: int) -> None:
        """Take 2t+1 spares and make them configuration C{number}."""
        case = self._case
        chosen = self.spares[: self.replicas_needed]
        del self.spares[: self.replicas_needed]
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
        self._log.info(
            "olympus set up configuration {number}: {replicas}",
            number=number, replicas=[r.address for r in chosen],
            event="bcr.new_configuration", node=self.name,
        )
        for index, replica in enumerate(chosen):
            assignment = Assignment(
                configuration=configuration,
                index=index,
                state=state,
                first_slot=first_slot,
                failures=case.failure_text_for(number, index),
                client_results=(),
            )
            self._log.info(
                "olympus assigns {address} as {replica}",
                address=replica.address, replica=replica_name(number, index),
                event="bcr.assign", node=self.name,
            )
            self._env.send(replica.address, self._seal(assignment))

    def _send_configuration(self, client: ClientInfo) -> None:
        assert self.configuration is not None
        self._env.send(client.address, self._seal(ConfigurationReply(self.configuration)))

    def _on_get_configuration(
        self, sender: str, signer: str, message: GetConfiguration
    ) -> None:
        client = self.clients.get(message.client)
        if client is None or self.configuration is None:
            self._reject(sender, f"configuration asked by unregistered client {message.client}")
            return
        self._log.info(
            "olympus tells client {index} configuration {number}",
            index=message.client, number=self.configuration.number,
            event="bcr.get_configuration", node=self.name,
        )
        self._send_configuration(client)

    # ------------------------------------------------------------------
    # Reconfiguration (the recovery layer builds on this)

    def _on_reconfiguration_request(
        self, sender: str, signer: str, message: ReconfigurationRequest
    ) -> None:
        self._log.warn(
            "olympus received a reconfiguration request from {requester} for "
            "configuration {configuration}: {reason}",
            requester=message.requester, configuration=message.configuration,
            reason=message.reason, event="bcr.reconfiguration_request", node=self.name,
        )

    # ------------------------------------------------------------------
    # End of run

    def _on_finish_run(self, sender: str, signer: str, message: FinishRun) -> None:
        if signer != OLYMPUS:
            # Only whoever holds Olympus's own key (the driver) ends a run.
            self._reject(sender, f"finish_run sealed by {signer!r}, not by Olympus's key")
            return
        if self._finishing is not None:
            self._reject(sender, "the run is already finishing")
            return
        expected = len(self.configuration.replicas) if self.configuration else 0
        self._finishing = _Finishing(driver=sender, expected=expected)
        self._log.info(
            "olympus finishing the run ({reason}): retiring {count} replicas",
            reason=message.reason, count=expected,
            event="bcr.finish", node=self.name,
        )
        if self.configuration is not None:
            shutdown = self._seal(Shutdown(self.configuration.number))
            for replica in self.configuration.replicas:
                self._env.send(replica.address, shutdown)
        spare_shutdown = self._seal(Shutdown(-1))
        for spare in self.spares:
            self._env.send(spare.address, spare_shutdown)
        if expected == 0:
            self._report()
            return
        # Replicas may take one step timeout to drain before reporting.
        step_s = max(self._case.head_timeout_ms, self._case.nonhead_timeout_ms) / 1000
        self._env.start_timer(_FINISH_TIMER, 2 * step_s)

    def _on_final_state(self, sender: str, signer: str, message: FinalState) -> None:
        finishing = self._finishing
        if finishing is None or finishing.reported:
            self._reject(sender, "final state outside the end of a run")
            return
        if self.configuration is None or signer != replica_name(
            self.configuration.number, message.index
        ):
            # A replica may only report its own dictionary.
            self._reject(
                sender,
                f"final state of replica {message.configuration}.{message.index} "
                f"sealed by {signer!r}",
            )
            return
        finishing.final_states[message.index] = message
        self._log.info(
            "olympus got the final dictionary of {replica}: {state!r}",
            replica=signer, state=dict(sorted(message.state.items())),
            last_slot=message.last_slot, event="bcr.final_state", node=self.name,
        )
        if len(finishing.final_states) == finishing.expected:
            self._env.cancel_timer(_FINISH_TIMER)
            self._report()

    def _report(self) -> None:
        finishing = self._finishing
        assert finishing is not None and not finishing.reported
        finishing.reported = True
        report = RunReport(
            configuration=self.configuration.number if self.configuration else -1,
            final_states=tuple(
                finishing.final_states[i] for i in sorted(finishing.final_states)
            ),
            reconfigurations_json=json.dumps(self.reconfigurations),
            errors=tuple(finishing.errors),
        )
        self._log.info(
            "olympus reports the run to {driver}", driver=finishing.driver,
            errors=list(finishing.errors), event="bcr.report", node=self.name,
        )
        self._env.send(finishing.driver, self._seal(report))

    _handlers: dict[type, Callable[..., None]] = {
        RegisterReplica: _on_register_replica,
        RegisterClient: _on_register_client,
        GetConfiguration: _on_get_configuration,
        ReconfigurationRequest: _on_reconfiguration_request,
        FinishRun: _on_finish_run,
        FinalState: _on_final_state,
    }
