"""
Tests for L{twisted_bcr.core.client}: registration, sending requests,
accepting results on t+1 matching statements (SPEC §5 step 6), and timeouts
(SPEC §6.1), driven through a fake environment.
"""

from __future__ import annotations

from attrs import evolve
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes import (
    EPOCH,
    OLYMPUS_ADDRESS,
    OLYMPUS_KEY,
    STRANGER,
    STRANGER_KEY,
    FakeEnvironment,
    client_address,
    client_key,
    open_sealed,
    replica_address,
    request_of,
    result_statement,
    seal_from_olympus,
    sign_request,
    wire_configuration,
)
from twisted_bcr import crypto
from twisted_bcr.core.client import MINIMUM_TIMEOUT_S, Client, ClientOutcome
from twisted_bcr.core.common import MAX_MESSAGE, MAX_STRANGER_MESSAGE
from twisted_bcr.messages import (
    ClientRequest,
    Configuration,
    ConfigurationReply,
    ErrorMessage,
    GetConfiguration,
    ReconfigurationRequest,
    RegisterClient,
    ResultFromOlympus,
    ResultMessage,
    Sealed,
    Signed,
)
from twisted_bcr.peers import Peer

OPERATIONS = [("put", ("movie", "star")), ("append", ("movie", " wars")), ("get", ("movie",))]


class ClientTestCase(SynchronousTestCase):
    """A client of configuration 0 with three operations, on a fake environment."""

    t = 1
    timeout_ms = 2000

    def setUp(self) -> None:
        self.config = wire_configuration(t=self.t, clients=1)
        self.env = FakeEnvironment(client_address(0))
        self.finished: list[ClientOutcome] = []
        self.client = Client(
            self.env, 0, list(OPERATIONS), client_key(0), OLYMPUS_ADDRESS,
            self.timeout_ms, self.finished.append,
        )
        self.env.machine = self.client
        self.addCleanup(lambda: self.assertEqual(self.env.format_errors, []))

    def configure(self, configuration: Configuration | None = None) -> None:
        """Olympus answers with C{configuration} (default: configuration 0)."""
        self.client.receive(OLYMPUS_ADDRESS, self.sealed_configuration(configuration))

    def sealed_configuration(
        self,
        configuration: Configuration | None = None,
        *,
        key: crypto.KeyPair = OLYMPUS_KEY,
        to: Peer | None = None,
        epoch: bytes = EPOCH,
    ) -> Sealed:
        """A configuration reply as Olympus seals it for this client (or C{to})."""
        configuration = configuration or self.config
        return seal_from_olympus(
            ConfigurationReply(configuration), key, to=to or client_address(0),
            epoch=epoch, configuration=configuration.number,
        )

    def rejections(self) -> list[str]:
        """Reasons of every rejection the client logged."""
        return [e["reason"] for e in self.env.events_named("bcr.rejected")]

    def assertNothingHappened(self) -> None:
        """Nothing was sent, accepted or requested, and no new timer runs."""
        self.assertEqual(self.env.take(), [])
        self.assertEqual(self.client.outcome.results, [])
        self.assertEqual(self.env.of_type(ReconfigurationRequest), [])

    def started(self) -> Signed:
        """Start, receive configuration 0; return the signed first request sent to the head."""
        self.client.start()
        self.configure()
        [request] = [s for s in self.env.take() if isinstance(s.message, ClientRequest)]
        self.assertEqual(request.to, replica_address(0))
        return request.message.request

    def result(
        self,
        signed: Signed,
        result: str,
        valid: int,
        slot: int = 0,
        configuration: Configuration | None = None,
        lie: str = "",
    ) -> ResultMessage:
        """
        A result message for C{signed} whose first C{valid} statements are
        validly signed and match; the others carry a spoiled signature (or,
        when C{lie} is given, a valid signature over the hash of C{lie}).
        """
        configuration = configuration or self.config
        request = request_of(signed)
        statements = []
        for position in range(len(configuration.replicas)):
            if position < valid:
                statements.append(result_statement(configuration, slot, signed, position, result))
            elif lie:
                statements.append(result_statement(configuration, slot, signed, position, lie))
            else:
                statements.append(
                    crypto.corrupt(result_statement(configuration, slot, signed, position, result))
                )
        return ResultMessage(
            configuration.number, slot, request.client, request.seq, result, tuple(statements)
        )


class StartTests(ClientTestCase):
    """A client registers with Olympus and starts on the configuration it gets."""

    def test_registers(self) -> None:
        """Starting seals a registration with the client's key to Olympus, and arms a retry timer."""
        self.client.start()
        [sent] = self.env.take()
        self.assertEqual(sent.to, OLYMPUS_ADDRESS)
        self.assertEqual(
            open_sealed(sent, client_key(0)),
            RegisterClient(0, client_address(0).address, client_key(0).verify_key_bytes),
        )
        # For Olympus only; before the client has heard from Olympus it
        # knows no epoch, and registering is what may carry none.
        self.assertEqual(
            (sent.message.recipient, sent.message.epoch, sent.message.configuration),
            (OLYMPUS_KEY.verify_key_bytes, b"", -1),
        )
        self.assertIn("registration", self.env.active_timers())

    def test_registration_retried(self) -> None:
        """Without an answer the registration is sent again."""
        self.client.start()
        self.env.take()
        self.env.clock.advance(2)
        self.assertEqual(len(self.env.of_type(RegisterClient)), 1)

    def test_first_request_to_head(self) -> None:
        """On the configuration the first request, signed by the client, goes to the head with a timer."""
        signed = self.started()
        request = request_of(signed)
        self.assertEqual((request.client, request.seq, request.operation.name), (0, 0, "put"))
        crypto.Verifier().verify(signed, client_key(0).verify_key_bytes, type(request))
        self.assertEqual(self.env.active_timers(), {"request": 2.0})
        self.assertEqual(self.client.outcome.configurations_seen, [0])

    def test_configuration_not_from_olympus(self) -> None:
        """A configuration sealed with another key is rejected and nothing is sent."""
        self.client.start()
        self.env.take()
        reply = self.sealed_configuration(key=STRANGER_KEY)
        self.client.receive(OLYMPUS_ADDRESS, reply)
        self.assertEqual(self.env.take(), [])
        self.assertIsNone(self.client.configuration)
        self.assertEqual(len(self.rejections()), 1)

    def test_configuration_from_a_stranger(self) -> None:
        """
        A configuration a stranger sends is dropped, even a genuine one
        Olympus sealed for this client: only Olympus's own connection
        carries configurations.
        """
        self.client.start()
        self.env.take()
        for reply in (self.sealed_configuration(key=STRANGER_KEY), self.sealed_configuration()):
            self.client.receive(STRANGER, reply)
        self.assertEqual(self.env.take(), [])
        self.assertIsNone(self.client.configuration)
        self.assertEqual(len(self.rejections()), 2)
        self.assertTrue(all(r.startswith("dropped ") for r in self.rejections()))

    def test_configuration_for_another_client(self) -> None:
        """A configuration Olympus sealed for another client is not this client's."""
        self.client.start()
        self.env.take()
        self.client.receive(OLYMPUS_ADDRESS, self.sealed_configuration(to=client_address(1)))
        self.assertEqual(self.env.take(), [])
        self.assertIsNone(self.client.configuration)
        [reason] = self.rejections()
        self.assertIn("another recipient", reason)

    def test_configuration_from_another_epoch(self) -> None:
        """
        Once the client has heard from one boot of Olympus, a configuration
        sealed in another (a replay from an earlier run) is dropped.
        """
        self.started()
        newer = wire_configuration(t=self.t, clients=1, number=1)
        self.client.receive(
            OLYMPUS_ADDRESS, self.sealed_configuration(newer, epoch=b"o" * 16)
        )
        self.assertEqual(self.env.take(), [])
        self.assertEqual(self.client.configuration, self.config)
        [reason] = self.rejections()
        self.assertIn("epoch", reason)

    def test_seals_with_the_epoch_it_learnt(self) -> None:
        """After Olympus's first message the client's sealed messages carry its epoch."""
        self.started()
        self.env.clock.advance(self.timeout_ms / 1000)
        [ask] = self.env.take()
        self.assertEqual(
            (ask.message.recipient, ask.message.epoch, ask.message.configuration),
            (OLYMPUS_KEY.verify_key_bytes, EPOCH, 0),
        )

    def test_configuration_relayed_by_a_replica(self) -> None:
        """A replica may relay recovered results, never a configuration."""
        self.started()
        newer = wire_configuration(t=self.t, clients=1, number=1)
        self.client.receive(replica_address(1), self.sealed_configuration(newer))
        self.assertEqual(self.env.take(), [])
        self.assertEqual(self.client.configuration, self.config)
        self.assertEqual(len(self.rejections()), 1)

    def test_message_bound(self) -> None:
        """
        A client takes up to the chain's bound from Olympus and from the
        replicas of configurations it knows (a result is as long as the value
        read), and next to nothing from anyone else.
        """
        self.started()
        for key in (OLYMPUS_KEY.verify_key_bytes, replica_address(0).key):
            self.assertEqual(self.client.max_message_from(key), MAX_MESSAGE)
        for key in (STRANGER_KEY.verify_key_bytes, replica_address(0, 5).key):
            self.assertEqual(self.client.max_message_from(key), MAX_STRANGER_MESSAGE)


class AcceptanceTests(ClientTestCase):
    """The client accepts a result on t+1 valid matching statements."""

    def test_accepts_with_t_plus_one(self) -> None:
        """Exactly t+1 valid matching statements (the others badly signed) are enough."""
        signed = self.started()
        self.client.receive(replica_address(2), self.result(signed, "OK", valid=self.t + 1))
        self.assertEqual(self.client.outcome.results, ["OK"])
        self.assertEqual(self.client.outcome.slots, [0])
        [sent] = self.env.take()
        self.assertEqual(request_of(sent.message.request).seq, 1)

    def test_refuses_with_t(self) -> None:
        """Only t valid matching statements are not enough: nothing is accepted or sent."""
        signed = self.started()
        self.client.receive(replica_address(2), self.result(signed, "OK", valid=self.t))
        self.assertEqual(self.client.outcome.results, [])
        self.assertEqual(self.env.take(), [])
        self.assertEqual(len(self.env.events_named("bcr.rejected")), 1)
        self.assertIn("request", self.env.active_timers())

    def test_contradicting_statements_do_not_count(self) -> None:
        """Validly signed statements for another result do not count toward t+1."""
        signed = self.started()
        self.client.receive(replica_address(2), self.result(signed, "OK", valid=self.t, lie="fail"))
        self.assertEqual(self.client.outcome.results, [])
        self.client.receive(replica_address(2), self.result(signed, "OK", valid=self.t + 1, lie="fail"))
        self.assertEqual(self.client.outcome.results, ["OK"])

    def test_statement_in_wrong_position(self) -> None:
        """A statement is checked with the key of its position: replica 0's statement copied to position 1 is invalid."""
        signed = self.started()
        statement = result_statement(self.config, 0, signed, 0, "OK")
        proof = (statement,) * len(self.config.replicas)
        self.client.receive(replica_address(2), ResultMessage(0, 0, 0, 0, "OK", proof))
        self.assertEqual(self.client.outcome.results, [])

    def test_result_for_other_request(self) -> None:
        """Statements for another operation than the request sent do not match."""
        self.started()
        other = sign_request(0, 0, "get", "movie")
        self.client.receive(replica_address(2), self.result(other, "", valid=3))
        self.assertEqual(self.client.outcome.results, [])

    def test_ignores_duplicate(self) -> None:
        """A second copy of an accepted result is ignored."""
        signed = self.started()
        message = self.result(signed, "OK", valid=3)
        self.client.receive(replica_address(2), message)
        self.env.take()
        self.client.receive(replica_address(1), message)
        self.assertEqual(self.client.outcome.results, ["OK"])
        self.assertEqual(self.env.take(), [])
        self.assertEqual(len(self.env.events_named("bcr.duplicate_result")), 1)

    def test_ignores_late_result(self) -> None:
        """A result for an earlier request arriving after later ones were sent is ignored."""
        first = self.started()
        self.client.receive(replica_address(2), self.result(first, "OK", valid=3))
        second = self.env.take()[0].message.request
        self.client.receive(replica_address(2), self.result(second, "OK", valid=3, slot=1))
        self.env.take()
        self.client.receive(replica_address(0), self.result(first, "OK", valid=3))
        self.assertEqual(self.client.outcome.results, ["OK", "OK"])
        self.assertEqual(self.env.take(), [])

    def test_ignores_result_for_other_client(self) -> None:
        """A result naming another client is ignored."""
        signed = self.started()
        message = self.result(signed, "OK", valid=3)
        self.client.receive(replica_address(2), evolve(message, client=1))
        self.assertEqual(self.client.outcome.results, [])

    def test_finishes(self) -> None:
        """After the last accepted result the outcome is reported, with every result and slot."""
        signed = self.started()
        for seq, result in enumerate(["OK", "OK", "star wars"]):
            self.client.receive(replica_address(2), self.result(signed, result, valid=3, slot=seq + 4))
            sent = self.env.take()
            if sent:
                signed = sent[0].message.request
        [outcome] = self.finished
        self.assertTrue(outcome.finished)
        self.assertEqual(outcome.results, ["OK", "OK", "star wars"])
        self.assertEqual(outcome.slots, [4, 5, 6])
        self.assertEqual(self.env.active_timers(), {})
        [done] = self.env.events_named("bcr.client_done")
        self.assertEqual((done["verdict"], done["replayed"]), ("Valid", ["OK", "OK", "star wars"]))

    def test_invalid_verdict(self) -> None:
        """Results that the client's own replay contradicts are logged as Invalid."""
        signed = self.started()
        for result in ["OK", "fail", "star wars"]:
            self.client.receive(replica_address(2), self.result(signed, result, valid=3))
            sent = self.env.take()
            if sent:
                signed = sent[0].message.request
        [done] = self.env.events_named("bcr.client_done")
        self.assertEqual(done["verdict"], "Invalid")


class AcceptanceWithTwoFaultsTests(AcceptanceTests):
    """The same acceptance rules with t = 2 (five replicas)."""

    t = 2


class TimeoutTests(ClientTestCase):
    """On a timeout the client asks Olympus, then resends (SPEC §6.1)."""

    def timed_out(self) -> Signed:
        """Start, send the first request, let its timer expire; return the signed request."""
        signed = self.started()
        self.env.clock.advance(self.timeout_ms / 1000)
        [ask] = self.env.take()
        self.assertEqual(ask.to, OLYMPUS_ADDRESS)
        self.assertEqual(open_sealed(ask, client_key(0)), GetConfiguration(0))
        return signed

    def test_unchanged_configuration_retransmits_to_all(self) -> None:
        """If the configuration is unchanged the same request goes to every replica."""
        signed = self.timed_out()
        self.configure()
        sent = self.env.take()
        self.assertEqual([s.to for s in sent], [replica_address(i) for i in range(3)])
        self.assertEqual({s.message for s in sent}, {ClientRequest(signed)})
        self.assertEqual(self.client.outcome.retransmissions, 1)
        self.assertIn("request", self.env.active_timers())

    def test_changed_configuration_resends_to_new_head(self) -> None:
        """If the configuration changed the same request goes to the new head only."""
        signed = self.timed_out()
        new = wire_configuration(t=self.t, clients=1, number=1)
        self.configure(new)
        [sent] = self.env.take()
        self.assertEqual((sent.to, sent.message), (replica_address(0, 1), ClientRequest(signed)))
        self.assertEqual(self.client.outcome.retransmissions, 0)
        self.assertEqual(self.client.outcome.configurations_seen, [0, 1])

    def test_result_from_old_configuration(self) -> None:
        """After moving to a new configuration, a result proved by the old one is still accepted."""
        signed = self.timed_out()
        self.configure(wire_configuration(t=self.t, clients=1, number=1))
        self.env.take()
        self.client.receive(replica_address(2), self.result(signed, "OK", valid=2))
        self.assertEqual(self.client.outcome.results, ["OK"])

    def test_repeats(self) -> None:
        """Every further expiry asks again and retransmits again."""
        self.timed_out()
        for _ in range(1, 4):
            self.configure()
            self.assertEqual(len(self.env.take()), 3)
            self.env.clock.advance(self.timeout_ms / 1000)
            self.assertEqual(len(self.env.of_type(GetConfiguration)), 1)
            self.env.take()
        self.assertEqual(self.client.outcome.retransmissions, 3)

    def test_unsolicited_configuration(self) -> None:
        """A configuration reply the client did not ask for sends nothing."""
        self.started()
        self.configure()
        self.assertEqual(self.env.take(), [])

    def test_error_asks_for_configuration(self) -> None:
        """An error from a replica makes the client ask Olympus for the configuration."""
        self.started()
        self.client.receive(replica_address(1), ErrorMessage(0, 0, 0, "immutable"))
        self.assertEqual(self.env.of_type(GetConfiguration), [GetConfiguration(0)])

    def test_accepting_restarts_timer(self) -> None:
        """Accepting a result stops its timer; the next request runs under a fresh one."""
        signed = self.started()
        self.env.clock.advance(1)
        self.client.receive(replica_address(2), self.result(signed, "OK", valid=3))
        self.assertEqual(list(self.env.active_timers()), ["request"])
        self.assertEqual(self.env.active_timers()["request"], 1 + self.timeout_ms / 1000)


class RecordingWatcher:
    """A L{ClientWatcher} that records what it is told."""

    def __init__(self) -> None:
        self.told: list[tuple[str, int, int]] = []

    def configuration_used(self, client: int, configuration: Configuration) -> None:
        self.told.append(("configuration", client, configuration.number))

    def result_accepted(self, client: int, configuration: int, at: float) -> None:
        self.told.append(("result", client, configuration))


class WatcherTests(ClientTestCase):
    """Whoever runs a client learns from it what the launcher acts on, not from its log."""

    def setUp(self) -> None:
        super().setUp()
        self.watcher = RecordingWatcher()
        self.client = Client(
            self.env, 0, list(OPERATIONS), client_key(0), OLYMPUS_ADDRESS,
            self.timeout_ms, self.finished.append, watcher=self.watcher,
        )
        self.env.machine = self.client

    def test_configurations_and_results(self) -> None:
        """Each configuration once when the client starts using it; each accepted result with its configuration."""
        signed = self.started()
        self.configure()  # the same configuration again: not news
        self.client.receive(replica_address(2), self.result(signed, "OK", valid=self.t + 1))
        self.client.receive(replica_address(2), self.result(signed, "OK", valid=self.t + 1))
        self.configure(wire_configuration(t=self.t, clients=1, number=1))
        self.assertEqual(
            self.watcher.told,
            [("configuration", 0, 0), ("result", 0, 0), ("configuration", 0, 1)],
        )

    def test_refused_result_is_not_told(self) -> None:
        """A result without t+1 valid statements is not reported as accepted."""
        signed = self.started()
        self.client.receive(replica_address(2), self.result(signed, "OK", valid=self.t))
        self.assertEqual(self.watcher.told, [("configuration", 0, 0)])


class ZeroTimeoutTests(ClientTestCase):
    """A client timeout of 0 ms still waits a floor between retransmissions (SPEC §6.1)."""

    timeout_ms = 0

    def test_floor(self) -> None:
        """The request timer uses the minimum, never zero, and fires once per minimum interval."""
        self.started()
        self.assertEqual(self.env.timer_starts[-1], ("request", MINIMUM_TIMEOUT_S))
        self.assertGreater(MINIMUM_TIMEOUT_S, 0)
        self.env.clock.advance(0)
        self.assertEqual(self.env.take(), [])
        self.env.clock.advance(MINIMUM_TIMEOUT_S)
        self.assertEqual(len(self.env.of_type(GetConfiguration)), 1)
        self.env.take()
        self.env.clock.advance(MINIMUM_TIMEOUT_S / 2)
        self.assertEqual(self.env.take(), [])

    def test_accepts_first_valid_result(self) -> None:
        """Even with timers expiring continually, the first valid result is accepted."""
        signed = self.started()
        for _ in range(5):
            self.env.clock.advance(MINIMUM_TIMEOUT_S)
            self.configure()
        self.env.take()
        self.client.receive(replica_address(1), self.result(signed, "OK", valid=2))
        self.assertEqual(self.client.outcome.results, ["OK"])


class SenderTests(ClientTestCase):
    """
    What a client takes from whom: results and errors only from a replica
    of the configuration they name, configurations only from Olympus,
    recovered results sealed by Olympus for this client (docs/SECURITY.md).
    Whatever else arrives changes nothing and asks for no reconfiguration.
    """

    def voucher(self, signed: Signed, result: str, slot: int = 0, client: int = 0) -> ResultFromOlympus:
        """What Olympus vouches for: request C{signed} gave C{result} at C{slot}."""
        request = request_of(signed)
        return ResultFromOlympus(
            client, request.seq, slot, result,
            tuple(result_statement(self.config, slot, signed, j, result) for j in range(2)),
        )

    def test_valid_result_from_a_stranger(self) -> None:
        """A result with a complete, valid proof counts only when a replica sends it."""
        signed = self.started()
        message = self.result(signed, "OK", valid=len(self.config.replicas))
        self.client.receive(STRANGER, message)
        self.assertNothingHappened()
        self.assertIn("request", self.env.active_timers())
        [reason] = self.rejections()
        self.assertTrue(reason.startswith("dropped ResultMessage"), reason)
        # The same message from a replica of configuration 0 is accepted.
        self.client.receive(replica_address(2), message)
        self.assertEqual(self.client.outcome.results, ["OK"])

    def test_result_from_a_replica_of_another_configuration(self) -> None:
        """A replica of configuration 1 cannot deliver a result naming configuration 0."""
        signed = self.timed_out_to_new_configuration()
        message = self.result(signed, "OK", valid=2)
        self.client.receive(replica_address(2, 1), message)
        self.assertNothingHappened()
        self.assertEqual(len(self.rejections()), 1)
        self.client.receive(replica_address(2), message)
        self.assertEqual(self.client.outcome.results, ["OK"])

    def test_result_naming_an_unknown_configuration(self) -> None:
        """A replica's result naming a configuration the client does not know is dropped."""
        signed = self.started()
        other = wire_configuration(t=self.t, clients=1, number=7)
        self.client.receive(replica_address(2), self.result(signed, "OK", valid=3, configuration=other))
        self.assertNothingHappened()
        self.assertEqual(len(self.rejections()), 1)

    def test_contradicting_proof_from_a_stranger(self) -> None:
        """
        Validly signed contradicting statements prove misbehaviour only when
        a replica delivers them: from a stranger they cause no
        reconfiguration request.
        """
        signed = self.started()
        message = self.result(signed, "OK", valid=self.t + 1, lie="fail")
        self.client.receive(STRANGER, message)
        self.assertNothingHappened()
        self.client.receive(replica_address(2), message)
        [request] = self.env.of_type(ReconfigurationRequest)
        self.assertEqual((request.configuration, request.proof), (0, message.result_proof))
        [to_olympus] = [s for s in self.env.sent if isinstance(s.inner, ReconfigurationRequest)]
        self.assertEqual(to_olympus.to, OLYMPUS_ADDRESS)
        self.assertEqual(
            (to_olympus.message.recipient, to_olympus.message.epoch),
            (OLYMPUS_KEY.verify_key_bytes, EPOCH),
        )

    def test_error_from_a_stranger(self) -> None:
        """An error message from a stranger does not send the client to Olympus."""
        self.started()
        self.client.receive(STRANGER, ErrorMessage(0, 0, 0, "immutable"))
        self.assertNothingHappened()
        self.assertEqual(len(self.rejections()), 1)

    def test_error_naming_another_configuration(self) -> None:
        """A replica's error naming a configuration it is not part of is dropped."""
        self.started()
        self.client.receive(replica_address(1), ErrorMessage(1, 0, 0, "immutable"))
        self.assertNothingHappened()

    def test_unexpected_message(self) -> None:
        """Messages a client never takes (a request, say) are rejected from anyone."""
        signed = self.started()
        for sender in (replica_address(0), OLYMPUS_ADDRESS, STRANGER):
            self.client.receive(sender, ClientRequest(signed))
        self.assertNothingHappened()
        self.assertEqual(len(self.rejections()), 3)

    def test_flood_is_throttled(self) -> None:
        """A stranger's flood of results writes at most a burst of 10 log lines."""
        signed = self.started()
        message = self.result(signed, "OK", valid=3)
        for _ in range(500):
            self.client.receive(STRANGER, message)
        self.assertNothingHappened()
        self.assertEqual(len(self.rejections()), 10)

    def test_recovered_result_from_olympus(self) -> None:
        """A result Olympus recovered and sealed for this client is accepted from Olympus."""
        signed = self.started()
        sealed = seal_from_olympus(self.voucher(signed, "OK"), to=client_address(0), configuration=0)
        self.client.receive(OLYMPUS_ADDRESS, sealed)
        self.assertEqual(self.client.outcome.results, ["OK"])

    def test_recovered_result_relayed_by_a_replica(self) -> None:
        """A replica of a known configuration may hand on Olympus's sealed voucher."""
        signed = self.started()
        sealed = seal_from_olympus(self.voucher(signed, "OK"), to=client_address(0), configuration=0)
        self.client.receive(replica_address(1), sealed)
        self.assertEqual(self.client.outcome.results, ["OK"])

    def test_recovered_result_relayed_by_a_stranger(self) -> None:
        """Only Olympus and replicas may hand on a voucher, even a genuine one."""
        signed = self.started()
        sealed = seal_from_olympus(self.voucher(signed, "OK"), to=client_address(0), configuration=0)
        self.client.receive(STRANGER, sealed)
        self.assertNothingHappened()
        self.assertEqual(len(self.rejections()), 1)

    def test_recovered_result_for_another_client(self) -> None:
        """A voucher Olympus sealed for client 1 does not count for client 0."""
        signed = self.started()
        sealed = seal_from_olympus(self.voucher(signed, "OK"), to=client_address(1), configuration=0)
        self.client.receive(replica_address(1), sealed)
        self.assertNothingHappened()
        [reason] = self.rejections()
        self.assertIn("another recipient", reason)

    def test_recovered_result_not_sealed_by_olympus(self) -> None:
        """A voucher a replica sealed itself is no voucher."""
        signed = self.started()
        forged = seal_from_olympus(
            self.voucher(signed, "OK"), key=crypto.KeyPair.from_seed(b"r" * 32),
            to=client_address(0), configuration=0,
        )
        self.client.receive(replica_address(1), forged)
        self.assertNothingHappened()
        self.assertEqual(len(self.rejections()), 1)

    def timed_out_to_new_configuration(self) -> Signed:
        """The first request timed out and Olympus announced configuration 1."""
        signed = self.started()
        self.env.clock.advance(self.timeout_ms / 1000)
        self.configure(wire_configuration(t=self.t, clients=1, number=1))
        self.env.take()
        return signed
