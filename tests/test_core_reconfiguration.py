"""
Tests for reconfiguration in the core (SPEC §7, §9): the pure decisions of
L{twisted_bcr.core.reconfiguration} on hand-made histories, Olympus's
orchestration driven with hand-made wedged, caught_up and running_state
messages through a fake environment, and the replica's and client's parts
(wedge, catch-up, running state, recovered results, configuration push).
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.fakes import (
    EPOCH,
    OLYMPUS_ADDRESS,
    OLYMPUS_KEY,
    STRANGER,
    STRANGER_KEY,
    FakeEnvironment,
    Sent,
    checkpoint_proof,
    checkpoint_statement,
    client_address,
    client_key,
    history_entry,
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
    register_client_message,
    register_replica_message,
    replica_address,
    replica_key,
    request_of,
    result_statement,
    seal_from_olympus,
    seal_from_replica,
    sign_request,
    wire_configuration,
)
from twisted_bcr import codec, crypto
from twisted_bcr.admission import AdmittedKeys
from twisted_bcr.config import parse_case_text
from twisted_bcr.core.client import Client, ClientOutcome
from twisted_bcr.core.common import Mode, ProofError
from twisted_bcr.core.olympus import CHALLENGE_LIFETIME_S, Olympus
from twisted_bcr.core.reconfiguration import (
    WedgedReplica,
    candidate_quorums,
    plan_quorum,
    validate_wedged,
    vouched_results,
)
from twisted_bcr.dictionary import apply_operation
from twisted_bcr.messages import (
    Assignment,
    CatchUp,
    CaughtUp,
    CheckpointMessage,
    CheckpointProof,
    ClientRequest,
    ClientResult,
    CompletedCheckpoint,
    Configuration,
    ConfigurationReply,
    ErrorMessage,
    FinishRun,
    GetConfiguration,
    GetRunningState,
    HistoryEntry,
    Quiesce,
    Quiescent,
    Ready,
    ReconfigurationRequest,
    RegistrationBinding,
    RegistrationChallenge,
    RegistrationResponse,
    Request,
    ResultFromOlympus,
    ResultMessage,
    RunningState,
    Sealed,
    Shutdown,
    Shuttle,
    Signed,
    Wedged,
    WedgeRequest,
)
from twisted_bcr.peers import Peer

#: The fakes' make_configuration still puts whole Peers where ReplicaInfo
#: and ClientInfo want address strings; wire_configuration gives plain ones.
make_configuration = wire_configuration


CONFIG = make_configuration(t=1, clients=2)
CLIENT_KEYS = {c.index: c.verify_key for c in CONFIG.clients}

#: The request of slot s is REQUESTS[s] (slots 0..5 of configuration 0).
REQUESTS = [
    sign_request(0, 0, "put", "a", "b"),
    sign_request(1, 0, "put", "c", "d"),
    sign_request(0, 1, "append", "a", "e"),
    sign_request(1, 1, "get", "c"),
    sign_request(0, 2, "append", "a", "f"),
    sign_request(1, 2, "append", "c", "g"),
]
#: Another request, to make histories diverge at a slot.
OTHER = sign_request(1, 1, "put", "c", "zzz")


def results_through(count: int) -> tuple[dict[str, str], list[str]]:
    """The state after executing REQUESTS[:count] in slot order, and the results."""
    state: dict[str, str] = {}
    results = []
    for signed in REQUESTS[:count]:
        request = request_of(signed)
        results.append(apply_operation(state, request.operation.name, request.operation.args))
    return state, results


def entries(
    slots: range | list[int], configuration: Configuration = CONFIG, count: int | None = None
) -> tuple[HistoryEntry, ...]:
    """History entries of REQUESTS at C{slots}."""
    return tuple(history_entry(configuration, s, REQUESTS[s], count) for s in slots)


def wedged_replica(index: int, checkpoint_slot: int, slots: range | list[int]) -> WedgedReplica:
    """A valid wedged replica's reduction, with REQUESTS at C{slots}."""
    return WedgedReplica(index, checkpoint_slot, entries(slots))


# ---------------------------------------------------------------------------
# Pure decisions


class ValidateWedgedTests(SynchronousTestCase):
    """validate_wedged accepts exactly the wedged messages SPEC §9.3 allows."""

    def validate(self, history: tuple[HistoryEntry, ...], checkpoint: CheckpointProof | None = None, first_slot: int = 0) -> WedgedReplica:
        """Validate replica 1's wedged message with C{history} and C{checkpoint}."""
        return validate_wedged(
            crypto.Verifier(), Wedged(0, 1, history, checkpoint), CONFIG, first_slot, CLIENT_KEYS
        )

    def test_valid(self) -> None:
        """Consecutive slots from the first slot, valid requests and order proofs give the replica's reduction."""
        history = entries(range(4))
        self.assertEqual(self.validate(history), WedgedReplica(1, -1, history))

    def test_partial_order_proofs(self) -> None:
        """Order proofs of positions 0..k (not yet complete) are valid."""
        history = entries(range(2), count=1) + entries(range(2, 3), count=2)
        self.assertEqual(self.validate(history).last_slot, 2)

    def test_empty(self) -> None:
        """An empty history without a checkpoint is valid; its last slot is the one before the first slot."""
        self.assertEqual(self.validate((), first_slot=7), WedgedReplica(1, 6, ()))
        self.assertEqual(WedgedReplica(1, 6, ()).last_slot, 6)

    def test_first_slot_of_later_configuration(self) -> None:
        """In a configuration starting at slot 2, the history must start at 2."""
        history = tuple(history_entry(CONFIG, s, REQUESTS[s]) for s in (2, 3))
        self.assertEqual(self.validate(history, first_slot=2).checkpoint_slot, 1)
        self.assertRaises(ProofError, self.validate, history, first_slot=0)

    def test_hole(self) -> None:
        """A missing slot in the middle makes the whole message invalid."""
        e = self.assertRaises(ProofError, self.validate, entries([0, 1, 3]))
        self.assertIn("slot 3 where 2 belongs", str(e))

    def test_wrong_start(self) -> None:
        """Without a checkpoint, a history starting after the first slot is invalid."""
        e = self.assertRaises(ProofError, self.validate, entries([1, 2]))
        self.assertIn("slot 1 where 0 belongs", str(e))

    def test_order_statement_for_another_operation(self) -> None:
        """A validly signed order statement naming another operation than the request is invalid."""
        bad = HistoryEntry(
            1, REQUESTS[1],
            (order_statement(CONFIG, 1, REQUESTS[1], 0),
             order_statement(CONFIG, 1, REQUESTS[1], 1, op=operation("get", "x"))),
        )
        e = self.assertRaises(ProofError, self.validate, entries([0]) + (bad,))
        self.assertIn("order statement 1 contradicts", str(e))

    def test_order_statement_for_another_slot(self) -> None:
        """An order statement signed for another slot than the entry's is invalid."""
        bad = HistoryEntry(0, REQUESTS[0], (order_statement(CONFIG, 5, REQUESTS[0], 0),))
        self.assertRaises(ProofError, self.validate, (bad,))

    def test_order_statement_wrong_signer(self) -> None:
        """An order statement at position 1 signed by replica 2 is invalid."""
        bad = HistoryEntry(
            0, REQUESTS[0],
            (order_statement(CONFIG, 0, REQUESTS[0], 0),
             order_statement(CONFIG, 0, REQUESTS[0], 1, key=replica_key(2))),
        )
        self.assertRaises(ProofError, self.validate, (bad,))

    def test_order_statement_bad_signature(self) -> None:
        """An order statement with a spoiled signature is invalid."""
        proof = order_proof(CONFIG, 0, REQUESTS[0], 3)
        bad = HistoryEntry(0, REQUESTS[0], (proof[0], crypto.corrupt(proof[1]), proof[2]))
        self.assertRaises(ProofError, self.validate, (bad,))

    def test_empty_order_proof(self) -> None:
        """An entry without any order statement is invalid."""
        self.assertRaises(ProofError, self.validate, (HistoryEntry(0, REQUESTS[0], ()),))

    def test_bad_client_signature(self) -> None:
        """A request not signed by the client it names is invalid (a faulty head cannot invent requests)."""
        forged = sign_request(0, 0, "put", "a", "b", key=STRANGER_KEY)
        e = self.assertRaises(ProofError, self.validate, (history_entry(CONFIG, 0, forged),))
        self.assertIn("client request", str(e))

    def test_unknown_client(self) -> None:
        """A request of a client the configuration does not know is invalid."""
        stranger = sign_request(7, 0, "put", "a", "b", key=STRANGER_KEY)
        self.assertRaises(ProofError, self.validate, (history_entry(CONFIG, 0, stranger),))

    def test_checkpoint(self) -> None:
        """With a checkpoint of t+1 valid matching statements, the history starts right after its slot."""
        proof = checkpoint_proof(CONFIG, 1, b"h" * 32, [0, 1])
        history = entries([2, 3])
        self.assertEqual(self.validate(history, proof), WedgedReplica(1, 1, history))
        self.assertRaises(ProofError, self.validate, entries([0, 1, 2]), proof)

    def test_checkpoint_spoiled_statement_tolerated(self) -> None:
        """A complete checkpoint proof with one spoiled statement still has t+1 valid ones."""
        proof = checkpoint_proof(CONFIG, 1, b"h" * 32, [0, 1, 2])
        statements = (proof.statements[0], crypto.corrupt(proof.statements[1]), proof.statements[2])
        proof = CheckpointProof(0, 1, statements)
        self.assertEqual(self.validate(entries([2]), proof).checkpoint_slot, 1)

    def test_checkpoint_too_few_statements(self) -> None:
        """A checkpoint proof with fewer than t+1 valid statements is invalid."""
        proof = checkpoint_proof(CONFIG, 1, b"h" * 32, [0])
        e = self.assertRaises(ProofError, self.validate, entries([2]), proof)
        self.assertIn("1 valid matching statements, 2 needed", str(e))
        spoiled = checkpoint_proof(CONFIG, 1, b"h" * 32, [0, 1, 2])
        spoiled = CheckpointProof(
            0, 1, (spoiled.statements[0],) + tuple(crypto.corrupt(s) for s in spoiled.statements[1:])
        )
        self.assertRaises(ProofError, self.validate, entries([2]), spoiled)

    def test_checkpoint_disagreeing_hashes(self) -> None:
        """Statements for different state hashes do not add up to t+1."""
        proof = CheckpointProof(
            0, 1,
            (checkpoint_statement(CONFIG, 1, b"h" * 32, 0), checkpoint_statement(CONFIG, 1, b"i" * 32, 1)),
        )
        self.assertRaises(ProofError, self.validate, entries([2]), proof)

    def test_checkpoint_dropped_statements(self) -> None:
        """drop_checkpt_stmts() leaves statements of positions t+1.. at positions 0..: invalid for Olympus too."""
        complete = checkpoint_proof(CONFIG, 1, b"h" * 32, [0, 1, 2])
        proof = CheckpointProof(0, 1, complete.statements[2:])
        self.assertRaises(ProofError, self.validate, entries([2]), proof)


class CandidateQuorumTests(SynchronousTestCase):
    """candidate_quorums lists t+1 subsets of the valid replicas in a fixed order."""

    def test_order(self) -> None:
        """Combinations come in increasing replica-index order, whatever order the replicas were heard in."""
        self.assertEqual(
            list(candidate_quorums([4, 0, 3, 1], 1, set())),
            [(0, 1), (0, 3), (0, 4), (1, 3), (1, 4), (3, 4)],
        )

    def test_skips_tried(self) -> None:
        """Quorums already tried are skipped."""
        self.assertEqual(
            list(candidate_quorums([0, 1, 2, 3, 4], 2, {(0, 1, 2), (0, 1, 3)})),
            [(0, 1, 4), (0, 2, 3), (0, 2, 4), (0, 3, 4), (1, 2, 3), (1, 2, 4),
             (1, 3, 4), (2, 3, 4)],
        )

    def test_too_few(self) -> None:
        """With only t valid replicas there is no candidate."""
        self.assertEqual(list(candidate_quorums([3], 1, set())), [])


class PlanQuorumTests(SynchronousTestCase):
    """plan_quorum aligns histories, checks consistency and computes catch-up lists."""

    def test_consistent_prefixes(self) -> None:
        """Histories that are prefixes of the longest give LH and what each member misses."""
        plan = plan_quorum(
            [wedged_replica(2, -1, range(6)), wedged_replica(0, -1, range(3))]
        )
        self.assertEqual(plan.quorum, (0, 2))
        self.assertEqual(plan.checkpoint_slot, -1)
        self.assertEqual(plan.longest_history, entries(range(6)))
        self.assertEqual(plan.catch_up, {0: entries(range(3, 6)), 2: ()})
        self.assertEqual(plan.last_slot, 5)

    def test_equal_histories(self) -> None:
        """Equal histories need no catch-up."""
        plan = plan_quorum([wedged_replica(0, -1, range(3)), wedged_replica(1, -1, range(3))])
        self.assertEqual(plan.catch_up, {0: (), 1: ()})

    def test_empty_histories(self) -> None:
        """Empty histories give an empty LH ending at the slot before the configuration's first."""
        plan = plan_quorum([wedged_replica(0, 9, []), wedged_replica(1, 9, [])])
        self.assertEqual((plan.longest_history, plan.last_slot), ((), 9))

    def test_divergent(self) -> None:
        """Histories with different operations at one slot are not a quorum."""
        divergent = WedgedReplica(1, -1, entries(range(3)) + (history_entry(CONFIG, 3, OTHER),))
        e = self.assertRaises(
            ProofError, plan_quorum, [wedged_replica(0, -1, range(5)), divergent]
        )
        self.assertIn("slot 3", str(e))

    def test_aligned_by_highest_checkpoint(self) -> None:
        """Entries up to the highest checkpoint of any member are ignored; LH starts after it."""
        with_checkpoint = wedged_replica(0, 2, range(3, 5))
        without = wedged_replica(1, -1, range(0, 4))
        plan = plan_quorum([with_checkpoint, without])
        self.assertEqual(plan.checkpoint_slot, 2)
        self.assertEqual(plan.longest_history, entries(range(3, 5)))
        self.assertEqual(plan.catch_up, {0: (), 1: entries([4])})
        self.assertEqual(plan.last_slot, 4)

    def test_divergence_before_checkpoint_ignored(self) -> None:
        """A difference at a slot the checkpoint covers does not matter."""
        with_checkpoint = wedged_replica(0, 3, range(4, 5))
        other = WedgedReplica(1, -1, entries(range(3)) + (history_entry(CONFIG, 3, OTHER),))
        plan = plan_quorum([with_checkpoint, other])
        self.assertEqual(plan.catch_up, {0: (), 1: entries([4])})

    def test_member_behind_checkpoint(self) -> None:
        """A member that executed less than the checkpoint cannot be caught up from LH."""
        e = self.assertRaises(
            ProofError, plan_quorum,
            [wedged_replica(0, 3, range(4, 6)), wedged_replica(1, -1, range(2))],
        )
        self.assertIn("replica 1 executed up to slot 1", str(e))

    def test_member_at_checkpoint(self) -> None:
        """A member whose history ends exactly at the checkpoint catches up on all of LH."""
        plan = plan_quorum([wedged_replica(0, 3, range(4, 6)), wedged_replica(1, -1, range(4))])
        self.assertEqual(plan.catch_up[1], entries(range(4, 6)))



def caught_up_message(
    index: int, reports: list[tuple[int, str]], configuration: Configuration = CONFIG,
    spoil: bool = False, lie: str | None = None,
) -> CaughtUp:
    """
    Member C{index}'s caught_up: for each (slot, result), the result
    statement it signs for REQUESTS[slot] (spoiled, or for the hash of
    C{lie}, if asked).
    """
    results = []
    for slot, result in reports:
        request = request_of(REQUESTS[slot])
        statement = result_statement(configuration, slot, REQUESTS[slot], index, lie if lie is not None else result)
        if spoil:
            statement = crypto.corrupt(statement)
        results.append(ClientResult(request.client, request.seq, result, statement))
    return CaughtUp(configuration.number, index, b"s" * 32, tuple(results))


class VouchedResultsTests(SynchronousTestCase):
    """vouched_results finds the results t+1 members sign for (SPEC §9.6)."""

    def vouch(self, caught_up: dict[int, CaughtUp], configuration: Configuration = CONFIG) -> list[ResultFromOlympus]:
        """The vouchers for C{caught_up}."""
        return vouched_results(crypto.Verifier(), caught_up, configuration)

    def test_t_plus_one_agree(self) -> None:
        """t+1 members signing the same result for a client's request give a voucher with their statements."""
        reports = [(4, "OK"), (3, "d")]
        vouchers = self.vouch({0: caught_up_message(0, reports), 2: caught_up_message(2, reports)})
        self.assertEqual(
            [(v.client, v.seq, v.slot, v.result) for v in vouchers],
            [(0, 2, 4, "OK"), (1, 1, 3, "d")],
        )
        self.assertEqual(
            vouchers[1].statements,
            (result_statement(CONFIG, 3, REQUESTS[3], 0, "d"), result_statement(CONFIG, 3, REQUESTS[3], 2, "d")),
        )

    def test_t_only(self) -> None:
        """t members are not enough."""
        self.assertEqual(self.vouch({0: caught_up_message(0, [(4, "OK")]), 1: caught_up_message(1, [])}), [])

    def test_t_of_larger_configuration(self) -> None:
        """With t = 2, two agreeing members are not enough and three are."""
        config = make_configuration(t=2, clients=2)
        two = {i: caught_up_message(i, [(3, "d")], config) for i in (0, 1)}
        self.assertEqual(self.vouch(two, config), [])
        two[4] = caught_up_message(4, [(3, "d")], config)
        self.assertEqual(len(self.vouch(two, config)), 1)

    def test_invalid_signature_ignored(self) -> None:
        """A statement with a spoiled signature does not count."""
        vouchers = self.vouch({0: caught_up_message(0, [(3, "d")]), 1: caught_up_message(1, [(3, "d")], spoil=True)})
        self.assertEqual(vouchers, [])

    def test_statement_for_another_result_ignored(self) -> None:
        """A statement whose hash is not that of the reported result does not count."""
        vouchers = self.vouch({0: caught_up_message(0, [(3, "d")]), 1: caught_up_message(1, [(3, "d")], lie="OK")})
        self.assertEqual(vouchers, [])

    def test_disagreeing_results(self) -> None:
        """Members reporting different results for the same request give no voucher for it."""
        vouchers = self.vouch({0: caught_up_message(0, [(3, "d")]), 1: caught_up_message(1, [(3, "x")])})
        self.assertEqual(vouchers, [])

    def test_statement_signed_by_another_member(self) -> None:
        """Member 1 cannot pass off member 0's statement as its own."""
        forged = caught_up_message(0, [(3, "d")])
        forged = CaughtUp(0, 1, forged.state_hash, forged.client_results)
        self.assertEqual(self.vouch({0: caught_up_message(0, [(3, "d")]), 1: forged}), [])


# ---------------------------------------------------------------------------
# Olympus

OLYMPUS_CASE = parse_case_text(
    """
t = 1
num_client = 2
head_timeout = 2000
nonhead_timeout = 3000
checkpt_interval = 4
workload[0] = put('a','b')
workload[1] = get('a')
""",
    "reconfiguration_case.txt",
)
STEP_S = 3.0
#: How long the end of a run waits for a reconfiguration at t = 1.
ALLOWANCE_S = 5 * STEP_S


#: The identities Olympus admits in these tests: the daemons that serve as
#: replicas of configurations 0 and 1, and both clients of the case.
ADMITTED = AdmittedKeys(
    frozenset(identity_key(i, n).verify_key_bytes for n in (0, 1) for i in range(3)),
    {c: client_key(c).verify_key_bytes for c in range(2)},
)


class OlympusReconfigurationTestCase(SynchronousTestCase):
    """
    An Olympus whose configuration 0 is made of replicas holding the keys
    of L{tests.fakes.replica_key}, each registered with its admitted
    identity, all ready and announced to the clients, with three more spares
    (for configuration 1) registered.
    """

    def setUp(self) -> None:
        self.env = FakeEnvironment(OLYMPUS_ADDRESS)
        self.olympus = Olympus(self.env, OLYMPUS_CASE, OLYMPUS_KEY, ADMITTED)
        self.env.machine = self.olympus
        self.olympus.start()
        self.addCleanup(lambda: self.assertEqual(self.env.format_errors, []))
        for number in (0, 1):
            for index in range(3):
                self.register_spare(index, number)
            if number == 0:
                for client in range(2):
                    self.olympus.receive(client_address(client), register_client_message(client))
        self.config = self.olympus.configurations[0]
        # Olympus's configuration 0 is the fakes' configuration 0.
        self.assertEqual(
            self.config,
            make_configuration(t=1, clients=2, checkpt_interval=4, head_timeout_ms=2000, nonhead_timeout_ms=3000),
        )
        # Clients hear of configuration 0 only once all its replicas are ready.
        self.assertEqual(self.sent_of(ConfigurationReply), [])
        self.ready(0)
        self.assertEqual(
            self.sent_of(ConfigurationReply),
            [(client_address(i), ConfigurationReply(self.config)) for i in range(2)],
        )
        self.assertEqual(self.env.active_timers(), {})

    # Inputs --------------------------------------------------------------

    def register_spare(self, index: int, number: int) -> None:
        """
        The daemon that will be replica C{number}.C{index} registers as a
        spare: it announces itself, and answers Olympus's challenge by
        signing the binding with its admitted identity key.
        """
        key, identity = replica_key(index, number), identity_key(index, number)
        self.answer_challenge(index, number, key, identity, self.challenge(index, number, key, identity))
        self.assertIn(key.verify_key_bytes, [r.verify_key for r in self.olympus.spares] + [
            r.verify_key for c in self.olympus.configurations.values() for r in c.replicas
        ])

    def challenge(
        self, index: int, number: int, key: crypto.KeyPair, identity: crypto.KeyPair
    ) -> bytes:
        """The spare at C{replica_address(index, number)} registers; the challenge's nonce."""
        peer = replica_address(index, number)
        self.olympus.receive(peer, register_replica_message(peer.address, key, identity))
        [challenge] = [s for s in self.env.take() if s.to == peer]
        opened = open_sealed(challenge, OLYMPUS_KEY)
        assert isinstance(opened, RegistrationChallenge), opened
        return opened.nonce

    def answer_challenge(
        self, index: int, number: int, key: crypto.KeyPair, identity: crypto.KeyPair,
        nonce: bytes,
    ) -> None:
        """That spare answers the challenge C{nonce} with its identity's signature."""
        peer = replica_address(index, number)
        binding = RegistrationBinding(
            OLYMPUS_KEY.verify_key_bytes, self.olympus.epoch, nonce, key.verify_key_bytes,
            peer.address,
        )
        response = RegistrationResponse(nonce, identity.sign_bytes(codec.encode(binding)))
        self.olympus.receive(
            peer,
            crypto.seal(
                key, peer.address, "spare", response,
                recipient=OLYMPUS_KEY.verify_key_bytes, epoch=self.olympus.epoch,
            ),
        )

    def from_replica(self, index: int, message: object, number: int = 0) -> None:
        """Replica C{index} of configuration C{number} sends C{message}, sealed."""
        configuration = self.olympus.configurations[number]
        self.olympus.receive(
            replica_address(index, number),
            seal_from_replica(configuration, index, message, epoch=self.olympus.epoch),
        )

    def ready(self, number: int, indices: range | list[int] = range(3)) -> None:
        """The replicas at C{indices} of configuration C{number} say they are ready."""
        for index in indices:
            self.from_replica(index, Ready(number, index), number)

    def from_stranger(self, message: object, configuration: int = 0) -> None:
        """
        An outsider with a valid key of its own sends C{message}, sealed
        properly by that key for Olympus in its current epoch.
        """
        self.olympus.receive(
            STRANGER,
            crypto.seal(
                STRANGER_KEY, STRANGER.address, "replica 0.1", message,
                recipient=OLYMPUS_KEY.verify_key_bytes, epoch=self.olympus.epoch,
                configuration=configuration,
            ),
        )

    def finish_run(self, workload_done: bool = True) -> None:
        """The driver, which holds Olympus's key, ends the run."""
        driver = Peer("driver", OLYMPUS_KEY.verify_key_bytes)
        self.olympus.receive(
            driver,
            crypto.seal(
                OLYMPUS_KEY, "driver", "olympus", FinishRun("test", workload_done),
                recipient=OLYMPUS_KEY.verify_key_bytes, epoch=b"",
            ),
        )

    def request(self, index: int = 1, number: int = 0, names: int | None = None) -> None:
        """Replica C{index} of configuration C{number} asks to reconfigure configuration C{names}."""
        names = number if names is None else names
        self.from_replica(index, ReconfigurationRequest(names, f"replica {number}.{index}", "test", ()), number)

    def wedged(self, index: int, history: tuple[HistoryEntry, ...], checkpoint: CheckpointProof | None = None) -> None:
        """Replica C{index} of configuration 0 sends its wedged message."""
        self.from_replica(index, Wedged(0, index, history, checkpoint))

    def caught_up(self, index: int, state: dict[str, str], reports: list[tuple[int, str]] = ()) -> None:  # type: ignore[assignment]
        """Replica C{index} reports the hash of C{state} and its most recent results."""
        message = caught_up_message(index, list(reports))
        self.from_replica(index, CaughtUp(0, index, crypto.state_hash(state), message.client_results))

    def running_state(self, index: int, state: dict[str, str]) -> None:
        """Replica C{index} sends C{state} as its running state."""
        self.from_replica(index, RunningState(0, index, state))

    # Outputs -------------------------------------------------------------

    def opened(self, sent: list[Sent]) -> list[tuple[Peer, object]]:
        """
        (to, body) of sealed messages, each checked to be sealed by Olympus,
        in its epoch, for the key it is sent to.
        """
        for s in sent:
            assert isinstance(s.message, Sealed), s
            self.assertEqual((s.message.epoch, s.message.recipient), (self.olympus.epoch, s.to.key))
        return [(s.to, open_sealed(s, OLYMPUS_KEY)) for s in sent]

    def sent_of(self, cls: type) -> list[tuple[Peer, Any]]:
        """(to, body) of the messages of class C{cls} sent since the last take, forgetting everything sent."""
        return [(to, body) for to, body in self.opened(self.env.take()) if isinstance(body, cls)]

    def catch_ups(self) -> dict[int, tuple[int, ...]]:
        """Replica index -> slots of the catch-up sent to it (forgets what was sent)."""
        return {
            int(to.address.rsplit(".", 1)[1]): tuple(e.slot for e in body.entries)
            for to, body in self.sent_of(CatchUp)
        }

    def events(self, name: str) -> list[dict[str, Any]]:
        """Olympus's log events called C{name}."""
        return self.env.events_named(name)

    # Steps ---------------------------------------------------------------

    def start_reconfiguration(self) -> None:
        """Replica 1 asks; Olympus wedges configuration 0."""
        self.request()
        self.assertEqual(len(self.sent_of(WedgeRequest)), 3)

    def through_running_state(self, state_slots: int = 4) -> dict[str, str]:
        """
        Run a reconfiguration up to Olympus asking for the running state:
        replicas 0 and 1 wedge with histories of 3 and 4 slots, catch up to
        4 and agree.  Returns the agreed state.
        """
        self.start_reconfiguration()
        self.wedged(0, entries(range(3)))
        self.wedged(1, entries(range(state_slots)))
        self.assertEqual(self.catch_ups(), {0: tuple(range(3, state_slots)), 1: ()})
        state, results = results_through(state_slots)
        reports = [(2, results[2]), (3, results[3])]
        self.caught_up(0, state, reports)
        self.caught_up(1, state, reports)
        self.assertEqual(self.sent_of(GetRunningState), [(replica_address(0), GetRunningState(0))])
        return state


class OlympusChallengeTests(OlympusReconfigurationTestCase):
    """A registration challenge is good once, and only for a while."""

    def test_expired_challenge(self) -> None:
        """An answer that comes after the challenge expired registers nobody."""
        # An admitted identity whose daemon restarted with a fresh key.
        key, identity = replica_key(0, 2), identity_key(0, 1)
        nonce = self.challenge(0, 2, key, identity)
        self.env.clock.advance(CHALLENGE_LIFETIME_S + 1)
        self.answer_challenge(0, 2, key, identity, nonce)
        self.assertNotIn(key.verify_key_bytes, [r.verify_key for r in self.olympus.spares])
        self.assertIn(
            "expired challenge", " ".join(e["reason"] for e in self.events("bcr.rejected"))
        )


class OlympusRequestTests(OlympusReconfigurationTestCase):
    """Which reconfiguration requests Olympus accepts (SPEC §7)."""

    def test_replica_request_wedges_all(self) -> None:
        """A request from a current replica sends a wedge request to every replica and starts the step timer."""
        self.request(2)
        sent = self.opened(self.env.take())
        self.assertEqual(sent, [(replica_address(i), WedgeRequest(0)) for i in range(3)])
        self.assertEqual(self.env.active_timers(), {"wedge": STEP_S})
        self.assertEqual(self.olympus.reconfiguring.requested_by, ["replica 0.2"])

    def test_ignored_while_reconfiguring(self) -> None:
        """A second request during a reconfiguration starts nothing new; its requester is recorded."""
        self.request(1)
        self.env.take()
        self.request(0)
        self.request(1)
        self.assertEqual(self.env.take(), [])
        self.assertEqual(self.olympus.reconfiguring.requested_by, ["replica 0.1", "replica 0.0"])
        self.assertEqual(
            [e["why"] for e in self.events("bcr.request_ignored")],
            ["a reconfiguration is already running"] * 2,
        )

    def test_request_naming_other_configuration(self) -> None:
        """A current replica's request naming another configuration number is ignored."""
        self.request(1, names=3)
        self.assertEqual(self.env.take(), [])
        self.assertIsNone(self.olympus.reconfiguring)

    def test_old_configuration_ignored(self) -> None:
        """After a reconfiguration, requests naming configuration 0 or coming from its replicas are ignored; configuration 1's are accepted."""
        state = self.through_running_state()
        self.running_state(0, state)
        self.env.take()
        self.assertEqual(self.olympus.configuration.number, 1)
        self.request(1, number=0)
        self.request(1, number=0, names=1)
        self.assertEqual(self.env.take(), [])
        self.assertEqual(
            [e["why"] for e in self.events("bcr.request_ignored")],
            ["it names an old configuration", "it comes from a replica of an old configuration"],
        )
        self.request(0, number=1)
        self.assertEqual(
            self.sent_of(WedgeRequest), [(replica_address(i, 1), WedgeRequest(1)) for i in range(3)]
        )

    def rejected(self) -> list[dict[str, Any]]:
        """Olympus's rejections, each checked to be a drop by the sender's key."""
        rejected = self.events("bcr.rejected")
        for event in rejected:
            self.assertTrue(event["reason"].startswith("dropped "), event)
        return rejected

    def test_request_from_outsider(self) -> None:
        """An outsider's request, sealed with its own valid key and naming a replica as requester, starts nothing."""
        self.from_stranger(ReconfigurationRequest(0, "replica 0.1", "test", ()))
        self.assertEqual(self.env.take(), [])
        self.assertIsNone(self.olympus.reconfiguring)
        [rejected] = self.rejected()
        self.assertEqual(rejected["peer"], "stranger")

    def test_request_from_spare(self) -> None:
        """A registered spare holds no position: its request starts nothing."""
        spare = replica_address(0, 1)
        self.olympus.receive(
            spare,
            crypto.seal(
                replica_key(0, 1), spare.address, "replica 0.0",
                ReconfigurationRequest(0, "replica 0.0", "test", ()),
                recipient=OLYMPUS_KEY.verify_key_bytes, epoch=self.olympus.epoch,
            ),
        )
        self.assertEqual(self.env.take(), [])
        self.assertIsNone(self.olympus.reconfiguring)
        self.assertEqual(len(self.rejected()), 1)

    def test_request_misaddressed(self) -> None:
        """A replica's request sealed in another Olympus boot, or for another recipient, starts nothing."""
        request = ReconfigurationRequest(0, "replica 0.1", "test", ())
        self.olympus.receive(replica_address(1), seal_from_replica(self.config, 1, request, epoch=EPOCH))
        other = crypto.seal(
            replica_key(1), replica_address(1).address, "replica 0.1", request,
            recipient=replica_key(2).verify_key_bytes, epoch=self.olympus.epoch, configuration=0,
        )
        self.olympus.receive(replica_address(1), other)
        # Sealed by another key than the one the sender authenticated with.
        self.olympus.receive(
            replica_address(1),
            seal_from_replica(self.config, 2, request, epoch=self.olympus.epoch),
        )
        self.assertEqual(self.env.take(), [])
        self.assertIsNone(self.olympus.reconfiguring)
        self.assertEqual(len(self.events("bcr.rejected")), 3)

    def test_finish_run_only_from_olympus_key(self) -> None:
        """Only whoever holds Olympus's key ends a run: an outsider or a replica asking retires nobody."""
        self.from_stranger(FinishRun("test"))
        self.from_replica(0, FinishRun("test"))
        self.assertEqual(self.env.take(), [])
        self.assertEqual(len(self.rejected()), 2)
        self.finish_run()
        self.assertEqual(self.sent_of(Quiesce), [(replica_address(i), Quiesce(0)) for i in range(3)])

    def client_request(self, proof: tuple[Signed, ...]) -> None:
        """Client 0 asks to reconfigure configuration 0 with C{proof}."""
        message = ReconfigurationRequest(0, "client 0", "contradiction", proof)
        self.olympus.receive(
            client_address(0),
            crypto.seal(
                client_key(0), client_address(0).address, "client 0", message,
                recipient=OLYMPUS_KEY.verify_key_bytes, epoch=self.olympus.epoch,
                configuration=0,
            ),
        )

    def test_client_without_proof(self) -> None:
        """A client's request without a proof of misbehaviour is ignored."""
        self.client_request(())
        self.client_request(tuple(result_statement(CONFIG, 0, REQUESTS[0], j, "OK") for j in range(3)))
        self.assertEqual(self.env.take(), [])
        self.assertIsNone(self.olympus.reconfiguring)

    def test_client_with_proof(self) -> None:
        """A client's request carrying two validly signed, contradicting result statements starts a reconfiguration."""
        proof = (
            result_statement(CONFIG, 0, REQUESTS[0], 0, "OK"),
            result_statement(CONFIG, 0, REQUESTS[0], 1, "OK", op=operation("get", "x")),
            result_statement(CONFIG, 0, REQUESTS[0], 2, "OK"),
        )
        self.client_request(proof)
        self.assertEqual(len(self.sent_of(WedgeRequest)), 3)
        self.assertEqual(self.olympus.reconfiguring.requested_by, ["client 0"])

    def test_client_with_badly_signed_contradiction(self) -> None:
        """A contradicting statement with an invalid signature proves nothing."""
        proof = (
            result_statement(CONFIG, 0, REQUESTS[0], 0, "OK"),
            crypto.corrupt(result_statement(CONFIG, 0, REQUESTS[0], 1, "fail")),
        )
        self.client_request(proof)
        self.assertIsNone(self.olympus.reconfiguring)

    def test_client_with_misplaced_contradiction(self) -> None:
        """A contradicting statement at a position whose replica did not sign it proves nothing."""
        proof = (
            result_statement(CONFIG, 0, REQUESTS[0], 0, "OK"),
            result_statement(CONFIG, 0, REQUESTS[0], 2, "fail"),
        )
        self.client_request(proof)
        self.assertIsNone(self.olympus.reconfiguring)


class OlympusQuorumTests(OlympusReconfigurationTestCase):
    """Olympus validates wedged messages and tries candidate quorums in order (SPEC §9.3-§9.5)."""

    def test_waits_for_t_plus_one(self) -> None:
        """One valid wedged message starts nothing; the second starts catch-up of the first quorum with each member's missing slots."""
        self.start_reconfiguration()
        self.wedged(1, entries(range(2)))
        self.assertEqual(self.env.take(), [])
        self.wedged(0, entries(range(4)))
        self.assertEqual(self.catch_ups(), {0: (), 1: (2, 3)})
        self.assertEqual(self.env.active_timers(), {"wedge": STEP_S, "step": STEP_S})

    def test_invalid_wedged_excluded(self) -> None:
        """A wedged message with a hole is invalid; the quorum is formed from the others."""
        self.start_reconfiguration()
        self.wedged(0, entries([0, 1, 3]))
        self.wedged(1, entries(range(4)))
        self.assertEqual(self.env.take(), [])
        self.wedged(2, entries(range(3)))
        self.assertEqual(self.catch_ups(), {1: (), 2: (3,)})
        [invalid] = [e for e in self.events("bcr.wedged") if not e["valid"]]
        self.assertEqual(invalid["index"], 0)

    def test_inconsistent_quorum_skipped(self) -> None:
        """A candidate whose histories diverge is rejected without catch-up and the next one is tried."""
        self.start_reconfiguration()
        self.wedged(0, entries(range(3)) + (history_entry(CONFIG, 3, OTHER),))
        self.wedged(1, entries(range(4)))
        self.assertEqual(self.catch_ups(), {})
        self.wedged(2, entries(range(2)))
        self.assertEqual(self.catch_ups(), {0: (), 2: (2, 3)})
        self.assertEqual([e["quorum"] for e in self.events("bcr.quorum_rejected")], [[0, 1]])

    def test_hash_mismatch_tries_next(self) -> None:
        """Caught-up hashes that differ fail the quorum and the next candidate is caught up at once."""
        self.start_reconfiguration()
        for index in range(3):
            self.wedged(index, entries(range(3)))
        self.assertEqual(self.catch_ups(), {0: (), 1: ()})
        state, _ = results_through(3)
        self.caught_up(0, state)
        self.caught_up(1, {"extra": "op"})
        self.assertEqual(self.catch_ups(), {0: (), 2: ()})
        [failed] = self.events("bcr.quorum_failed")
        self.assertIn("hashes differ", failed["reason"])

    def test_late_wedged_gives_new_candidate(self) -> None:
        """After the only candidate failed, a late wedged message lets Olympus try quorums with it, without resending what members already executed."""
        self.start_reconfiguration()
        self.wedged(0, entries(range(2)))
        self.wedged(1, entries(range(4)))
        self.assertEqual(self.catch_ups(), {0: (2, 3), 1: ()})
        state, _ = results_through(4)
        self.caught_up(0, {"wrong": "state"})
        self.caught_up(1, state)
        self.assertEqual(self.catch_ups(), {})
        self.wedged(2, entries(range(3)))
        # Replica 0 executed slots 2 and 3 in the failed attempt.
        self.assertEqual(self.catch_ups(), {0: (), 2: (3,)})

    def test_silent_member_keeps_slots_it_was_sent(self) -> None:
        """A member that was sent slots but never answered may have executed them: the next quorum's LH still includes them."""
        self.start_reconfiguration()
        self.wedged(0, entries(range(2)))
        self.wedged(1, entries(range(4)))
        self.assertEqual(self.catch_ups(), {0: (2, 3), 1: ()})
        self.wedged(2, entries(range(3)))
        self.env.clock.advance(STEP_S)
        self.assertEqual(self.catch_ups(), {0: (), 2: (3,)})
        self.assertEqual(self.events("bcr.quorum")[-1]["last_slot"], 3)

    def test_catch_up_timeout(self) -> None:
        """A member that does not answer catch_up within the step timeout fails the quorum."""
        self.start_reconfiguration()
        for index in range(3):
            self.wedged(index, entries(range(3)))
        self.env.take()
        state, _ = results_through(3)
        self.caught_up(1, state)
        self.env.clock.advance(STEP_S - 0.001)
        self.assertEqual(self.env.take(), [])
        self.env.clock.advance(0.001)
        self.assertEqual(self.catch_ups(), {0: (), 2: ()})
        [failed] = self.events("bcr.quorum_failed")
        self.assertIn("[0] did not answer catch_up", failed["reason"])

    def test_wedged_from_outsider(self) -> None:
        """An outsider's wedged message, however valid its content, counts for nothing: one real wedged message still starts no quorum."""
        self.start_reconfiguration()
        self.from_stranger(Wedged(0, 0, entries(range(4)), None))
        self.wedged(1, entries(range(2)))
        self.assertEqual(self.env.take(), [])
        self.assertEqual(list(self.olympus.reconfiguring.wedged), [1])
        [rejected] = self.events("bcr.rejected")
        self.assertEqual(rejected["peer"], "stranger")
        self.assertTrue(rejected["reason"].startswith("dropped wedged"), rejected)

    def test_wedged_for_another_position(self) -> None:
        """A replica's wedged message claiming another member's index is dropped; that member's own message is still taken."""
        self.start_reconfiguration()
        self.from_replica(2, Wedged(0, 0, entries(range(4)), None))
        self.wedged(1, entries(range(2)))
        self.assertEqual(self.env.take(), [])
        self.assertEqual(list(self.olympus.reconfiguring.wedged), [1])
        self.wedged(0, entries(range(4)))
        self.assertEqual(self.catch_ups(), {0: (), 1: (2, 3)})

    def test_caught_up_and_running_state_from_outsider(self) -> None:
        """An outsider's caught_up and running state are dropped: they neither fail the quorum nor choose the state."""
        state = self.through_running_state()
        self.from_stranger(CaughtUp(0, 0, crypto.state_hash({}), ()))
        self.from_stranger(RunningState(0, 0, {"evil": "state"}))
        self.assertEqual(self.olympus.configuration.number, 0)
        self.assertEqual(self.env.take(), [])
        self.assertEqual(len(self.events("bcr.rejected")), 2)
        self.running_state(0, state)
        self.assertEqual(self.olympus.configuration.number, 1)
        [assignment, *_] = [body for _, body in self.sent_of(Assignment)]
        self.assertEqual(assignment.state, state)

    def test_caught_up_from_outside_quorum(self) -> None:
        """A caught_up from a replica that is not in the quorum being tried is rejected."""
        self.start_reconfiguration()
        for index in range(3):
            self.wedged(index, entries(range(3)))
        self.env.take()
        state, _ = results_through(3)
        self.caught_up(2, state)
        self.assertEqual(len(self.events("bcr.rejected")), 1)
        self.assertEqual(self.olympus.reconfiguring.attempt.caught_up, {})

    def test_running_state_mismatch_asks_next_member(self) -> None:
        """A running state whose hash is not the agreed one makes Olympus ask the next member."""
        state = self.through_running_state()
        self.running_state(0, dict(state, extra="x"))
        self.assertEqual(self.sent_of(GetRunningState), [(replica_address(1), GetRunningState(0))])
        self.running_state(1, state)
        self.assertEqual(self.olympus.configuration.number, 1)
        self.assertEqual(self.olympus.reconfigurations[0]["quorum"], [0, 1])

    def test_running_state_timeout_asks_next_member(self) -> None:
        """No running state within the step timeout makes Olympus ask the next member."""
        self.through_running_state()
        self.env.clock.advance(STEP_S)
        self.assertEqual(self.sent_of(GetRunningState), [(replica_address(1), GetRunningState(0))])

    def test_running_state_from_member_not_asked(self) -> None:
        """A running state from a member Olympus did not ask is rejected."""
        state = self.through_running_state()
        self.running_state(1, state)
        self.assertEqual(self.olympus.configuration.number, 0)
        self.assertEqual(len(self.events("bcr.rejected")), 1)

    def test_all_members_fail_next_quorum(self) -> None:
        """When no member returns a matching running state, the next quorum is tried."""
        state = self.through_running_state()
        self.wedged(2, entries(range(4)))
        self.assertEqual(self.env.take(), [])
        self.running_state(0, {})
        self.env.take()
        self.running_state(1, {})
        self.assertEqual(self.catch_ups(), {0: (), 2: ()})
        [failed] = self.events("bcr.quorum_failed")
        self.assertIn("no member returned a running state", failed["reason"])
        self.caught_up(0, state)
        self.caught_up(2, state)
        self.assertEqual(self.sent_of(GetRunningState), [(replica_address(0), GetRunningState(0))])

    def test_no_quorum(self) -> None:
        """With t+1 replicas silent, Olympus logs once that more than t seem faulty, and keeps listening."""
        self.start_reconfiguration()
        self.wedged(0, entries(range(3)))
        self.env.clock.advance(STEP_S)
        [logged] = self.events("bcr.no_quorum")
        self.assertIn("more than t=1 replicas of configuration 0 seem faulty", logged["problem"])
        self.env.clock.advance(10 * STEP_S)
        self.assertEqual(len(self.events("bcr.no_quorum")), 1)
        # A late wedged message still saves the day, and nothing is left to report.
        self.wedged(2, entries(range(3)))
        self.assertEqual(self.catch_ups(), {0: (), 2: ()})
        self.assertEqual(self.olympus.errors, [])

    def test_no_quorum_reported_at_the_end(self) -> None:
        """A run that ends with no quorum found carries 'seem faulty' in Olympus's report."""
        self.start_reconfiguration()
        self.wedged(0, entries(range(3)))
        self.env.clock.advance(STEP_S)
        self.finish_run()
        self.env.clock.advance(ALLOWANCE_S)
        [error] = self.olympus.errors
        self.assertIn("more than t=1 replicas of configuration 0 seem faulty", error)

    def test_no_quorum_when_all_heard(self) -> None:
        """Three wedged messages of which two are invalid make Olympus report at once, before the step timeout."""
        self.start_reconfiguration()
        self.wedged(0, entries([1, 2]))
        self.wedged(1, entries(range(3)))
        self.wedged(2, entries([0, 2]))
        assert self.olympus.reconfiguring is not None
        self.assertIn("seem faulty", self.olympus.reconfiguring.hopeless or "")
        self.assertEqual(len(self.events("bcr.no_quorum")), 1)

    def test_run_ends_while_reconfiguring(self) -> None:
        """
        Finishing during a reconfiguration lets it run; one that does not
        end within the allowance (the wedge step and t+1 attempts of two
        steps) is reported as an error, its timers stopped and the replicas
        retired.
        """
        self.start_reconfiguration()
        self.wedged(0, entries(range(3)))
        self.finish_run()
        self.assertIsNotNone(self.olympus.reconfiguring)
        self.assertEqual(self.sent_of(Shutdown), [])
        self.env.clock.advance(ALLOWANCE_S - 0.001)
        self.assertIsNotNone(self.olympus.reconfiguring)
        self.assertEqual(self.olympus.errors, [])
        self.env.clock.advance(0.001)
        self.assertIsNone(self.olympus.reconfiguring)
        self.assertIn("being reconfigured", self.olympus.errors[-1])
        self.assertEqual(list(self.env.active_timers()), ["finish"])
        self.assertEqual(
            [to for to, _ in self.sent_of(Shutdown)][:3], [replica_address(i) for i in range(3)]
        )

    def test_failed_run_ends_at_once(self) -> None:
        """A run that failed (its deadline passed) abandons the reconfiguration and retires at once."""
        self.start_reconfiguration()
        self.wedged(0, entries(range(3)))
        self.finish_run(workload_done=False)
        self.assertIsNone(self.olympus.reconfiguring)
        self.assertIn("being reconfigured", self.olympus.errors[-1])
        sent = self.opened(self.env.take())
        self.assertEqual([body for _, body in sent][:3], [Shutdown(0)] * 3)
        self.assertNotIn(Quiesce, [type(body) for _, body in sent])

    def test_reconfiguration_requested_while_quiescing(self) -> None:
        """
        Work that trails the workload may reveal misbehaviour after the
        driver said finish: the request is taken, the reconfiguration runs
        to its end, then the new configuration is quiesced and retired.
        """
        self.finish_run()
        self.assertEqual(len(self.sent_of(Quiesce)), 3)
        self.from_replica(0, Quiescent(0, 0, True))
        state = self.through_running_state()
        self.env.clock.advance(1.5)
        self.running_state(0, state)
        sent = self.opened(self.env.take())
        self.assertEqual(self.olympus.configuration.number, 1)
        self.assertEqual(
            [to for to, body in sent if isinstance(body, Quiesce)],
            [replica_address(i, 1) for i in range(3)],
        )
        # Assignments go before the quiesce requests, on the same connections.
        kinds = [type(body).__name__ for to, body in sent if to == replica_address(0, 1)]
        self.assertEqual(kinds, ["Assignment", "Quiesce"])
        self.assertEqual(self.olympus.errors, [])
        # A late answer of configuration 0 counts for nothing.
        self.from_replica(1, Quiescent(0, 1, True))
        self.assertEqual(self.sent_of(Shutdown), [])
        for i in range(3):
            self.from_replica(i, Quiescent(1, i, True), number=1)
        retired = [to for to, _ in self.sent_of(Shutdown)]
        self.assertEqual(retired[:3], [replica_address(i, 1) for i in range(3)])
        [record] = self.olympus.reconfigurations
        self.assertEqual(record["from"], 0)


class OlympusNewConfigurationTests(OlympusReconfigurationTestCase):
    """With a matching running state Olympus starts configuration 1 (SPEC §9.6, §9.7)."""

    def setUp(self) -> None:
        super().setUp()
        self.state = self.through_running_state()
        self.env.clock.advance(1.5)
        self.running_state(0, self.state)
        self.sent = self.opened(self.env.take())

    def bodies(self, cls: type) -> list[tuple[str, Any]]:
        """(to, body) of what Olympus sent of class C{cls}."""
        return [(to, body) for to, body in self.sent if isinstance(body, cls)]

    def test_vouchers_to_clients(self) -> None:
        """Each client gets the result of its last request that both members vouch for, with their statements."""
        vouchers = self.bodies(ResultFromOlympus)
        self.assertEqual(
            [(to, v.client, v.seq, v.slot, v.result) for to, v in vouchers],
            [(client_address(0), 0, 1, 2, "OK"), (client_address(1), 1, 1, 3, "d")],
        )
        self.assertEqual(
            vouchers[1][1].statements,
            tuple(result_statement(CONFIG, 3, REQUESTS[3], i, "d") for i in (0, 1)),
        )

    def test_assignments(self) -> None:
        """The three new spares are assigned configuration 1 starting at LH's last slot + 1, with the chosen state and the vouchers."""
        assignments = self.bodies(Assignment)
        self.assertEqual([to for to, _ in assignments], [replica_address(i, 1) for i in range(3)])
        configuration = self.olympus.configurations[1]
        self.assertEqual(configuration.number, 1)
        self.assertEqual(
            [r.verify_key for r in configuration.replicas],
            [replica_key(i, 1).verify_key_bytes for i in range(3)],
        )
        for index, (_, assignment) in enumerate(assignments):
            self.assertEqual(
                (assignment.configuration, assignment.index, assignment.state, assignment.first_slot),
                (configuration, index, self.state, 4),
            )
            recovered = [open_sealed_voucher(s) for s in assignment.recovered]
            self.assertEqual(recovered, [v for _, v in self.bodies(ResultFromOlympus)])
            # Each voucher is sealed for the client it is about, so that the
            # new chain can hand it on but nobody can replay it elsewhere.
            self.assertEqual(
                [(s.recipient, s.epoch) for s in assignment.recovered],
                [(client_key(i).verify_key_bytes, self.olympus.epoch) for i in range(2)],
            )

    def test_old_replicas_shut_down(self) -> None:
        """Every replica of configuration 0 is told to shut down."""
        self.assertEqual(self.bodies(Shutdown), [(replica_address(i), Shutdown(0)) for i in range(3)])

    def pushed(self) -> list[tuple[Peer, Any]]:
        """(to, body) of the configuration replies sent since the last take."""
        return self.sent_of(ConfigurationReply)

    def test_configuration_pushed(self) -> None:
        """Every client is sent configuration 1 without having to ask, once all its replicas are ready."""
        self.assertEqual(self.olympus.configuration.number, 1)
        self.assertEqual(self.bodies(ConfigurationReply), [])
        self.ready(1, [0, 1])
        self.assertEqual(self.pushed(), [])
        self.ready(1, [2])
        self.assertEqual(
            self.pushed(),
            [(client_address(i), ConfigurationReply(self.olympus.configuration)) for i in range(2)],
        )
        self.assertEqual(self.olympus.announced, 1)
        # Said once: a repeated ready changes nothing.
        self.ready(1, [2])
        self.assertEqual(self.env.take(), [])

    def test_get_configuration_before_ready(self) -> None:
        """A client asking before configuration 1 is ready is told nothing yet (not the old configuration), and is answered with configuration 1 once it is announced."""
        message = crypto.seal(
            client_key(0), client_address(0).address, "client 0", GetConfiguration(0),
            recipient=OLYMPUS_KEY.verify_key_bytes, epoch=self.olympus.epoch, configuration=0,
        )
        self.olympus.receive(client_address(0), message)
        self.assertEqual(self.env.take(), [])
        self.ready(1)
        self.env.take()
        self.olympus.receive(client_address(0), message)
        self.assertEqual(
            self.pushed(), [(client_address(0), ConfigurationReply(self.olympus.configuration))]
        )

    def test_announced_after_step_timeout(self) -> None:
        """Replicas that never say they are ready delay the announcement by one step timeout at most, and are named in the log."""
        self.ready(1, [0])
        self.env.clock.advance(STEP_S - 0.001)
        self.assertEqual(self.pushed(), [])
        self.env.clock.advance(0.001)
        self.assertEqual(
            self.pushed(),
            [(client_address(i), ConfigurationReply(self.olympus.configuration)) for i in range(2)],
        )
        [unready] = self.events("bcr.unready")
        self.assertEqual((unready["number"], unready["unready"]), (1, [1, 2]))
        # A late ready does not announce it again.
        self.ready(1, [1, 2])
        self.assertEqual(self.env.take(), [])

    def test_not_announced_after_the_run_finished(self) -> None:
        """A run that ends before configuration 1 is ready never has it announced."""
        self.finish_run()
        self.env.take()
        self.env.clock.advance(STEP_S)
        self.ready(1)
        self.assertEqual(self.pushed(), [])
        self.assertEqual(self.olympus.announced, 0)

    def test_not_announced_while_replaced(self) -> None:
        """A configuration asked to be replaced before it is ready is not announced: its replicas are being wedged."""
        self.request(index=1, number=1)
        self.assertEqual(len(self.sent_of(WedgeRequest)), 3)
        self.ready(1)
        self.env.clock.advance(STEP_S)
        self.assertEqual(self.pushed(), [])
        self.assertEqual(self.olympus.announced, 0)

    def test_ready_only_from_that_position(self) -> None:
        """A ready counts only from the replica Olympus gave that position: not from another member, an old replica or an outsider."""
        new = self.olympus.configurations[1]
        self.ready(1, [0, 2])
        # Replica 1.0 claims to be 1.1; replica 0.1 claims its old index in 1.
        self.olympus.receive(
            replica_address(0, 1),
            seal_from_replica(new, 0, Ready(1, 1), epoch=self.olympus.epoch),
        )
        self.from_replica(1, Ready(1, 1), 0)
        self.from_stranger(Ready(1, 1), 1)
        self.assertEqual(self.pushed(), [])
        rejected = self.events("bcr.rejected")
        self.assertEqual(len(rejected), 3)
        self.assertTrue(all(e["reason"].startswith("dropped ready") for e in rejected), rejected)
        self.assertEqual(
            [e["peer"] for e in rejected], ["replica-1.0", "replica-0.1", "stranger"]
        )
        self.ready(1, [1])
        self.assertEqual(len(self.pushed()), 2)

    def test_ready_misaddressed(self) -> None:
        """A ready sealed in another Olympus epoch or for another recipient is rejected and counts for nothing."""
        self.assertNotEqual(self.olympus.epoch, EPOCH)
        new = self.olympus.configurations[1]
        self.ready(1, [0, 1])
        self.olympus.receive(replica_address(2, 1), seal_from_replica(new, 2, Ready(1, 2), epoch=EPOCH))
        other_recipient = crypto.seal(
            replica_key(2, 1), replica_address(2, 1).address, "replica 1.2", Ready(1, 2),
            recipient=replica_key(0, 1).verify_key_bytes, epoch=self.olympus.epoch, configuration=1,
        )
        self.olympus.receive(replica_address(2, 1), other_recipient)
        self.assertEqual(self.pushed(), [])
        self.assertEqual(len(self.events("bcr.rejected")), 2)

    def test_order(self) -> None:
        """Vouchers go out before the assignments, and clients learn the configuration last, once it is ready."""
        kinds = [type(body).__name__ for _, body in self.sent]
        self.assertEqual(
            kinds, ["ResultFromOlympus"] * 2 + ["Assignment"] * 3 + ["Shutdown"] * 3
        )
        self.ready(1)
        kinds = [type(body).__name__ for _, body in self.opened(self.env.take())]
        self.assertEqual(kinds, ["ConfigurationReply"] * 2)

    def test_record(self) -> None:
        """The summary record names both configurations, the requester, reason, quorum, LH, and when the request came and each phase ended."""
        self.assertEqual(
            self.olympus.reconfigurations,
            [
                {
                    "from": 0, "to": 1, "requested_by": ["replica 0.1"], "reason": "test",
                    "quorum": [0, 1], "lh_length": 4, "checkpoint_slot": -1,
                    "first_slot": 4, "quorums_tried": 1, "started_at": 0.0, "duration_s": 1.5,
                    "quorum_at": 0.0, "state_at": 1.5,
                }
            ],
        )

    def test_done(self) -> None:
        """Olympus leaves the reconfiguration with only the announcement timer running, stops that once configuration 1 is ready, and ignores late wedged messages."""
        self.assertIsNone(self.olympus.reconfiguring)
        self.assertEqual(self.env.active_timers(), {"announce": self.env.now() + STEP_S})
        self.ready(1)
        self.assertEqual(self.env.active_timers(), {})
        self.env.take()
        self.wedged(2, entries(range(4)))
        self.assertEqual(self.env.take(), [])


def open_sealed_voucher(sealed: Sealed) -> object:
    """The voucher inside a sealed message, checked to be Olympus's."""
    return crypto.Verifier().open_sealed(sealed, OLYMPUS_KEY.verify_key_bytes)


class OlympusCheckpointAlignmentTests(OlympusReconfigurationTestCase):
    """A quorum member holding a completed checkpoint moves LH past it."""

    def test_checkpoint(self) -> None:
        """LH starts after the highest checkpoint of the quorum and the new configuration after LH."""
        self.start_reconfiguration()
        state3, _ = results_through(4)
        proof = checkpoint_proof(self.config, 3, crypto.state_hash(state3), [0, 1, 2])
        self.wedged(0, entries(range(4, 5)), proof)
        self.wedged(1, entries(range(6)))
        self.assertEqual(self.catch_ups(), {0: (5,), 1: ()})
        state, _ = results_through(6)
        self.caught_up(0, state)
        self.caught_up(1, state)
        self.env.take()
        self.running_state(0, state)
        record = self.olympus.reconfigurations[0]
        self.assertEqual((record["checkpoint_slot"], record["lh_length"], record["first_slot"]), (3, 2, 6))


# ---------------------------------------------------------------------------
# Replicas


class ReplicaReconfigurationTests(SynchronousTestCase):
    """A replica wedges, catches up and hands over its running state (SPEC §9.2, §9.5, §9.7)."""

    def executed(self, index: int, count: int):
        """Replica C{index} after executing slots 0..count-1 as a chain member would."""
        replica, env = make_replica(CONFIG, index)
        self.addCleanup(lambda: self.assertEqual(env.format_errors, []))
        sender = replica_address(index - 1) if index > 0 else client_address(0)
        for slot in range(count):
            replica._execute_and_pass_on(
                sender, "shuttle", REQUESTS[slot], _request(slot), slot,
                order_proof(CONFIG, slot, REQUESTS[slot], index),
                tuple(result_statement(CONFIG, slot, REQUESTS[slot], j, results_through(count)[1][slot]) for j in range(index)),
            )
        env.take()
        return replica, env

    def control(
        self, replica: Any, env: FakeEnvironment, message: object,
        sender: Peer = OLYMPUS_ADDRESS, **seal: Any,
    ) -> None:
        """C{sender} hands C{replica} C{message} sealed (as Olympus seals it, unless C{seal} says otherwise) for it."""
        seal.setdefault("to", env.peer)
        replica.receive(sender, seal_from_olympus(message, **seal))

    def dropped(self, env: FakeEnvironment) -> list[str]:
        """The reasons of the replica's rejections, each checked to be a drop."""
        reasons = [e["reason"] for e in env.events_named("bcr.rejected")]
        for reason in reasons:
            self.assertTrue(reason.startswith("dropped "), reason)
        return reasons

    def test_wedge(self) -> None:
        """On a wedge request the replica becomes immutable and sends its history, sealed, to Olympus."""
        replica, env = self.executed(1, 3)
        self.control(replica, env, WedgeRequest(0))
        self.assertIs(replica.mode, Mode.IMMUTABLE)
        [sent] = env.take()
        self.assertEqual(sent.to, OLYMPUS_ADDRESS)
        # For Olympus only, in the epoch the replica learnt from its assignment.
        self.assertEqual(
            (sent.message.recipient, sent.message.epoch, sent.message.configuration),
            (OLYMPUS_KEY.verify_key_bytes, EPOCH, 0),
        )
        wedged = open_sealed(sent, replica_key(1))
        self.assertEqual(wedged, Wedged(0, 1, entries(range(3), count=2), None))
        # Olympus finds it valid.
        self.assertEqual(
            validate_wedged(crypto.Verifier(), wedged, CONFIG, 0, CLIENT_KEYS).last_slot, 2
        )

    def test_wedge_other_configuration(self) -> None:
        """A wedge request for another configuration is rejected and changes nothing."""
        replica, env = self.executed(1, 1)
        self.control(replica, env, WedgeRequest(3))
        self.assertIs(replica.mode, Mode.ACTIVE)
        self.assertEqual(env.take(), [])

    def test_wedge_not_from_olympus(self) -> None:
        """A wedge request sealed by someone else than Olympus is rejected."""
        replica, env = self.executed(1, 1)
        self.control(replica, env, WedgeRequest(0), key=STRANGER_KEY)
        self.assertIs(replica.mode, Mode.ACTIVE)
        self.assertEqual(env.take(), [])
        self.assertEqual(len(env.events_named("bcr.rejected")), 1)

    def test_wedge_from_outsider(self) -> None:
        """An outsider sealing a wedge request with its own valid key (signer "olympus") is dropped on its key, before anything is opened."""
        replica, env = self.executed(1, 1)
        self.control(replica, env, WedgeRequest(0), sender=STRANGER, key=STRANGER_KEY)
        # Even a genuine Olympus envelope relayed by an outsider counts for nothing.
        self.control(replica, env, WedgeRequest(0), sender=STRANGER)
        self.assertIs(replica.mode, Mode.ACTIVE)
        self.assertEqual(env.take(), [])
        self.assertEqual(len(self.dropped(env)), 2)

    def test_wedge_misaddressed(self) -> None:
        """Olympus's wedge request for another replica, or from another Olympus boot, is refused."""
        replica, env = self.executed(1, 1)
        self.control(replica, env, WedgeRequest(0), to=replica_address(2))
        self.control(replica, env, WedgeRequest(0), epoch=b"x" * 16)
        self.assertIs(replica.mode, Mode.ACTIVE)
        self.assertEqual(env.take(), [])
        reasons = [e["reason"] for e in env.events_named("bcr.rejected")]
        self.assertEqual(len(reasons), 2)
        self.assertIn("another recipient", reasons[0])
        self.assertIn("another Olympus epoch", reasons[1])

    def test_immutable_after_wedge(self) -> None:
        """A wedged replica does not execute shuttles and answers clients with an error."""
        replica, env = self.executed(2, 1)
        self.control(replica, env, WedgeRequest(0))
        env.take()
        replica.receive(replica_address(1), make_shuttle(CONFIG, 1, REQUESTS[1], "OK", 2))
        self.assertEqual(replica.last_executed, 0)
        replica.receive(client_address(1), ClientRequest(REQUESTS[1]))
        self.assertEqual([s.message for s in env.take()], [ErrorMessage(0, 1, 0, "immutable")])

    def test_catch_up(self) -> None:
        """Catch-up executes the slots it is sent and reports the state hash and each client's latest signed result."""
        replica, env = self.executed(1, 3)
        self.control(replica, env, WedgeRequest(0))
        env.take()
        self.control(replica, env, CatchUp(0, entries(range(3, 5))))
        self.assertEqual(env.events_named("bcr.catch_up_again"), [])
        state, results = results_through(5)
        self.assertEqual(replica.state, state)
        self.assertEqual(replica.last_executed, 4)
        [sent] = env.take()
        caught_up = open_sealed(sent, replica_key(1))
        self.assertEqual(caught_up.state_hash, crypto.state_hash(state))
        self.assertEqual(
            [(r.client, r.seq, r.result) for r in caught_up.client_results],
            [(0, 2, results[4]), (1, 1, results[3])],
        )
        self.assertEqual(
            caught_up.client_results[0].statement,
            result_statement(CONFIG, 4, REQUESTS[4], 1, results[4]),
        )

    def test_catch_up_executes_exactly_the_list(self) -> None:
        """
        A list that starts at slots already executed is executed all the
        same, on top of the state (SPEC §9.5): a replica that hid executed
        slots from its wedged history gets another state hash than the
        others, and Olympus tries another quorum.
        """
        replica, env = self.executed(1, 3)
        self.control(replica, env, WedgeRequest(0))
        env.take()
        self.control(replica, env, CatchUp(0, entries(range(1, 5))))
        state, _ = results_through(5)
        self.assertEqual(replica.last_executed, 4)
        self.assertEqual(len(env.events_named("bcr.catch_up_again")), 2)
        [sent] = env.take()
        caught_up = open_sealed(sent, replica_key(1))
        self.assertEqual(caught_up.state_hash, crypto.state_hash(replica.state))
        self.assertNotEqual(caught_up.state_hash, crypto.state_hash(state))

    def test_catch_up_hole(self) -> None:
        """Catch-up stops at a slot that does not follow the last executed one and still answers."""
        replica, env = self.executed(1, 2)
        self.control(replica, env, CatchUp(0, entries([3, 4])))
        self.assertEqual(replica.last_executed, 1)
        self.assertEqual(len(env.events_named("bcr.catch_up_hole")), 1)
        [sent] = env.take()
        state, _ = results_through(2)
        self.assertEqual(open_sealed(sent, replica_key(1)).state_hash, crypto.state_hash(state))

    def test_running_state(self) -> None:
        """get_running_state is answered with the whole dictionary, sealed."""
        replica, env = self.executed(0, 3)
        self.control(replica, env, GetRunningState(0))
        [sent] = env.take()
        self.assertEqual(sent.to, OLYMPUS_ADDRESS)
        self.assertEqual(open_sealed(sent, replica_key(0)), RunningState(0, 0, results_through(3)[0]))

    def test_wedged_replica_retires_at_once(self) -> None:
        """A wedged replica told to shut down reports its final state and exits without draining."""
        replica, env = self.executed(1, 2)
        self.control(replica, env, WedgeRequest(0))
        self.control(replica, env, Shutdown(0))
        self.assertEqual(len(env.exits), 1)

    def test_outsider_control_messages(self) -> None:
        """An outsider's catch-up, running-state query and shutdown, however sealed, are dropped: nothing is executed, revealed or retired."""
        replica, env = self.executed(1, 2)
        for message in (CatchUp(0, entries([2, 3])), GetRunningState(0), Shutdown(0)):
            self.control(replica, env, message, sender=STRANGER, key=STRANGER_KEY)
            self.control(replica, env, message, sender=STRANGER)
        self.assertEqual((replica.mode, replica.last_executed), (Mode.ACTIVE, 1))
        self.assertEqual(replica.state, results_through(2)[0])
        self.assertEqual((env.take(), env.exits), ([], []))
        self.assertEqual(len(self.dropped(env)), 6)

    def data_plane_attacks(self, middle: int = 1) -> list[tuple[Peer, object]]:
        """
        Messages that would make replica C{middle} (which executed slot 0)
        execute slot 1, or find misbehaviour and ask for a reconfiguration,
        were they accepted, each from a peer not allowed to send it: an
        outsider, or a chain member at the wrong position.
        """
        shuttle = make_shuttle(CONFIG, 1, REQUESTS[1], "OK", middle)
        forged = Shuttle(0, 1, sign_request(1, 0, "put", "c", "d", key=STRANGER_KEY), (), ())
        result_shuttle = make_result_shuttle(CONFIG, 0, REQUESTS[0], "wrong")
        proof = checkpoint_proof(CONFIG, 0, b"h" * 32, range(middle))
        completed = checkpoint_proof(CONFIG, 0, b"h" * 32, range(3))
        predecessor, successor = replica_address(middle - 1), replica_address(middle + 1)
        return [
            (STRANGER, shuttle),
            (STRANGER, forged),
            (successor, shuttle),
            (client_address(1), shuttle),
            (STRANGER, result_shuttle),
            (predecessor, result_shuttle),
            (STRANGER, CheckpointMessage(proof)),
            (successor, CheckpointMessage(proof)),
            (STRANGER, CompletedCheckpoint(completed)),
            (predecessor, CompletedCheckpoint(completed)),
        ]

    def test_data_plane_from_wrong_peers(self) -> None:
        """Shuttles, result shuttles and checkpoints from an outsider or from the wrong neighbour are dropped, and are never evidence: no reconfiguration request."""
        replica, env = self.executed(1, 1)
        attacks = self.data_plane_attacks()
        for sender, message in attacks:
            replica.receive(sender, message)
        self.assertEqual(env.take(), [])
        self.assertEqual(reconfiguration_requests(env), [])
        self.assertEqual(
            (replica.mode, replica.last_executed, replica.checkpoint), (Mode.ACTIVE, 0, None)
        )
        self.assertEqual(replica.state, results_through(1)[0])
        reasons = self.dropped(env)
        self.assertEqual(len(reasons), len(attacks))
        self.assertIn("dropped shuttle from a peer that is not our predecessor", reasons[0])
        self.assertIn("is not our successor", reasons[4])
        # The same shuttle from the predecessor is executed.
        replica.receive(replica_address(0), make_shuttle(CONFIG, 1, REQUESTS[1], "OK", 1))
        self.assertEqual(replica.last_executed, 1)

    def test_wedged_replica_drops_outsiders(self) -> None:
        """An immutable replica drops the outsider's data-plane messages too, and says nothing to Olympus about them."""
        replica, env = self.executed(1, 1)
        self.control(replica, env, WedgeRequest(0))
        env.take()
        for sender, message in self.data_plane_attacks():
            if sender == STRANGER:
                replica.receive(sender, message)
        self.assertEqual(env.take(), [])
        self.assertEqual(len(self.dropped(env)), 5)

    def test_rejections_rate_limited(self) -> None:
        """A flood from one outsider writes a burst of 10 log lines, then one line per second that counts what it held back."""
        replica, env = self.executed(1, 1)
        shuttle = make_shuttle(CONFIG, 1, REQUESTS[1], "OK", 1)
        for _ in range(30):
            replica.receive(STRANGER, shuttle)
        self.assertEqual(len(self.dropped(env)), 10)
        env.clock.advance(1)
        replica.receive(STRANGER, shuttle)
        rejected = env.events_named("bcr.rejected")
        self.assertEqual(len(rejected), 11)
        self.assertEqual(rejected[-1]["suppressed"], 20)
        self.assertEqual((env.take(), replica.last_executed), ([], 0))


def _request(slot: int) -> Request:
    """The request of slot C{slot}."""
    return request_of(REQUESTS[slot])


class RecoveredResultTests(SynchronousTestCase):
    """A new replica answers the request Olympus recovered with Olympus's voucher instead of executing it (SPEC §9.7)."""

    def setUp(self) -> None:
        self.config1 = make_configuration(t=1, clients=2, number=1)
        self.voucher = ResultFromOlympus(
            0, 1, 2, "OK", tuple(result_statement(CONFIG, 2, REQUESTS[2], i, "OK") for i in (0, 1))
        )
        # Sealed for the client it is about, which the new head hands it to.
        self.sealed = seal_from_olympus(self.voucher, to=client_address(0), configuration=0)
        self.head, self.env = self.assigned(0, [self.sealed], state={"a": "be"}, first_slot=3)
        self.env.take()
        self.addCleanup(lambda: self.assertEqual(self.env.format_errors, []))

    def assigned(self, index: int, recovered: list[Sealed], **assignment: Any) -> tuple[Any, FakeEnvironment]:
        """A spare of configuration 1 assigned position C{index} with C{recovered} vouchers."""
        head, env = make_spare(self.config1, index)
        message = make_assignment(self.config1, index, recovered=recovered, **assignment)
        head.receive(
            OLYMPUS_ADDRESS,
            seal_from_olympus(message, to=replica_address(index, 1), configuration=1),
        )
        self.assertIs(head.mode, Mode.ACTIVE)
        return head, env

    def test_recovered_request_answered(self) -> None:
        """The recovered request gets the sealed voucher back and is not executed again."""
        self.head.receive(client_address(0), ClientRequest(REQUESTS[2]))
        [sent] = self.env.take()
        self.assertEqual((sent.to, sent.message), (client_address(0), self.sealed))
        self.assertEqual(self.head.state, {"a": "be"})
        self.assertEqual(self.head.next_slot, 3)
        self.assertEqual(
            [e["case"] for e in self.env.events_named("bcr.retransmission")],
            ["result recovered by Olympus"],
        )

    def test_recovered_request_from_another_sender(self) -> None:
        """The recovered request relayed by an outsider or by another client is dropped: the voucher goes only to a resend by its own client."""
        self.head.receive(STRANGER, ClientRequest(REQUESTS[2]))
        self.head.receive(client_address(1), ClientRequest(REQUESTS[2]))
        self.assertEqual(self.env.take(), [])
        self.assertEqual(self.env.events_named("bcr.retransmission"), [])
        self.assertEqual(len(self.env.events_named("bcr.rejected")), 2)

    def test_older_request_ignored(self) -> None:
        """An older request of that client is ignored."""
        self.head.receive(client_address(0), ClientRequest(REQUESTS[0]))
        self.assertEqual(self.env.take(), [])
        self.assertEqual(self.head.next_slot, 3)

    def test_newer_request_ordered(self) -> None:
        """The client's next request is ordered at the configuration's first slot."""
        self.head.receive(client_address(0), ClientRequest(REQUESTS[4]))
        self.assertEqual(self.head.history[3].request, REQUESTS[4])
        self.assertEqual(self.head.state, {"a": "bef"})

    def test_own_result_statement(self) -> None:
        """The replica signs the recovered result as its own latest result for that client, for a later catch-up."""
        result = self.head.last_results[0]
        self.assertEqual((result.client, result.seq, result.result), (0, 1, "OK"))
        self.assertEqual(result.statement, result_statement(self.config1, 2, REQUESTS[2], 0, "OK"))

    def test_forged_voucher_ignored(self) -> None:
        """A voucher not sealed by Olympus is not taken."""
        forged = seal_from_olympus(self.voucher, key=STRANGER_KEY, to=client_address(0))
        head, env = self.assigned(1, [forged])
        self.assertEqual(head.last_results, {})
        self.assertEqual(len(env.events_named("bcr.rejected")), 1)
        # Its client's resend is ordered, not answered with the forgery.
        head.receive(client_address(0), ClientRequest(REQUESTS[2]))
        self.assertNotIn(forged, [s.message for s in env.take()])

    def test_voucher_for_another_client_ignored(self) -> None:
        """A genuine voucher about client 0 but sealed for client 1 is not taken: the new chain would hand it to the wrong client."""
        misdirected = seal_from_olympus(self.voucher, to=client_address(1), configuration=0)
        head, env = self.assigned(1, [misdirected])
        self.assertEqual(head.last_results, {})
        [rejected] = env.events_named("bcr.rejected")
        self.assertIn("sealed for another", rejected["reason"])

    def test_voucher_of_another_epoch_ignored(self) -> None:
        """A voucher sealed in another boot of Olympus than the assignment is not taken."""
        stale = seal_from_olympus(self.voucher, to=client_address(0), epoch=b"x" * 16)
        head, env = self.assigned(1, [stale])
        self.assertEqual(head.last_results, {})
        [rejected] = env.events_named("bcr.rejected")
        self.assertIn("another Olympus epoch", rejected["reason"])

    def test_assignment_for_another_position(self) -> None:
        """A spare refuses an assignment whose position carries another replica's key, and stays a pending spare."""
        spare, env = make_spare(self.config1, 1)
        message = make_assignment(self.config1, 0)
        spare.receive(
            OLYMPUS_ADDRESS,
            seal_from_olympus(message, to=replica_address(1, 1), configuration=1),
        )
        self.assertIs(spare.mode, Mode.PENDING)
        self.assertIsNone(spare.configuration)
        [rejected] = env.events_named("bcr.rejected")
        self.assertIn("not ours", rejected["reason"])
        self.assertEqual(env.of_type(Ready), [])

    def test_ready_after_assignment(self) -> None:
        """A replica says it is ready, sealed for Olympus in its epoch, as soon as it took up its position."""
        spare, env = make_spare(self.config1, 2)
        self.assigned_to(spare, 2)
        [sent] = [s for s in env.take() if isinstance(s.inner, Ready)]
        self.assertEqual(sent.to, OLYMPUS_ADDRESS)
        self.assertEqual(open_sealed(sent, replica_key(2, 1)), Ready(1, 2))
        self.assertEqual(
            (sent.message.recipient, sent.message.epoch, sent.message.configuration),
            (OLYMPUS_KEY.verify_key_bytes, EPOCH, 1),
        )

    def assigned_to(self, spare: Any, index: int) -> None:
        """Olympus assigns C{spare} position C{index} of configuration 1."""
        spare.receive(
            OLYMPUS_ADDRESS,
            seal_from_olympus(
                make_assignment(self.config1, index), to=replica_address(index, 1),
                configuration=1,
            ),
        )

    def test_pending_spare_drops_early_requests(self) -> None:
        """
        A spare not yet assigned drops a client's request (it no longer
        queues it for later): nothing is executed when the assignment comes,
        and the drop asks for no reconfiguration.
        """
        spare, env = make_spare(self.config1, 0)
        spare.receive(client_address(0), ClientRequest(REQUESTS[4]))
        spare.receive(replica_address(0), make_shuttle(self.config1, 3, REQUESTS[4], "OK", 0))
        [first, second] = env.events_named("bcr.rejected")
        self.assertIn("dropped client_request while pending", first["reason"])
        self.assertIn("while pending", second["reason"])
        self.assertEqual(env.take(), [])
        self.assigned_to(spare, 0)
        self.assertEqual(spare.history, {})
        self.assertEqual(spare.next_slot, 0)
        self.assertEqual(reconfiguration_requests(env), [])
        self.assertEqual([type(s.inner) for s in env.take()], [Ready])


# ---------------------------------------------------------------------------
# Clients


class ClientReconfigurationTests(SynchronousTestCase):
    """A client during and after a reconfiguration (SPEC §6.1, §9.6)."""

    OPERATIONS = [("put", ("a", "b")), ("append", ("a", "e")), ("get", ("a",))]

    def setUp(self) -> None:
        self.env = FakeEnvironment(client_address(0))
        self.finished: list[ClientOutcome] = []
        self.client = Client(
            self.env, 0, list(self.OPERATIONS), client_key(0), OLYMPUS_ADDRESS,
            2000, self.finished.append,
        )
        self.env.machine = self.client
        self.addCleanup(lambda: self.assertEqual(self.env.format_errors, []))
        self.client.start()
        self.configure(CONFIG)
        self.env.take()

    def configure(self, configuration: Configuration, sender: Peer = OLYMPUS_ADDRESS) -> None:
        """Olympus sends C{configuration} (or C{sender} hands on Olympus's message)."""
        self.client.receive(sender, self.from_olympus(ConfigurationReply(configuration), configuration.number))

    def from_olympus(self, message: object, configuration: int = -1, **seal: Any) -> Sealed:
        """C{message} sealed by Olympus for this client (unless C{seal} says otherwise)."""
        seal.setdefault("to", client_address(0))
        return seal_from_olympus(message, configuration=configuration, **seal)

    def rejected(self) -> list[str]:
        """The client's rejection reasons so far."""
        return [e["reason"] for e in self.env.events_named("bcr.rejected")]

    def test_error_does_not_retransmit(self) -> None:
        """After an error, an unchanged configuration does not trigger a retransmission; the timer still does."""
        for _ in range(3):
            self.client.receive(replica_address(1), ErrorMessage(0, 0, 0, "immutable"))
            self.assertEqual(self.env.of_type(GetConfiguration), [GetConfiguration(0)])
            self.env.take()
            self.configure(CONFIG)
            self.assertEqual(self.env.take(), [])
        self.assertEqual(self.client.outcome.retransmissions, 0)
        self.env.clock.advance(2)
        self.env.take()
        self.configure(CONFIG)
        self.assertEqual(len(self.env.of_type(ClientRequest)), 3)
        self.assertEqual(self.client.outcome.retransmissions, 1)

    def test_error_during_timeout_query(self) -> None:
        """An error while a timeout's query is pending does not cancel that query's retransmission."""
        self.env.clock.advance(2)
        self.env.take()
        self.client.receive(replica_address(1), ErrorMessage(0, 0, 0, "immutable"))
        self.assertEqual(self.env.take(), [])
        self.configure(CONFIG)
        self.assertEqual(len(self.env.of_type(ClientRequest)), 3)

    def test_pushed_configuration(self) -> None:
        """A new configuration pushed by Olympus sends the outstanding request to its head at once."""
        config1 = make_configuration(t=1, clients=2, number=1)
        self.configure(config1)
        [sent] = self.env.take()
        self.assertEqual(sent.to, replica_address(0, 1))
        self.assertEqual(_request_of_message(sent.message), (0, 0))
        self.assertEqual(self.client.outcome.configurations_seen, [0, 1])

    def test_recovered_result_accepted(self) -> None:
        """A voucher from Olympus for the outstanding request is accepted, the next request goes out, and the client asks for the configuration (SPEC §6.1)."""
        voucher = ResultFromOlympus(0, 0, 7, "OK", ())
        self.client.receive(OLYMPUS_ADDRESS, self.from_olympus(voucher))
        self.assertEqual((self.client.outcome.results, self.client.outcome.slots), (["OK"], [7]))
        [accept] = self.env.events_named("bcr.accept")
        self.assertTrue(accept["recovered"])
        request, query = self.env.take()
        self.assertEqual(_request_of_message(request.message), (0, 1))
        self.assertEqual((query.to, query.inner), (OLYMPUS_ADDRESS, GetConfiguration(0)))

    def test_recovered_result_for_other_request(self) -> None:
        """A voucher for another request than the outstanding one is ignored."""
        self.client.receive(OLYMPUS_ADDRESS, self.from_olympus(ResultFromOlympus(0, 1, 7, "OK", ())))
        self.client.receive(OLYMPUS_ADDRESS, self.from_olympus(ResultFromOlympus(1, 0, 7, "OK", ())))
        self.assertEqual(self.client.outcome.results, [])

    def test_forged_voucher(self) -> None:
        """A voucher not sealed by Olympus is rejected."""
        self.client.receive(OLYMPUS_ADDRESS, self.from_olympus(ResultFromOlympus(0, 0, 7, "OK", ()), key=STRANGER_KEY))
        self.assertEqual(self.client.outcome.results, [])

    def test_voucher_relayed_by_replica(self) -> None:
        """Olympus's voucher handed on by a replica of a configuration the client knows is accepted (SPEC §9.7)."""
        self.client.receive(replica_address(1), self.from_olympus(ResultFromOlympus(0, 0, 7, "OK", ())))
        self.assertEqual((self.client.outcome.results, self.client.outcome.slots), (["OK"], [7]))

    def test_voucher_relayed_by_outsider(self) -> None:
        """Olympus's genuine voucher handed on by an outsider is dropped."""
        self.client.receive(STRANGER, self.from_olympus(ResultFromOlympus(0, 0, 7, "OK", ())))
        self.assertEqual(self.client.outcome.results, [])
        self.assertEqual(self.env.take(), [])
        [reason] = self.rejected()
        self.assertTrue(reason.startswith("dropped"), reason)

    def test_voucher_for_another_client(self) -> None:
        """A voucher sealed for another client, or in another Olympus boot, is refused."""
        voucher = ResultFromOlympus(0, 0, 7, "OK", ())
        self.client.receive(OLYMPUS_ADDRESS, self.from_olympus(voucher, to=client_address(1)))
        self.client.receive(OLYMPUS_ADDRESS, self.from_olympus(voucher, epoch=b"x" * 16))
        self.assertEqual(self.client.outcome.results, [])
        reasons = self.rejected()
        self.assertEqual(len(reasons), 2)
        self.assertIn("another recipient", reasons[0])
        self.assertIn("another Olympus epoch", reasons[1])

    def test_configuration_only_from_olympus(self) -> None:
        """A genuine configuration reply handed on by a replica, or by an outsider, does not change the client's configuration."""
        config1 = make_configuration(t=1, clients=2, number=1)
        self.configure(config1, sender=replica_address(0))
        self.configure(config1, sender=STRANGER)
        self.assertEqual(self.client.outcome.configurations_seen, [0])
        self.assertEqual(self.env.take(), [])
        self.assertEqual(len(self.rejected()), 2)

    def test_error_from_outsider(self) -> None:
        """An outsider's error, or one naming a configuration whose replica did not send it, makes the client ask nothing."""
        self.client.receive(STRANGER, ErrorMessage(0, 0, 0, "immutable"))
        self.configure(make_configuration(t=1, clients=2, number=1))
        self.env.take()
        # A replica of configuration 0 speaking for configuration 1.
        self.client.receive(replica_address(1), ErrorMessage(1, 0, 0, "immutable"))
        self.assertEqual(self.env.take(), [])
        reasons = self.rejected()
        self.assertEqual(len(reasons), 2)
        self.assertTrue(all(r.startswith("dropped") for r in reasons), reasons)

    def test_result_from_outsider(self) -> None:
        """A result with a complete, valid proof is accepted only from a replica of the configuration it names."""
        proof = tuple(result_statement(CONFIG, 0, REQUESTS[0], j, "OK") for j in range(3))
        self.client.receive(STRANGER, ResultMessage(0, 0, 0, 0, "OK", proof))
        self.client.receive(replica_address(0, 1), ResultMessage(0, 0, 0, 0, "OK", proof))
        self.assertEqual(self.client.outcome.results, [])
        self.assertEqual(len(self.rejected()), 2)
        self.client.receive(replica_address(2), ResultMessage(0, 0, 0, 0, "OK", proof))
        self.assertEqual(self.client.outcome.results, ["OK"])

    def test_contradiction_reported(self) -> None:
        """A result proof with validly signed, contradicting statements is accepted on t+1 matches and reported to Olympus with the proof."""
        proof = (
            result_statement(CONFIG, 0, REQUESTS[0], 0, "OK"),
            result_statement(CONFIG, 0, REQUESTS[0], 1, "OK"),
            result_statement(CONFIG, 0, REQUESTS[0], 2, "fail"),
        )
        self.client.receive(replica_address(2), ResultMessage(0, 0, 0, 0, "OK", proof))
        self.assertEqual(self.client.outcome.results, ["OK"])
        [report] = [s for s in self.env.take() if s.to == OLYMPUS_ADDRESS]
        request = open_sealed(report, client_key(0))
        self.assertEqual(request.proof, proof)
        self.assertEqual((request.configuration, request.requester), (0, "client 0"))

    def test_bad_signature_not_reported(self) -> None:
        """A spoiled signature in a result proof is not reported: it proves nothing."""
        proof = (
            result_statement(CONFIG, 0, REQUESTS[0], 0, "OK"),
            result_statement(CONFIG, 0, REQUESTS[0], 1, "OK"),
            crypto.corrupt(result_statement(CONFIG, 0, REQUESTS[0], 2, "fail")),
        )
        self.client.receive(replica_address(2), ResultMessage(0, 0, 0, 0, "OK", proof))
        self.assertEqual(self.client.outcome.results, ["OK"])
        self.assertEqual([s for s in self.env.take() if s.to == OLYMPUS_ADDRESS], [])


def _request_of_message(message: object) -> tuple[int, int]:
    """(client, seq) of the request a L{ClientRequest} carries."""
    assert isinstance(message, ClientRequest)
    request = request_of(message.request)
    return request.client, request.seq
