"""
Recovery with real processes (DESIGN §5, level 5): a replica daemon really
killed with SIGKILL, or really stopped with SIGSTOP, in the middle of a run;
the chain is reconfigured onto spare daemons and the run passes.

Each test is one short run (a few seconds); the protocol's corner cases are
covered in simulation (tests/test_recovery.py).
"""

from __future__ import annotations

import os
import signal
from typing import Any

from twisted.trial.unittest import TestCase

from tests.test_processes import RUN_DEADLINE_S, poll, read_events
from twisted_bcr.checking import replay_alone
from twisted_bcr.config import parse_case
from twisted_bcr.launch import ReadyInfo, run_case

#: t = 1, two clients on disjoint keys (so each one's results are fixed),
#: short timeouts so that a failure is detected quickly.
RECOVERY_CASE = """\
test_case_name = recovery
t = 1
num_client = 2
client_timeout = 500
head_timeout = 500
nonhead_timeout = 500
checkpt_interval = 10
workload[0] = pseudorandom(233,40)
workload[1] = put('movie','star'); append('movie',' wars'); get('movie'); \
slice('movie','0:4'); append('movie','dust'); get('movie'); put('jedi','luke'); \
append('jedi',' skywalker'); get('jedi'); slice('jedi','5:14'); get('jedi'); \
append('movie','!'); get('movie')
"""

#: How many results the tail must have sent before the fault is injected.
RESULTS_BEFORE_FAULT = 15


def result_messages(log: str) -> int:
    """How many result messages a replica's JSON log shows so far."""
    return sum(1 for e in read_events(log) if e.get("message") == "result_message")


class RecoveryTests(TestCase):
    """A chain of real twistd replicas survives a killed or stopped replica."""

    timeout = 120

    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        self.case_path = os.path.join(directory, "recovery.txt")
        with open(self.case_path, "w", encoding="utf-8") as f:
            f.write(RECOVERY_CASE)
        self.case = parse_case(self.case_path)
        self.log_dir = os.path.abspath(self.mktemp())

    def assert_recovered(self, summary: dict[str, Any]) -> None:
        self.assertEqual(summary["errors"], [])
        self.assertTrue(summary["ok"])
        self.assertEqual(summary["configurations"], 2)
        self.assertTrue(summary["replicas_agree"])
        self.assertEqual(
            [c["results"] for c in summary["clients"]],
            [replay_alone(w) for w in self.case.workloads],
        )

    async def test_head_killed(self) -> None:
        """SIGKILL to the head mid-run: one reconfiguration, the run passes."""
        from twisted.internet import reactor

        async def kill_head(info: ReadyInfo) -> None:
            await poll(lambda: result_messages(info.replica_logs[-1]) >= RESULTS_BEFORE_FAULT)
            os.kill(info.replica_pids[0], signal.SIGKILL)

        summary = await run_case(
            reactor, self.case_path, self.log_dir, RUN_DEADLINE_S, on_ready=kill_head
        )
        self.assert_recovered(summary)
        [record] = summary["reconfigurations"]
        self.assertNotIn(0, record["quorum"])

    async def test_middle_stopped(self) -> None:
        """SIGSTOP to a middle replica past the timeouts, SIGCONT once replaced: the run passes."""
        from twisted.internet import reactor

        olympus_log = os.path.join(self.log_dir, "recovery-olympus.json")

        async def stall_middle(info: ReadyInfo) -> None:
            await poll(lambda: result_messages(info.replica_logs[-1]) >= RESULTS_BEFORE_FAULT)
            os.kill(info.replica_pids[1], signal.SIGSTOP)
            try:
                await poll(
                    lambda: any(
                        e.get("event") == "bcr.reconfigured" for e in read_events(olympus_log)
                    ),
                    RUN_DEADLINE_S / 2,
                )
            finally:
                os.kill(info.replica_pids[1], signal.SIGCONT)

        summary = await run_case(
            reactor, self.case_path, self.log_dir, RUN_DEADLINE_S, on_ready=stall_middle
        )
        self.assert_recovered(summary)
        [record] = summary["reconfigurations"]
        self.assertNotIn(1, record["quorum"])
