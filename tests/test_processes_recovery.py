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
import socket
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.test_processes import CASES, RUN_DEADLINE_S, WAIT_S, poll, read_events
from twisted_bcr import crypto
from twisted_bcr.admission import write_admission
from twisted_bcr.checking import replay_alone
from twisted_bcr.config import parse_case
from twisted_bcr.launch import (
    ReadyInfo,
    run_case,
    run_case_blocking,
)
from twisted_bcr.supervise import child_environment, twistd_command

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

    async def test_kill_head_scenario(self) -> None:
        """
        The launcher's own kill-the-head scenario (bcr bench --kill-head-after)
        kills the head once clients accepted enough results, the run
        recovers, and the summary times the recovery from Olympus's record
        and the clients' first result of the new configuration.
        """
        from twisted.internet import reactor

        summary = await run_case(
            reactor, self.case_path, self.log_dir, RUN_DEADLINE_S,
            kill_head_after=RESULTS_BEFORE_FAULT,
        )
        self.assert_recovered(summary)
        [record] = summary["reconfigurations"]
        self.assertNotIn(0, record["quorum"])
        timing = summary["reconfiguration_timing"]
        self.assertGreater(timing["kill_to_request_s"], 0)
        self.assertGreater(timing["request_to_first_result_s"], 0)

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

    async def test_more_than_t_killed(self) -> None:
        """
        SIGKILL to t+1 replicas: Olympus finds that more than t seem faulty,
        and a run ended then fails and says so.  The test waits for Olympus
        to find it, not for a clock: start-up takes what it takes.
        """
        from twisted.internet import reactor

        olympus_log = os.path.join(self.log_dir, "recovery-olympus.json")

        async def kill_two(info: ReadyInfo) -> None:
            await poll(lambda: result_messages(info.replica_logs[-1]) >= RESULTS_BEFORE_FAULT)
            for pid in info.replica_pids[:2]:
                os.kill(pid, signal.SIGKILL)
            await poll(
                lambda: any(
                    e.get("event") == "bcr.no_quorum" for e in read_events(olympus_log)
                ),
                RUN_DEADLINE_S,
            )
            info.end_run("Olympus found no quorum")

        summary = await run_case(
            reactor, self.case_path, self.log_dir, RUN_DEADLINE_S, on_ready=kill_two
        )
        self.assertFalse(summary["ok"])
        self.assertEqual(summary["configurations"], 1)
        self.assertTrue(any("seem faulty" in e for e in summary["errors"]), summary["errors"])
        self.assertTrue(
            any("the run was ended (Olympus found no quorum)" in e for e in summary["errors"]),
            summary["errors"],
        )


class _Daemon(ProcessProtocol):
    """A twistd daemon started by a test; notes when it ends."""

    def __init__(self) -> None:
        self.ended: Deferred[int | None] = Deferred()

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None))


class RegisteredPoolTests(TestCase):
    """bcr run against an Olympus daemon and replica daemons started on their own."""

    timeout = 120

    def spawn(self, *arguments: str) -> _Daemon:
        """Start C{twistd -n --pidfile= ARGUMENTS}; SIGKILL it at cleanup if still running."""
        from twisted.internet import reactor

        daemon = _Daemon()
        transport = reactor.spawnProcess(
            daemon, twistd_command()[0], [*twistd_command(), "-n", "--pidfile=", *arguments],
            env=child_environment(), path=self.directory,
        )

        def stop() -> Deferred[int | None]:
            if not daemon.ended.called:
                transport.signalProcess("KILL")
            return daemon.ended

        self.addCleanup(stop)
        return daemon

    async def test_pool(self) -> None:
        """Spares registered before Olympus was up serve the run; retired, they exit 0."""
        from twisted.internet import reactor

        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        case_path = os.path.join(self.directory, "failure_free.txt")
        with open(os.path.join(CASES, "failure_free.txt"), encoding="utf-8") as source:
            with open(case_path, "w", encoding="utf-8") as f:
                f.write(source.read())
        key_file = os.path.join(self.directory, "olympus.key")
        crypto.KeyPair.generate().save(key_file)
        # The operator admits each daemon's identity and the clients' keys
        # (bcr run --olympus uses client-<i>.key next to Olympus's key).
        identities = []
        for n in range(3):
            identity = crypto.KeyPair.generate()
            identity.save(os.path.join(self.directory, f"pool-{n}.identity"))
            identities.append((identity.verify_key_bytes, f"pool-{n}"))
        clients = []
        for index in range(parse_case(case_path).num_client):
            client = crypto.KeyPair.generate()
            client.save(os.path.join(self.directory, f"client-{index}.key"))
            clients.append((index, client.verify_key_bytes, f"client-{index}"))
        admission = os.path.join(self.directory, "admitted")
        write_admission(admission, identities, clients)
        port = _free_port()
        address = f"127.0.0.1:{port}"
        # The replicas start first: they keep registering until Olympus is up.
        replicas = [
            self.spawn(
                "bcr-replica", "--olympus", address, "--olympus-key", key_file + ".pub",
                "--identity-key", os.path.join(self.directory, f"pool-{n}.identity"),
                "--name", f"pool-{n}", "--log-dir", self.directory,
            )
            for n in range(3)
        ]
        olympus = self.spawn(
            "bcr-olympus", "--case", case_path, "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--key-file", key_file, "--admission", admission, "--log-dir", self.directory,
        )
        summary = await run_case(
            reactor, case_path, os.path.join(self.directory, "run"), RUN_DEADLINE_S,
            olympus=address, olympus_key_file=key_file,
        )
        self.assertEqual(summary["errors"], [])
        self.assertEqual(summary["configurations"], 1)
        self.assertEqual(
            summary["clients"][1]["results"], ["OK", "OK", "star wars"]
        )
        for replica in replicas:
            self.assertEqual(await replica.ended.addTimeout(WAIT_S, reactor), 0)
        self.assertFalse(olympus.ended.called)


def _free_port() -> int:
    """A TCP port nobody listens on right now, for a daemon told its port in advance."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: Replica 1 of configuration 0 crashes (crash()) or stalls (sleep()) when
#: the fourth shuttle of client 0 reaches it.
FAULT_CASE = """\
test_case_name = {name}
t = 1
num_client = 1
client_timeout = {timeout}
head_timeout = {timeout}
nonhead_timeout = {timeout}
workload[0] = put('a','1'); append('a','2'); append('a','3'); append('a','4'); \
append('a','5'); get('a')
failures[0,1] = shuttle(0,3), {failure}
"""

EXPECTED = ["OK", "OK", "OK", "OK", "OK", "12345"]


class FaultProcessTests(TestCase):
    """crash() really ends a replica process; sleep() really stalls it."""

    timeout = 120

    def run_fault(self, name: str, failure: str, timeout_ms: int) -> tuple[dict[str, Any], str]:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        case_path = os.path.join(directory, f"{name}.txt")
        with open(case_path, "w", encoding="utf-8") as f:
            f.write(FAULT_CASE.format(name=name, timeout=timeout_ms, failure=failure))
        log_dir = os.path.join(directory, "logs")
        summary = run_case_blocking(case_path, log_dir, RUN_DEADLINE_S)
        self.assertEqual(summary["errors"], [])
        self.assertEqual(summary["clients"][0]["results"], EXPECTED)
        self.assertEqual(
            summary["faults_fired"],
            [{"configuration": 0, "replica": 1, "trigger": "shuttle(0,3)", "failure": failure,
              "byzantine": False}],
        )
        return summary, log_dir

    def test_crash(self) -> None:
        """crash() ends replica 0.1's process with status 255; the chain is reconfigured without it."""
        summary, log_dir = self.run_fault("crashing", "crash()", 500)
        self.assertEqual(summary["configurations"], 2)
        self.assertNotIn(1, summary["reconfigurations"][0]["quorum"])
        ended = [
            e for e in read_events(os.path.join(log_dir, "crashing-launcher.json"))
            if e.get("event") == "bcr.child_ended"
        ]
        # The replica's log is a link to the log of the spare process it was.
        replica_log = os.path.join(log_dir, "crashing-replica-0.1.json")
        [status] = [
            e["status"] for e in ended
            if os.path.exists(os.path.join(log_dir, e["name"] + ".json"))
            and os.path.samefile(os.path.join(log_dir, e["name"] + ".json"), replica_log)
        ]
        self.assertEqual(status, "exit status 255")

    def test_sleep(self) -> None:
        """sleep(600) stalls replica 0.1's whole process for 0.6 s; with long timeouts that only delays."""
        summary, log_dir = self.run_fault("sleeping", "sleep(600)", 5000)
        self.assertEqual(summary["configurations"], 1)
        events = read_events(os.path.join(log_dir, "sleeping-replica-0.1.json"))
        [stall] = [i for i, e in enumerate(events) if e.get("event") == "bcr.stall"]
        self.assertGreaterEqual(events[stall + 1]["log_time"] - events[stall]["log_time"], 0.6)
