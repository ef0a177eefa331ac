"""
Tests for L{twisted_bcr.simulation}: the example cases of etc/cases run in
the deterministic in-process cluster and give the results, final state,
checkpoints and message counts that shared/etc-examples/README.md expects.

The larger cases (stress_10_clients, perform900) take a few seconds each, so
every (case, seed) is simulated once per test process and shared by the
tests that look at it.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes import Outsider
from twisted_bcr import crypto
from twisted_bcr.config import Case, parse_case, parse_case_text
from twisted_bcr.messages import (
    CheckpointMessage,
    CheckpointProof,
    ClientRequest,
    CompletedCheckpoint,
    FinishRun,
    ForwardedRequest,
    Operation,
    ReconfigurationRequest,
    Request,
    ResultShuttle,
    Shuttle,
    Wedged,
)
from twisted_bcr.peers import Peer, peer_of
from twisted_bcr.simulation import SimulatedCluster, build_cluster, seeded_key, simulate

CASES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "etc", "cases")

FAILURE_FREE_RESULTS = [
    ["", "OK", "fail", "hockey", "fail", "OK", "fail", "OK", "OK", "OK"],
    ["OK", "OK", "star wars"],
    ["OK", "OK", "luke"],
]
FAILURE_FREE_STATE = {
    "hello": "walkIndia",
    "moon": "walkIndia",
    "movie": "star wars",
    "jedi": "luke",
}
CHECKPOINT_RESULTS = ["OK", "star", "OK", "OK", "luke", "OK", "luke warm"]
CHECKPOINT_STATE = {"movie": "star wars", "jedi": "luke warm"}


@attrs.define
class Run:
    """One simulated run: its summary, its cluster, and what its nodes logged."""

    case: Case
    summary: dict[str, Any]
    cluster: SimulatedCluster
    #: (simulated time, node, event, message kind, slot) of every log event.
    events: list[tuple[float, Any, Any, Any, Any]]

    def events_named(self, name: str, node: str | None = None) -> list[tuple[Any, ...]]:
        """The records of event C{name}, optionally only those of C{node}."""
        return [e for e in self.events if e[2] == name and (node is None or e[1] == node)]

    def replica_names(self) -> list[str]:
        """The names of the replicas of configuration 0, in chain order."""
        return [f"replica 0.{i}" for i in range(2 * self.case.t + 1)]


def simulate_case(case: Case, seed: int) -> Run:
    """Simulate C{case} with C{seed}, recording every log event with its simulated time."""
    events: list[tuple[float, Any, Any, Any, Any]] = []
    clusters: list[SimulatedCluster] = []

    def prepare(cluster: SimulatedCluster) -> None:
        clusters.append(cluster)
        clock = cluster.network.clock

        def observe(event: dict[str, Any]) -> None:
            events.append(
                (clock.seconds(), event.get("node"), event.get("event"),
                 event.get("message"), event.get("slot"))
            )

        for node in cluster.network.nodes.values():
            node.publisher.addObserver(observe)

    summary = simulate(case, seed, prepare=prepare)
    return Run(case, summary, clusters[0], events)


_RUNS: dict[tuple[str, int], Run] = {}


def run_file(name: str, seed: int = 0) -> Run:
    """The run of etc/cases/C{name}.txt with C{seed}, simulated once per process."""
    key = (name, seed)
    if key not in _RUNS:
        _RUNS[key] = simulate_case(parse_case(os.path.join(CASES, f"{name}.txt")), seed)
    return _RUNS[key]


class CaseTestsMixin:
    """Checks every failure-free example case must pass."""

    name: str
    replicas: int

    def simulated(self) -> Run:
        """This case simulated with seed 0."""
        return run_file(self.name)

    def test_passes(self) -> None:
        """The run passes with no errors, one configuration and agreeing replicas."""
        summary = self.simulated().summary
        self.assertEqual(summary["errors"], [])  # type: ignore[attr-defined]
        self.assertTrue(summary["ok"])  # type: ignore[attr-defined]
        self.assertEqual(summary["configurations"], 1)  # type: ignore[attr-defined]
        self.assertEqual(summary["reconfigurations"], [])  # type: ignore[attr-defined]
        self.assertTrue(summary["replicas_agree"])  # type: ignore[attr-defined]
        self.assertTrue(summary["linearizable"])  # type: ignore[attr-defined]

    def test_no_retransmissions(self) -> None:
        """No client retransmitted and no replica handled a retransmission or asked to reconfigure."""
        run = self.simulated()
        self.assertEqual(  # type: ignore[attr-defined]
            [c["retransmissions"] for c in run.summary["clients"]],
            [0] * run.case.num_client,
        )
        self.assertEqual(run.events_named("bcr.retransmission"), [])  # type: ignore[attr-defined]
        self.assertEqual(run.events_named("bcr.reconfiguration_request"), [])  # type: ignore[attr-defined]
        self.assertEqual(run.events_named("bcr.rejected"), [])  # type: ignore[attr-defined]

    def test_every_replica_retired(self) -> None:
        """Every replica reported its final state and exited with status 0."""
        run = self.simulated()
        self.assertEqual(  # type: ignore[attr-defined]
            [r.mode.value for r in run.cluster.replicas_of(0)], ["active"] * self.replicas
        )
        # The spares never placed in a configuration were retired too.
        statuses = [node.exit_status for name, node in run.cluster.network.nodes.items()
                    if name.startswith("spare-")]
        self.assertEqual(statuses, [0] * 2 * self.replicas)  # type: ignore[attr-defined]
        self.assertEqual(  # type: ignore[attr-defined]
            len(run.events_named("bcr.final_state")), 2 * self.replicas
        )


class FailureFreeTests(CaseTestsMixin, SynchronousTestCase):
    """etc/cases/failure_free.txt: t = 1, three clients, no failures."""

    name = "failure_free"
    replicas = 3

    def test_results(self) -> None:
        """Each client accepted the results of SPEC §12.1 and of its explicit workload."""
        summary = self.simulated().summary
        self.assertEqual([c["results"] for c in summary["clients"]], FAILURE_FREE_RESULTS)
        self.assertEqual([c["valid"] for c in summary["clients"]], [True] * 3)
        self.assertEqual(summary["requests"], 16)

    def test_final_state(self) -> None:
        """The replicas end with the dictionary every workload leads to."""
        self.assertEqual(self.simulated().summary["final_state"], FAILURE_FREE_STATE)

    def test_one_checkpoint(self) -> None:
        """Sixteen slots with checkpt_interval 10 give one checkpoint, at slot 9, on every replica."""
        run = self.simulated()
        for name in run.replica_names():
            self.assertEqual([e[4] for e in run.events_named("bcr.checkpoint_completed", name)], [9])


class CheckpointCaseTests(CaseTestsMixin, SynchronousTestCase):
    """etc/cases/checkpoint.txt: checkpoints every 3 slots."""

    name = "checkpoint"
    replicas = 3

    def test_results(self) -> None:
        """The client accepted the expected seven results."""
        [client] = self.simulated().summary["clients"]
        self.assertEqual(client["results"], CHECKPOINT_RESULTS)
        self.assertEqual(client["slots"], list(range(7)))

    def test_final_state(self) -> None:
        """The replicas end with the expected dictionary."""
        self.assertEqual(self.simulated().summary["final_state"], CHECKPOINT_STATE)

    def test_checkpoints(self) -> None:
        """Checkpoints completed after slots 2 and 5 at every replica, truncating every history."""
        run = self.simulated()
        for name in run.replica_names():
            self.assertEqual(
                [e[4] for e in run.events_named("bcr.checkpoint_completed", name)], [2, 5]
            )
        for replica in run.cluster.replicas_of(0):
            self.assertEqual(replica.checkpoint.slot, 5)
            self.assertEqual(len(replica.checkpoint.statements), 3)
            self.assertEqual(sorted(replica.history), [6])
            self.assertEqual(replica.last_executed, 6)
        started = run.events_named("bcr.checkpoint_start")
        self.assertEqual([(e[1], e[4]) for e in started], [("replica 0.0", 2), ("replica 0.0", 5)])


class StressTests(CaseTestsMixin, SynchronousTestCase):
    """etc/cases/stress_10_clients.txt: t = 2, ten pseudorandom clients of 100 requests."""

    name = "stress_10_clients"
    replicas = 5

    def test_results(self) -> None:
        """All 1000 requests were accepted over slots 0..999 and every client's results replay."""
        summary = self.simulated().summary
        self.assertEqual(summary["requests"], 1000)
        self.assertEqual([c["accepted"] for c in summary["clients"]], [100] * 10)
        self.assertEqual([c["valid"] for c in summary["clients"]], [True] * 10)
        slots = sorted(s for c in summary["clients"] for s in c["slots"])
        self.assertEqual(slots, list(range(1000)))

    def test_twenty_checkpoints(self) -> None:
        """Every replica completed the 20 checkpoints of slots 49, 99, ..., 999."""
        run = self.simulated()
        expected = list(range(49, 1000, 50))
        self.assertEqual(len(expected), 20)
        for name in run.replica_names():
            self.assertEqual(
                [e[4] for e in run.events_named("bcr.checkpoint_completed", name)], expected
            )


class Perform900Tests(CaseTestsMixin, SynchronousTestCase):
    """etc/cases/perform900.txt: the course's performance test (SPEC §14)."""

    name = "perform900"
    replicas = 5

    def test_tail_sends_900_result_messages(self) -> None:
        """The tail logged exactly 900 result_message sends, one per request."""
        run = self.simulated()
        sends = [
            e for e in run.events_named("bcr.send", "replica 0.4") if e[3] == "result_message"
        ]
        self.assertEqual(len(sends), 900)
        self.assertEqual(sorted(e[4] for e in sends), list(range(900)))
        others = [
            e for e in run.events_named("bcr.send")
            if e[3] == "result_message" and e[1] != "replica 0.4"
        ]
        self.assertEqual(others, [])

    def test_results(self) -> None:
        """Every client accepted its 300 results."""
        summary = self.simulated().summary
        self.assertEqual([c["accepted"] for c in summary["clients"]], [300] * 3)
        self.assertEqual(summary["requests"], 900)


class ZeroClientTimeoutTests(SynchronousTestCase):
    """SPEC §6.1: a client timeout of 0 must work, whatever the timing."""

    def test_failure_free_with_zero_client_timeout(self) -> None:
        """The failure-free case with client_timeout = 0 passes, unchanged, for many seeds."""
        with open(os.path.join(CASES, "failure_free.txt"), encoding="utf-8") as f:
            text = f.read() + "\nclient_timeout = 0\n"
        case = parse_case_text(text, "zero.txt")
        for seed in range(1, 11):
            with self.subTest(seed=seed):
                summary = simulate(case, seed=seed)
                self.assertEqual(summary["errors"], [])
                self.assertEqual(summary["configurations"], 1)
                self.assertEqual(summary["final_state"], FAILURE_FREE_STATE)


class EndOfRunTests(SynchronousTestCase):
    """
    etc/cases/trailing_checkpoint.txt: misbehaviour that only traffic after
    the last result reveals (the checkpoint of slot 2, found while the last
    request is in flight) still gets its reconfiguration: the run ends once
    it is quiescent.
    """

    def test_trailing_reconfiguration_completes(self) -> None:
        """
        For seeds 1..20 the run passes with the reconfiguration.  In most it
        was still running when the driver said finish, in some it began
        only after.
        """
        case = parse_case(os.path.join(CASES, "trailing_checkpoint.txt"))
        ended_after_finish, began_after_finish = [], []
        for seed in range(1, 21):
            with self.subTest(seed=seed):
                run = simulate_case(case, seed)
                self.assertEqual(run.summary["errors"], [])
                self.assertTrue(run.summary["ok"])
                self.assertEqual(run.summary["configurations"], 2)
                self.assertEqual(
                    [(f["configuration"], f["replica"], f["byzantine"])
                     for f in run.summary["faults_fired"]],
                    [(0, 1, True)],
                )
                [finish] = run.events_named("bcr.finish", "driver")
                [wedge] = run.events_named("bcr.wedge", "olympus")
                [reconfigured] = run.events_named("bcr.reconfigured", "olympus")
                if reconfigured[0] > finish[0]:
                    ended_after_finish.append(seed)
                if wedge[0] > finish[0]:
                    began_after_finish.append(seed)
        self.assertGreater(len(ended_after_finish), 10, ended_after_finish)
        self.assertTrue(began_after_finish)


class SingleReplicaTests(SynchronousTestCase):
    """With t = 0 a single replica serves a whole run."""

    def test_t_zero(self) -> None:
        """A case with t = 0 passes end to end, with checkpoints."""
        case = parse_case_text(
            "t = 0\nnum_client = 1\ncheckpt_interval = 2\n"
            "workload[0] = put('movie','star'); append('movie',' wars'); get('movie')\n",
            "t_zero.txt",
        )
        run = simulate_case(case, 0)
        self.assertEqual(run.summary["errors"], [])
        self.assertEqual(run.summary["clients"][0]["results"], ["OK", "OK", "star wars"])
        self.assertEqual(run.summary["final_state"], {"movie": "star wars"})
        self.assertEqual([e[4] for e in run.events_named("bcr.checkpoint_completed")], [1])
        [replica] = run.cluster.replicas_of(0)
        self.assertEqual(sorted(replica.history), [2])


class DeterminismTests(SynchronousTestCase):
    """The same seed gives the same run; another seed another interleaving, same results."""

    def test_same_seed_same_run(self) -> None:
        """Two runs with the same seed give identical summaries and identical event sequences."""
        case = parse_case(os.path.join(CASES, "failure_free.txt"))
        first = simulate_case(case, 7)
        second = simulate_case(case, 7)
        self.assertEqual(first.summary, second.summary)
        self.assertEqual(first.events, second.events)

    def test_seeds_change_interleaving_not_results(self) -> None:
        """Different seeds order the three clients' requests differently but every client gets the same results."""
        runs = [run_file("failure_free", seed) for seed in (0, 1, 2)]
        slots = [[c["slots"] for c in run.summary["clients"]] for run in runs]
        self.assertEqual(len({repr(s) for s in slots}), 3)
        for run in runs:
            self.assertTrue(run.summary["ok"])
            self.assertEqual([c["results"] for c in run.summary["clients"]], FAILURE_FREE_RESULTS)
            self.assertEqual(run.summary["final_state"], FAILURE_FREE_STATE)

    def test_single_client_seeds(self) -> None:
        """For a single-client case, different seeds give different event timings and the same results and final state."""
        runs = [run_file("checkpoint", seed) for seed in (0, 1)]
        self.assertNotEqual(runs[0].events, runs[1].events)
        self.assertNotEqual(runs[0].summary["latency_ms"], runs[1].summary["latency_ms"])
        for run in runs:
            self.assertEqual(run.summary["errors"], [])
            self.assertEqual(run.summary["clients"][0]["results"], CHECKPOINT_RESULTS)
            self.assertEqual(run.summary["final_state"], CHECKPOINT_STATE)


class RetransmissionSimulationTests(SynchronousTestCase):
    """Client retransmissions (SPEC §6) end to end, on the checkpoint case."""

    def case(self, client_timeout: int, nonhead_timeout: int = 3000) -> Case:
        """etc/cases/checkpoint.txt with other client and non-head timeouts."""
        with open(os.path.join(CASES, "checkpoint.txt"), encoding="utf-8") as f:
            text = f.read()
        text = text.replace("client_timeout = 10000", f"client_timeout = {client_timeout}")
        text = text.replace("nonhead_timeout = 3000", f"nonhead_timeout = {nonhead_timeout}")
        return parse_case_text(text, "checkpoint_retransmissions.txt")

    def test_client_cut_off_from_head(self) -> None:
        """With the client unable to reach the head, every request gets through by forwarding, without a reconfiguration request."""
        events: list[tuple[Any, ...]] = []
        #: What Olympus had announced when the cut was made (a log observer
        #: cannot fail the test itself: the publisher catches its errors).
        announced_at_cut: list[int] = []

        def prepare(cluster: SimulatedCluster) -> None:
            def cut(event: dict[str, Any]) -> None:
                # The moment configuration 0 is set up: its replicas must
                # still say they are ready before Olympus announces it, so
                # the first request cannot have left yet.
                if event.get("event") == "bcr.new_configuration" and event.get("number") == 0:
                    announced_at_cut.append(cluster.olympus.announced)
                    head = cluster.olympus.configuration.replicas[0].address
                    cluster.network.partition(["client-0"], [head])

            cluster.network.nodes["olympus"].publisher.addObserver(cut)
            for node in cluster.network.nodes.values():
                node.publisher.addObserver(
                    lambda e: events.append((e.get("node"), e.get("event"), e.get("case")))
                )

        summary = simulate(self.case(500, nonhead_timeout=1000), 0, prepare=prepare)
        self.assertEqual(announced_at_cut, [-1])
        self.assertEqual(summary["errors"], [])
        self.assertEqual(summary["clients"][0]["results"], CHECKPOINT_RESULTS)
        self.assertEqual(summary["clients"][0]["retransmissions"], 7)
        self.assertEqual(summary["configurations"], 1)
        cases = {e[2] for e in events if e[1] == "bcr.retransmission"}
        self.assertEqual(cases, {"non-head, forward", "head, new", "head, already ordered"})
        self.assertEqual([e for e in events if e[1] == "bcr.reconfiguration_request"], [])

    def test_tiny_client_timeout(self) -> None:
        """A 1 ms client timeout causes retransmissions but still one configuration and the right results."""
        run = simulate_case(self.case(1), 0)
        self.assertEqual(run.summary["errors"], [])
        self.assertEqual(run.summary["clients"][0]["results"], CHECKPOINT_RESULTS)
        self.assertGreater(run.summary["clients"][0]["retransmissions"], 0)
        self.assertEqual(run.summary["configurations"], 1)
        self.assertEqual(run.events_named("bcr.reconfiguration_request"), [])


class OutsiderSimulationTests(SynchronousTestCase):
    """
    An outsider on the network, with a valid key of its own, sends every
    data-plane and control message it can make to every replica and to
    Olympus: the run is unharmed, nobody asks for a reconfiguration, and
    the outsider learns nothing.
    """

    def test_outsider_changes_nothing(self) -> None:
        """The checkpoint case passes as without the outsider, and its messages are dropped."""
        events: list[dict[str, Any]] = []
        outsider = Outsider()
        attacks: list[float] = []

        def prepare(cluster: SimulatedCluster) -> None:
            network = cluster.network
            key = seeded_key(0, "outsider")
            node = network.add_node("outsider", [], key.verify_key_bytes)
            node.machine = outsider
            forged = crypto.sign(key, Request(0, 0, Operation("put", ("movie", "forged"))))
            olympus = Peer("olympus", network.nodes["olympus"].key)

            def sealed(message: object) -> object:
                return crypto.seal(
                    key, "outsider", "replica 0.0", message,
                    recipient=olympus.key, epoch=cluster.olympus.epoch, configuration=0,
                )

            def attack() -> None:
                attacks.append(network.clock.seconds())
                configuration = cluster.olympus.configuration
                assert configuration is not None
                for info in configuration.replicas:
                    for message in (
                        ClientRequest(forged),
                        ForwardedRequest(forged),
                        Shuttle(0, 0, forged, (), ()),
                        ResultShuttle(0, 0, forged, "OK", ()),
                        CheckpointMessage(CheckpointProof(0, 2, ())),
                        CompletedCheckpoint(CheckpointProof(0, 2, ())),
                        sealed(FinishRun("the outsider says so")),
                    ):
                        node.send(peer_of(info), message)
                for message in (
                    ReconfigurationRequest(0, "replica 0.0", "the outsider says so", ()),
                    Wedged(0, 0, (), None),
                    FinishRun("the outsider says so"),
                ):
                    node.send(olympus, sealed(message))

            def observe(event: dict[str, Any]) -> None:
                events.append(event)
                # Once the client uses configuration 0, before its first result.
                if event.get("event") == "bcr.configuration" and not attacks:
                    network.clock.callLater(0, attack)

            for each in network.nodes.values():
                each.publisher.addObserver(observe)

        case = parse_case(os.path.join(CASES, "checkpoint.txt"))
        summary = simulate(case, 0, prepare=prepare)
        self.assertEqual(len(attacks), 1)
        self.assertEqual(summary["errors"], [])
        self.assertTrue(summary["ok"])
        self.assertEqual(summary["clients"][0]["results"], CHECKPOINT_RESULTS)
        self.assertEqual(summary["final_state"], CHECKPOINT_STATE)
        self.assertEqual(summary["configurations"], 1)
        self.assertEqual(summary["reconfigurations"], [])
        self.assertEqual(
            [e for e in events if e.get("event") == "bcr.reconfiguration_request"], []
        )
        rejected = [e for e in events if e.get("event") == "bcr.rejected"]
        # Seven messages to each of three replicas, three to Olympus.
        self.assertEqual(len(rejected), 3 * 7 + 3)
        self.assertEqual({e["peer"] for e in rejected}, {"outsider"})
        self.assertEqual(outsider.received, [])

    def test_impostor_gets_nothing(self) -> None:
        """
        A message goes only to the process holding the key the sender
        expects at that address, and arrives with the sender's true key.
        """
        cluster = build_cluster(parse_case(os.path.join(CASES, "checkpoint.txt")), 0)
        network = cluster.network
        olympus = network.nodes["olympus"]
        spare = network.nodes["spare-0"]
        recorder = Outsider()
        spare.machine = recorder
        impostor_key = seeded_key(0, "impostor").verify_key_bytes
        message = ClientRequest(crypto.sign(seeded_key(0, "x"), Request(0, 0, Operation("get", ("k",)))))
        # The sender believes another key is at "spare-0": the handshake fails.
        olympus.send(Peer("spare-0", impostor_key), message)
        network.run_until(lambda: False, 1.0)
        self.assertEqual(recorder.received, [])
        self.assertIn(("olympus", "spare-0", "not the key expected there"), network.undeliverable)
        olympus.send(Peer("spare-0", spare.key), message)
        network.run_until(lambda: False, 2.0)
        self.assertEqual(recorder.received, [(Peer("olympus", olympus.key), message)])
