"""
Every trigger and every failure of SPEC §11 in the deterministic simulation:
small cases (t = 1 mostly, one client, 300 ms timeouts) in which a fault
fires, checked against the outcome SPEC §11.2 predicts — whether and by whom
it is detected, how many reconfigurations follow, which quorum Olympus ends
up with — and against the failure-free run: the client's results and the
final dictionaries are the same, and the summary lists exactly the pairs
that fired.  The example cases of etc/cases with failures are run too, with
the expectations of shared/etc-examples/README.md.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes import Outsider
from twisted_bcr.config import Case, parse_case, parse_case_text
from twisted_bcr.core.common import Mode
from twisted_bcr.peers import Peer
from twisted_bcr.simulation import SimulatedCluster, seeded_key, simulate

CASES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "etc", "cases")

#: The one client's workload: slots 0..7 when nothing goes wrong.
WORKLOAD = (
    "put('jedi','luke skywalker'); slice('jedi','0:4'); get('jedi'); "
    "append('jedi',' warm'); get('jedi'); put('movie','star'); "
    "append('movie',' wars'); get('movie')"
)
#: Its results: request 1 (slice) gives 'OK', request 2 (get) does not.
RESULTS = ["OK", "OK", "luke", "OK", "luke warm", "OK", "OK", "star wars"]
FINAL = {"jedi": "luke warm", "movie": "star wars"}


def make_case(
    name: str, failures: dict[str, str], t: int = 1, extra: str = "", timeout_ms: int = 300
) -> Case:
    """One client running L{WORKLOAD}, with C{failures} as C{"c,r": text}."""
    lines = [
        f"test_case_name = {name}",
        f"t = {t}",
        "num_client = 1",
        f"client_timeout = {timeout_ms}",
        f"head_timeout = {timeout_ms}",
        f"nonhead_timeout = {timeout_ms}",
        f"workload[0] = {WORKLOAD}",
        extra,
    ]
    lines += [f"failures[{where}] = {text}" for where, text in failures.items()]
    return parse_case_text("\n".join(lines) + "\n", f"{name}.txt")


#: The built-in failures that are omissions, not Byzantine behaviour.
OMISSIONS = ("crash(", "sleep(", "drop(")


def pair(configuration: int, replica: int, trigger: str, failure: str) -> dict[str, Any]:
    """A fired pair as the summary lists it (crash, sleep and drop are not Byzantine)."""
    return {
        "configuration": configuration, "replica": replica, "trigger": trigger,
        "failure": failure, "byzantine": not failure.startswith(OMISSIONS),
    }


@attrs.define
class Run:
    """One simulated run: its summary, its cluster and the failures applied."""

    summary: dict[str, Any]
    cluster: SimulatedCluster
    #: (node, pair, point) of every bcr.fault_applied event, in order.
    applied: list[tuple[str, str, str]]
    #: (node, slot) of every bcr.checkpoint_completed event, in order.
    checkpoints: list[tuple[str, int]]

    @property
    def reconfigurations(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = self.summary["reconfigurations"]
        return records

    @property
    def record(self) -> dict[str, Any]:
        """The one reconfiguration record."""
        [record] = self.reconfigurations
        return record

    def requesters(self, record: dict[str, Any] | None = None) -> list[str]:
        """The replicas (not clients) that asked for a reconfiguration, sorted."""
        record = record if record is not None else self.record
        return sorted(name for name in record["requested_by"] if name.startswith("replica "))

    def final_states(self) -> dict[int, dict[str, str]]:
        """Index -> final dictionary of every replica of the last configuration."""
        assert self.cluster.report is not None
        return {f.index: dict(f.state) for f in self.cluster.report.final_states}

    def exit_status(self, configuration: int, index: int) -> int | None:
        """How the process of replica C{index} of C{configuration} ended, if it did."""
        address = self.cluster.replicas_of(configuration)[index].address
        return self.cluster.network.nodes[address].exit_status


_RUNS: dict[tuple[str, int], Run] = {}


def run(case: Case, seed: int = 0) -> Run:
    """Simulate C{case} with C{seed}, once per process."""
    if (case.path, seed) in _RUNS:
        return _RUNS[case.path, seed]
    clusters: list[SimulatedCluster] = []
    applied: list[tuple[str, str, str]] = []
    checkpoints: list[tuple[str, int]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("event") == "bcr.fault_applied":
            applied.append((event["node"], event["pair"], event["point"]))
        elif event.get("event") == "bcr.checkpoint_completed":
            checkpoints.append((event["node"], event["slot"]))

    def prepare(cluster: SimulatedCluster) -> None:
        clusters.append(cluster)
        for node in cluster.network.nodes.values():
            node.publisher.addObserver(observe)

    summary = simulate(case, seed, prepare=prepare)
    _RUNS[case.path, seed] = Run(summary, clusters[0], applied, checkpoints)
    return _RUNS[case.path, seed]


def run_file(name: str) -> Run:
    """Simulate one of etc/cases with seed 0."""
    return run(parse_case(os.path.join(CASES, name)))


def _canonical(fired: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(tuple(f.values()) for f in fired)


#: Seeds over which a defence that depends on timing must be exercised.
SEEDS = range(10)


class FaultCaseTestCase(SynchronousTestCase):
    """Assertions shared by the fault cases."""

    def assertBadQuorumTried(self, case: Case, faulty: int) -> None:
        """
        Over L{SEEDS}, every run passes with a quorum leaving out the replica
        at C{faulty}, and in at least one the quorum first tried included it
        and was refused (which quorum Olympus tries first depends on which
        wedged messages arrive first, that is, on timing).
        """
        tried = []
        for seed in SEEDS:
            result = run(case, seed)
            self.assertTrue(result.summary["ok"], (seed, result.summary["errors"]))
            for record in result.reconfigurations:
                self.assertNotIn(faulty, record["quorum"], seed)
            tried.append(result.reconfigurations[0]["quorums_tried"])
        self.assertGreaterEqual(max(tried), 2, tried)

    def assertOutcome(
        self,
        result: Run,
        *,
        fired: list[dict[str, Any]],
        reconfigurations: int,
        requesters: list[str] | None = None,
        reason: str | None = None,
        results: list[str] = RESULTS,
        final: dict[str, str] | None = FINAL,
    ) -> None:
        """
        The run passed with C{results}, C{reconfigurations} reconfigurations,
        exactly the pairs C{fired} (in any order: Olympus learns of them as
        they arrive), and every replica of the last
        configuration ending with C{final}; the first reconfiguration was
        requested by exactly the replicas C{requesters} for a reason
        containing C{reason}.
        """
        summary = result.summary
        self.assertEqual(_canonical(summary["faults_fired"]), _canonical(fired))
        self.assertEqual([c["results"] for c in summary["clients"]], [results])
        self.assertEqual(len(result.reconfigurations), reconfigurations, result.reconfigurations)
        if requesters is not None:
            self.assertEqual(result.requesters(result.reconfigurations[0]), requesters)
        if reason is not None:
            self.assertIn(reason, result.reconfigurations[0]["reason"])
        if final is not None:
            self.assertEqual(summary["errors"], [])
            self.assertTrue(summary["ok"])
            states = result.final_states()
            self.assertEqual(len(states), result.cluster.case.num_replicas)
            self.assertEqual(states, {index: final for index in states})


# ---------------------------------------------------------------------------
# Failures (SPEC §11.2)


class ChangeOperationTests(FaultCaseTestCase):
    """change_operation(): the successor sees an order statement contradicting the request."""

    def test_middle(self) -> None:
        """At a middle replica the successor requests the one reconfiguration."""
        result = run(make_case("chop_middle", {"0,1": "shuttle(0,1), change_operation()"}))
        self.assertOutcome(
            result, fired=[pair(0, 1, "shuttle(0,1)", "change_operation()")],
            reconfigurations=1, requesters=["replica 0.2"], reason="order statement 1 contradicts",
        )

    def test_head(self) -> None:
        """At the head replica 1 requests the reconfiguration."""
        result = run(make_case("chop_head", {"0,0": "client_request(0,3), change_operation()"}))
        self.assertOutcome(
            result, fired=[pair(0, 0, "client_request(0,3)", "change_operation()")],
            reconfigurations=1, requesters=["replica 0.1"], reason="order statement 0 contradicts",
        )

    def test_tail(self) -> None:
        """At the tail the statements reach the predecessor in the result shuttle, which requests it."""
        result = run(make_case("chop_tail", {"0,2": "shuttle(0,2), change_operation()"}))
        self.assertOutcome(
            result, fired=[pair(0, 2, "shuttle(0,2)", "change_operation()")],
            reconfigurations=1, requesters=["replica 0.1"],
        )

    def test_t2(self) -> None:
        """With t = 2 a lie at replica 2 is reported by replica 3."""
        result = run(make_case("chop_t2", {"0,2": "shuttle(0,4), change_operation()"}, t=2))
        self.assertOutcome(
            result, fired=[pair(0, 2, "shuttle(0,4)", "change_operation()")],
            reconfigurations=1, requesters=["replica 0.3"],
        )


class ChangeResultTests(FaultCaseTestCase):
    """change_result(): a validly signed statement for hash('OK')."""

    def test_tail(self) -> None:
        """At the tail, with a result other than 'OK', the predecessor detects it."""
        result = run(make_case("chres_tail", {"0,2": "shuttle(0,2), change_result()"}))
        self.assertOutcome(
            result, fired=[pair(0, 2, "shuttle(0,2)", "change_result()")],
            reconfigurations=1, requesters=["replica 0.1"],
        )
        self.assertEqual(result.applied, [("replica 0.2", "shuttle(0,2), change_result()", "result_proof")])

    def test_tail_ok_result(self) -> None:
        """When the real result is 'OK' the change cannot be seen: no reconfiguration."""
        result = run(make_case("chres_tail_ok", {"0,2": "shuttle(0,1), change_result()"}))
        self.assertOutcome(
            result, fired=[pair(0, 2, "shuttle(0,1)", "change_result()")], reconfigurations=0
        )
        self.assertEqual(result.applied, [("replica 0.2", "shuttle(0,1), change_result()", "result_proof")])

    def test_middle(self) -> None:
        """At a middle replica the head detects it in the result shuttle."""
        result = run(make_case("chres_middle", {"0,1": "result_shuttle(0,2), change_result()"}))
        self.assertOutcome(
            result, fired=[pair(0, 1, "result_shuttle(0,2)", "change_result()")],
            reconfigurations=1, requesters=["replica 0.0"], reason="result statement 1 contradicts",
        )


class DropResultStmtTests(FaultCaseTestCase):
    """drop_result_stmt(): a result proof without the head's statement."""

    def test_tail(self) -> None:
        """At the tail the predecessor finds the head's statement missing; the client still accepts with 2t."""
        result = run(make_case("drs_tail", {"0,2": "shuttle(0,2), drop_result_stmt()"}))
        self.assertOutcome(
            result, fired=[pair(0, 2, "shuttle(0,2)", "drop_result_stmt()")],
            reconfigurations=1, requesters=["replica 0.1"], reason="statement 0: signature",
        )
        self.assertEqual(result.summary["clients"][0]["retransmissions"], 0)

    def test_middle(self) -> None:
        """At a middle replica the head finds the head's statement missing."""
        result = run(make_case("drs_middle", {"0,1": "result_shuttle(0,2), drop_result_stmt()"}))
        self.assertOutcome(
            result, fired=[pair(0, 1, "result_shuttle(0,2)", "drop_result_stmt()")],
            reconfigurations=1, requesters=["replica 0.0"], reason="statement 0: signature",
        )


class InvalidSignatureTests(FaultCaseTestCase):
    """invalid_order_sig() and invalid_result_sig()."""

    def test_order_sig_middle(self) -> None:
        """A bad order signature at a middle replica makes the successor request reconfiguration."""
        result = run(make_case("ios_middle", {"0,1": "shuttle(0,3), invalid_order_sig()"}))
        self.assertOutcome(
            result, fired=[pair(0, 1, "shuttle(0,3)", "invalid_order_sig()")],
            reconfigurations=1, requesters=["replica 0.2"], reason="signature does not verify",
        )

    def test_order_sig_head(self) -> None:
        """A bad order signature at the head makes replica 1 request reconfiguration."""
        result = run(make_case("ios_head", {"0,0": "client_request(0,2), invalid_order_sig()"}))
        self.assertOutcome(
            result, fired=[pair(0, 0, "client_request(0,2)", "invalid_order_sig()")],
            reconfigurations=1, requesters=["replica 0.1"], reason="statement 0: signature",
        )

    def test_result_sig_middle(self) -> None:
        """A bad result signature in a middle replica's shuttle makes the successor request reconfiguration; the append is not applied twice."""
        result = run(make_case("irs_middle", {"0,1": "shuttle(0,3), invalid_result_sig()"}))
        self.assertOutcome(
            result, fired=[pair(0, 1, "shuttle(0,3)", "invalid_result_sig()")],
            reconfigurations=1, requesters=["replica 0.2"], reason="statement 1: signature",
        )

    def test_result_sig_tail(self) -> None:
        """A bad result signature in the tail's result message: the client accepts and nobody reconfigures."""
        result = run(make_case("irs_tail", {"0,2": "shuttle(0,2), invalid_result_sig()"}))
        self.assertOutcome(
            result, fired=[pair(0, 2, "shuttle(0,2)", "invalid_result_sig()")], reconfigurations=0
        )
        self.assertEqual(
            result.applied, [("replica 0.2", "shuttle(0,2), invalid_result_sig()", "result_message")]
        )
        self.assertEqual(result.summary["clients"][0]["retransmissions"], 0)


class CrashTests(FaultCaseTestCase):
    """crash(): the process ends; timeouts lead to a reconfiguration without it."""

    def test_middle(self) -> None:
        """A crashed middle replica is left out of the quorum after the timers expire."""
        result = run(make_case("crash_middle", {"0,1": "shuttle(0,2), crash()"}))
        self.assertOutcome(
            result, fired=[pair(0, 1, "shuttle(0,2)", "crash()")], reconfigurations=1,
            reason="timeout",
        )
        self.assertNotIn("replica 0.1", result.record["requested_by"])
        self.assertNotIn(1, result.record["quorum"])
        self.assertEqual(result.exit_status(0, 1), 255)
        self.assertGreaterEqual(result.summary["clients"][0]["retransmissions"], 1)


class SleepTests(FaultCaseTestCase):
    """sleep(ms): a timing failure."""

    def test_short(self) -> None:
        """A sleep shorter than the timeouts only delays the triggering request."""
        result = run(make_case("sleep_short", {"0,1": "shuttle(0,2), sleep(50)"}))
        self.assertOutcome(
            result, fired=[pair(0, 1, "shuttle(0,2)", "sleep(50)")], reconfigurations=0
        )
        self.assertEqual(result.summary["clients"][0]["retransmissions"], 0)
        # The replica stalls before handling the shuttle of request 2.
        latencies = result.cluster.clients[0].outcome.latencies_s
        self.assertGreaterEqual(latencies[2], 0.05)
        self.assertLess(max(latencies[:2] + latencies[3:]), 0.05)

    def test_long(self) -> None:
        """A sleep far beyond the timeouts ends in a reconfiguration without the sleeper."""
        result = run(make_case("sleep_long", {"0,1": "shuttle(0,2), sleep(3000)"}))
        self.assertOutcome(
            result, fired=[pair(0, 1, "shuttle(0,2)", "sleep(3000)")], reconfigurations=1,
            reason="timeout",
        )
        self.assertNotIn("replica 0.1", result.record["requested_by"])
        self.assertNotIn(1, result.record["quorum"])


class AgreementTests(SynchronousTestCase):
    """Who counts in the agreement check, over many seeds (issue: omissions are not Byzantine)."""

    def test_sleeper_counts_in_the_agreement(self) -> None:
        """A replica that only slept agrees with the others and is no Byzantine one, whatever the seed."""
        case = make_case("sleep_agree", {"0,1": "shuttle(0,2), sleep(50)"})
        for seed in range(1, 11):
            with self.subTest(seed=seed):
                summary = simulate(case, seed=seed)
                self.assertEqual(summary["errors"], [])
                self.assertEqual(summary["byzantine_replicas"], [])
                self.assertEqual(summary["diverging_replicas"], [])
                self.assertEqual(len(set(summary["final_state_hashes"].values())), 1)
                self.assertEqual(len(summary["final_state_hashes"]), 3)

    def test_crashed_at_the_end(self) -> None:
        """
        A replica that crashes once the last request has passed it sends no
        final state; Olympus does not wait for it past its deadline, names it
        silent, and the run passes on the others' agreement, whatever the seed.
        """
        case = make_case("crash_at_end", {"0,1": "result_shuttle(0,7), crash()"})
        for seed in range(1, 11):
            with self.subTest(seed=seed):
                summary = simulate(case, seed=seed)
                self.assertEqual(summary["errors"], [])
                self.assertEqual(summary["configurations"], 1)
                self.assertEqual(summary["silent_replicas"], [1])
                self.assertEqual(sorted(summary["final_state_hashes"]), ["0", "2"])
                self.assertEqual(summary["final_state"], FINAL)

    def test_extra_op_is_left_out_and_named(self) -> None:
        """
        A replica whose extra_op() went unnoticed (no checkpoint) is left out
        of the agreement, and listed as Byzantine and diverging, for every seed.
        """
        case = make_case("extra_agree", {"0,1": "shuttle(0,1), extra_op()"})
        for seed in range(1, 11):
            with self.subTest(seed=seed):
                summary = simulate(case, seed=seed)
                self.assertEqual(summary["errors"], [])
                self.assertTrue(summary["replicas_agree"])
                self.assertEqual(summary["byzantine_replicas"], [1])
                self.assertEqual(summary["diverging_replicas"], [1])


class DropTests(FaultCaseTestCase):
    """drop(): the triggering message is ignored."""

    def test_client_request_at_head(self) -> None:
        """A request the head drops is retransmitted and served, without reconfiguration."""
        result = run(make_case("drop_head", {"0,0": "client_request(0,1), drop()"}))
        self.assertOutcome(
            result, fired=[pair(0, 0, "client_request(0,1)", "drop()")], reconfigurations=0
        )
        self.assertEqual(result.summary["clients"][0]["retransmissions"], 1)

    def test_until_reconfiguration(self) -> None:
        """A head dropping the request, its retransmission and the forwarded copies makes the non-heads' timers expire."""
        result = run(make_case("drop_head_all", {
            "0,0": "client_request(0,1), drop(); client_request(0,2), drop(); "
                   "forwarded_request(0,0), drop(); forwarded_request(0,1), drop()",
        }))
        self.assertOutcome(
            result,
            fired=[
                pair(0, 0, "client_request(0,1)", "drop()"),
                pair(0, 0, "client_request(0,2)", "drop()"),
                pair(0, 0, "forwarded_request(0,0)", "drop()"),
                pair(0, 0, "forwarded_request(0,1)", "drop()"),
            ],
            reconfigurations=1, requesters=["replica 0.1", "replica 0.2"],
            reason="nonhead timeout",
        )

    def test_new_configuration(self) -> None:
        """A replica dropping its new configuration stays PENDING and its configuration is reconfigured again."""
        result = run(make_case("newconf_drop", {
            "0,1": "shuttle(0,1), change_operation()",
            "1,1": "new_configuration(0), drop()",
        }))
        self.assertOutcome(
            result,
            fired=[
                pair(0, 1, "shuttle(0,1)", "change_operation()"),
                pair(1, 1, "new_configuration(0)", "drop()"),
            ],
            reconfigurations=2, requesters=["replica 0.2"],
        )
        second = result.reconfigurations[1]
        self.assertEqual((second["from"], second["to"]), (1, 2))
        self.assertNotIn("replica 1.1", second["requested_by"])
        self.assertIn("timeout", second["reason"])
        self.assertNotIn(1, second["quorum"])
        self.assertIs(result.cluster.replicas_of(1)[1].mode, Mode.PENDING)

    def test_wedge_request(self) -> None:
        """A replica dropping its wedge request is left out of the quorum."""
        result = run(make_case("wedge_drop", {
            "0,1": "shuttle(0,1), change_operation(); wedge_request(0), drop()",
        }))
        self.assertOutcome(
            result,
            fired=[
                pair(0, 1, "shuttle(0,1)", "change_operation()"),
                pair(0, 1, "wedge_request(0)", "drop()"),
            ],
            reconfigurations=1, requesters=["replica 0.2"],
        )
        self.assertEqual(result.record["quorum"], [0, 2])


class IncrementSlotTests(FaultCaseTestCase):
    """increment_slot(): a hole in the slot numbers."""

    def test_head(self) -> None:
        """A head skipping a slot is reported by replica 1 and left out of the quorum."""
        result = run(make_case("incslot_head", {"0,0": "client_request(0,1), increment_slot()"}))
        self.assertOutcome(
            result, fired=[pair(0, 0, "client_request(0,1)", "increment_slot()")],
            reconfigurations=1, requesters=["replica 0.1"], reason="hole",
        )
        self.assertNotIn(0, result.record["quorum"])

    def test_not_head(self) -> None:
        """At a non-head increment_slot() has no effect."""
        result = run(make_case("incslot_middle", {"0,1": "shuttle(0,1), increment_slot()"}))
        self.assertOutcome(
            result, fired=[pair(0, 1, "shuttle(0,1)", "increment_slot()")], reconfigurations=0
        )


class TruncateHistoryTests(FaultCaseTestCase):
    """truncate_history(n): a wedged history missing executed operations."""

    def test_quorum_retried(self) -> None:
        """The head's truncated history fails on state hashes and Olympus tries other quorums."""
        case = make_case("truncate", {
            "0,0": "client_request(0,3), change_operation(); wedge_request(0), truncate_history(1)",
        })
        result = run(case)
        self.assertOutcome(
            result,
            fired=[
                pair(0, 0, "client_request(0,3)", "change_operation()"),
                pair(0, 0, "wedge_request(0)", "truncate_history(1)"),
            ],
            reconfigurations=1, requesters=["replica 0.1"],
        )
        self.assertBadQuorumTried(case, 0)
        self.assertEqual(result.record["quorum"], [1, 2])
        self.assertIn(("replica 0.0", "wedge_request(0), truncate_history(1)", "wedged"), result.applied)

    def test_hidden_slots_are_executed_again(self) -> None:
        """
        A correct-state replica that hides its last two executed slots from
        its wedged history is caught up on them again (SPEC §9.5: exactly the
        list Olympus sends), its state hash gives it away, and no quorum
        with it is taken, whatever the seed.
        """
        case = make_case("truncate_hidden", {
            "0,0": "wedge_request(0), truncate_history(2)",
            "0,1": "shuttle(0,3), change_operation()",
        })
        for seed in range(1, 11):
            with self.subTest(seed=seed):
                summary = simulate(case, seed=seed)
                self.assertEqual(summary["errors"], [])
                [record] = summary["reconfigurations"]
                self.assertNotIn(0, record["quorum"])
                self.assertEqual(summary["final_state"], FINAL)

    def test_without_truncation(self) -> None:
        """Without the truncation the first quorum, with the head, succeeds."""
        result = run(make_case("no_truncate", {"0,0": "client_request(0,3), change_operation()"}))
        self.assertOutcome(
            result, fired=[pair(0, 0, "client_request(0,3)", "change_operation()")],
            reconfigurations=1, requesters=["replica 0.1"],
        )
        self.assertEqual(result.record["quorums_tried"], 1)
        self.assertIn(0, result.record["quorum"])


class DropCheckptStmtsTests(FaultCaseTestCase):
    """drop_checkpt_stmts(): a completed checkpoint proof missing t+1 statements."""

    def test_tail(self) -> None:
        """The tail's first completed proof is stripped; replica 1 detects it."""
        result = run(make_case(
            "dcs_tail", {"0,2": "completed_checkpoint(0), drop_checkpt_stmts()"},
            extra="checkpt_interval = 3",
        ))
        self.assertOutcome(
            result, fired=[pair(0, 2, "completed_checkpoint(0)", "drop_checkpt_stmts()")],
            reconfigurations=1, requesters=["replica 0.1"], reason="completed checkpoint for slot 2",
        )

    def test_middle_t2(self) -> None:
        """With t = 2, replica 2 strips the proof it passes on and replica 1 detects it."""
        result = run(make_case(
            "dcs_middle_t2", {"0,2": "completed_checkpoint(0), drop_checkpt_stmts()"}, t=2,
            extra="checkpt_interval = 3",
        ))
        self.assertOutcome(
            result, fired=[pair(0, 2, "completed_checkpoint(0)", "drop_checkpt_stmts()")],
            reconfigurations=1, requesters=["replica 0.1"], reason="2 statements, 5 required",
        )

    def test_head(self) -> None:
        """At the head, which passes no completed proof on, it has no effect."""
        result = run(make_case(
            "dcs_head", {"0,0": "completed_checkpoint(0), drop_checkpt_stmts()"},
            extra="checkpt_interval = 3",
        ))
        self.assertOutcome(
            result, fired=[pair(0, 0, "completed_checkpoint(0)", "drop_checkpt_stmts()")],
            reconfigurations=0,
        )
        self.assertEqual(
            sorted(result.checkpoints),
            [(f"replica 0.{i}", slot) for i in range(3) for slot in (2, 5)],
        )


class ExtraOpTests(FaultCaseTestCase):
    """extra_op(): put('a','a') outside the protocol."""

    def test_silent(self) -> None:
        """Without a checkpoint nothing notices; only that replica's dictionary holds 'a', and the run passes on the others."""
        result = run(make_case("extra_op", {"0,1": "shuttle(0,1), extra_op()"}))
        self.assertOutcome(
            result, fired=[pair(0, 1, "shuttle(0,1)", "extra_op()")], reconfigurations=0,
            final=None,
        )
        self.assertEqual(result.final_states(), {0: FINAL, 1: {**FINAL, "a": "a"}, 2: FINAL})
        # The faulty replica is left out of the agreement check (SPEC §12.2).
        self.assertTrue(result.summary["replicas_agree"])
        self.assertEqual(result.summary["final_state"], FINAL)
        self.assertTrue(result.summary["ok"])

    def test_checkpoint(self) -> None:
        """The next checkpoint's hashes differ; the replica is left out of the quorum."""
        case = make_case(
            "extra_op_checkpoint", {"0,1": "shuttle(0,1), extra_op()"}, extra="checkpt_interval = 3"
        )
        result = run(case)
        self.assertOutcome(
            result, fired=[pair(0, 1, "shuttle(0,1)", "extra_op()")], reconfigurations=1,
            requesters=["replica 0.1"], reason="checkpoint for slot 2",
        )
        self.assertBadQuorumTried(case, 1)

    def test_new_configuration(self) -> None:
        """new_configuration(0), extra_op() changes the initial state of that new replica only."""
        result = run(make_case("extra_op_new_configuration", {
            "0,1": "shuttle(0,1), change_operation()",
            "1,2": "new_configuration(0), extra_op()",
        }))
        self.assertOutcome(
            result,
            fired=[
                pair(0, 1, "shuttle(0,1)", "change_operation()"),
                pair(1, 2, "new_configuration(0)", "extra_op()"),
            ],
            reconfigurations=1, requesters=["replica 0.2"], final=None,
        )
        self.assertEqual(result.final_states(), {0: FINAL, 1: FINAL, 2: {**FINAL, "a": "a"}})


# ---------------------------------------------------------------------------
# Triggers (SPEC §11.1) not exercised above


class TriggerTests(FaultCaseTestCase):
    """Triggers that fire on less common messages."""

    def test_forwarded_request(self) -> None:
        """The head counts the requests non-heads forward to it, per client."""
        result = run(make_case("forwarded", {
            "0,0": "client_request(0,1), drop(); forwarded_request(0,0), drop(); "
                   "forwarded_request(0,1), drop()",
        }))
        self.assertOutcome(
            result,
            fired=[
                pair(0, 0, "client_request(0,1)", "drop()"),
                pair(0, 0, "forwarded_request(0,0)", "drop()"),
                pair(0, 0, "forwarded_request(0,1)", "drop()"),
            ],
            reconfigurations=0,
        )

    def test_checkpoint_at_head(self) -> None:
        """The head counts the checkpoint it starts; its extra_op() is seen at the next checkpoint."""
        case = make_case(
            "checkpoint_head", {"0,0": "checkpoint(0), extra_op()"}, extra="checkpt_interval = 3"
        )
        result = run(case)
        self.assertOutcome(
            result, fired=[pair(0, 0, "checkpoint(0)", "extra_op()")], reconfigurations=1,
            requesters=["replica 0.1"], reason="checkpoint for slot 5",
        )
        self.assertBadQuorumTried(case, 0)

    def test_checkpoint_dropped(self) -> None:
        """A middle replica dropping the first checkpoint stops it: nobody completes slot 2, all complete slot 5."""
        result = run(make_case(
            "checkpoint_drop", {"0,1": "checkpoint(0), drop()"}, extra="checkpt_interval = 3"
        ))
        self.assertOutcome(
            result, fired=[pair(0, 1, "checkpoint(0)", "drop()")], reconfigurations=0
        )
        self.assertEqual(
            sorted(result.checkpoints),
            [("replica 0.0", 5), ("replica 0.1", 5), ("replica 0.2", 5)],
        )

    def test_get_running_state(self) -> None:
        """A replica crashing when asked for its running state makes Olympus ask another member."""
        result = run(make_case("get_running_state", {
            "0,1": "shuttle(0,1), change_operation(); get_running_state(0), crash()",
        }))
        self.assertOutcome(
            result,
            fired=[
                pair(0, 1, "shuttle(0,1)", "change_operation()"),
                pair(0, 1, "get_running_state(0)", "crash()"),
            ],
            reconfigurations=1, requesters=["replica 0.2"],
        )
        self.assertEqual(result.record["quorum"], [1, 2])
        self.assertEqual(result.exit_status(0, 1), 255)
        # It waited one step timeout for the crashed replica.
        self.assertGreaterEqual(result.record["duration_s"], 0.3)

    def test_catch_up(self) -> None:
        """A replica crashing when asked to catch up fails its quorum; Olympus tries others."""
        result = run(make_case("catch_up", {
            "0,1": "shuttle(0,1), change_operation(); catch_up(0), crash()",
        }))
        self.assertOutcome(
            result,
            fired=[
                pair(0, 1, "shuttle(0,1)", "change_operation()"),
                pair(0, 1, "catch_up(0)", "crash()"),
            ],
            reconfigurations=1, requesters=["replica 0.2"],
        )
        self.assertGreaterEqual(result.record["quorums_tried"], 2)
        self.assertNotIn(1, result.record["quorum"])

    def test_new_configuration_not_in_configuration_zero(self) -> None:
        """The set-up of configuration 0 is not a new-configuration message."""
        result = run(make_case("new_configuration_zero", {"0,1": "new_configuration(0), crash()"}))
        self.assertOutcome(result, fired=[], reconfigurations=0)


# ---------------------------------------------------------------------------
# The example cases (shared/etc-examples/README.md)


class ExampleCaseTests(FaultCaseTestCase):
    """The example cases of etc/cases that inject failures."""

    def test_shuttle_change_operation(self) -> None:
        """Replica 3 lies about client 0's 7th request; the tail requests the one reconfiguration."""
        result = run_file("shuttle_change_operation.txt")
        summary = result.summary
        self.assertTrue(summary["ok"], summary["errors"])
        self.assertEqual(
            [c["results"] for c in summary["clients"]],
            [
                ["", "OK", "fail", "hockey", "fail", "OK", "fail", "OK", "OK", "OK"],
                ["OK", "OK", "star wars"],
                ["OK", "OK", "luke"],
            ],
        )
        self.assertEqual(summary["faults_fired"], [pair(0, 3, "shuttle(0,6)", "change_operation()")])
        self.assertEqual(result.requesters(), ["replica 0.4"])

    def test_completed_checkpoint_drop_checkpt_stmts(self) -> None:
        """Replica 1 strips the first completed checkpoint proof; the head requests the one reconfiguration."""
        result = run_file("completed_checkpoint_drop_checkpt_stmts.txt")
        summary = result.summary
        self.assertTrue(summary["ok"], summary["errors"])
        self.assertEqual(
            [c["results"] for c in summary["clients"]],
            [["OK", "OK", "luke", "OK", "OK", "mata", "OK", "OK", "mand"]],
        )
        self.assertEqual(
            summary["faults_fired"],
            [pair(0, 1, "completed_checkpoint(0)", "drop_checkpt_stmts()")],
        )
        self.assertEqual(result.requesters(), ["replica 0.0"])

    def test_catch_up_crash(self) -> None:
        """Two reconfigurations; replica 1 of configuration 1 crashes on catch-up and Olympus tries another quorum."""
        result = run_file("catch_up_crash.txt")
        summary = result.summary
        self.assertTrue(summary["ok"], summary["errors"])
        self.assertEqual(
            [c["results"] for c in summary["clients"]],
            [["OK", "OK", "luke", "OK", "OK", "mata", "OK", "OK", "mand"]],
        )
        self.assertEqual(len(result.reconfigurations), 2)
        first, second = result.reconfigurations
        self.assertEqual(result.requesters(first), ["replica 0.2"])
        self.assertEqual(result.requesters(second), ["replica 1.2"])
        self.assertEqual(
            summary["faults_fired"],
            [
                pair(0, 1, "shuttle(0,0)", "change_operation()"),
                pair(1, 1, "new_configuration(0)", "invalid_order_sig()"),
                pair(1, 1, "catch_up(0)", "crash()"),
            ],
        )
        self.assertGreaterEqual(second["quorums_tried"], 2)
        self.assertNotIn(1, second["quorum"])


# ---------------------------------------------------------------------------
# An outsider replaying everything


@attrs.define
class ReplayRun:
    """A run in which a stranger replayed every frame, and what it saw."""

    run: Run
    #: node -> how many bcr.rejected lines it wrote about the stranger.
    rejected: dict[str, int]
    #: (node, slot) of every bcr.execute event, in order.
    executed: list[tuple[str, int]]
    replayed: int
    #: What reached the stranger's own node.
    received: list[tuple[Peer, object]]


def run_with_replaying_stranger(case: Case) -> ReplayRun:
    """
    Simulate C{case} with an outsider in the network: a node with a valid
    key of its own, admitted nowhere, that sends a copy of every frame
    anybody sends to the same recipient, right after the original.
    """
    clusters: list[SimulatedCluster] = []
    applied: list[tuple[str, str, str]] = []
    checkpoints: list[tuple[str, int]] = []
    rejected: dict[str, int] = {}
    executed: list[tuple[str, int]] = []
    replayed = [0]
    recorder = Outsider()

    def observe(event: dict[str, Any]) -> None:
        name = event.get("event")
        if name == "bcr.fault_applied":
            applied.append((event["node"], event["pair"], event["point"]))
        elif name == "bcr.checkpoint_completed":
            checkpoints.append((event["node"], event["slot"]))
        elif name == "bcr.execute":
            executed.append((event["node"], event["slot"]))
        elif name == "bcr.rejected" and event.get("peer") == STRANGER:
            rejected[event["node"]] = rejected.get(event["node"], 0) + 1

    def prepare(cluster: SimulatedCluster) -> None:
        clusters.append(cluster)
        network = cluster.network
        for node in network.nodes.values():
            node.publisher.addObserver(observe)
        key = seeded_key(cluster.seed, "an outsider")
        network.add_node(STRANGER, [], key.verify_key_bytes).machine = recorder
        transmit = network.transmit

        def transmit_and_replay(sender: str, to: Peer, frame: bytes) -> None:
            transmit(sender, to, frame)
            if sender != STRANGER:
                replayed[0] += 1
                transmit(STRANGER, to, frame)

        network.transmit = transmit_and_replay  # type: ignore[method-assign]

    summary = simulate(case, 0, prepare=prepare)
    run = Run(summary, clusters[0], applied, checkpoints)
    return ReplayRun(run, rejected, executed, replayed[0], recorder.received)


#: The stranger's node address in L{run_with_replaying_stranger}.
STRANGER = "stranger"


class OutsiderTests(FaultCaseTestCase):
    """
    An outsider with a valid key of its own that replays every message it
    sees, to the same recipient (shuttles, result shuttles, checkpoints,
    Olympus's sealed control messages, replicas' sealed reports, results
    to clients), changes nothing: no reconfiguration, no fault fires early,
    the same results and final dictionaries; every copy is dropped.
    """

    def assertIgnored(self, replay: ReplayRun) -> None:
        """The stranger was heard by (and rejected at) every kind of node, and got nothing."""
        self.assertGreater(replay.replayed, 0)
        nodes = set(replay.rejected)
        self.assertIn("olympus", nodes)
        self.assertTrue(any(n.startswith("replica ") for n in nodes), nodes)
        self.assertTrue(any(n.startswith("client") for n in nodes), nodes)
        # The logs stay bounded: a burst of 10 lines per node, and a few
        # more as tokens come back, however many copies arrive.
        duration = replay.run.cluster.network.clock.seconds()
        for node, count in replay.rejected.items():
            self.assertLessEqual(count, 10 * (1 + duration / 10) + 1, node)
        self.assertEqual(replay.received, [])

    def test_failure_free(self) -> None:
        """The failure-free run is exactly that, replays and all."""
        replay = run_with_replaying_stranger(make_case("outsider_replays", {}))
        self.assertOutcome(replay.run, fired=[], reconfigurations=0)
        self.assertIgnored(replay)
        # Every slot executed once per replica.
        self.assertEqual(len(replay.executed), len(set(replay.executed)))
        self.assertEqual(len(replay.executed), 3 * len(RESULTS))

    def test_replays_count_for_no_trigger(self) -> None:
        """
        The middle replica crashes on its third shuttle (shuttle(0,2)), as
        without the stranger: replayed shuttles do not count, so it executes
        slots 0 and 1 first, and the outcome is that of CrashTests.
        """
        replay = run_with_replaying_stranger(
            make_case("outsider_crash_middle", {"0,1": "shuttle(0,2), crash()"})
        )
        result = replay.run
        self.assertOutcome(
            result, fired=[pair(0, 1, "shuttle(0,2)", "crash()")], reconfigurations=1,
            reason="timeout",
        )
        self.assertNotIn("replica 0.1", result.record["requested_by"])
        self.assertEqual(result.exit_status(0, 1), 255)
        self.assertEqual(
            [slot for node, slot in replay.executed if node == "replica 0.1"], [0, 1]
        )
        self.assertIgnored(replay)
