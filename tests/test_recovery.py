"""
Tests for reconfiguration end to end (SPEC §9): replicas are killed,
stalled or made to lie in the deterministic simulation, and the run must
still pass with one reconfiguration, the right quorum, and every request
executed exactly once.

Most runs use perform900-like workloads whose clients touch disjoint keys
(pseudorandom(190..192, n) with each client's keys prefixed by its index),
so that a client's results do not depend on how the clients interleave and
can be compared with the failure-free run of the same seed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes import Outsider
from twisted_bcr import codec, crypto
from twisted_bcr.config import Case, parse_case, parse_case_text
from twisted_bcr.core.common import Mode
from twisted_bcr.core.replica import Replica
from twisted_bcr.messages import (
    CheckpointMessage,
    CheckpointProof,
    ClientRequest,
    CompletedCheckpoint,
    ErrorMessage,
    FinishRun,
    ForwardedRequest,
    GetRunningState,
    Operation,
    ReconfigurationRequest,
    Request,
    ResultMessage,
    ResultShuttle,
    Shutdown,
    Shuttle,
    Wedged,
    WedgeRequest,
)
from twisted_bcr.peers import Peer
from twisted_bcr.simulation import SimulatedCluster, simulate
from twisted_bcr.workload import pseudorandom

CASES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "etc", "cases")

#: Simulated time at which faults strike: mid-run for 3 clients x 100 requests.
MID_RUN_S = 0.05

#: Log events a test may look at (keeping every event of a run costs memory).
KEPT_EVENTS = frozenset(
    {
        "bcr.accept", "bcr.quorum", "bcr.quorum_failed", "bcr.quorum_rejected",
        "bcr.wedged", "bcr.no_quorum", "bcr.retransmission", "bcr.reconfigured",
        "bcr.result_from_olympus", "bcr.caught_up", "bcr.killed",
        "bcr.rejected", "bcr.reconfiguration_request",
    }
)


def _operation_text(name: str, args: tuple[str, ...]) -> str:
    return f"{name}(" + ",".join(f"'{a}'" for a in args) + ")"


def disjoint_case(t: int, n: int, extra: str = "") -> Case:
    """
    perform900's three workloads, C{n} requests each, with client C{i}'s keys
    renamed C{i-<key>}, so no two clients share a key.
    """
    lines = [f"t = {t}", "num_client = 3", extra]
    for index, seed in enumerate((190, 191, 192)):
        operations = [
            _operation_text(name, (f"{index}-{args[0]}", *args[1:]))
            for name, args in pseudorandom(seed, n)
        ]
        lines.append(f"workload[{index}] = " + "; ".join(operations))
    return parse_case_text("\n".join(lines) + "\n", f"disjoint_t{t}_n{n}.txt")


def appends_case(extra: str = "") -> Case:
    """t = 1, three clients each putting one key and appending to it 30 times."""
    lines = ["t = 1", "num_client = 3", extra]
    for index in range(3):
        operations = [f"put('k{index}','x')"] + [f"append('k{index}','{j % 10}')" for j in range(30)]
        lines.append(f"workload[{index}] = " + "; ".join(operations))
    return parse_case_text("\n".join(lines) + "\n", "appends.txt")


@attrs.define
class Run:
    """One simulated run: its summary, its cluster and the interesting log events."""

    summary: dict[str, Any]
    cluster: SimulatedCluster
    #: (simulated time, event dict) for the events named in L{KEPT_EVENTS}.
    events: list[tuple[float, dict[str, Any]]]

    def named(self, name: str, **fields: object) -> list[dict[str, Any]]:
        """Events called C{name} whose fields include C{fields}."""
        return [
            e for _, e in self.events
            if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
        ]

    @property
    def record(self) -> dict[str, Any]:
        """The one reconfiguration record of the summary."""
        [record] = self.summary["reconfigurations"]
        return record


Fault = Callable[[SimulatedCluster], None]


def run(
    case: Case,
    faults: list[tuple[float, Fault]] = (),  # type: ignore[assignment]
    seed: int = 0,
    deadline_s: float | None = None,
    setup: Fault | None = None,
) -> Run:
    """
    Simulate C{case}; each C{(time, fault)} is called with the cluster at
    that simulated time, C{setup} before the run starts.
    """
    events: list[tuple[float, dict[str, Any]]] = []
    clusters: list[SimulatedCluster] = []

    def prepare(cluster: SimulatedCluster) -> None:
        clusters.append(cluster)
        clock = cluster.network.clock

        def observe(event: dict[str, Any]) -> None:
            if event.get("event") in KEPT_EVENTS:
                events.append((clock.seconds(), event))

        for node in cluster.network.nodes.values():
            node.publisher.addObserver(observe)
        for at, fault in faults:
            clock.callLater(at, fault, cluster)
        if setup is not None:
            setup(cluster)

    summary = simulate(case, seed, prepare=prepare, deadline_s=deadline_s)
    return Run(summary, clusters[0], events)


_BASELINES: dict[str, Run] = {}


def baseline(case: Case) -> Run:
    """The failure-free run of C{case} with seed 0, simulated once per process."""
    if case.path not in _BASELINES:
        _BASELINES[case.path] = run(case)
    return _BASELINES[case.path]


def kill(*indices: int) -> Fault:
    """A fault killing the replicas at C{indices} of configuration 0."""

    def fault(cluster: SimulatedCluster) -> None:
        replicas = cluster.replicas_of(0)
        for index in indices:
            cluster.network.crash(replicas[index].address)

    return fault


def stall(index: int, seconds: float) -> Fault:
    """A fault stopping replica C{index} of configuration 0 for C{seconds}."""

    def fault(cluster: SimulatedCluster) -> None:
        cluster.network.stall(cluster.replicas_of(0)[index].address, seconds)

    return fault


def request_reconfiguration(index: int) -> Fault:
    """Replica C{index} of configuration 0 asks Olympus to reconfigure."""

    def fault(cluster: SimulatedCluster) -> None:
        cluster.replicas_of(0)[index]._request_reconfiguration("asked by the test")

    return fault


class RecoveryAssertions(SynchronousTestCase):
    """Checks shared by the runs that must survive one reconfiguration."""

    def assertRecovered(self, result: Run, case: Case) -> None:
        """
        The run passed with exactly one reconfiguration, every client got the
        failure-free run's results, and the replicas of configuration 1 agree
        on the failure-free final dictionary.
        """
        summary = result.summary
        self.assertEqual(summary["errors"], [])
        self.assertTrue(summary["ok"])
        self.assertEqual(summary["configurations"], 2)
        self.assertTrue(summary["replicas_agree"])
        self.assertTrue(summary["linearizable"])
        expected = baseline(case).summary
        self.assertEqual(expected["errors"], [])
        self.assertEqual(expected["configurations"], 1)
        self.assertEqual(
            [c["results"] for c in summary["clients"]],
            [c["results"] for c in expected["clients"]],
        )
        self.assertEqual(summary["final_state"], expected["final_state"])
        record = result.record
        self.assertEqual((record["from"], record["to"]), (0, 1))
        # The new configuration starts right after the longest history.
        self.assertEqual(
            record["first_slot"], record["checkpoint_slot"] + 1 + record["lh_length"]
        )
        # Everything the old configuration did not finish went to the new one.
        new = result.cluster.replicas_of(1)
        self.assertEqual([r.mode for r in new], [Mode.ACTIVE] * case.num_replicas)


class KillOneT1Tests(RecoveryAssertions):
    """t = 1, three clients of 100 requests: one replica is killed mid-run."""

    case = disjoint_case(1, 100)

    def killed(self, index: int) -> Run:
        """The run with replica C{index} killed mid-run."""
        result = run(self.case, [(MID_RUN_S, kill(index))])
        self.assertRecovered(result, self.case)
        self.assertNotIn(index, result.record["quorum"])
        return result

    def test_head(self) -> None:
        """Killing the head ends in a passing run with two configurations and the failure-free results."""
        self.killed(0)

    def test_middle(self) -> None:
        """Killing the middle replica ends in a passing run with two configurations and the failure-free results."""
        self.killed(1)

    def test_tail(self) -> None:
        """Killing the tail ends in a passing run with two configurations and the failure-free results."""
        self.killed(2)

    def test_stall(self) -> None:
        """Stalling the middle replica past every timeout ends like a crash: one reconfiguration, failure-free results."""
        result = run(self.case, [(MID_RUN_S, stall(1, 10.0))])
        self.assertRecovered(result, self.case)
        self.assertEqual(result.record["quorum"], [0, 2])


class KillT2Tests(RecoveryAssertions):
    """t = 2, three clients of 100 requests: up to t replicas fail mid-run."""

    case = disjoint_case(2, 100)

    def killed(self, *indices: int) -> Run:
        """The run with the replicas at C{indices} killed at the same moment mid-run."""
        result = run(self.case, [(MID_RUN_S, kill(*indices))])
        self.assertRecovered(result, self.case)
        self.assertEqual(set(result.record["quorum"]) & set(indices), set())
        return result

    def test_head(self) -> None:
        """Killing the head ends in a passing run with two configurations and the failure-free results."""
        self.killed(0)

    def test_middle(self) -> None:
        """Killing a middle replica ends in a passing run with two configurations and the failure-free results."""
        self.killed(2)

    def test_tail(self) -> None:
        """Killing the tail ends in a passing run with two configurations and the failure-free results."""
        self.killed(4)

    def test_stall_head(self) -> None:
        """Stalling the head past every timeout gives one reconfiguration without it and the failure-free results."""
        result = run(self.case, [(MID_RUN_S, stall(0, 20.0))])
        self.assertRecovered(result, self.case)
        self.assertNotIn(0, result.record["quorum"])

    def test_kill_t(self) -> None:
        """Killing t = 2 replicas of one configuration at once still passes with one reconfiguration."""
        result = self.killed(1, 3)
        self.assertEqual(result.record["quorum"], [0, 2, 4])

    def test_kill_t_plus_one(self) -> None:
        """Killing t+1 replicas makes Olympus report that more than t seem faulty, and the run fails within its deadline."""
        result = run(self.case, [(MID_RUN_S, kill(0, 1, 2))], deadline_s=60)
        summary = result.summary
        self.assertFalse(summary["ok"])
        self.assertEqual(summary["configurations"], 1)
        self.assertEqual(summary["reconfigurations"], [])
        faulty = [e for e in summary["errors"] if "seem faulty" in e]
        self.assertEqual(len(faulty), 1)
        self.assertIn("more than t=2 replicas of configuration 0 seem faulty", faulty[0])
        self.assertIn("deadline", summary["errors"][0])
        self.assertEqual(len(result.named("bcr.no_quorum")), 1)
        # Clients wait for their timers between retransmissions while the
        # survivors answer with errors: no retransmission storm.
        for client in summary["clients"]:
            self.assertLess(client["retransmissions"], 60 / 3 + 5)
        self.assertLess(result.cluster.network.clock.seconds(), 60 + 20)


class Perform900HeadKillTests(SynchronousTestCase):
    """etc/cases/perform900.txt (t = 2, 3 x 300 requests) with its head killed mid-run."""

    def test_head_killed(self) -> None:
        """The run passes with two configurations, every request accepted once, agreeing replicas and a linearizable history."""
        case = parse_case(os.path.join(CASES, "perform900.txt"))
        result = run(case, [(0.2, kill(0))])
        summary = result.summary
        self.assertEqual(summary["errors"], [])
        self.assertTrue(summary["ok"])
        self.assertEqual(summary["configurations"], 2)
        self.assertTrue(summary["replicas_agree"])
        self.assertTrue(summary["linearizable"])
        self.assertEqual([c["accepted"] for c in summary["clients"]], [300] * 3)
        record = result.record
        self.assertNotIn(0, record["quorum"])
        self.assertEqual(record["quorums_tried"], 1)
        # Each accepted request has its own slot, and the slots are a prefix
        # of what the chains executed (perform900's clients share keys, so
        # results depend on the interleaving and are checked by the replay).
        slots = sorted(s for c in summary["clients"] for s in c["slots"])
        self.assertEqual(len(set(slots)), 900)
        last_slots = {r.last_executed for r in result.cluster.replicas_of(1)}
        self.assertEqual(len(last_slots), 1)
        self.assertLessEqual(slots[-1], last_slots.pop())


class QuorumChoiceTests(SynchronousTestCase):
    """
    Olympus leaves misbehaving replicas out of the quorum (SPEC §9.3-§9.5):
    replica 1 asks for a reconfiguration mid-run while replica 0 lies or
    fails in the reconfiguration itself.  Every client appends to its own
    key, so re-executing any history entry changes a state hash.
    """

    case = appends_case("checkpt_interval = 1000")
    FAULT_AT_S = 0.02

    def passes(self, result: Run) -> None:
        """The run passed with one reconfiguration and every append applied once."""
        summary = result.summary
        self.assertEqual(summary["errors"], [])
        self.assertEqual(summary["configurations"], 2)
        expected = {
            f"k{i}": "x" + "".join(str(j % 10) for j in range(30)) for i in range(3)
        }
        self.assertEqual(summary["final_state"], expected)
        for client in summary["clients"]:
            self.assertEqual(client["results"], ["OK"] * 31)

    def patch_wedge(self, cluster: SimulatedCluster, index: int, lie: Callable[[Replica], None]) -> None:
        """
        Make replica C{index} of configuration 0 call C{lie} on itself just
        before it wedges.  Olympus's messages are dispatched through the
        replica's L{Replica.CONTROL} table, so that replica gets a table of
        its own whose wedge request rule (same sender check, same modes)
        runs C{lie} first.
        """
        replica = cluster.replicas_of(0)[index]
        rule = Replica.CONTROL[WedgeRequest]

        def wedge(target: Replica, sender: Peer, message: WedgeRequest) -> None:
            self.assertIs(target, replica)
            lie(target)
            rule.handler(target, sender, message)

        replica.CONTROL = {  # type: ignore[misc]
            **Replica.CONTROL, WedgeRequest: attrs.evolve(rule, handler=wedge)
        }

    def test_strict_prefix(self) -> None:
        """A replica that hides its last executed slot is caught by its state hash after catch-up; Olympus tries another quorum and the run passes without it."""
        hidden: list[int] = []

        def truncate(replica: Replica) -> None:
            # SPEC §11 truncate_history(1): leave out the last entry, and
            # execute it again when Olympus sends it back in catch-up.
            last = max(replica.history)
            self.assertEqual(last, replica.last_executed)
            del replica.history[last]
            replica.last_executed -= 1
            hidden.append(last)

        def fault(cluster: SimulatedCluster) -> None:
            # The middle replica lies; the head has executed at least as much.
            self.patch_wedge(cluster, 1, truncate)
            request_reconfiguration(2)(cluster)
            # Replica 2's wedged message comes late: quorum {0, 1} goes first.
            cluster.network.delay(cluster.replicas_of(0)[2].address, "olympus", 0.05)

        result = run(self.case, [(self.FAULT_AT_S, fault)])
        self.passes(result)
        self.assertEqual(len(hidden), 1)
        self.assertEqual(result.record["quorum"], [0, 2])
        self.assertEqual(result.record["quorums_tried"], 2)
        [failed] = result.named("bcr.quorum_failed")
        self.assertEqual(failed["quorum"], [0, 1])
        self.assertIn("hashes differ", failed["reason"])
        attempts = result.named("bcr.quorum")
        self.assertEqual([e["quorum"] for e in attempts], [[0, 1], [0, 2]])
        # The first attempt sent the hidden slot back to the liar, which
        # executed it a second time.
        self.assertEqual(attempts[0]["lists"]["0"], [])
        self.assertEqual(attempts[0]["lists"]["1"][0], hidden[0])

    def test_hole(self) -> None:
        """A replica whose wedged history has a hole is invalid and left out of the quorum; the run passes."""
        removed: list[int] = []

        def hole(replica: Replica) -> None:
            slots = sorted(replica.history)
            self.assertGreaterEqual(len(slots), 3)
            del replica.history[slots[1]]
            removed.append(slots[1])

        def fault(cluster: SimulatedCluster) -> None:
            self.patch_wedge(cluster, 0, hole)
            request_reconfiguration(1)(cluster)

        result = run(self.case, [(self.FAULT_AT_S, fault)])
        self.passes(result)
        self.assertEqual(len(removed), 1)
        self.assertEqual(result.record["quorum"], [1, 2])
        self.assertEqual(result.record["quorums_tried"], 1)
        [invalid] = result.named("bcr.wedged", valid=False)
        self.assertEqual(invalid["index"], 0)
        self.assertIn(f"slot {removed[0] + 1} where {removed[0]} belongs", invalid["reason"])

    def test_silent_in_catch_up(self) -> None:
        """A replica that wedges but never answers catch_up makes its quorums time out; Olympus goes on to a quorum without it and the run passes."""

        def deafen(replica: Replica) -> None:
            # Its wedged message leaves first; nothing after it reaches Olympus.
            replica._env.network.clock.callLater(  # type: ignore[attr-defined]
                0, replica._env.network.drop, replica.address, "olympus"  # type: ignore[attr-defined]
            )

        def fault(cluster: SimulatedCluster) -> None:
            self.patch_wedge(cluster, 0, deafen)
            cluster.network.delay(cluster.replicas_of(0)[2].address, "olympus", 0.05)
            request_reconfiguration(1)(cluster)

        result = run(self.case, [(self.FAULT_AT_S, fault)])
        self.passes(result)
        self.assertEqual(result.record["quorum"], [1, 2])
        self.assertEqual(result.record["quorums_tried"], 3)
        failed = result.named("bcr.quorum_failed")
        self.assertEqual([e["quorum"] for e in failed], [[0, 1], [0, 2]])
        self.assertTrue(all("did not answer catch_up" in e["reason"] for e in failed))
        # Each failed attempt waited one step timeout (3 s).
        self.assertGreaterEqual(result.record["duration_s"], 6.0)


class ExactlyOnceTests(SynchronousTestCase):
    """A request executed by the old configuration is not executed again by the new one (SPEC §9.6, §9.7)."""

    case = parse_case_text(
        "t = 1\nnum_client = 2\n"
        "workload[0] = put('movie','star'); append('movie',' wars'); get('movie')\n"
        "workload[1] = pseudorandom(233,10)\n",
        "exactly_once.txt",
    )

    def test_tail_dies_after_executing_append(self) -> None:
        """The tail dies right after executing an append, before its result leaves: the value is appended once and the client gets the result from Olympus."""
        executed: list[str] = []

        def setup(cluster: SimulatedCluster) -> None:
            # Configuration 0 is not assigned yet: arm every spare.
            for replica in cluster.replicas:
                original = replica._send_result_to_client

                def send(
                    shuttle: ResultShuttle, request: Request,
                    replica: Replica = replica, original: Any = original,
                ) -> None:
                    assert replica.configuration is not None
                    if (
                        replica.configuration.number == 0 and replica.is_tail
                        and (request.client, request.seq) == (0, 1)
                    ):
                        executed.append(replica.state["movie"])
                        # Dead before anything of this slot leaves it.
                        cluster.network.crash(replica.address)
                        return
                    original(shuttle, request)

                replica._send_result_to_client = send  # type: ignore[method-assign]

        result = run(self.case, setup=setup)
        summary = result.summary
        self.assertEqual(summary["errors"], [])
        self.assertEqual(summary["configurations"], 2)
        self.assertEqual(executed, ["star wars"])
        self.assertEqual(summary["clients"][0]["results"], ["OK", "OK", "star wars"])
        self.assertEqual(summary["final_state"]["movie"], "star wars")
        self.assertTrue(summary["replicas_agree"])
        # The append's result reached the client from Olympus, not from a
        # second execution in configuration 1.
        [accepted] = result.named("bcr.accept", request_id="0:1")
        self.assertTrue(accepted["recovered"])
        [voucher] = result.named("bcr.result_from_olympus", client=0)
        self.assertEqual((voucher["seq"], voucher["result"]), (1, "OK"))
        self.assertEqual(result.record["quorum"], [0, 1])
        new_slots = {r.last_executed for r in result.cluster.replicas_of(1)}
        self.assertEqual(len(new_slots), 1)
        # Thirteen requests, thirteen slots: nothing ran twice.
        self.assertEqual(new_slots.pop(), 12)


class ChaosTests(SynchronousTestCase):
    """Random kills and stalls drawn from the seed (bcr simulate --chaos)."""

    def setUp(self) -> None:
        self.case = parse_case(os.path.join(CASES, "failure_free.txt"))

    def test_runs_pass(self) -> None:
        """Every one of ten seeds, each with up to t faults per configuration, passes."""
        reconfigured = 0
        for seed in range(10):
            summary = simulate(self.case, seed=seed, chaos=2)
            self.assertEqual(summary["errors"], [], f"seed {seed}")
            if summary["configurations"] > 1:
                reconfigured += 1
                self.assertTrue(summary["injected"], f"seed {seed}")
        # The faults really happen: most seeds need a reconfiguration.
        self.assertGreaterEqual(reconfigured, 5)

    def test_reproducible(self) -> None:
        """The same seed injects the same faults and gives the same summary."""
        first = simulate(self.case, seed=3, chaos=2)
        self.assertTrue(first["injected"])
        self.assertEqual(simulate(self.case, seed=3, chaos=2), first)


OUTSIDER = "outsider"
OUTSIDER_KEY = crypto.KeyPair.from_seed(b"outsider seed for test_recovery.")


class OutsiderTests(SynchronousTestCase):
    """
    Mid-run, a process with a valid key of its own but admitted nowhere
    sends every replica, Olympus and every client what would, if accepted,
    wedge, retire or reconfigure the chain, execute a slot twice, or fail a
    request; and chain members send each other messages from the wrong
    position.  None of it is evidence: the run must go on as if it had not
    happened.
    """

    case = disjoint_case(1, 100)

    def attack(self, cluster: SimulatedCluster, listener: Outsider) -> None:
        """Send the attacks (from the outsider, and from misplaced members)."""
        network = cluster.network

        def peer(address: str) -> Peer:
            return Peer(address, network.nodes[address].key)

        def send(to: Peer, message: object, sender: str = OUTSIDER) -> None:
            network.transmit(sender, to, codec.encode(message))

        def sealed(to: Peer, message: object, signer: str) -> object:
            # Properly sealed by the outsider's own key, for the right
            # recipient and Olympus's current epoch: only the key is wrong.
            return crypto.seal(
                OUTSIDER_KEY, OUTSIDER, signer, message,
                recipient=to.key, epoch=cluster.olympus.epoch, configuration=0,
            )

        olympus = peer("olympus")
        for message in (
            ReconfigurationRequest(0, "replica 0.1", "the outsider says so", ()),
            Wedged(0, 1, (), None),
            FinishRun("the outsider says so"),
        ):
            send(olympus, sealed(olympus, message, "replica 0.1"))
        replicas = cluster.replicas_of(0)
        forged = crypto.sign(OUTSIDER_KEY, Request(0, 0, Operation("put", ("x", "y"))))
        for replica in replicas:
            to = peer(replica.address)
            for message in (WedgeRequest(0), GetRunningState(0), Shutdown(0)):
                send(to, sealed(to, message, "olympus"))
            # A request a client really signed, replayed from the wire.
            requests = [entry.request for entry in replica.history.values()][-1:] + [forged]
            last = replica.last_executed
            for request in requests:
                send(to, ClientRequest(request))
                send(to, ForwardedRequest(request))
                send(to, Shuttle(0, last + 1, request, (), ()))
                send(to, ResultShuttle(0, last, request, "forged", ()))
            send(to, CheckpointMessage(CheckpointProof(0, last, ())))
            send(to, CompletedCheckpoint(CheckpointProof(0, last, ())))
        # Chain members at the wrong position: the tail sends the middle a
        # shuttle, the head sends it a result shuttle.
        middle = peer(replicas[1].address)
        requests = [entry.request for entry in replicas[1].history.values()][-1:] or [forged]
        send(middle, Shuttle(0, replicas[1].last_executed + 1, requests[0], (), ()), replicas[2].address)
        send(middle, ResultShuttle(0, replicas[1].last_executed, requests[0], "x", ()), replicas[0].address)
        for client in cluster.clients:
            to = peer(f"client-{client.index}")
            seq = client.outcome.accepted
            send(to, ErrorMessage(0, client.index, seq, "immutable"))
            send(to, ResultMessage(0, 0, client.index, seq, "forged", ()))

    def test_outsider_changes_nothing(self) -> None:
        """The attacked run passes with one configuration, the failure-free results, no reconfiguration request, and every attack dropped (nothing sent back)."""
        listener = Outsider()

        def setup(cluster: SimulatedCluster) -> None:
            node = cluster.network.add_node(OUTSIDER, [], OUTSIDER_KEY.verify_key_bytes)
            node.machine = listener

        def attack(cluster: SimulatedCluster) -> None:
            self.attack(cluster, listener)

        result = run(self.case, [(MID_RUN_S, attack)], setup=setup)
        summary = result.summary
        self.assertEqual(summary["errors"], [])
        self.assertTrue(summary["ok"])
        self.assertEqual(summary["configurations"], 1)
        self.assertEqual(summary["reconfigurations"], [])
        expected = baseline(self.case).summary
        self.assertEqual(
            [c["results"] for c in summary["clients"]],
            [c["results"] for c in expected["clients"]],
        )
        self.assertEqual(summary["final_state"], expected["final_state"])
        self.assertEqual(result.named("bcr.reconfiguration_request"), [])
        self.assertEqual(listener.received, [])
        # Everything arrived: the machines dropped it, not the network.
        self.assertEqual(
            [u for u in result.cluster.network.undeliverable if u[0] == OUTSIDER], []
        )
        rejected = result.named("bcr.rejected")
        by_node = {e["node"] for e in rejected if e["peer"] == OUTSIDER}
        self.assertEqual(
            by_node,
            {"olympus"} | {f"replica 0.{i}" for i in range(3)}
            | {f"client {i}" for i in range(3)},
        )
        for event in rejected:
            self.assertTrue(event["reason"].startswith("dropped "), event)
        misplaced = [e for e in rejected if e["node"] == "replica 0.1" and e["peer"] != OUTSIDER]
        self.assertEqual(
            sorted(e["reason"] for e in misplaced),
            [
                "dropped result_shuttle from a peer that is not our successor",
                "dropped shuttle from a peer that is not our predecessor",
            ],
        )
        # Each replica got 13 messages from the outsider within milliseconds
        # and wrote one burst of 10 lines about them.
        for index in range(3):
            lines = [
                e for e in rejected if e["node"] == f"replica 0.{index}" and e["peer"] == OUTSIDER
            ]
            self.assertEqual(len(lines), 10)
