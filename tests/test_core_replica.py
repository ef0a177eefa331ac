"""
Tests for L{twisted_bcr.core.replica}: the replica state machine driven
directly through a fake environment (SPEC §5, §6.2, §8 and the set-up and
retirement of a replica).
"""

from __future__ import annotations

from typing import Any

import attrs
import nacl.exceptions
import nacl.signing
from hypothesis import given
from hypothesis import strategies as st
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.fakes import (
    EPOCH,
    OLYMPUS_ADDRESS,
    OLYMPUS_KEY,
    STRANGER,
    STRANGER_KEY,
    Chain,
    FakeEnvironment,
    Sent,
    checkpoint_proof,
    client_address,
    client_key,
    client_request,
    identity_key,
    make_assignment,
    make_replica,
    make_result_shuttle,
    make_shuttle,
    make_spare,
    open_sealed,
    operation,
    order_proof,
    order_statement,
    reconfiguration_requests,
    replica_address,
    replica_key,
    result_proof,
    result_statement,
    seal_from_olympus,
    sign_request,
    wire_configuration,
)
from twisted_bcr import codec, crypto
from twisted_bcr.core.common import (
    MAX_CLIENT_MESSAGE,
    MAX_MESSAGE,
    MAX_STRANGER_MESSAGE,
    Mode,
    check_request,
    requesting_client,
)
from twisted_bcr.core.replica import MAX_IN_FLIGHT_PER_CLIENT, REGISTRATION_INTERVAL_FIRST_S
from twisted_bcr.interfaces import IEnvironment, IMachine
from twisted_bcr.messages import (
    CheckpointMessage,
    ClientRequest,
    CompletedCheckpoint,
    ErrorMessage,
    FinalState,
    ForwardedRequest,
    Operation,
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
    ResultMessage,
    ResultShuttle,
    ResultStatement,
    Shutdown,
    Shuttle,
    WedgeRequest,
)
from twisted_bcr.peers import Peer

CONFIG = wire_configuration(t=1, clients=2)
PUT = sign_request(0, 0, "put", "k", "v")


class ReplicaTestCase(SynchronousTestCase):
    """Shared assertions for replica tests."""

    def replica(self, index: int, **options: Any):
        """A replica at C{index} of C{options.pop('configuration', CONFIG)}."""
        configuration = options.pop("configuration", CONFIG)
        replica, env = make_replica(configuration, index, **options)
        self.watch(env)
        return replica, env

    def watch(self, env: FakeEnvironment) -> None:
        """Fail the test if any log event of C{env} cannot be formatted."""
        self.addCleanup(lambda: self.assertEqual(env.format_errors, []))

    def assertReconfigurationOnly(self, replica, env: FakeEnvironment) -> str:
        """
        C{replica} sent exactly one message: a reconfiguration request for
        its configuration, sealed with its own key, to Olympus.  Returns the
        reason it gave.
        """
        sent = env.take()
        self.assertEqual([s.to for s in sent], [OLYMPUS_ADDRESS], sent)
        request = open_sealed(sent[0], replica_key(replica.index, replica.configuration.number))
        self.assertIsInstance(request, ReconfigurationRequest)
        assert isinstance(request, ReconfigurationRequest)
        self.assertEqual(request.configuration, replica.configuration.number)
        self.assertEqual(request.requester, replica.name)
        self.assertEqual(sent[0].message.signer, replica.name)
        return request.reason

    def assertDropped(self, replica, env: FakeEnvironment, *parts: str) -> str:
        """
        C{replica} dropped the message it just received for who sent it:
        it sent nothing (no reconfiguration request either), set no timer
        and logged one more "dropped ..." line naming C{parts}.  Returns
        the reason it logged.
        """
        self.assertEqual(env.take(), [])
        self.assertEqual(env.events_named("bcr.reconfiguration_request"), [])
        self.assertEqual(
            [key for key in env.active_timers() if key.startswith(("head:", "nonhead:"))], []
        )
        rejected = env.events_named("bcr.rejected")
        self.assertTrue(rejected, "nothing was logged as rejected")
        reason = rejected[-1]["reason"]
        self.assertTrue(reason.startswith("dropped "), reason)
        for part in parts:
            self.assertIn(part, reason)
        return reason

    def owed_a_result_shuttle(self):
        """Replica 1, which executed L{PUT} and still awaits its result shuttle; nothing sent since."""
        replica, env = self.replica(1)
        replica.receive(replica_address(0), make_shuttle(CONFIG, 0, PUT, "OK", 1))
        env.take()
        return replica, env

    def cases(self, env: FakeEnvironment) -> list[tuple[str, str]]:
        """The retransmission cases logged so far, as (request id, case)."""
        return [(e["request_id"], e["case"]) for e in env.events_named("bcr.retransmission")]


class FakeEnvironmentTests(SynchronousTestCase):
    """The fake environment is a faithful IEnvironment."""

    def test_provides(self) -> None:
        """FakeEnvironment provides IEnvironment and a replica is an IMachine in shape."""
        replica, env = make_replica(CONFIG, 0)
        self.assertTrue(verifyObject(IEnvironment, env))
        for name in IMachine.names():
            self.assertTrue(callable(getattr(replica, name)))

    def test_unencodable_message(self) -> None:
        """Sending something the codec cannot carry fails at once."""
        env = FakeEnvironment(replica_address(0))
        self.assertRaises(ValueError, env.send, replica_address(1), object())
        self.assertEqual(env.sent, [])


class HeadTests(ReplicaTestCase):
    """The head orders new client requests (SPEC §5 step 2)."""

    def test_orders_valid_request(self) -> None:
        """A valid request gets slot 0, is executed and starts a signed shuttle to replica 1."""
        head, env = self.replica(0)
        head.receive(client_address(0), ClientRequest(PUT))
        self.assertEqual(head.state, {"k": "v"})
        self.assertEqual((head.next_slot, head.last_executed), (1, 0))
        [sent] = env.take()
        self.assertEqual(sent.to, replica_address(1))
        shuttle = sent.message
        self.assertIsInstance(shuttle, Shuttle)
        self.assertEqual((shuttle.configuration, shuttle.slot, shuttle.request), (0, 0, PUT))
        verifier = crypto.Verifier()
        key = replica_key(0).verify_key_bytes
        [order] = shuttle.order_proof
        [result] = shuttle.result_proof
        op = operation("put", "k", "v")
        self.assertEqual(verifier.verify(order, key, OrderStatement), OrderStatement(0, 0, 0, 0, op))
        self.assertEqual(
            verifier.verify(result, key, ResultStatement),
            ResultStatement(0, 0, 0, 0, op, crypto.result_hash("OK")),
        )
        self.assertEqual(list(head.history), [0])
        self.assertEqual(head.history[0].request, PUT)
        self.assertEqual(head.history[0].order_proof, shuttle.order_proof)
        self.assertEqual(head.last_results[0].result, "OK")
        self.assertEqual(head.last_results[0].statement, result)
        [step] = env.events_named("bcr.execute")
        self.assertEqual((step["message"], step["slot"]), ("client_request", 0))

    def test_slots_are_consecutive_from_first_slot(self) -> None:
        """Slots continue from the assignment's first slot, one per new request."""
        head, env = self.replica(0, first_slot=7, state={"k": "a"})
        head.receive(client_address(0), client_request(0, 0, "append", "k", "b"))
        head.receive(client_address(1), client_request(1, 0, "get", "k"))
        shuttles = env.of_type(Shuttle)
        self.assertEqual([s.slot for s in shuttles], [7, 8])
        self.assertEqual(head.state, {"k": "ab"})
        self.assertEqual(head.last_results[1].result, "ab")

    def test_drops_badly_signed_request(self) -> None:
        """A request with a spoiled client signature is dropped and logged, without a reconfiguration request."""
        head, env = self.replica(0)
        head.receive(client_address(0), ClientRequest(crypto.corrupt(PUT)))
        self.assertEqual(env.take(), [])
        self.assertEqual((head.next_slot, head.state, head.history), (0, {}, {}))
        [rejected] = env.events_named("bcr.rejected")
        self.assertIn("client request", rejected["reason"])
        self.assertEqual(env.events_named("bcr.reconfiguration_request"), [])

    def test_drops_request_signed_by_another_client(self) -> None:
        """A request naming client 0 but signed with client 1's key is dropped."""
        head, env = self.replica(0)
        forged = sign_request(0, 0, "put", "k", "v", key=client_key(1))
        head.receive(client_address(1), ClientRequest(forged))
        self.assertEqual(env.take(), [])
        self.assertEqual(len(env.events_named("bcr.rejected")), 1)
        self.assertEqual((head.next_slot, head.state), (0, {}))

    def test_drops_forged_request_from_named_client(self) -> None:
        """Sent over client 0's own connection, a request for client 0 signed with another key is dropped too."""
        head, env = self.replica(0)
        forged = sign_request(0, 0, "put", "k", "v", key=client_key(1))
        head.receive(client_address(0), ClientRequest(forged))
        self.assertEqual(env.take(), [])
        [rejected] = env.events_named("bcr.rejected")
        self.assertIn("client request", rejected["reason"])
        self.assertEqual((head.next_slot, head.state), (0, {}))
        self.assertEqual(env.events_named("bcr.reconfiguration_request"), [])

    def test_drops_request_from_unknown_client(self) -> None:
        """A request from a client outside the configuration is dropped."""
        head, env = self.replica(0)
        head.receive(client_address(9), client_request(9, 0, "get", "k"))
        self.assertEqual(env.take(), [])
        self.assertEqual(len(env.events_named("bcr.rejected")), 1)

    def test_drops_request_relayed_by_another_peer(self) -> None:
        """
        A valid request of client 0 arriving from anyone but client 0 (a
        stranger, another client, a replica) is dropped: a client sends
        only its own requests.
        """
        head, env = self.replica(0)
        for sender in (STRANGER, client_address(1), replica_address(1)):
            head.receive(sender, ClientRequest(PUT))
            self.assertDropped(head, env, "client_request", "the client that signed it")
        self.assertEqual((head.next_slot, head.state, head.history), (0, {}, {}))
        self.assertEqual(len(env.events_named("bcr.rejected")), 3)

    def test_drops_unexecutable_operation(self) -> None:
        """A validly signed request for an operation the dictionary cannot execute gets no slot."""
        head, env = self.replica(0)
        head.receive(client_address(0), client_request(0, 0, "foo", "x"))
        self.assertEqual(env.take(), [])
        self.assertEqual((head.next_slot, head.last_executed, head.history), (0, -1, {}))
        [rejected] = env.events_named("bcr.rejected")
        self.assertIn("client request", rejected["reason"])
        self.assertEqual(env.events_named("bcr.reconfiguration_request"), [])
        # The next good request still gets slot 0.
        head.receive(client_address(0), ClientRequest(PUT))
        self.assertEqual([s.slot for s in env.of_type(Shuttle)], [0])

    def test_pipelining_client_is_refused_beyond_bound(self) -> None:
        """
        An admitted client that sends requests without waiting for results
        gets MAX_IN_FLIGHT_PER_CLIENT slots; the next is refused without a
        slot or a reconfiguration, and other clients are still ordered.
        """
        head, env = self.replica(0)
        for seq in range(MAX_IN_FLIGHT_PER_CLIENT + 3):
            head.receive(client_address(0), client_request(0, seq, "put", f"k{seq}", "v"))
        self.assertEqual(
            [s.slot for s in env.of_type(Shuttle)], list(range(MAX_IN_FLIGHT_PER_CLIENT))
        )
        self.assertEqual(head.next_slot, MAX_IN_FLIGHT_PER_CLIENT)
        rejected = env.events_named("bcr.rejected")
        self.assertEqual(len(rejected), 3)
        self.assertIn("still in the chain", rejected[-1]["reason"])
        self.assertEqual(env.events_named("bcr.reconfiguration_request"), [])
        env.take()
        head.receive(client_address(1), client_request(1, 0, "put", "other", "v"))
        self.assertEqual([s.slot for s in env.of_type(Shuttle)], [MAX_IN_FLIGHT_PER_CLIENT])

    def test_forward_shuttle_at_head(self) -> None:
        """
        A forward shuttle arriving at the head comes from no predecessor
        (the head has none): it is dropped, changes nothing and is no
        evidence against anyone.
        """
        head, env = self.replica(0)
        for sender in (replica_address(2), replica_address(1)):
            head.receive(sender, make_shuttle(CONFIG, 0, PUT, "OK", 0))
            self.assertDropped(head, env, "shuttle", "predecessor")
        self.assertEqual((head.state, head.last_executed, head.history), ({}, -1, {}))


class MiddleTests(ReplicaTestCase):
    """A middle replica checks and extends forward shuttles (SPEC §5 step 3)."""

    def assertRefused(self, shuttle: Shuttle, expected_reason: str, index: int = 1) -> None:
        """Replica C{index} refuses C{shuttle}: it asks Olympus to reconfigure and forwards nothing."""
        replica, env = self.replica(index)
        replica.receive(replica_address(index - 1), shuttle)
        reason = self.assertReconfigurationOnly(replica, env)
        self.assertIn(expected_reason, reason)
        self.assertEqual(replica.history, {})
        self.assertEqual(env.of_type(Shuttle), [])

    def test_extends_valid_shuttle(self) -> None:
        """A valid shuttle is executed, extended with the replica's statements and forwarded."""
        middle, env = self.replica(1)
        middle.receive(replica_address(0), make_shuttle(CONFIG, 0, PUT, "OK", 1))
        [sent] = env.take()
        self.assertEqual(sent.to, replica_address(2))
        self.assertEqual(sent.message, make_shuttle(CONFIG, 0, PUT, "OK", 2))
        self.assertEqual(middle.state, {"k": "v"})
        self.assertEqual(middle.last_executed, 0)
        self.assertEqual(middle.history[0].order_proof, order_proof(CONFIG, 0, PUT, 2))
        self.assertEqual(
            middle.last_results[0].statement, result_statement(CONFIG, 0, PUT, 1, "OK")
        )

    def test_shuttle_from_outsider(self) -> None:
        """A valid shuttle sent by a stranger (a valid key of its own, in no configuration) causes nothing."""
        middle, env = self.replica(1)
        middle.receive(STRANGER, make_shuttle(CONFIG, 0, PUT, "OK", 1))
        self.assertDropped(middle, env, "shuttle", "predecessor")
        self.assertEqual((middle.state, middle.last_executed, middle.history), ({}, -1, {}))
        self.assertEqual(middle.last_results, {})

    def test_bad_shuttle_from_outsider_is_no_evidence(self) -> None:
        """A stranger's faulty shuttle is not evidence: no reconfiguration request."""
        middle, env = self.replica(1)
        middle.receive(STRANGER, make_shuttle(CONFIG, 1, PUT, "OK", 1))
        self.assertDropped(middle, env)
        middle.receive(
            STRANGER,
            attrs.evolve(make_shuttle(CONFIG, 0, PUT, "OK", 1), request=crypto.corrupt(PUT)),
        )
        self.assertDropped(middle, env)
        self.assertEqual(middle.history, {})

    def test_shuttle_from_wrong_chain_position(self) -> None:
        """A shuttle from a chain member that is not the predecessor (the successor, or a replica two back) is dropped."""
        middle, env = self.replica(1)
        middle.receive(replica_address(2), make_shuttle(CONFIG, 0, PUT, "OK", 1))
        self.assertDropped(middle, env, "shuttle", "our predecessor")
        tail, tail_env = self.replica(2)
        tail.receive(replica_address(0), make_shuttle(CONFIG, 0, PUT, "OK", 2))
        self.assertDropped(tail, tail_env, "shuttle", "our predecessor")
        self.assertEqual((middle.state, tail.state), ({}, {}))

    def test_shuttle_from_predecessor_of_other_configuration(self) -> None:
        """The replica at our predecessor's position in another configuration is not our predecessor."""
        middle, env = self.replica(1)
        middle.receive(replica_address(0, 1), make_shuttle(CONFIG, 0, PUT, "OK", 1))
        self.assertDropped(middle, env, "predecessor")
        self.assertEqual(middle.state, {})

    def test_shuttle_with_predecessor_address_but_other_key(self) -> None:
        """Addresses are no evidence: the predecessor's address with another key is dropped."""
        middle, env = self.replica(1)
        impostor = Peer(replica_address(0).address, STRANGER_KEY.verify_key_bytes)
        middle.receive(impostor, make_shuttle(CONFIG, 0, PUT, "OK", 1))
        self.assertDropped(middle, env, "predecessor")
        self.assertEqual(middle.state, {})

    def test_unexecutable_operation_in_shuttle(self) -> None:
        """A shuttle from the predecessor carrying an operation the dictionary cannot execute is refused."""
        foo = sign_request(0, 0, "foo", "x")
        self.assertRefused(make_shuttle(CONFIG, 0, foo, "", 1), "shuttle for slot 0")

    def test_wrong_client_signature(self) -> None:
        """A shuttle whose embedded request has a bad client signature is refused."""
        shuttle = attrs.evolve(
            make_shuttle(CONFIG, 0, PUT, "OK", 1), request=crypto.corrupt(PUT)
        )
        self.assertRefused(shuttle, "carries a request no replica may order: signature does not verify")

    def test_order_proof_wrong_count(self) -> None:
        """An order proof with a statement too many is refused."""
        shuttle = attrs.evolve(
            make_shuttle(CONFIG, 0, PUT, "OK", 1), order_proof=order_proof(CONFIG, 0, PUT, 2)
        )
        self.assertRefused(shuttle, "order proof has 2 statements")

    def test_order_proof_missing(self) -> None:
        """An order proof without the head's statement is refused."""
        shuttle = attrs.evolve(make_shuttle(CONFIG, 0, PUT, "OK", 1), order_proof=())
        self.assertRefused(shuttle, "order proof has 0 statements")

    def test_result_proof_wrong_count(self) -> None:
        """A result proof with the wrong number of statements is refused."""
        shuttle = attrs.evolve(make_shuttle(CONFIG, 0, PUT, "OK", 2), result_proof=result_proof(CONFIG, 0, PUT, "OK", 1))
        self.assertRefused(shuttle, "result proof has 1 statements", index=2)

    def test_statement_signed_by_wrong_replica(self) -> None:
        """An order statement in position 0 signed by replica 2 is refused."""
        shuttle = attrs.evolve(
            make_shuttle(CONFIG, 0, PUT, "OK", 1),
            order_proof=(order_statement(CONFIG, 0, PUT, 0, key=replica_key(2)),),
        )
        self.assertRefused(shuttle, "statement 0")

    def test_spoiled_result_signature(self) -> None:
        """A result statement with an invalid signature (SPEC §2.4 spoiling) is refused."""
        shuttle = make_shuttle(CONFIG, 0, PUT, "OK", 2)
        shuttle = attrs.evolve(
            shuttle,
            result_proof=(shuttle.result_proof[0], crypto.corrupt(shuttle.result_proof[1])),
        )
        self.assertRefused(shuttle, "statement 1", index=2)

    def test_order_statement_names_other_operation(self) -> None:
        """An order statement naming get('x') instead of the signed request is refused."""
        lie = operation("get", "x")
        shuttle = attrs.evolve(
            make_shuttle(CONFIG, 0, PUT, "OK", 1),
            order_proof=(order_statement(CONFIG, 0, PUT, 0, op=lie),),
        )
        self.assertRefused(shuttle, "order statement 0 contradicts")

    def test_result_statement_for_other_slot(self) -> None:
        """A result statement for slot 5 in a shuttle for slot 0 is refused."""
        shuttle = attrs.evolve(
            make_shuttle(CONFIG, 0, PUT, "OK", 1),
            result_proof=(result_statement(CONFIG, 5, PUT, 0, "OK"),),
        )
        self.assertRefused(shuttle, "result statement 0 is for another operation")

    def test_order_statement_for_other_slot(self) -> None:
        """An order statement for another slot than the shuttle's is refused."""
        shuttle = attrs.evolve(
            make_shuttle(CONFIG, 0, PUT, "OK", 1),
            order_proof=(order_statement(CONFIG, 1, PUT, 0),),
        )
        self.assertRefused(shuttle, "order statement 0 contradicts")

    def test_hole(self) -> None:
        """A shuttle for slot 1 at a replica that has executed nothing is a hole."""
        self.assertRefused(make_shuttle(CONFIG, 1, PUT, "OK", 1), "hole")

    def test_other_configuration(self) -> None:
        """A shuttle naming another configuration is refused."""
        other = wire_configuration(t=1, clients=2, number=1)
        self.assertRefused(make_shuttle(other, 0, PUT, "OK", 1), "configuration 1")

    def test_already_ordered_different_operation(self) -> None:
        """A second shuttle for an executed slot with a different request is refused."""
        middle, env = self.replica(1)
        middle.receive(replica_address(0), make_shuttle(CONFIG, 0, PUT, "OK", 1))
        env.take()
        other = sign_request(1, 0, "put", "k", "w")
        middle.receive(replica_address(0), make_shuttle(CONFIG, 0, other, "OK", 1))
        self.assertIn("different operation", self.assertReconfigurationOnly(middle, env))
        self.assertEqual(middle.state, {"k": "v"})

    def test_predecessor_result_hash_differs(self) -> None:
        """A predecessor's result statement whose hash differs from our own result is refused."""
        shuttle = attrs.evolve(
            make_shuttle(CONFIG, 0, PUT, "OK", 1),
            result_proof=(result_statement(CONFIG, 0, PUT, 0, "fail"),),
        )
        self.assertRefused(shuttle, "disagrees with our result")


class TailTests(ReplicaTestCase):
    """The tail completes the proofs and answers the client (SPEC §5 step 4)."""

    def test_result_to_client_before_result_shuttle(self) -> None:
        """The tail sends the result message to the client first, then the result shuttle to replica 1."""
        tail, env = self.replica(2)
        tail.receive(replica_address(1), make_shuttle(CONFIG, 0, PUT, "OK", 2))
        sent = env.take()
        self.assertEqual([s.to for s in sent], [client_address(0), replica_address(1)])
        message, shuttle = sent[0].message, sent[1].message
        self.assertEqual(
            message,
            ResultMessage(0, 0, 0, 0, "OK", result_proof(CONFIG, 0, PUT, "OK", 3)),
        )
        self.assertEqual(shuttle, make_result_shuttle(CONFIG, 0, PUT, "OK"))
        [logged] = [e for e in env.events_named("bcr.send") if e["message"] == "result_message"]
        self.assertEqual((logged["request_id"], logged["slot"]), ("0:0", 0))

    def test_caches_result(self) -> None:
        """The tail answers a retransmission from its result cache."""
        tail, env = self.replica(2)
        tail.receive(replica_address(1), make_shuttle(CONFIG, 0, PUT, "OK", 2))
        [first, _] = env.take()
        tail.receive(client_address(0), ClientRequest(PUT))
        [again] = env.take()
        self.assertEqual((again.to, again.message), (client_address(0), first.message))
        self.assertEqual(self.cases(env), [("0:0", "cached result")])

    def test_result_shuttle_at_tail(self) -> None:
        """
        A result shuttle arriving at the tail comes from no successor (the
        tail has none): it is dropped, changes nothing and is no evidence.
        """
        tail, env = self.replica(2)
        tail.receive(replica_address(1), make_shuttle(CONFIG, 0, PUT, "OK", 2))
        env.take()
        cached = tail._result_cache[(0, 0)]
        for sender in (replica_address(1), replica_address(0)):
            tail.receive(sender, make_result_shuttle(CONFIG, 0, PUT, "fail"))
            self.assertDropped(tail, env, "result_shuttle", "successor")
        self.assertEqual(tail._result_cache[(0, 0)], cached)


class ResultShuttleTests(ReplicaTestCase):
    """Replicas before the tail validate, cache and pass on result shuttles (SPEC §5 step 5)."""

    def executed_middle(self):
        """Replica 1 after executing slot 0 (put k=v)."""
        middle, env = self.replica(1)
        middle.receive(replica_address(0), make_shuttle(CONFIG, 0, PUT, "OK", 1))
        env.take()
        return middle, env

    def test_valid_is_cached_and_forwarded(self) -> None:
        """A valid result shuttle is forwarded to replica 0 and then answers retransmissions."""
        middle, env = self.executed_middle()
        shuttle = make_result_shuttle(CONFIG, 0, PUT, "OK")
        middle.receive(replica_address(2), shuttle)
        [sent] = env.take()
        self.assertEqual((sent.to, sent.message), (replica_address(0), shuttle))
        # The history keeps the order proof as it stood when this replica signed.
        self.assertEqual(len(middle.history[0].order_proof), 2)
        middle.receive(client_address(0), ClientRequest(PUT))
        [answer] = env.take()
        self.assertEqual(
            (answer.to, answer.message),
            (client_address(0), ResultMessage(0, 0, 0, 0, "OK", shuttle.result_proof)),
        )
        self.assertEqual(self.cases(env), [("0:0", "cached result")])

    def test_at_head_is_not_forwarded(self) -> None:
        """The head validates and caches a result shuttle but sends nothing on."""
        head, env = self.replica(0)
        head.receive(client_address(0), ClientRequest(PUT))
        env.take()
        head.receive(replica_address(1), make_result_shuttle(CONFIG, 0, PUT, "OK"))
        self.assertEqual(env.take(), [])
        head.receive(client_address(0), ClientRequest(PUT))
        self.assertEqual(len(env.of_type(ResultMessage)), 1)

    def test_from_outsider(self) -> None:
        """A stranger's result shuttle is dropped: nothing cached, forwarded or requested."""
        middle, env = self.executed_middle()
        middle.receive(STRANGER, make_result_shuttle(CONFIG, 0, PUT, "OK"))
        self.assertDropped(middle, env, "result_shuttle", "our successor")
        # Still owed the real one, which is then taken as usual.
        self.assertEqual(list(middle._my_result_hashes), [0])
        middle.receive(client_address(0), ClientRequest(PUT))
        self.assertEqual(env.of_type(ResultMessage), [])
        env.take()
        shuttle = make_result_shuttle(CONFIG, 0, PUT, "OK")
        middle.receive(replica_address(2), shuttle)
        self.assertIn((replica_address(0), shuttle), [(s.to, s.message) for s in env.take()])

    def test_bad_result_shuttle_from_outsider_is_no_evidence(self) -> None:
        """A stranger's wrong result shuttle does not make the replica ask for a reconfiguration."""
        middle, env = self.executed_middle()
        middle.receive(STRANGER, make_result_shuttle(CONFIG, 0, PUT, "fail"))
        self.assertDropped(middle, env)
        middle.receive(STRANGER, make_result_shuttle(CONFIG, 5, PUT, "OK"))
        self.assertDropped(middle, env)

    def test_from_predecessor(self) -> None:
        """A result shuttle from the predecessor (right kind of principal, wrong position) is dropped."""
        middle, env = self.executed_middle()
        middle.receive(replica_address(0), make_result_shuttle(CONFIG, 0, PUT, "OK"))
        self.assertDropped(middle, env, "result_shuttle", "our successor")
        self.assertEqual(middle._result_cache, {})
        head, head_env = self.replica(0)
        head.receive(client_address(0), ClientRequest(PUT))
        head_env.take()
        head.receive(replica_address(2), make_result_shuttle(CONFIG, 0, PUT, "OK"))
        self.assertDropped(head, head_env, "our successor")
        self.assertEqual(head._result_cache, {})

    def test_incomplete_proof(self) -> None:
        """A result proof missing the head's statement brings a reconfiguration request and is not cached."""
        middle, env = self.executed_middle()
        shuttle = make_result_shuttle(CONFIG, 0, PUT, "OK")
        shuttle = attrs.evolve(shuttle, result_proof=shuttle.result_proof[1:])
        middle.receive(replica_address(2), shuttle)
        self.assertIn("result proof has 2 of 3", self.assertReconfigurationOnly(middle, env))
        middle.receive(client_address(0), ClientRequest(PUT))
        self.assertEqual(env.of_type(ResultMessage), [])

    def test_wrong_hash(self) -> None:
        """A result shuttle carrying another result than ours brings a reconfiguration request."""
        middle, env = self.executed_middle()
        middle.receive(replica_address(2), make_result_shuttle(CONFIG, 0, PUT, "fail"))
        self.assertIn("differs", self.assertReconfigurationOnly(middle, env))

    def test_contradicting_statement(self) -> None:
        """One validly signed statement with another hash (change_result) is detected."""
        middle, env = self.executed_middle()
        shuttle = make_result_shuttle(CONFIG, 0, PUT, "OK")
        lie = result_statement(CONFIG, 0, PUT, 2, "fail")
        shuttle = attrs.evolve(shuttle, result_proof=shuttle.result_proof[:2] + (lie,))
        middle.receive(replica_address(2), shuttle)
        self.assertIn("result statement 2", self.assertReconfigurationOnly(middle, env))

    def test_unexecuted_slot(self) -> None:
        """A result shuttle for a slot this replica never executed is refused."""
        middle, env = self.replica(1)
        middle.receive(replica_address(2), make_result_shuttle(CONFIG, 0, PUT, "OK"))
        self.assertIn("not executed here", self.assertReconfigurationOnly(middle, env))


class RetransmissionTests(ReplicaTestCase):
    """Replicas handle requests retransmitted by clients as in SPEC §6.2, naming each case."""

    def ordered_head(self, **options: Any):
        """A head that has ordered PUT at slot 0; its result shuttle is not back."""
        head, env = self.replica(0, **options)
        head.receive(client_address(0), ClientRequest(PUT))
        env.take()
        return head, env

    def test_cached_result(self) -> None:
        """Case 1: a head holding the result shuttle sends the result to the client."""
        head, env = self.ordered_head()
        shuttle = make_result_shuttle(CONFIG, 0, PUT, "OK")
        head.receive(replica_address(1), shuttle)
        head.receive(client_address(0), ClientRequest(PUT))
        [sent] = env.take()
        self.assertEqual(sent.to, client_address(0))
        self.assertEqual(sent.message, ResultMessage(0, 0, 0, 0, "OK", shuttle.result_proof))
        self.assertEqual(self.cases(env), [("0:0", "cached result")])
        self.assertEqual(env.active_timers(), {})

    def test_immutable(self) -> None:
        """Case 2: an immutable replica without the result answers with an error."""
        middle, env = self.replica(1)
        middle.mode = Mode.IMMUTABLE
        middle.receive(client_address(0), ClientRequest(PUT))
        [sent] = env.take()
        self.assertEqual((sent.to, sent.message), (client_address(0), ErrorMessage(0, 0, 0, "immutable")))
        self.assertEqual(self.cases(env), [("0:0", "immutable")])
        self.assertEqual(env.active_timers(), {})

    def test_cached_result_before_immutable(self) -> None:
        """Case 1 is checked before case 2: an immutable replica still returns a cached result."""
        head, env = self.ordered_head()
        head.receive(replica_address(1), make_result_shuttle(CONFIG, 0, PUT, "OK"))
        head.mode = Mode.IMMUTABLE
        head.receive(client_address(0), ClientRequest(PUT))
        self.assertEqual(len(env.of_type(ResultMessage)), 1)
        self.assertEqual(env.of_type(ErrorMessage), [])
        self.assertEqual(self.cases(env), [("0:0", "cached result")])

    def test_immutable_before_head_already_ordered(self) -> None:
        """Case 2 is checked before case 3: an immutable head answers an ordered request with an error."""
        head, env = self.ordered_head()
        head.mode = Mode.IMMUTABLE
        head.receive(client_address(0), ClientRequest(PUT))
        self.assertEqual(len(env.of_type(ErrorMessage)), 1)
        self.assertEqual(env.active_timers(), {})
        self.assertEqual(self.cases(env), [("0:0", "immutable")])

    def test_head_already_ordered(self) -> None:
        """Case 3: the head starts its timer and sends the result when the result shuttle arrives."""
        config = wire_configuration(head_timeout_ms=2500)
        head, env = self.ordered_head(configuration=config)
        head.receive(client_address(0), ClientRequest(PUT))
        self.assertEqual(env.take(), [])
        self.assertEqual(head.next_slot, 1)
        self.assertEqual(self.cases(env), [("0:0", "head, already ordered")])
        self.assertEqual(env.active_timers(), {"head:0:0": 2.5})
        shuttle = make_result_shuttle(config, 0, PUT, "OK")
        head.receive(replica_address(1), shuttle)
        [sent] = env.take()
        self.assertEqual(sent.to, client_address(0))
        self.assertEqual(sent.message, ResultMessage(0, 0, 0, 0, "OK", shuttle.result_proof))
        self.assertEqual(env.active_timers(), {})
        env.clock.advance(10)
        self.assertEqual(env.take(), [])

    def test_head_timer_expires(self) -> None:
        """Case 3: without a result shuttle, the head timer ends in a reconfiguration request."""
        head, env = self.ordered_head()
        head.receive(client_address(0), ClientRequest(PUT))
        env.clock.advance(2.999)
        self.assertEqual(env.take(), [])
        env.clock.advance(0.001)
        reason = self.assertReconfigurationOnly(head, env)
        self.assertIn("0:0", reason)
        self.assertIn("head timeout", reason)

    def test_head_new_forwarded_request(self) -> None:
        """Case 4: a forwarded request the head has not seen is ordered as new."""
        head, env = self.replica(0)
        head.receive(replica_address(1), ForwardedRequest(PUT))
        self.assertEqual([s.slot for s in env.of_type(Shuttle)], [0])
        self.assertEqual(self.cases(env), [("0:0", "head, new")])

    def test_head_forwarded_request_cached(self) -> None:
        """A forwarded request whose result the head holds is answered straight to the client."""
        head, env = self.ordered_head()
        head.receive(replica_address(1), make_result_shuttle(CONFIG, 0, PUT, "OK"))
        head.receive(replica_address(2), ForwardedRequest(PUT))
        [sent] = env.take()
        self.assertEqual(sent.to, client_address(0))
        self.assertIsInstance(sent.message, ResultMessage)

    def test_head_forwarded_request_already_ordered(self) -> None:
        """A forwarded request the head has ordered starts the head timer, not a second slot."""
        head, env = self.ordered_head()
        head.receive(replica_address(2), ForwardedRequest(PUT))
        self.assertEqual(env.take(), [])
        self.assertEqual(list(env.active_timers()), ["head:0:0"])

    def test_forwarded_request_at_nonhead(self) -> None:
        """A non-head refuses a forwarded request."""
        middle, env = self.replica(1)
        middle.receive(replica_address(2), ForwardedRequest(PUT))
        self.assertEqual(env.take(), [])
        self.assertEqual(env.active_timers(), {})
        self.assertEqual(len(env.events_named("bcr.rejected")), 1)

    def test_nonhead_forwards(self) -> None:
        """Case 5: a non-head forwards the request to the head and starts its non-head timer."""
        middle, env = self.replica(1, configuration=wire_configuration(nonhead_timeout_ms=1500))
        middle.receive(client_address(0), ClientRequest(PUT))
        [sent] = env.take()
        self.assertEqual((sent.to, sent.message), (replica_address(0), ForwardedRequest(PUT)))
        self.assertEqual(env.active_timers(), {"nonhead:0:0": 1.5})
        self.assertEqual(self.cases(env), [("0:0", "non-head, forward")])

    def test_nonhead_one_timer_per_request(self) -> None:
        """Repeated retransmissions forward again but neither stack nor postpone the non-head timer."""
        middle, env = self.replica(1)
        middle.receive(client_address(0), ClientRequest(PUT))
        env.clock.advance(1)
        middle.receive(client_address(0), ClientRequest(PUT))
        env.clock.advance(1)
        middle.receive(client_address(0), ClientRequest(PUT))
        self.assertEqual(len(env.take()), 3)
        self.assertEqual(env.active_timers(), {"nonhead:0:0": 3.0})
        self.assertEqual(len(env.clock.getDelayedCalls()), 1)
        env.clock.advance(1)
        self.assertIn("nonhead timeout", self.assertReconfigurationOnly(middle, env))
        env.clock.advance(10)
        self.assertEqual(env.take(), [])

    def test_nonhead_result_shuttle_answers_client(self) -> None:
        """Case 5: when the result shuttle arrives, the non-head answers the client and stops its timer."""
        middle, env = self.replica(1)
        middle.receive(client_address(0), ClientRequest(PUT))
        middle.receive(replica_address(0), make_shuttle(CONFIG, 0, PUT, "OK", 1))
        env.take()
        shuttle = make_result_shuttle(CONFIG, 0, PUT, "OK")
        middle.receive(replica_address(2), shuttle)
        sent = env.take()
        self.assertEqual([s.to for s in sent], [client_address(0), replica_address(0)])
        self.assertEqual(sent[0].message, ResultMessage(0, 0, 0, 0, "OK", shuttle.result_proof))
        self.assertEqual(env.active_timers(), {})
        env.clock.advance(10)
        self.assertEqual(env.take(), [])

    def test_nonhead_timer_expires(self) -> None:
        """Case 5: without a result shuttle, the non-head timer ends in a reconfiguration request."""
        middle, env = self.replica(1)
        middle.receive(client_address(0), ClientRequest(PUT))
        env.take()
        env.clock.advance(3)
        self.assertIn("0:0", self.assertReconfigurationOnly(middle, env))

    def test_tail_forwards_then_executes(self) -> None:
        """A tail that forwarded a retransmission stops its timer when it executes the request itself."""
        tail, env = self.replica(2)
        tail.receive(client_address(0), ClientRequest(PUT))
        self.assertEqual(env.of_type(ForwardedRequest), [ForwardedRequest(PUT)])
        env.take()
        tail.receive(replica_address(1), make_shuttle(CONFIG, 0, PUT, "OK", 2))
        self.assertEqual(len(env.of_type(ResultMessage)), 1)
        self.assertEqual(env.active_timers(), {})
        env.take()
        env.clock.advance(10)
        self.assertEqual(env.take(), [])

    def test_pending_replica_drops_client_requests(self) -> None:
        """A spare neither answers nor forwards a client request before it is assigned, nor after."""
        spare, env = make_spare(CONFIG, 1)
        self.watch(env)
        spare.receive(client_address(0), ClientRequest(PUT))
        self.assertEqual(env.take(), [])
        self.assertEqual(env.active_timers(), {})
        self.assertDropped(spare, env, "while pending")
        spare.receive(
            OLYMPUS_ADDRESS, seal_from_olympus(make_assignment(CONFIG, 1), to=replica_address(1))
        )
        self.assertEqual(env.of_type(ForwardedRequest), [])
        self.assertEqual(env.active_timers(), {})

    def test_forwarded_request_from_outside_the_chain(self) -> None:
        """Only a chain member forwards requests: from a stranger or a client, the head drops one."""
        head, env = self.replica(0)
        for sender in (STRANGER, client_address(0)):
            head.receive(sender, ForwardedRequest(PUT))
            self.assertDropped(head, env, "forwarded_request", "a chain member")
        self.assertEqual((head.next_slot, head.state), (0, {}))
        self.assertEqual(self.cases(env), [])

    def test_forwarded_request_from_itself(self) -> None:
        """A replica is no chain member to itself: its own key forwarding to it is dropped."""
        head, env = self.replica(0)
        head.receive(replica_address(0), ForwardedRequest(PUT))
        self.assertDropped(head, env, "a chain member")
        self.assertEqual(head.next_slot, 0)


class StaleRetransmissionTests(ReplicaTestCase):
    """
    An admitted but Byzantine client resending a request whose result is no
    longer cached cannot make a replica wait for a result shuttle that will
    never come, and so cannot force a reconfiguration.
    """

    def setUp(self) -> None:
        self.chain = Chain(wire_configuration())
        for replica in self.chain.replicas:
            replica._result_cache_size = 2
        for env in self.chain.envs:
            self.watch(env)
        for seq in range(4):
            self.chain.submit(client_request(0, seq, "put", f"k{seq}", "v"))
            self.chain.run()
        for env in self.chain.envs:
            env.take()

    def test_old_request_at_every_replica(self) -> None:
        """Request 0, evicted everywhere, resent to each replica: ignored, no timer, no reconfiguration."""
        for index, (replica, env) in enumerate(zip(self.chain.replicas, self.chain.envs, strict=True)):
            with self.subTest(index=index):
                replica.receive(client_address(0), client_request(0, 0, "put", "k0", "v"))
                self.assertEqual(env.take(), [])
                self.assertEqual(env.active_timers(), {})
                self.assertEqual(
                    self.cases(env)[-1],
                    ("0:0", "executed here, result no longer cached; ignored"),
                )
        self.chain.clock.advance(60)
        for env in self.chain.envs:
            self.assertEqual(reconfiguration_requests(env), [])
        self.assertEqual(self.chain.replicas[0].state, {f"k{seq}": "v" for seq in range(4)})

    def test_latest_request_still_served(self) -> None:
        """The latest request, still cached, is answered from the cache as before."""
        middle, env = self.chain.replicas[1], self.chain.envs[1]
        middle.receive(client_address(0), client_request(0, 3, "put", "k3", "v"))
        [sent] = env.take()
        self.assertEqual(sent.to, client_address(0))
        self.assertEqual(self.cases(env)[-1], ("0:3", "cached result"))


class CheckpointTests(ReplicaTestCase):
    """Checkpoints every checkpt_interval slots, and history truncation (SPEC §8)."""

    def setUp(self) -> None:
        self.config = wire_configuration(checkpt_interval=3)
        self.chain = Chain(self.config)
        for env in self.chain.envs:
            self.watch(env)

    def run_requests(self, seqs: range) -> None:
        """Client 0 puts k<seq> for each C{seq}, one after the other, to completion."""
        for seq in seqs:
            self.chain.submit(client_request(0, seq, "put", f"k{seq}", "v"))
            self.chain.run()

    def step_until(self, predicate) -> None:
        """Deliver messages one by one until C{predicate(sender, sent)} holds for one."""
        while True:
            step = self.chain.step()
            self.assertIsNotNone(step, "ran out of messages")
            assert step is not None
            if predicate(*step):
                return

    def checkpoint_messages(self) -> list[object]:
        """Every checkpoint or completed checkpoint message delivered so far."""
        return [
            s.message for _, s in self.chain.delivered
            if isinstance(s.message, (CheckpointMessage, CompletedCheckpoint))
        ]

    def test_no_checkpoint_before_checkpoint_slot(self) -> None:
        """Slots 0 and 1 are not checkpoint slots: nothing is checkpointed or truncated."""
        self.run_requests(range(2))
        self.assertEqual(self.checkpoint_messages(), [])
        for replica in self.chain.replicas:
            self.assertEqual(sorted(replica.history), [0, 1])
            self.assertIsNone(replica.checkpoint)

    def test_checkpoint_walk(self) -> None:
        """The checkpoint of slot 2 starts at the head when its result shuttle is back, walks to the tail and back, truncating everywhere."""
        chain = self.chain
        self.run_requests(range(2))
        head, middle, tail = chain.replicas
        head_env, middle_env, tail_env = chain.envs
        chain.submit(client_request(0, 2, "put", "k2", "v"))
        self.step_until(
            lambda sender, sent: sent.to == head_env.peer
            and isinstance(sent.message, ResultShuttle)
        )
        # The head starts the checkpoint, with the state hash it recorded at slot 2.
        [sent] = head_env.sent
        self.assertEqual(sent.to, middle_env.peer)
        self.assertIsInstance(sent.message, CheckpointMessage)
        expected_hash = crypto.state_hash({"k0": "v", "k1": "v", "k2": "v"})
        self.assertEqual(sent.message.proof, checkpoint_proof(self.config, 2, expected_hash, [0]))
        self.assertEqual(sorted(head.history), [0, 1, 2])

        chain.step()
        [sent] = middle_env.sent
        self.assertEqual(sent.to, tail_env.peer)
        self.assertEqual(sent.message, CheckpointMessage(checkpoint_proof(self.config, 2, expected_hash, [0, 1])))
        self.assertEqual(sorted(middle.history), [0, 1, 2])

        chain.step()
        complete = checkpoint_proof(self.config, 2, expected_hash, [0, 1, 2])
        [sent] = tail_env.sent
        self.assertEqual((sent.to, sent.message), (middle_env.peer, CompletedCheckpoint(complete)))
        self.assertEqual(tail.history, {})
        self.assertEqual(tail.checkpoint, complete)

        chain.step()
        [sent] = middle_env.sent
        self.assertEqual((sent.to, sent.message), (head_env.peer, CompletedCheckpoint(complete)))
        self.assertEqual(middle.history, {})
        self.assertEqual(middle.checkpoint, complete)

        chain.step()
        self.assertEqual(chain.pending(), [])
        self.assertEqual(head.history, {})
        self.assertEqual(head.checkpoint, complete)
        for env in chain.envs:
            self.assertEqual(reconfiguration_requests(env), [])

    def test_second_checkpoint(self) -> None:
        """After slots 0..5 every replica holds the checkpoint of slot 5 and an empty history."""
        self.run_requests(range(7))
        slots = [m.proof.slot for m in self.checkpoint_messages() if isinstance(m, CompletedCheckpoint)]
        self.assertEqual(slots, [2, 2, 5, 5])
        for replica in self.chain.replicas:
            self.assertEqual(replica.checkpoint.slot, 5)
            self.assertEqual(sorted(replica.history), [6])
        for env in self.chain.envs:
            completed = [e["slot"] for e in env.events_named("bcr.checkpoint_completed")]
            self.assertEqual(completed, [2, 5])
        self.assertEqual(self.chain.outside_of_type(ReconfigurationRequest), [])

    def intercept_completed(self) -> CompletedCheckpoint:
        """Run to where the tail has sent its completed checkpoint; take it out of the chain."""
        self.run_requests(range(2))
        self.chain.submit(client_request(0, 2, "put", "k2", "v"))
        tail_env = self.chain.envs[2]
        self.step_until(lambda sender, sent: any(isinstance(s.message, CompletedCheckpoint) for s in tail_env.sent))
        [sent] = tail_env.take()
        assert isinstance(sent.message, CompletedCheckpoint)
        return sent.message

    def test_middle_refuses_incomplete_completed_proof(self) -> None:
        """A completed proof without its first t+1 statements is refused: no truncation, a reconfiguration request."""
        completed = self.intercept_completed()
        middle, middle_env = self.chain.replicas[1], self.chain.envs[1]
        stripped = CompletedCheckpoint(
            attrs.evolve(completed.proof, statements=completed.proof.statements[2:])
        )
        middle.receive(self.chain.envs[2].peer, stripped)
        self.assertIn("1 statements, 3 required", self.assertReconfigurationOnly(middle, middle_env))
        self.assertEqual(sorted(middle.history), [0, 1, 2])
        self.assertIsNone(middle.checkpoint)

    def test_middle_accepts_valid_completed_proof(self) -> None:
        """A valid completed proof truncates the middle replica's history and goes on to the head."""
        completed = self.intercept_completed()
        middle, middle_env = self.chain.replicas[1], self.chain.envs[1]
        middle.receive(self.chain.envs[2].peer, completed)
        self.assertEqual(middle.history, {})
        [sent] = middle_env.take()
        self.assertEqual((sent.to, sent.message), (self.chain.envs[0].peer, completed))

    def test_completed_proof_with_wrong_hash(self) -> None:
        """A completed proof whose statements carry another state hash is refused."""
        self.intercept_completed()
        middle, middle_env = self.chain.replicas[1], self.chain.envs[1]
        wrong = checkpoint_proof(self.config, 2, crypto.state_hash({"a": "a"}), [0, 1, 2])
        middle.receive(self.chain.envs[2].peer, CompletedCheckpoint(wrong))
        self.assertIn("state hash", self.assertReconfigurationOnly(middle, middle_env))
        self.assertEqual(sorted(middle.history), [0, 1, 2])

    def intercept_started(self) -> CheckpointMessage:
        """Run to where the head has started the checkpoint of slot 2; take it out of the chain."""
        self.run_requests(range(2))
        self.chain.submit(client_request(0, 2, "put", "k2", "v"))
        head_env = self.chain.envs[0]
        self.step_until(lambda sender, sent: any(isinstance(s.message, CheckpointMessage) for s in head_env.sent))
        [sent] = head_env.take()
        assert isinstance(sent.message, CheckpointMessage)
        return sent.message

    def test_checkpoint_statement_hash_differs(self) -> None:
        """A checkpoint statement whose hash differs from ours brings a reconfiguration request and is not extended."""
        self.intercept_started()
        middle, middle_env = self.chain.replicas[1], self.chain.envs[1]
        wrong = checkpoint_proof(self.config, 2, crypto.state_hash({"a": "a"}), [0])
        middle.receive(self.chain.envs[0].peer, CheckpointMessage(wrong))
        self.assertIn("state hash", self.assertReconfigurationOnly(middle, middle_env))

    def test_checkpoint_with_too_many_statements(self) -> None:
        """A checkpoint message at replica 1 must carry exactly one statement."""
        self.intercept_started()
        middle, middle_env = self.chain.replicas[1], self.chain.envs[1]
        state_hash = crypto.state_hash(middle.state)
        middle.receive(self.chain.envs[0].peer, CheckpointMessage(checkpoint_proof(self.config, 2, state_hash, [0, 1])))
        self.assertIn("2 statements, 1 required", self.assertReconfigurationOnly(middle, middle_env))

    def test_checkpoint_from_outsider_or_wrong_position(self) -> None:
        """
        The head's valid checkpoint message, delivered by a stranger or by
        the successor instead of the predecessor, is dropped: not extended,
        no reconfiguration request; from the predecessor it then goes on.
        """
        started = self.intercept_started()
        middle, middle_env = self.chain.replicas[1], self.chain.envs[1]
        for sender in (STRANGER, self.chain.envs[2].peer):
            middle.receive(sender, started)
            self.assertDropped(middle, middle_env, "checkpoint", "our predecessor")
        wrong = CheckpointMessage(
            checkpoint_proof(self.config, 2, crypto.state_hash({"a": "a"}), [0])
        )
        middle.receive(STRANGER, wrong)
        self.assertDropped(middle, middle_env)
        self.assertEqual(sorted(middle.history), [0, 1, 2])
        middle.receive(self.chain.envs[0].peer, started)
        [sent] = middle_env.take()
        self.assertEqual(sent.to, self.chain.envs[2].peer)
        self.assertIsInstance(sent.message, CheckpointMessage)

    def test_completed_checkpoint_from_outsider_or_wrong_position(self) -> None:
        """
        The tail's valid completed checkpoint, delivered by a stranger or by
        the predecessor, truncates nothing and is no evidence; from the
        successor it is taken.
        """
        completed = self.intercept_completed()
        middle, middle_env = self.chain.replicas[1], self.chain.envs[1]
        for sender in (STRANGER, self.chain.envs[0].peer):
            middle.receive(sender, completed)
            self.assertDropped(middle, middle_env, "completed_checkpoint", "our successor")
        stripped = CompletedCheckpoint(
            attrs.evolve(completed.proof, statements=completed.proof.statements[2:])
        )
        middle.receive(STRANGER, stripped)
        self.assertDropped(middle, middle_env)
        self.assertEqual(sorted(middle.history), [0, 1, 2])
        self.assertIsNone(middle.checkpoint)
        middle.receive(self.chain.envs[2].peer, completed)
        self.assertEqual(middle.history, {})
        self.assertEqual(middle.checkpoint, completed.proof)


def to_spare(message: object, index: int = 1, **options: Any):
    """C{message} sealed by Olympus for the replica (or spare) holding the key of position C{index}."""
    return seal_from_olympus(message, to=replica_address(index), **options)


class SpareTests(ReplicaTestCase):
    """A replica starts as a PENDING spare and is placed by Olympus's assignment."""

    def test_start_registers(self) -> None:
        """
        A starting spare registers its address, its public key and its
        identity key, sealed with its key for Olympus, before it knows
        Olympus's epoch.
        """
        spare, env = make_spare(CONFIG, 1)
        spare.start()
        [sent] = env.take()
        self.assertEqual(sent.to, OLYMPUS_ADDRESS)
        self.assertEqual(sent.message.signer, "spare")
        self.assertEqual(
            open_sealed(sent, replica_key(1)),
            RegisterReplica(
                env.address, replica_key(1).verify_key_bytes, identity_key(1).verify_key_bytes
            ),
        )
        self.assertEqual(
            (sent.message.recipient, sent.message.epoch, sent.message.configuration),
            (OLYMPUS_KEY.verify_key_bytes, b"", -1),
        )
        self.assertIs(spare.mode, Mode.PENDING)

    def test_registration_repeated_until_assigned(self) -> None:
        """A waiting spare registers again after 1, 2, 4, ... s (at most 30 s), and stops once assigned."""
        spare, env = make_spare(CONFIG, 1)
        spare.start()
        env.take()
        intervals = []
        for _ in range(7):
            before = env.clock.seconds()
            while not env.take():
                env.clock.advance(0.5)
            intervals.append(env.clock.seconds() - before)
        self.assertEqual(intervals, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0])
        spare.receive(OLYMPUS_ADDRESS, to_spare(make_assignment(CONFIG, 1)))
        env.take()
        env.clock.advance(60)
        self.assertEqual(env.take(), [])

    def test_challenge_answered_with_identity(self) -> None:
        """
        The spare answers Olympus's challenge with its identity key's
        signature over the binding of nonce, Olympus's key and epoch, its
        fresh key and its address, sealed with its fresh key for Olympus
        in that epoch.
        """
        spare, env = make_spare(CONFIG, 1)
        self.watch(env)
        spare.start()
        env.take()
        nonce = b"n" * 16
        spare.receive(OLYMPUS_ADDRESS, to_spare(RegistrationChallenge(nonce)))
        [sent] = env.take()
        self.assertEqual(sent.to, OLYMPUS_ADDRESS)
        response = open_sealed(sent, replica_key(1))
        self.assertIsInstance(response, RegistrationResponse)
        assert isinstance(response, RegistrationResponse)
        self.assertEqual(response.nonce, nonce)
        self.assertEqual(
            (sent.message.recipient, sent.message.epoch),
            (OLYMPUS_KEY.verify_key_bytes, EPOCH),
        )
        binding = RegistrationBinding(
            OLYMPUS_KEY.verify_key_bytes, EPOCH, nonce,
            replica_key(1).verify_key_bytes, env.address,
        )
        verify_key = nacl.signing.VerifyKey(identity_key(1).verify_key_bytes)
        self.assertEqual(
            verify_key.verify(codec.encode(binding), response.signature), codec.encode(binding)
        )
        # The fresh key did not sign it: only the admitted identity vouches.
        self.assertRaises(
            nacl.exceptions.BadSignatureError,
            nacl.signing.VerifyKey(replica_key(1).verify_key_bytes).verify,
            codec.encode(binding), response.signature,
        )
        self.assertIs(spare.mode, Mode.PENDING)

    def test_challenge_not_from_olympus(self) -> None:
        """A challenge sealed by a stranger, or Olympus's delivered by a stranger, gets no answer."""
        spare, env = make_spare(CONFIG, 1)
        self.watch(env)
        spare.receive(OLYMPUS_ADDRESS, to_spare(RegistrationChallenge(b"n" * 16), key=STRANGER_KEY))
        self.assertEqual(env.take(), [])
        self.assertEqual(len(env.events_named("bcr.rejected")), 1)
        spare.receive(STRANGER, to_spare(RegistrationChallenge(b"n" * 16)))
        self.assertDropped(spare, env, "not Olympus")
        # Neither pinned an epoch: Olympus's own first message still counts.
        spare.receive(OLYMPUS_ADDRESS, to_spare(RegistrationChallenge(b"n" * 16)))
        self.assertEqual(len(env.of_type(RegistrationResponse)), 1)

    def test_challenge_after_assignment_dropped(self) -> None:
        """An assigned replica signs no more challenges with its identity key."""
        replica, env = self.replica(1)
        replica.receive(OLYMPUS_ADDRESS, to_spare(RegistrationChallenge(b"n" * 16)))
        self.assertDropped(replica, env, "while active")

    def test_pending_drops_data_messages(self) -> None:
        """
        Replaces the old early-message queue: data messages reaching a
        spare are dropped (nothing legitimate arrives before the
        assignment, Olympus announces a configuration only once all its
        replicas are ready) and are not processed after the assignment
        either; they are no evidence.
        """
        spare, env = make_spare(CONFIG, 1)
        self.watch(env)
        second = sign_request(1, 0, "append", "k", "w")
        spare.receive(replica_address(0), make_shuttle(CONFIG, 0, PUT, "OK", 1))
        self.assertDropped(spare, env, "shuttle while pending")
        spare.receive(replica_address(0), make_shuttle(CONFIG, 1, second, "OK", 1))
        spare.receive(replica_address(2), make_result_shuttle(CONFIG, 0, PUT, "OK"))
        spare.receive(replica_address(0), ForwardedRequest(PUT))
        spare.receive(
            replica_address(0),
            CheckpointMessage(checkpoint_proof(CONFIG, 2, crypto.state_hash({}), [0])),
        )
        spare.receive(
            replica_address(2),
            CompletedCheckpoint(checkpoint_proof(CONFIG, 2, crypto.state_hash({}), [0, 1, 2])),
        )
        self.assertDropped(spare, env, "while pending")
        reasons = [e["reason"] for e in env.events_named("bcr.rejected")]
        self.assertEqual(len(reasons), 6)
        self.assertTrue(all(r.startswith("dropped ") and "pending" in r for r in reasons), reasons)
        self.assertEqual(spare.state, {})
        spare.receive(OLYMPUS_ADDRESS, to_spare(make_assignment(CONFIG, 1)))
        self.assertIs(spare.mode, Mode.ACTIVE)
        # Only Ready goes out: nothing queued is replayed.
        [ready] = env.take()
        self.assertEqual(open_sealed(ready, replica_key(1)), Ready(0, 1))
        self.assertEqual(spare.state, {})
        self.assertEqual((spare.last_executed, spare.history), (-1, {}))

    def test_assignment_sends_ready(self) -> None:
        """
        Once active, a replica tells Olympus it is Ready, sealed with its
        key for Olympus's key in the epoch of the assignment and naming
        its configuration.
        """
        spare, env = make_spare(CONFIG, 2)
        self.watch(env)
        spare.receive(OLYMPUS_ADDRESS, to_spare(make_assignment(CONFIG, 2), index=2))
        self.assertIs(spare.mode, Mode.ACTIVE)
        [sent] = env.take()
        self.assertEqual(sent.to, OLYMPUS_ADDRESS)
        self.assertEqual(open_sealed(sent, replica_key(2)), Ready(0, 2))
        self.assertEqual(sent.message.signer, "replica 0.2")
        self.assertEqual(
            (sent.message.recipient, sent.message.epoch, sent.message.configuration),
            (OLYMPUS_KEY.verify_key_bytes, EPOCH, 0),
        )

    def test_assignment_to_position_of_another_key(self) -> None:
        """
        A spare takes only a position that carries its own key: an
        assignment to another position (or none) is rejected and the spare
        stays pending, silent.
        """
        spare, env = make_spare(CONFIG, 1)
        self.watch(env)
        for index in (2, 0, 5, -1):
            assignment = attrs.evolve(make_assignment(CONFIG, 1), index=index)
            spare.receive(OLYMPUS_ADDRESS, to_spare(assignment))
        self.assertIs(spare.mode, Mode.PENDING)
        self.assertIsNone(spare.configuration)
        self.assertEqual(env.take(), [])
        reasons = [e["reason"] for e in env.events_named("bcr.rejected")]
        self.assertEqual(len(reasons), 4)
        self.assertTrue(all("not ours" in r for r in reasons), reasons)
        self.assertEqual(env.events_named("bcr.assigned"), [])

    def test_assignment_sealed_for_another_recipient(self) -> None:
        """Olympus's assignment for another replica, replayed to this spare, is rejected."""
        spare, env = make_spare(CONFIG, 1)
        self.watch(env)
        spare.receive(OLYMPUS_ADDRESS, to_spare(make_assignment(CONFIG, 1), index=2))
        self.assertIs(spare.mode, Mode.PENDING)
        self.assertEqual(env.take(), [])
        [rejected] = env.events_named("bcr.rejected")
        self.assertIn("another recipient", rejected["reason"])

    def test_epoch_pinned_at_assignment(self) -> None:
        """
        A spare follows whichever boot of Olympus challenges it (Olympus may
        have restarted while it waited) and answers in that boot's epoch; the
        boot that assigns it is pinned: control messages of another Olympus
        boot are rejected after that.
        """
        spare, env = make_spare(CONFIG, 1)
        self.watch(env)
        spare.start()
        env.take()
        other_epoch = b"o" * 16
        spare.receive(OLYMPUS_ADDRESS, to_spare(RegistrationChallenge(b"n" * 16)))
        [first] = env.take()
        self.assertEqual(first.message.epoch, EPOCH)
        spare.receive(
            OLYMPUS_ADDRESS, to_spare(RegistrationChallenge(b"m" * 16), epoch=other_epoch)
        )
        [second] = env.take()
        self.assertEqual(second.message.epoch, other_epoch)
        # Its repeated registrations name no boot, so any Olympus takes them.
        env.clock.advance(REGISTRATION_INTERVAL_FIRST_S)
        [again] = env.take()
        self.assertIsInstance(again.inner, RegisterReplica)
        self.assertEqual(again.message.epoch, b"")
        spare.receive(OLYMPUS_ADDRESS, to_spare(make_assignment(CONFIG, 1)))
        self.assertIs(spare.mode, Mode.ACTIVE)
        env.take()
        spare.receive(OLYMPUS_ADDRESS, to_spare(Shutdown(0), epoch=other_epoch))
        self.assertEqual((env.take(), env.exits), ([], []))
        [rejected] = env.events_named("bcr.rejected")
        self.assertIn("another Olympus epoch", rejected["reason"])

    def test_unexpected_control_message(self) -> None:
        """A message sealed by Olympus that is no control message for a replica is dropped."""
        replica, env = self.replica(1)
        replica.receive(OLYMPUS_ADDRESS, to_spare(Ready(0, 1)))
        self.assertDropped(replica, env, "unexpected Ready")

    def test_assignment_with_failures_refused_without_fault_injection(self) -> None:
        """An assignment carrying failures is refused by a spare started without fault injection."""
        spare, env = make_spare(CONFIG, 1)
        self.watch(env)
        assignment = make_assignment(CONFIG, 1, failures="shuttle(0,0), crash()")
        spare.receive(OLYMPUS_ADDRESS, to_spare(assignment))
        self.assertIs(spare.mode, Mode.PENDING)
        self.assertIsNone(spare.configuration)
        [refused] = env.events_named("bcr.assignment_refused")
        self.assertEqual(refused["failures"], "shuttle(0,0), crash()")
        spare.receive(replica_address(0), make_shuttle(CONFIG, 0, PUT, "OK", 1))
        self.assertEqual(env.take(), [])
        self.assertEqual(spare.state, {})

    def test_assignment_with_failures_refused_without_fault_plan(self) -> None:
        """Fault injection on but no way to carry failures out: refused, not silently ignored."""
        spare, env = make_spare(CONFIG, 1, fault_injection=True)
        assignment = make_assignment(CONFIG, 1, failures="shuttle(0,0), crash()")
        spare.receive(OLYMPUS_ADDRESS, to_spare(assignment))
        self.assertIs(spare.mode, Mode.PENDING)
        [refused] = env.events_named("bcr.assignment_refused")
        self.assertIn("no way to build fault plans", refused["why"])
        self.assertEqual(env.of_type(Ready), [])

    def test_assignment_with_failures_accepted_with_fault_injection(self) -> None:
        """With fault injection on, the failures text goes to the fault plan factory."""
        made = []

        class Hooks:
            """Fault hooks that record what they are asked and drop nothing."""

            def received(self, kind, client):
                made.append((kind, client))
                return True

            def tamper(self, point, value):
                return value

        def factory(replica, text):
            made.append(text)
            return Hooks()

        spare, env = make_spare(CONFIG, 0, fault_injection=True, faults_factory=factory)
        assignment = make_assignment(CONFIG, 0, failures="client_request(0,0), drop()")
        spare.receive(OLYMPUS_ADDRESS, to_spare(assignment, index=0))
        self.assertIs(spare.mode, Mode.ACTIVE)
        spare.receive(client_address(0), ClientRequest(PUT))
        self.assertEqual(made, ["client_request(0,0), drop()", ("client_request", 0)])
        # A badly signed request counts too (SPEC §11.1), and is then dropped.
        spare.receive(client_address(0), ClientRequest(crypto.corrupt(PUT)))
        self.assertEqual(made[-1], ("client_request", 0))
        self.assertEqual(len(made), 3)
        # A request from someone not allowed to send it is not received at all.
        spare.receive(STRANGER, ClientRequest(PUT))
        self.assertEqual(len(made), 3)

    def test_dropped_by_fault_hooks(self) -> None:
        """A message the fault hooks drop is not processed."""

        class Drop:
            """Fault hooks that drop every message."""

            def received(self, kind, client):
                return False

            def tamper(self, point, value):
                return value

        spare, env = make_spare(CONFIG, 0, fault_injection=True, faults_factory=lambda r, t: Drop())
        spare.receive(OLYMPUS_ADDRESS, to_spare(make_assignment(CONFIG, 0, failures="client_request(0,0), drop()"), index=0))
        env.take()
        spare.receive(client_address(0), ClientRequest(PUT))
        self.assertEqual(env.take(), [])
        self.assertEqual(spare.state, {})

    def test_assignment_not_from_olympus(self) -> None:
        """An assignment sealed with another key than Olympus's is rejected."""
        spare, env = make_spare(CONFIG, 1)
        self.watch(env)
        spare.receive(OLYMPUS_ADDRESS, to_spare(make_assignment(CONFIG, 1), key=STRANGER_KEY))
        self.assertIs(spare.mode, Mode.PENDING)
        self.assertEqual(len(env.events_named("bcr.rejected")), 1)

    def test_assignment_delivered_by_outsider(self) -> None:
        """Olympus's genuine sealed assignment is taken only from Olympus's own key."""
        spare, env = make_spare(CONFIG, 1)
        self.watch(env)
        spare.receive(STRANGER, to_spare(make_assignment(CONFIG, 1)))
        self.assertIs(spare.mode, Mode.PENDING)
        self.assertDropped(spare, env, "not Olympus")

    def test_second_assignment_ignored(self) -> None:
        """An active replica ignores another assignment."""
        replica, env = self.replica(1)
        other = wire_configuration(number=1)
        replica.receive(
            OLYMPUS_ADDRESS, seal_from_olympus(make_assignment(other, 0), to=replica_address(0, 1))
        )
        self.assertEqual((replica.configuration, replica.index), (CONFIG, 1))
        replica.receive(OLYMPUS_ADDRESS, to_spare(make_assignment(CONFIG, 1, state={"a": "b"})))
        self.assertEqual((replica.configuration, replica.index, replica.state), (CONFIG, 1, {}))
        self.assertDropped(replica, env, "while active")

    def test_assignment_installs_state(self) -> None:
        """The assignment's state, first slot and client results are installed."""
        spare, env = make_spare(CONFIG, 2)
        assignment = make_assignment(CONFIG, 2, state={"a": "b"}, first_slot=12)
        spare.receive(OLYMPUS_ADDRESS, to_spare(assignment, index=2))
        self.assertEqual((spare.state, spare.next_slot, spare.last_executed), ({"a": "b"}, 12, 11))
        self.assertEqual(spare.name, "replica 0.2")
        self.assertTrue(spare.is_tail)


class AuthorisationTests(ReplicaTestCase):
    """What a replica takes from whom (Replica.ACCEPTS), and what that costs an attacker."""

    def test_max_message_by_role(self) -> None:
        """Olympus and the chain may send the largest messages, clients less, anyone else very little."""
        replica, env = self.replica(1)
        self.assertEqual(replica.max_message_from(OLYMPUS_KEY.verify_key_bytes), MAX_MESSAGE)
        for index in range(3):
            self.assertEqual(
                replica.max_message_from(replica_key(index).verify_key_bytes), MAX_MESSAGE
            )
        self.assertEqual(
            replica.max_message_from(client_key(0).verify_key_bytes), MAX_CLIENT_MESSAGE
        )
        for key in (STRANGER_KEY, client_key(9), replica_key(0, 1)):
            self.assertEqual(
                replica.max_message_from(key.verify_key_bytes), MAX_STRANGER_MESSAGE
            )
        self.assertLess(MAX_STRANGER_MESSAGE, MAX_CLIENT_MESSAGE)
        self.assertLess(MAX_CLIENT_MESSAGE, MAX_MESSAGE)

    def test_max_message_of_spare(self) -> None:
        """A spare knows no chain yet: only Olympus may send it large messages."""
        spare, env = make_spare(CONFIG, 1)
        self.assertEqual(spare.max_message_from(OLYMPUS_KEY.verify_key_bytes), MAX_MESSAGE)
        for key in (replica_key(0), client_key(0), STRANGER_KEY):
            self.assertEqual(spare.max_message_from(key.verify_key_bytes), MAX_STRANGER_MESSAGE)

    def test_outsider_control_messages(self) -> None:
        """
        Olympus's genuine control messages, delivered by a stranger, do
        nothing: no wedge, no catch-up, no running state, no shutdown.
        """
        replica, env = self.owed_a_result_shuttle()
        for message in (WedgeRequest(0), Shutdown(0)):
            replica.receive(STRANGER, to_spare(message))
            self.assertDropped(replica, env, "not Olympus")
        self.assertIs(replica.mode, Mode.ACTIVE)
        self.assertEqual(env.exits, [])
        # A replica passes nothing it got from Olympus on to anyone.
        replica.receive(replica_address(0), to_spare(WedgeRequest(0)))
        self.assertDropped(replica, env, "not Olympus")
        self.assertIs(replica.mode, Mode.ACTIVE)

    def test_outsider_messages_cause_nothing(self) -> None:
        """Every data-plane message from a stranger is dropped, whatever it says, with no reconfiguration request."""
        replica, env = self.owed_a_result_shuttle()
        state, history = dict(replica.state), dict(replica.history)
        messages = [
            make_shuttle(CONFIG, 1, sign_request(0, 1, "put", "k", "w"), "OK", 1),
            make_result_shuttle(CONFIG, 0, PUT, "fail"),
            make_result_shuttle(CONFIG, 0, PUT, "OK"),
            CheckpointMessage(checkpoint_proof(CONFIG, 0, crypto.state_hash({}), [0])),
            CompletedCheckpoint(checkpoint_proof(CONFIG, 0, crypto.state_hash({}), [0, 1, 2])),
            ForwardedRequest(PUT),
            ClientRequest(PUT),
        ]
        for message in messages:
            replica.receive(STRANGER, message)
            self.assertDropped(replica, env)
        self.assertEqual((replica.state, replica.history), (state, history))
        self.assertEqual(list(replica._my_result_hashes), [0])
        self.assertEqual(replica._result_cache, {})
        self.assertEqual(replica.last_executed, 0)

    def test_rejections_rate_limited_per_sender(self) -> None:
        """
        A flooding stranger writes at most a burst of 10 log lines per
        10 s; the next line after that says how many were held back.
        Other senders keep their own allowance.
        """
        replica, env = self.replica(1)
        shuttle = make_shuttle(CONFIG, 0, PUT, "OK", 1)
        for _ in range(30):
            replica.receive(STRANGER, shuttle)
        self.assertEqual(env.take(), [])
        self.assertEqual(len(env.events_named("bcr.rejected")), 10)
        replica.receive(replica_address(2), shuttle)
        rejected = env.events_named("bcr.rejected")
        self.assertEqual(len(rejected), 11)
        self.assertEqual(rejected[-1]["peer"], replica_address(2).address)
        env.clock.advance(10)
        replica.receive(STRANGER, shuttle)
        last = env.events_named("bcr.rejected")[-1]
        self.assertEqual((last["peer"], last["suppressed"]), (STRANGER.address, 20))
        self.assertIn("20 similar lines suppressed", formatEvent(last))
        self.assertEqual(env.events_named("bcr.reconfiguration_request"), [])
        self.assertEqual(replica.state, {})

    def test_rejected_reason_is_clipped(self) -> None:
        """A rejection quoting hostile text logs one short printable line."""
        replica, env = self.replica(1)
        sealed = to_spare(Shutdown(0), key=STRANGER_KEY)
        sealed = attrs.evolve(sealed, signer="x\n" * 1000)
        replica.receive(OLYMPUS_ADDRESS, sealed)
        [rejected] = env.events_named("bcr.rejected")
        self.assertNotIn("\n", formatEvent(rejected))
        self.assertLessEqual(len(rejected["reason"]), 160)


class QuiesceTests(ReplicaTestCase):
    """
    At the end of a run Olympus first asks each replica to finish its work
    in flight; the replica says when it has, and keeps serving meanwhile.
    """

    def quiescent(self, sent: Sent, index: int = 1) -> Quiescent:
        """The sealed Quiescent in C{sent}, checked to go to Olympus from replica C{index}."""
        self.assertEqual(sent.to, OLYMPUS_ADDRESS)
        quiescent = open_sealed(sent, replica_key(index))
        assert isinstance(quiescent, Quiescent)
        return quiescent

    def test_drained_replica_answers_at_once(self) -> None:
        """A replica with nothing in flight answers at once, and neither reports nor exits."""
        replica, env = self.replica(1)
        replica.receive(OLYMPUS_ADDRESS, to_spare(Quiesce(0)))
        [sent] = env.take()
        self.assertEqual(self.quiescent(sent), Quiescent(0, 1, True))
        self.assertEqual(env.exits, [])
        self.assertEqual(env.active_timers(), {})

    def test_waits_for_work_in_flight_and_keeps_serving(self) -> None:
        """A replica owed a result shuttle answers once it has arrived and been passed on."""
        replica, env = self.owed_a_result_shuttle()
        replica.receive(OLYMPUS_ADDRESS, to_spare(Quiesce(0)))
        self.assertEqual(env.take(), [])
        self.assertEqual(len(env.events_named("bcr.quiescing")), 1)
        replica.receive(replica_address(2), make_result_shuttle(CONFIG, 0, PUT, "OK"))
        forwarded, sent = env.take()
        self.assertIsInstance(forwarded.message, ResultShuttle)
        self.assertEqual(self.quiescent(sent), Quiescent(0, 1, True))
        self.assertEqual((env.exits, env.active_timers()), ([], {}))

    def test_deadline(self) -> None:
        """A result shuttle that never comes: after one step timeout the answer says so."""
        replica, env = self.owed_a_result_shuttle()
        replica.receive(OLYMPUS_ADDRESS, to_spare(Quiesce(0)))
        env.clock.advance(CONFIG.head_timeout_ms / 1000 - 0.001)
        self.assertEqual(env.take(), [])
        env.clock.advance(0.001)
        [sent] = env.take()
        self.assertEqual(self.quiescent(sent), Quiescent(0, 1, False))
        self.assertEqual(env.exits, [])
        self.assertEqual(len(env.events_named("bcr.drain_timeout")), 1)

    def test_wedged_while_quiescing(self) -> None:
        """A replica wedged while it waits answers at once: what is in flight is the reconfiguration's."""
        replica, env = self.owed_a_result_shuttle()
        replica.receive(OLYMPUS_ADDRESS, to_spare(Quiesce(0)))
        replica.receive(OLYMPUS_ADDRESS, to_spare(WedgeRequest(0)))
        quiescent = [self.quiescent(s) for s in env.take() if s.to == OLYMPUS_ADDRESS
                     and isinstance(open_sealed(s, replica_key(1)), Quiescent)]
        self.assertEqual(quiescent, [Quiescent(0, 1, False)])

    def test_quiesce_from_outsider_or_other_configuration(self) -> None:
        """Olympus's quiesce replayed by a stranger, or naming another configuration, gets no answer."""
        replica, env = self.replica(1)
        replica.receive(STRANGER, to_spare(Quiesce(0)))
        self.assertDropped(replica, env, "not Olympus")
        replica.receive(OLYMPUS_ADDRESS, to_spare(Quiesce(3)))
        self.assertEqual(env.take(), [])


class ShutdownTests(ReplicaTestCase):
    """Olympus retires a replica: final state, then exit (SPEC §9.7, §12.2)."""

    def test_shutdown(self) -> None:
        """On shutdown a drained replica seals its final state to Olympus and then exits with status 0."""
        replica, env = self.replica(1)
        replica.receive(replica_address(0), make_shuttle(CONFIG, 0, PUT, "OK", 1))
        replica.receive(replica_address(2), make_result_shuttle(CONFIG, 0, PUT, "OK"))
        env.take()
        env.actions.clear()
        replica.receive(OLYMPUS_ADDRESS, to_spare(Shutdown(0)))
        self.assertEqual([kind for kind, _ in env.actions], ["send", "exit"])
        sent = env.actions[0][1]
        self.assertEqual(sent.to, OLYMPUS_ADDRESS)
        self.assertEqual(open_sealed(sent, replica_key(1)), FinalState(0, 1, {"k": "v"}, 0))
        self.assertEqual(env.exits[0][0], 0)
        self.assertEqual(len(env.events_named("bcr.final_state")), 1)

    def test_shutdown_drains_first(self) -> None:
        """A replica still owed a result shuttle retires only once it has arrived and been passed on."""
        replica, env = self.owed_a_result_shuttle()
        replica.receive(OLYMPUS_ADDRESS, to_spare(Shutdown(0)))
        self.assertEqual((env.take(), env.exits), ([], []))
        self.assertEqual(len(env.events_named("bcr.draining")), 1)
        replica.receive(replica_address(2), make_result_shuttle(CONFIG, 0, PUT, "OK"))
        forwarded, final = env.take()
        self.assertIsInstance(forwarded.message, ResultShuttle)
        self.assertEqual(open_sealed(final, replica_key(1)), FinalState(0, 1, {"k": "v"}, 0))
        self.assertEqual(env.exits[0][0], 0)

    def test_shutdown_drain_deadline(self) -> None:
        """A replica whose result shuttle never comes retires after one step timeout anyway."""
        replica, env = self.owed_a_result_shuttle()
        replica.receive(OLYMPUS_ADDRESS, to_spare(Shutdown(0)))
        env.clock.advance(CONFIG.head_timeout_ms / 1000 - 0.001)
        self.assertEqual(env.exits, [])
        env.clock.advance(0.001)
        [final] = env.take()
        self.assertEqual(open_sealed(final, replica_key(1)), FinalState(0, 1, {"k": "v"}, 0))
        self.assertEqual(env.exits[0][0], 0)
        self.assertEqual(len(env.events_named("bcr.drain_timeout")), 1)

    def test_shutdown_for_other_configuration(self) -> None:
        """A shutdown naming another configuration is ignored."""
        replica, env = self.replica(1)
        replica.receive(OLYMPUS_ADDRESS, to_spare(Shutdown(3)))
        self.assertEqual((env.take(), env.exits), ([], []))

    def test_shutdown_of_spare(self) -> None:
        """An unassigned spare retired by Olympus exits with status 0 and reports nothing."""
        spare, env = make_spare(CONFIG, 1)
        spare.receive(OLYMPUS_ADDRESS, to_spare(Shutdown(-1)))
        self.assertEqual(env.take(), [])
        self.assertEqual(env.exits[0][0], 0)

    def test_shutdown_not_from_olympus(self) -> None:
        """A shutdown sealed by someone else is rejected."""
        replica, env = self.replica(1)
        replica.receive(OLYMPUS_ADDRESS, to_spare(Shutdown(0), key=STRANGER_KEY))
        self.assertEqual(env.exits, [])
        self.assertEqual(env.take(), [])
        self.assertEqual(len(env.events_named("bcr.rejected")), 1)

    def test_shutdown_delivered_by_outsider(self) -> None:
        """Olympus's genuine shutdown replayed by a stranger retires nobody."""
        replica, env = self.replica(1)
        replica.receive(STRANGER, to_spare(Shutdown(0)))
        self.assertEqual(env.exits, [])
        self.assertDropped(replica, env, "not Olympus")

    def test_shutdown_for_another_replica(self) -> None:
        """A shutdown Olympus sealed for another replica does not retire this one."""
        replica, env = self.replica(1)
        replica.receive(OLYMPUS_ADDRESS, to_spare(Shutdown(0), index=2))
        self.assertEqual((env.take(), env.exits), ([], []))
        [rejected] = env.events_named("bcr.rejected")
        self.assertIn("another recipient", rejected["reason"])


class SingleReplicaTests(ReplicaTestCase):
    """With t = 0 one replica is both head and tail."""

    def setUp(self) -> None:
        self.config = wire_configuration(t=0, clients=1, checkpt_interval=2)
        self.replica_, self.env = self.replica(0, configuration=self.config)

    def test_end_to_end(self) -> None:
        """Requests are ordered, executed and answered with a one-statement proof, and no shuttles."""
        replica, env = self.replica_, self.env
        first = sign_request(0, 0, "put", "movie", "star")
        second = sign_request(0, 1, "append", "movie", " wars")
        replica.receive(client_address(0), ClientRequest(first))
        replica.receive(client_address(0), ClientRequest(second))
        sent = env.take()
        self.assertEqual([s.to for s in sent], [client_address(0)] * 2)
        self.assertEqual(
            [s.message for s in sent],
            [
                ResultMessage(0, 0, 0, 0, "OK", result_proof(self.config, 0, first, "OK", 1)),
                ResultMessage(0, 1, 0, 1, "OK", result_proof(self.config, 1, second, "OK", 1)),
            ],
        )
        self.assertEqual(replica.state, {"movie": "star wars"})
        # Slot 1 closes a checkpoint: with one replica it completes at once.
        self.assertEqual(replica.history, {})
        self.assertEqual(
            replica.checkpoint,
            checkpoint_proof(self.config, 1, crypto.state_hash(replica.state), [0]),
        )
        replica.receive(client_address(0), ClientRequest(second))
        [again] = env.take()
        self.assertEqual(again.message, sent[1].message)
        self.assertEqual(self.cases(env), [("0:1", "cached result")])


class RequestingClientTests(SynchronousTestCase):
    """requesting_client reads the client index without decoding the request."""

    @given(st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**63 - 1))
    def test_matches_decoding(self, client: int, seq: int) -> None:
        """For any request, the peeked client is the decoded one."""
        signed = crypto.sign(client_key(0), Request(client, seq, Operation("get", ("k",))))
        self.assertEqual(requesting_client(signed), client)

    def test_unknown_client_rejected(self) -> None:
        """A request naming a client without a key is a bad signature, not a crash."""
        signed = crypto.sign(client_key(0), Request(7, 0, Operation("get", ("k",))))
        self.assertRaises(
            crypto.BadSignature, check_request, crypto.Verifier(), signed,
            {0: client_key(0).verify_key_bytes},
        )
