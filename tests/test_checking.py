"""
Tests for L{twisted_bcr.checking}: the end-of-run validation of SPEC §12.2
and the summary JSON of DESIGN §4.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from twisted.trial.unittest import SynchronousTestCase

from twisted_bcr import crypto
from twisted_bcr.checking import build_summary, percentile, replay_alone
from twisted_bcr.config import parse_case_text
from twisted_bcr.core.client import ClientOutcome
from twisted_bcr.messages import FaultFired, FinalState, RunReport

CASE = parse_case_text(
    """
t = 1
num_client = 2
workload[0] = put('movie','star'); append('movie',' wars'); get('movie')
workload[1] = put('jedi','luke skywalker'); slice('jedi','0:4'); get('jedi')
""",
    "checking_case.txt",
)

FINAL = {"movie": "star wars", "jedi": "luke"}


def outcome(
    index: int,
    results: Sequence[str],
    slots: Sequence[int],
    latencies_s: Sequence[float] | None = None,
) -> ClientOutcome:
    """Client C{index}'s outcome with the given accepted results and slots."""
    return ClientOutcome(
        index=index,
        operations=list(CASE.workloads[index]),
        results=list(results),
        slots=list(slots),
        latencies_s=list(latencies_s if latencies_s is not None else [0.001] * len(results)),
        finished=len(results) == len(CASE.workloads[index]),
        # Client 0 works from 0.0 to 1.5 s, client 1 from 0.5 to 2.0 s.
        first_sent_at=0.5 * index if results else None,
        last_accepted_at=1.5 + 0.5 * index if results else None,
    )


def report(
    *states: dict[str, str],
    errors: Sequence[str] = (),
    silent: Sequence[int] = (),
    fired: Sequence[FaultFired] = (),
) -> RunReport:
    """
    Olympus's report for configuration 0 with one final state per replica,
    the replicas in C{silent} left out, and the faults C{fired}.
    """
    return RunReport(
        configuration=0,
        final_states=tuple(
            FinalState(0, i, dict(s), 5) for i, s in enumerate(states) if i not in silent
        ),
        reconfigurations_json="[]",
        errors=tuple(errors),
        silent=tuple(silent),
        faults_fired=tuple(fired),
    )


def good_outcomes() -> list[ClientOutcome]:
    """Both clients interleaved over slots 0..5 with correct results."""
    return [
        outcome(0, ["OK", "OK", "star wars"], [0, 2, 4]),
        outcome(1, ["OK", "OK", "luke"], [1, 3, 5]),
    ]


class SummaryTests(SynchronousTestCase):
    """build_summary judges a run and describes it."""

    def summary(self, outcomes=None, run_report=..., errors=(), elapsed_s=2.0):
        """The summary of a run; by default a correct one with three agreeing replicas."""
        if run_report is ...:
            run_report = report(FINAL, FINAL, FINAL)
        summary = build_summary(
            CASE, "simulation", outcomes if outcomes is not None else good_outcomes(),
            run_report, elapsed_s, list(errors),
        )
        # The summary is JSON, as written by `bcr run` and `bcr simulate`.
        self.assertEqual(json.loads(json.dumps(summary)), summary)
        return summary

    def test_passing_run(self) -> None:
        """A correct run is ok, linearizable, with agreeing replicas and the final state."""
        summary = self.summary()
        self.assertEqual(summary["errors"], [])
        self.assertTrue(summary["ok"])
        self.assertTrue(summary["linearizable"])
        self.assertTrue(summary["replicas_agree"])
        self.assertEqual(summary["final_state"], FINAL)
        self.assertEqual(summary["configurations"], 1)
        self.assertEqual(summary["requests"], 6)
        self.assertEqual(summary["workload_s"], 2.0)
        self.assertEqual(summary["throughput_ops_s"], 3.0)
        self.assertEqual((summary["case"], summary["mode"]), ("checking_case", "simulation"))
        self.assertEqual(
            [(c["index"], c["results"], c["valid"]) for c in summary["clients"]],
            [(0, ["OK", "OK", "star wars"], True), (1, ["OK", "OK", "luke"], True)],
        )

    def test_result_contradicting_replay(self) -> None:
        """A result that the slot-order replay contradicts fails the run."""
        outcomes = good_outcomes()
        outcomes[0].results[2] = "star"
        summary = self.summary(outcomes, report(FINAL, FINAL, FINAL))
        self.assertFalse(summary["ok"])
        self.assertFalse(summary["linearizable"])
        self.assertEqual([c["valid"] for c in summary["clients"]], [False, True])
        [error] = summary["errors"]
        self.assertIn("client 0 request 2 at slot 4", error)
        self.assertIn("slot-order replay gives 'star wars'", error)

    def test_other_interleaving(self) -> None:
        """Any slot order is accepted as long as the replay reproduces every result."""
        outcomes = [
            outcome(0, ["OK", "OK", "star wars"], [0, 1, 2]),
            outcome(1, ["OK", "OK", "luke"], [3, 4, 5]),
        ]
        self.assertTrue(self.summary(outcomes)["ok"])

    def test_shared_keys_replayed_in_slot_order(self) -> None:
        """With shared keys, a read is checked against the writes of earlier slots of every client."""
        shared = parse_case_text(
            "t = 1\nnum_client = 2\nworkload[0] = put('k','a')\nworkload[1] = get('k')\n"
        )

        def run(read_slot: int, read: str) -> dict:
            outcomes = [
                ClientOutcome(0, list(shared.workloads[0]), ["OK"], [1 - read_slot], [0.001]),
                ClientOutcome(1, list(shared.workloads[1]), [read], [read_slot], [0.001]),
            ]
            return build_summary(shared, "simulation", outcomes, report({"k": "a"}), 1.0, [])

        self.assertTrue(run(1, "a")["ok"])
        self.assertTrue(run(0, "")["ok"])
        failed = run(0, "a")
        self.assertFalse(failed["ok"])
        self.assertIn("client 1 request 0 at slot 0", failed["errors"][0])
        # Replayed alone, client 1 would read '' and be "invalid"; that is not an error.
        self.assertFalse(run(1, "a")["clients"][1]["isolated_replay_matches"])

    def test_slots_not_increasing(self) -> None:
        """A client whose later request got an earlier slot is reported, without crashing the check."""
        outcomes = [
            outcome(0, ["OK", "OK", "star wars"], [0, 1, 2]),
            outcome(1, ["OK", "OK", "luke"], [3, 5, 4]),
        ]
        summary = self.summary(outcomes)
        self.assertFalse(summary["ok"])
        self.assertTrue(any("client 1: request 2 got slot 4" in e for e in summary["errors"]))
        self.assertEqual([c["valid"] for c in summary["clients"]], [True, False])

    def test_duplicate_slot(self) -> None:
        """Two results accepted for one slot are an error."""
        outcomes = [
            outcome(0, ["OK", "OK", "star wars"], [0, 1, 2]),
            outcome(1, ["OK", "OK", "luke"], [2, 3, 4]),
        ]
        summary = self.summary(outcomes)
        self.assertFalse(summary["ok"])
        self.assertTrue(any("slot 2 accepted by both" in e for e in summary["errors"]))

    def test_replicas_disagree(self) -> None:
        """Replicas reporting different final dictionaries fail the run, and are named."""
        summary = self.summary(run_report=report(FINAL, FINAL, {"a": "a", **FINAL}))
        self.assertFalse(summary["ok"])
        self.assertFalse(summary["replicas_agree"])
        [error] = summary["errors"]
        self.assertIn("replicas [2]", error)

    def test_final_state_differs_from_replay(self) -> None:
        """Agreeing replicas whose dictionary differs from the replay fail the run."""
        other = {"movie": "star wars", "jedi": "luke skywalker"}
        summary = self.summary(run_report=report(other, other, other))
        self.assertFalse(summary["ok"])
        self.assertTrue(summary["replicas_agree"])
        self.assertIn("differs from the slot-order replay", summary["errors"][0])

    def test_missing_report(self) -> None:
        """Without Olympus's report the run fails."""
        summary = self.summary(run_report=None)
        self.assertFalse(summary["ok"])
        self.assertEqual(summary["errors"], ["no run report from Olympus"])
        self.assertIsNone(summary["final_state"])
        self.assertFalse(summary["replicas_agree"])

    def test_report_without_final_states(self) -> None:
        """A report without any final dictionary fails the run."""
        summary = self.summary(run_report=report())
        self.assertEqual(summary["errors"], ["no replica reported a final dictionary"])

    def test_silent_replica(self) -> None:
        """A replica that sent no final state (it crashed) is named, and t+1 answers suffice."""
        summary = self.summary(run_report=report(FINAL, FINAL, FINAL, silent=[2]))
        self.assertEqual(summary["errors"], [])
        self.assertEqual(summary["silent_replicas"], [2])
        self.assertTrue(summary["replicas_agree"])

    def test_too_many_silent(self) -> None:
        """Fewer than t+1 final states cannot vouch for the final dictionary."""
        summary = self.summary(run_report=report(FINAL, FINAL, FINAL, silent=[1, 2]))
        self.assertIn(
            "only 1 non-Byzantine replicas reported a final dictionary (silent: [1, 2]);"
            " t+1 = 2 are needed",
            summary["errors"],
        )

    def test_olympus_errors(self) -> None:
        """Errors Olympus reports become errors of the run."""
        summary = self.summary(run_report=report(FINAL, FINAL, errors=["no final state from replicas [2]"]))
        self.assertEqual(summary["errors"], ["olympus: no final state from replicas [2]"])

    def test_unfinished_client(self) -> None:
        """A client that accepted fewer results than it sent fails the run."""
        outcomes = [outcome(0, ["OK", "OK"], [0, 1]), outcome(1, ["OK", "OK", "luke"], [2, 3, 4])]
        summary = self.summary(outcomes, report({"movie": "star wars", "jedi": "luke"}))
        self.assertFalse(summary["ok"])
        self.assertIn("client 0 accepted 2 of 3 requests", summary["errors"])
        self.assertEqual(summary["clients"][0]["valid"], False)

    def test_missing_client(self) -> None:
        """A client that never reported fails the run."""
        summary = self.summary([outcome(1, ["OK", "OK", "luke"], [0, 1, 2])], report({"jedi": "luke"}))
        self.assertIn("1 of 2 clients reported", summary["errors"])

    def test_binding_errors_kept(self) -> None:
        """Errors passed in by the binding (e.g. a deadline) fail the run."""
        summary = self.summary(errors=["deadline passed"])
        self.assertEqual(summary["errors"], ["deadline passed"])
        self.assertFalse(summary["ok"])

    def test_isolated_replay(self) -> None:
        """Each client's results are also compared with its workload replayed alone."""
        self.assertEqual(replay_alone(CASE.workloads[1]), ["OK", "OK", "luke"])
        summary = self.summary()
        self.assertEqual([c["isolated_replay_matches"] for c in summary["clients"]], [True, True])

    def test_latency_percentiles(self) -> None:
        """Latencies are reported in milliseconds as nearest-rank percentiles."""
        outcomes = [
            outcome(0, ["OK", "OK", "star wars"], [0, 2, 4], [0.001, 0.002, 0.003]),
            outcome(1, ["OK", "OK", "luke"], [1, 3, 5], [0.010, 0.004, 0.005]),
        ]
        latency = self.summary(outcomes)["latency_ms"]
        self.assertEqual(latency, {"p50": 3.0, "p90": 10.0, "p99": 10.0, "max": 10.0})

    def test_no_workload_time(self) -> None:
        """Clients that never sent anything give a workload time and throughput of 0, not a division error."""
        summary = self.summary([outcome(0, [], []), outcome(1, [], [])], elapsed_s=0.0)
        self.assertEqual((summary["workload_s"], summary["throughput_ops_s"]), (0.0, 0.0))


class PercentileTests(SynchronousTestCase):
    """percentile is the nearest-rank percentile."""

    def test_nearest_rank(self) -> None:
        """The p-th percentile is the ceil(p*n)-th smallest value."""
        values = [float(v) for v in range(1, 101)]
        self.assertEqual(percentile(values, 0.50), 50.0)
        self.assertEqual(percentile(values, 0.90), 90.0)
        self.assertEqual(percentile(values, 0.99), 99.0)
        self.assertEqual(percentile(values, 1.0), 100.0)
        self.assertEqual(percentile([1.0, 2.0, 3.0, 4.0], 0.5), 2.0)
        self.assertEqual(percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5), 3.0)
        self.assertEqual(percentile([1.0, 2.0, 3.0], 0.9), 3.0)

    def test_small_fractions(self) -> None:
        """Rank is never below 1."""
        self.assertEqual(percentile([5.0, 6.0], 0.0), 5.0)

    def test_single_and_empty(self) -> None:
        """One value is every percentile; no values give 0."""
        self.assertEqual(percentile([7.0], 0.99), 7.0)
        self.assertEqual(percentile([], 0.5), 0.0)


#: A Byzantine failure fired at replica 0.1.
EXTRA_OP_AT_1 = FaultFired(0, 1, "shuttle(0,1)", "extra_op()", True)


class FaultyReplicaTests(SynchronousTestCase):
    """Replicas that had failures fired are not held to agreement (SPEC §12.2)."""

    def test_faulty_replica_left_out(self) -> None:
        """A replica with a fired fault may differ; the others must agree."""
        summary = build_summary(
            CASE, "simulation", good_outcomes(),
            report(FINAL, {**FINAL, "a": "a"}, FINAL, fired=[EXTRA_OP_AT_1]), 2.0, [],
        )
        self.assertEqual(summary["errors"], [])
        self.assertTrue(summary["replicas_agree"])
        self.assertEqual(summary["final_state"], FINAL)

    def test_omission_faults_still_judged(self) -> None:
        """A replica that only slept, crashed or dropped a message must agree like any other."""
        for failure in ["sleep(100)", "drop()", "crash()"]:
            with self.subTest(failure=failure):
                summary = build_summary(
                    CASE, "simulation", good_outcomes(),
                    report(
                        FINAL, {**FINAL, "a": "a"}, FINAL,
                        fired=[FaultFired(0, 1, "shuttle(0,1)", failure, False)],
                    ),
                    2.0, [],
                )
                self.assertFalse(summary["replicas_agree"])
                self.assertIn(
                    "replicas [1] of configuration 0 disagree with replica 0", summary["errors"]
                )
                self.assertEqual(summary["byzantine_replicas"], [])

    def test_agreement_reported_per_replica(self) -> None:
        """The summary has each replica's final-state hash, the diverging ones and the Byzantine ones."""
        summary = build_summary(
            CASE, "simulation", good_outcomes(),
            report(FINAL, {**FINAL, "a": "a"}, FINAL, fired=[EXTRA_OP_AT_1]), 2.0, [],
        )
        good, bad = crypto.state_hash(FINAL).hex(), crypto.state_hash({**FINAL, "a": "a"}).hex()
        self.assertEqual(summary["final_state_hashes"], {"0": good, "1": bad, "2": good})
        self.assertEqual(summary["diverging_replicas"], [1])
        self.assertEqual(summary["byzantine_replicas"], [1])
        self.assertTrue(summary["replicas_agree"])

    def test_correct_replica_still_judged(self) -> None:
        """A replica without fired faults that differs still fails the run."""
        summary = build_summary(
            CASE, "simulation", good_outcomes(),
            report(FINAL, FINAL, {**FINAL, "a": "a"}, fired=[EXTRA_OP_AT_1]), 2.0, [],
        )
        self.assertFalse(summary["ok"])
        self.assertIn("replicas [2] of configuration 0 disagree with replica 0", summary["errors"])
