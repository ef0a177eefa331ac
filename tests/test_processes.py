"""
End-to-end tests with real processes (DESIGN §5, level 5): C{bcr run} of a
case with Olympus and the replicas as C{twistd} children, hostile bytes sent
to a live replica, and the installed daemons' command lines.

These are slow (a second or two each); keep them few.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import eventsFromJSONLogFile
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.test_cli import bcr_command
from twisted_bcr import codec, crypto
from twisted_bcr.config import parse_case
from twisted_bcr.faults import load_registry
from twisted_bcr.launch import (
    Progress,
    ReadyInfo,
    _write_case_file,
    case_file_text,
    case_stem,
    run_case,
    run_case_blocking,
)
from twisted_bcr.messages import (
    ClientRequest,
    Operation,
    RegisterClient,
    RegisterReplica,
    Request,
    Shuttle,
)
from twisted_bcr.net.handshake import Handshake
from twisted_bcr.net.node import parse_address
from twisted_bcr.supervise import child_environment, peak_memory_kib, twistd_command

CASES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "etc", "cases")
FAILURE_FREE = os.path.join(CASES, "failure_free.txt")

#: Bound on a whole run in these tests (the runs take a few seconds).
RUN_DEADLINE_S = 60.0
#: Bound on any single wait inside a test.
WAIT_S = 15.0


def read_events(path: str) -> list[dict[str, Any]]:
    """The complete events of a JSON log file that may still be written to."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return []
    events = []
    for record in text.split("\x1e"):
        if not record.endswith("\n"):
            continue
        try:
            events.append(json.loads(record))
        except ValueError:
            continue
    return events


def poll(predicate: Callable[[], bool], seconds: float = WAIT_S) -> Deferred[Any]:
    """Fires once C{predicate()} holds; fails with TimeoutError after C{seconds}."""
    from twisted.internet import reactor

    deadline = reactor.seconds() + seconds

    def check() -> None:
        if predicate():
            loop.stop()
        elif reactor.seconds() > deadline:
            raise TimeoutError(f"condition not met within {seconds} s")

    loop = LoopingCall(check)
    return loop.start(0.05, now=True)


class _Sender(Protocol):
    """
    An outsider with a fresh key pair of its own: it completes the
    connection handshake (unless told not to), then writes some bytes,
    optionally closes, and notes when the connection ends.
    """

    def __init__(
        self, data: bytes, close: bool, handshake: bool = True,
        key: crypto.KeyPair | None = None,
    ) -> None:
        self.data = data
        self.close = close
        self.key = key or crypto.KeyPair.generate()
        self.handshake = (
            Handshake(self.key, initiator=True, nonce=os.urandom(32)) if handshake else None
        )
        self.buffer = b""
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        if self.handshake is None:
            self.attack()
        else:
            self.frame(self.handshake.hello_frame)

    def frame(self, body: bytes) -> None:
        self.transport.write(struct.pack(">I", len(body)) + body)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while self.handshake is not None and self.handshake.peer_key is None:
            if len(self.buffer) < 4:
                return
            (length,) = struct.unpack(">I", self.buffer[:4])
            if len(self.buffer) < 4 + length:
                return
            body, self.buffer = self.buffer[4 : 4 + length], self.buffer[4 + length :]
            answer = self.handshake.receive(body)
            if answer is not None:
                self.frame(answer)
            if self.handshake.peer_key is not None:
                self.attack()

    def attack(self) -> None:
        self.transport.write(self.data)  # type: ignore[union-attr]
        if self.close:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.ended.callback(None)


def spawned_pids(log_dir: str, stem: str = "failure_free") -> list[int]:
    """The pids of every child the launcher started, from its JSON log."""
    path = os.path.join(log_dir, f"{stem}-launcher.json")
    with open(path, encoding="utf-8") as f:
        return [e["pid"] for e in eventsFromJSONLogFile(f) if e.get("event") == "bcr.spawn"]


class RunCaseTests(TestCase):
    """C{bcr run} of real cases."""

    timeout = 120

    def assert_no_process_left(self, log_dir: str, stem: str = "failure_free") -> None:
        pids = spawned_pids(log_dir, stem)
        self.assertGreaterEqual(len(pids), 4)
        for pid in pids:
            with self.assertRaises(ProcessLookupError, msg=f"pid {pid} still exists"):
                os.kill(pid, 0)

    def assert_failure_free_results(self, summary: dict[str, Any]) -> None:
        self.assertEqual(summary["errors"], [])
        self.assertTrue(summary["ok"])
        self.assertEqual(summary["mode"], "processes")
        self.assertEqual(
            [client["results"] for client in summary["clients"]],
            [
                ["", "OK", "fail", "hockey", "fail", "OK", "fail", "OK", "OK", "OK"],
                ["OK", "OK", "star wars"],
                ["OK", "OK", "luke"],
            ],
        )
        self.assertEqual(summary["configurations"], 1)
        self.assertTrue(summary["replicas_agree"])
        self.assertTrue(summary["linearizable"])

    def test_failure_free(self) -> None:
        """
        C{bcr run} of the failure-free case (in its own interpreter, as the
        script does it) passes, the tail logs every result it sends, and no
        process is left behind.
        """
        log_dir = os.path.abspath(self.mktemp())
        summary = run_case_blocking(FAILURE_FREE, log_dir, RUN_DEADLINE_S)
        self.assert_failure_free_results(summary)
        with open(os.path.join(log_dir, "summary.json"), encoding="utf-8") as f:
            self.assertEqual(json.load(f), summary)
        with open(os.path.join(log_dir, "failure_free-replica-0.2.log"), encoding="utf-8") as f:
            self.assertEqual(f.read().count("result_message"), summary["requests"])
        for position in range(3):
            self.assertTrue(
                os.path.exists(os.path.join(log_dir, f"failure_free-replica-0.{position}.json"))
            )
        # CPU as the kernel counted it, per process: every daemon (forked
        # by the fork server, which reports it), the fork server itself,
        # the launcher and the caller.
        cpu = summary["cpu_s"]
        self.assertEqual(
            set(cpu["daemons"]),
            {"failure_free-olympus", "forkserver"}
            | {f"failure_free-spare-{n}" for n in range(6)},
        )
        self.assertTrue(all(seconds > 0 for seconds in cpu["daemons"].values()), cpu)
        self.assertAlmostEqual(
            cpu["total"], cpu["launcher"] + sum(cpu["daemons"].values()) + cpu["caller"],
            places=3,
        )
        self.assertAlmostEqual(
            summary["cpu_ms_per_request"], cpu["total"] * 1000 / summary["requests"], places=2
        )
        self.assert_no_process_left(log_dir)

    def test_checkpoints(self) -> None:
        """
        C{bcr run} of checkpoint.txt: the expected results, and every replica
        process completed the checkpoints of slots 2 and 5, truncating its
        history each time.
        """
        log_dir = os.path.abspath(self.mktemp())
        summary = run_case_blocking(os.path.join(CASES, "checkpoint.txt"), log_dir, RUN_DEADLINE_S)
        self.assertEqual(summary["errors"], [])
        self.assertEqual(
            summary["clients"][0]["results"],
            ["OK", "star", "OK", "OK", "luke", "OK", "luke warm"],
        )
        self.assertEqual(summary["final_state"], {"movie": "star wars", "jedi": "luke warm"})
        for position in range(3):
            path = os.path.join(log_dir, f"checkpoint-replica-0.{position}.json")
            completed = [
                (e["slot"], e["dropped"]) for e in read_events(path)
                if e.get("event") == "bcr.checkpoint_completed"
            ]
            self.assertEqual(completed, [(2, 3), (5, 3)])

    def test_trailing_reconfiguration(self) -> None:
        """
        C{bcr run} of trailing_checkpoint.txt: the reconfiguration that the
        slot-2 checkpoint asks for, whether it begins before or after the
        driver says finish, completes before the run ends, and it passes.
        """
        log_dir = os.path.abspath(self.mktemp())
        summary = run_case_blocking(
            os.path.join(CASES, "trailing_checkpoint.txt"), log_dir, RUN_DEADLINE_S
        )
        self.assertEqual(summary["errors"], [])
        self.assertTrue(summary["ok"])
        self.assertEqual(summary["configurations"], 2)
        [record] = summary["reconfigurations"]
        self.assertIn("checkpoint for slot 2", record["reason"])
        self.assertEqual(summary["final_state"], {"b": "2", "c": "3", "d": "4", "e": "5"})
        self.assert_no_process_left(log_dir, "trailing_checkpoint")

    async def test_hostile_input(self) -> None:
        """
        An outsider with a valid key of its own that sends a live replica
        garbage, an oversized length prefix, a truncated frame or a client
        request (signed with its own key) is rejected with a reason each
        time; so is a connection that skips the handshake; and the run
        still passes.
        """
        from twisted.internet import reactor

        log_dir = self.mktemp()
        seen: dict[str, Any] = {}

        async def attack(info: ReadyInfo) -> None:
            target, target_log = info.replicas[1], info.replica_logs[1]
            seen["log"] = target_log
            host, port = parse_address(target)
            forged = ClientRequest(
                crypto.sign(
                    crypto.KeyPair.generate(),
                    Request(client=0, seq=999, operation=Operation("put", ("x", "y"))),
                )
            )
            forged_frame = codec.encode(forged)
            inputs = {
                "garbage": (struct.pack(">I", 6) + b"\xffjunk!", True, True),
                # Beyond an outsider's 4 KiB, far below the chain's limit.
                "oversized": (struct.pack(">I", 64 * 1024) + b"x" * 16, False, True),
                "truncated": (struct.pack(">I", 100) + b"abc", True, True),
                "forged": (struct.pack(">I", len(forged_frame)) + forged_frame, True, True),
                "no handshake": (struct.pack(">I", 6) + b"\xffjunk!", True, False),
            }
            peers = {}
            for name, (data, close, handshake) in inputs.items():
                sender = _Sender(data, close, handshake)
                await connectProtocol(TCP4ClientEndpoint(reactor, host, port), sender)
                local = cast(IPv4Address, sender.transport.getHost())  # type: ignore[union-attr]
                peers[name] = f"{local.host}:{local.port}"
                # The replica aborts the oversized one itself.
                await sender.ended.addTimeout(WAIT_S, reactor)
            seen["peers"] = peers

            def all_rejected() -> bool:
                rejected = {
                    e.get("peer") for e in read_events(target_log)
                    if e.get("event") in ("bcr.rejected", "bcr.handshake_failed")
                }
                return set(peers.values()) <= rejected

            await poll(all_rejected)

        summary = await run_case(
            reactor, FAILURE_FREE, log_dir, RUN_DEADLINE_S, on_ready=attack
        )
        self.assert_failure_free_results(summary)
        rejections = {
            e["peer"]: e["reason"]
            for e in read_events(seen["log"])
            if e.get("event") in ("bcr.rejected", "bcr.handshake_failed")
        }
        peers = seen["peers"]
        self.assertIn("tag", rejections[peers["garbage"]])
        self.assertIn("oversized", rejections[peers["oversized"]])
        self.assertIn("truncated", rejections[peers["truncated"]])
        self.assertIn(
            "client_request from a peer that is not the client", rejections[peers["forged"]]
        )
        self.assertIn("not a handshake frame", rejections[peers["no handshake"]])
        # Nothing an outsider said was taken as evidence against the chain.
        self.assertEqual(summary["configurations"], 1)
        self.assert_no_process_left(log_dir)


    async def test_outsider(self) -> None:
        """
        An outsider with valid keys of its own, against a live run: its spare
        and client registrations are refused, its shuttle to a middle
        replica changes nothing, and connections claiming 4 MiB frames
        before their handshake cost Olympus no memory.  The run passes with
        one configuration, on the launcher's processes only.
        """
        from twisted.internet import reactor

        log_dir = self.mktemp()
        seen: dict[str, Any] = {}

        async def connect_and_send(address: str, data: bytes, **kwargs: Any) -> None:
            host, port = parse_address(address)
            sender = _Sender(data, True, **kwargs)
            await connectProtocol(TCP4ClientEndpoint(reactor, host, port), sender)
            await sender.ended.addTimeout(WAIT_S, reactor)

        def framed(message: object) -> bytes:
            body = codec.encode(message)
            return struct.pack(">I", len(body)) + body

        async def attack(info: ReadyInfo) -> None:
            olympus_key = crypto.read_verify_key(os.path.join(info.log_dir, "olympus.key.pub"))
            seen["olympus_kib_before"] = peak_memory_kib(info.olympus_pid)
            # A would-be client 0 and 50 would-be spares, each with its own key.
            key = crypto.KeyPair.generate()
            client = crypto.seal(
                key, "127.0.0.1:40999", "client 0",
                RegisterClient(0, "127.0.0.1:40999", key.verify_key_bytes),
                recipient=olympus_key, epoch=b"",
            )
            await connect_and_send(info.olympus, framed(client), key=key)
            for n in range(50):
                key = crypto.KeyPair.generate()
                registration = crypto.seal(
                    key, f"127.0.0.1:{40000 + n}", "spare",
                    RegisterReplica(f"127.0.0.1:{40000 + n}", key.verify_key_bytes,
                                    key.verify_key_bytes),
                    recipient=olympus_key, epoch=b"",
                )
                await connect_and_send(info.olympus, framed(registration), key=key)
            # A shuttle for the middle replica, signed by nobody it knows.
            request = crypto.sign(key, Request(0, 99, Operation("put", ("x", "y"))))
            await connect_and_send(info.replicas[1], framed(Shuttle(0, 0, request, (), ())))
            # Frames claimed to be 4 MiB, before any handshake.
            for _ in range(40):
                await connect_and_send(
                    info.olympus, struct.pack(">I", 4 * 1024 * 1024 - 1) + b"x" * 65536,
                    handshake=False,
                )
            seen["olympus_kib_after"] = peak_memory_kib(info.olympus_pid)
            seen["olympus_log"] = os.path.join(info.log_dir, "failure_free-olympus.json")

        summary = await run_case(
            reactor, FAILURE_FREE, log_dir, RUN_DEADLINE_S, on_ready=attack
        )
        self.assert_failure_free_results(summary)
        self.assertEqual(summary["configurations"], 1)
        events = read_events(seen["olympus_log"])
        spares = [e for e in events if e.get("event") == "bcr.spare"]
        # Only the launcher's own processes: the chain and its spares.
        case = parse_case(FAILURE_FREE)
        self.assertEqual(len(spares), 2 * case.num_replicas)
        reasons = [e["reason"] for e in events if e.get("event") == "bcr.rejected"]
        self.assertTrue(any("which is not admitted" in r for r in reasons), reasons)
        self.assertTrue(any("client 0 registration" in r for r in reasons), reasons)
        # Strangers share one allowance of log lines, however many keys or
        # connections they make.
        self.assertLessEqual(sum("not admitted" in r for r in reasons), 10, reasons)
        self.assertLessEqual(sum(r == "oversized frame" for r in reasons), 10, reasons)
        # 40 x 4 MiB claimed; not even one of them was buffered.
        growth = seen["olympus_kib_after"] - seen["olympus_kib_before"]
        self.assertLess(growth, 4 * 1024, seen)
        self.assert_no_process_left(log_dir)


class CaseFileTests(SynchronousTestCase):
    """The launcher's copy of a case, which Olympus reads."""

    def test_round_trip(self) -> None:
        """Every shipped case reads back from its copy as the same case."""
        directory = self.mktemp()
        os.makedirs(directory)
        names = sorted(n for n in os.listdir(CASES) if n.endswith(".txt"))
        self.assertIn("failure_free.txt", names)
        for name in names:
            case = parse_case(os.path.join(CASES, name))
            copy = os.path.join(directory, name.replace(".txt", ".case.txt"))
            _write_case_file(case, copy, load_registry())
            self.assertEqual(case_stem(parse_case(copy)), case_stem(case))
            with open(copy, encoding="utf-8") as f:
                self.assertEqual(f.read(), case_file_text(case))


class DaemonCommandLineTests(TestCase):
    """The installed twistd subcommands' options."""

    timeout = 60

    async def twistd(self, *arguments: str) -> tuple[str, int]:
        from twisted.internet import reactor

        command = twistd_command()
        directory = self.mktemp()
        os.makedirs(directory)
        d = getProcessOutputAndValue(
            command[0], command[1:] + list(arguments), env=child_environment(),
            path=directory,
        )
        out, err, status = await d.addTimeout(WAIT_S, reactor)
        return (out + err).decode("utf-8", "replace"), status

    async def test_replica_help(self) -> None:
        """C{twistd bcr-replica --help} lists every option."""
        output, status = await self.twistd("bcr-replica", "--help")
        self.assertEqual(status, 0)
        for option in [
            "--olympus=", "--olympus-key=", "--listen=", "--advertise=", "--name=",
            "--port-file=", "--log-dir=", "--max-frame=", "--enable-fault-injection",
        ]:
            self.assertIn(option, output)

    async def test_olympus_help(self) -> None:
        """C{twistd bcr-olympus --help} lists every option."""
        output, status = await self.twistd("bcr-olympus", "--help")
        self.assertEqual(status, 0)
        for option in [
            "--case=", "--name=", "--listen=", "--advertise=", "--key-file=",
            "--port-file=", "--log-dir=", "--max-frame=",
        ]:
            self.assertIn(option, output)

    async def test_bad_options(self) -> None:
        """A bad option or case file ends with one error line and status 1."""
        for arguments, expected in [
            (("bcr-replica", "--olympus", "nowhere", "--olympus-key", "00" * 32), "--olympus"),
            (("bcr-olympus", "--case", "/nonexistent"), "cannot read case file"),
            (("bcr-replica", "--bogus"), "option --bogus not recognized"),
        ]:
            output, status = await self.twistd("-n", "--pidfile=", *arguments)
            self.assertEqual(status, 1, output)
            [line] = output.strip().splitlines()
            self.assertTrue(line.startswith(f"twistd {arguments[0]}: "), line)
            self.assertIn(expected, line)


class _Collector(ProcessProtocol):
    """Collects a process's output and fires C{ended} with its exit status."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[Any] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


def running_processes_naming(text: str) -> list[str]:
    """Command lines of this machine's processes that mention C{text}."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in command:
            found.append(command)
    return found


class InterruptTests(TestCase):
    """SIGTERM to bcr ends the whole tree of processes and still prints the verdict."""

    timeout = 120

    async def test_sigterm_ends_the_tree(self) -> None:
        """
        bcr forwards SIGTERM to its launcher, which kills every daemon and
        writes the summary; bcr prints the verdict and exits 130, and no
        process of the run is left.
        """
        from twisted.internet import reactor

        log_dir = os.path.abspath(self.mktemp())
        collector = _Collector()
        command = bcr_command() + [
            "run", os.path.join(CASES, "perform900.txt"), "--log-dir", log_dir, "--quiet",
        ]
        process = reactor.spawnProcess(
            collector, command[0], command, env=child_environment()
        )
        # Wait for the run to be under way: the last spare is listening.
        await poll(lambda: os.path.exists(os.path.join(log_dir, "perform900-spare-4.port")),
                   RUN_DEADLINE_S)
        process.signalProcess("TERM")
        status = await collector.ended.addTimeout(RUN_DEADLINE_S, reactor)
        output = collector.output.decode("utf-8", "replace")
        self.assertEqual(status, 130, output)
        self.assertIn("FAIL: perform900 (processes)", output)
        self.assertNotIn("Traceback", output)
        with open(os.path.join(log_dir, "summary.json"), encoding="utf-8") as f:
            summary = json.load(f)
        self.assertIn("interrupted: the launcher is shutting down", summary["errors"])
        self.assertEqual(running_processes_naming(log_dir), [])


#: Two of configuration 0's three replicas crash on the client's second
#: request: no quorum is left, so the workload can never finish.
NEVER_FINISHES = """\
test_case_name = never_finishes
t = 1
num_client = 1
client_timeout = 1000
head_timeout = 1000
nonhead_timeout = 1000
workload[0] = put('a','b'); get('a'); put('c','d'); get('c')
failures[0,0] = client_request(0,1), crash()
failures[0,1] = client_request(0,1), crash()
"""

#: What may follow the deadline: reaping children already sent SIGKILL,
#: and writing the summary (the deadline counts from bcr's start).
AFTER_DEADLINE_S = 2.0


class DeadlineTests(TestCase):
    """C{bcr run --deadline S} bounds the whole run, every phase included."""

    timeout = 120

    async def test_deadline_bounds_the_whole_run(self) -> None:
        """
        A run that cannot finish ends, all its processes stopped, within
        its deadline: the workload ends early enough for the report and
        the stop to fit.
        """
        from twisted.internet import reactor

        case = os.path.abspath(self.mktemp() + ".txt")
        with open(case, "w", encoding="utf-8") as f:
            f.write(NEVER_FINISHES)
        log_dir = os.path.abspath(self.mktemp())
        deadline = 12.0
        collector = _Collector()
        command = bcr_command() + [
            "run", case, "--log-dir", log_dir, "--deadline", str(deadline), "--quiet",
        ]
        reactor.spawnProcess(collector, command[0], command, env=child_environment())
        status = await collector.ended.addTimeout(RUN_DEADLINE_S, reactor)
        output = collector.output.decode("utf-8", "replace")
        self.assertEqual(status, 1, output)
        self.assertNotIn("Traceback", output)
        with open(os.path.join(log_dir, "summary.json"), encoding="utf-8") as f:
            summary = json.load(f)
        self.assertEqual(summary["deadline_s"], deadline)
        self.assertTrue(
            any("deadline passed while waiting for" in e for e in summary["errors"]),
            summary["errors"],
        )
        self.assertLessEqual(summary["run_s"], deadline + AFTER_DEADLINE_S)
        self.assertEqual(running_processes_naming(log_dir), [])


class ProgressTests(SynchronousTestCase):
    """The launcher reports how far a run is while it runs, for bcr's live line."""

    def test_progress_reports(self) -> None:
        """Reports come in order, never go back, and the last says every result is in."""
        reports: list[Progress] = []
        summary = run_case_blocking(
            FAILURE_FREE, log_dir=self.mktemp(), deadline_s=RUN_DEADLINE_S,
            on_progress=reports.append,
        )
        self.assertTrue(summary["ok"], summary["errors"])
        self.assertTrue(reports)
        self.assertEqual({r.requests for r in reports}, {16})
        done = [r.results for r in reports]
        self.assertEqual(done, sorted(done))
        self.assertEqual(reports[-1].results, 16)
        self.assertEqual(reports[-1].configuration, 0)

    def test_progress_line_round_trip(self) -> None:
        """A line reads back as the report it came from; anything else is no report."""
        report = Progress(results=3, requests=9, configuration=1, elapsed_s=0.5)
        self.assertEqual(Progress.from_line(report.as_line().encode() + b"\n"), report)
        self.assertIsNone(Progress.from_line(b"Traceback (most recent call last):\n"))
        self.assertIsNone(Progress.from_line(b'{"results": 1}\n'))
