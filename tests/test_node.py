"""
Tests for L{twisted_bcr.net.node}: one machine bound to real TCP.

Timers, process control and failure paths that need no socket run on a
L{Clock} and a L{MemoryReactorClock}; delivery, ordering, reconnection and
log files run over real loopback TCP with bounded waits.
"""

from __future__ import annotations

import gc
import os
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ReactorNotRunning
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, eventsFromJSONLogFile
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from twisted_bcr import crypto
from twisted_bcr.core.common import MAX_STRANGER_MESSAGE
from twisted_bcr.interfaces import IMachine
from twisted_bcr.messages import ErrorMessage
from twisted_bcr.net.framing import DEFAULT_MAX_FRAME
from twisted_bcr.net.handshake import Handshake
from twisted_bcr.net.node import HANDSHAKE_TIMEOUT_S, TcpNode, canonical_address, parse_address
from twisted_bcr.peers import Peer

#: Bound on every real-network wait in these tests.
TIMEOUT_S = 10.0


def message(seq: int) -> ErrorMessage:
    """A small wire message numbered C{seq}."""
    return ErrorMessage(configuration=0, client=1, seq=seq, reason="test")


@implementer(IMachine)
class RecordingMachine:
    """Records what its node delivers; can be told to fail."""

    def __init__(
        self, fail_on: Callable[[object], bool] = lambda m: False, limit: int = DEFAULT_MAX_FRAME
    ) -> None:
        self.limit = limit
        self.received: list[tuple[Peer, Any]] = []
        self.timers: list[str] = []
        self.started = False
        self._fail_on = fail_on
        self._waiting: list[tuple[int, Deferred[None]]] = []

    def start(self) -> None:
        self.started = True

    def max_message_from(self, key: bytes) -> int:
        return self.limit

    def receive(self, sender: Peer, message: object) -> None:
        if self._fail_on(message):
            raise RuntimeError(f"machine bug on {message!r}")
        self.received.append((sender, message))
        for entry in list(self._waiting):
            if len(self.received) >= entry[0]:
                self._waiting.remove(entry)
                entry[1].callback(None)

    def timer_expired(self, key: str) -> None:
        if key == "bad":
            raise RuntimeError("timer bug")
        self.timers.append(key)

    def wait_for(self, count: int) -> Deferred[None]:
        """Fires once C{count} messages have arrived."""
        d: Deferred[None] = Deferred()
        if len(self.received) >= count:
            d.callback(None)
        else:
            self._waiting.append((count, d))
        return d


@implementer(ILogObserver)
class EventWaiter:
    """A log observer that can wait for an event with a given C{event} key."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._waiting: list[tuple[str, Deferred[dict[str, Any]]]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        for entry in list(self._waiting):
            if event.get("event") == entry[0]:
                self._waiting.remove(entry)
                entry[1].callback(event)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    def wait_for(self, name: str) -> Deferred[dict[str, Any]]:
        d: Deferred[dict[str, Any]] = Deferred()
        found = self.named(name)
        if found:
            d.callback(found[0])
        else:
            self._waiting.append((name, d))
        return d


def key_of(name: str) -> crypto.KeyPair:
    """A fixed key per test node name."""
    return crypto.KeyPair.from_seed(codec_seed(name))


def codec_seed(name: str) -> bytes:
    import hashlib

    return hashlib.sha256(f"test_node/{name}".encode()).digest()


def peer(node: TcpNode) -> Peer:
    """How others address C{node}: where it listens and the key it proves."""
    return Peer(node.address, node._key.verify_key_bytes)


def somewhere(address: str) -> Peer:
    """A peer at C{address} with some key."""
    return Peer(address, key_of(address).verify_key_bytes)


class ParseAddressTests(SynchronousTestCase):
    """L{parse_address} reads the node addresses the core uses."""

    def test_ipv4(self) -> None:
        """C{host:port} splits into a host and an integer port."""
        self.assertEqual(parse_address("127.0.0.1:7000"), ("127.0.0.1", 7000))

    def test_ipv6(self) -> None:
        """Brackets around an IPv6 host are removed."""
        self.assertEqual(parse_address("[::1]:7000"), ("::1", 7000))

    def test_bad(self) -> None:
        """Anything else is a ValueError."""
        for text in [
            "", "host", ":7000", "host:", "host:x", "host:0", "host:70000", "host:\u0661",
            "::1:7000", "[127.0.0.1]:7000", "[host]:7000", "a..b:7000", "a b:7000",
            "a/b:7000", "-a:7000", "x" * 254 + ":7000",
        ]:
            self.assertRaises(ValueError, parse_address, text)

    def test_canonical(self) -> None:
        """Spellings of one endpoint become one: compressed IPs, lower-case names, plain ports."""
        for text, canonical in [
            ("127.0.0.1:7000", "127.0.0.1:7000"),
            ("127.0.0.1:007000", "127.0.0.1:7000"),
            ("[0:0:0::1]:7000", "[::1]:7000"),
            ("Host.Example.:7000", "host.example:7000"),
        ]:
            self.assertEqual(canonical_address(text), canonical)


class OfflineNodeTests(SynchronousTestCase):
    """Timers, process control and failures that need no real network."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.clock = Clock()
        self.events = EventWaiter()
        self.exits: list[int] = []
        self.sleeps: list[float] = []
        self.stops: list[None] = []
        self.node = TcpNode(
            self.reactor,
            "test",
            key=key_of("test"),
            clock=self.clock,
            observers=[self.events],
            exit_process=self.exits.append,
            sleep=self.sleeps.append,
            stop_reactor=lambda: self.stops.append(None),
        )
        self.machine = RecordingMachine()
        self.node.attach(self.machine)

    def test_timer_fires(self) -> None:
        """A timer calls C{timer_expired} with its key once its time has come."""
        self.node.start_timer("t", 2.0)
        self.clock.advance(1.9)
        self.assertEqual(self.machine.timers, [])
        self.clock.advance(0.1)
        self.assertEqual(self.machine.timers, ["t"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timer_replaced(self) -> None:
        """Starting a timer under a running key replaces the old one."""
        self.node.start_timer("t", 1.0)
        self.clock.advance(0.5)
        self.node.start_timer("t", 1.0)
        self.clock.advance(0.9)
        self.assertEqual(self.machine.timers, [])
        self.clock.advance(0.1)
        self.assertEqual(self.machine.timers, ["t"])

    def test_timer_cancelled(self) -> None:
        """A cancelled timer never fires; cancelling an unknown key is harmless."""
        self.node.start_timer("t", 1.0)
        self.node.cancel_timer("t")
        self.node.cancel_timer("never started")
        self.clock.advance(5)
        self.assertEqual(self.machine.timers, [])

    def test_timer_failure_logged(self) -> None:
        """A machine raising from a timer is logged and counted, not propagated."""
        self.node.start_timer("bad", 1.0)
        self.clock.advance(1.0)
        self.assertEqual(self.node.machine_errors, 1)
        self.assertEqual(len(self.events.named("bcr.machine_error")), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 0)

    def test_now(self) -> None:
        """C{now} is the injected clock's time."""
        self.clock.advance(12.5)
        self.assertEqual(self.node.now(), 12.5)

    def test_crash(self) -> None:
        """A non-zero exit ends the process at once with that status."""
        self.node.exit(255, "crash() fault")
        self.assertEqual(self.exits, [255])
        self.assertEqual(self.stops, [])
        self.assertEqual(self.events.named("bcr.exit")[0]["status"], 255)

    def test_graceful_exit_without_peers(self) -> None:
        """Exit 0 with no outbound connection stops the reactor right away."""
        self.node.exit(0, "retired")
        self.assertEqual(self.stops, [None])
        self.assertEqual(self.exits, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_graceful_exit_while_reactor_stopping(self) -> None:
        """Exit 0 while the reactor is already stopping (a SIGTERM at the same time) is not an error."""

        def already_stopping() -> None:
            raise ReactorNotRunning("Can't stop reactor that isn't running.")

        node = TcpNode(
            self.reactor, "stopping", key=key_of("stopping"), clock=self.clock,
            stop_reactor=already_stopping,
        )
        node.attach(RecordingMachine())
        node.exit(0, "retired")
        # An error left in a Deferred is only logged once it is collected.
        del node
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(ReactorNotRunning), [])

    def test_stall(self) -> None:
        """A stall really sleeps, for the time asked."""
        self.node.stall(0.3)
        self.assertEqual(self.sleeps, [0.3])

    def test_send_to_bad_address(self) -> None:
        """Sending to something that is not an address is logged, not raised."""
        self.node.send(somewhere("not an address"), message(0))
        [failed] = self.events.named("bcr.send_failed")
        self.assertEqual(failed["peer"], "not an address")
        self.assertEqual(self.reactor.tcpClients, [])

    def test_one_connection_per_destination(self) -> None:
        """Messages to one address share one connection attempt."""
        for seq in range(3):
            self.node.send(somewhere("127.0.0.1:7000"), message(seq))
        self.node.send(somewhere("127.0.0.1:7001"), message(9))
        self.assertEqual(
            [(host, port) for host, port, *_ in self.reactor.tcpClients],
            [("127.0.0.1", 7000), ("127.0.0.1", 7001)],
        )

    def test_queue_bounded(self) -> None:
        """Past the queue bound, new messages to a connecting peer are dropped and logged."""
        node = TcpNode(
            self.reactor, "small", key=key_of("small"), clock=self.clock,
            observers=[self.events], max_queue=2,
        )
        for seq in range(3):
            node.send(somewhere("127.0.0.1:7000"), message(seq))
        [failed] = self.events.named("bcr.send_failed")
        self.assertEqual(failed["dropped"], 1)

    def test_outbound_connections_bounded(self) -> None:
        """Past the bound on outbound connections, with none idle to close, a send fails and is logged."""
        node = TcpNode(
            self.reactor, "few", key=key_of("few"), clock=self.clock,
            observers=[self.events], max_outbound=2,
        )
        for port in (7000, 7001, 7002):
            node.send(somewhere(f"127.0.0.1:{port}"), message(0))
        self.assertEqual(len(self.reactor.tcpClients), 2)
        [failed] = self.events.named("bcr.send_failed")
        self.assertIn("2 outbound connections", failed["reason"])

    def test_send_after_close(self) -> None:
        """A closed node drops what it is asked to send, with a log line."""
        self.successResultOf(ensureDeferred(self.node.close()))
        self.node.send(somewhere("127.0.0.1:7000"), message(0))
        self.assertEqual(len(self.events.named("bcr.send_failed")), 1)
        self.assertEqual(self.reactor.tcpClients, [])


class LoopbackNodeTests(TestCase):
    """Nodes talking over real loopback TCP."""

    timeout = 30

    async def make_node(
        self,
        name: str,
        machine: RecordingMachine | None = None,
        listen: str = "tcp:0:interface=127.0.0.1",
        **kwargs: Any,
    ) -> tuple[TcpNode, RecordingMachine, EventWaiter]:
        """A started node with a recording machine, closed at cleanup."""
        from twisted.internet import reactor

        events = EventWaiter()
        kwargs.setdefault("key", key_of(name))
        node = TcpNode(reactor, name, listen=listen, observers=[events], **kwargs)
        machine = machine or RecordingMachine()
        node.attach(machine)
        await node.start()
        self.addCleanup(lambda: ensureDeferred(node.close()))
        return node, machine, events

    def bounded(self, d: Deferred[Any]) -> Deferred[Any]:
        from twisted.internet import reactor

        return d.addTimeout(TIMEOUT_S, reactor)

    async def test_fifo_delivery(self) -> None:
        """Many messages from one node to another arrive once each, in order."""
        sender, _, _ = await self.make_node("a")
        receiver, machine, _ = await self.make_node("b")
        for seq in range(500):
            sender.send(peer(receiver), message(seq))
        await self.bounded(machine.wait_for(500))
        self.assertEqual([m.seq for _, m in machine.received], list(range(500)))
        # Each came with the key the sender proved it holds.
        self.assertEqual(
            {sent_by.key for sent_by, _ in machine.received}, {key_of("a").verify_key_bytes}
        )
        self.assertTrue(machine.started)

    async def test_dead_address(self) -> None:
        """A send to an address nobody listens on is logged and does not raise."""
        gone, _, _ = await self.make_node("gone")
        address = peer(gone)
        await gone.close()
        sender, _, events = await self.make_node("a")
        sender.send(address, message(0))
        sender.send(address, message(1))
        failed = await self.bounded(events.wait_for("bcr.send_failed"))
        self.assertEqual(failed["peer"], address.address)
        self.assertEqual(failed["dropped"], 2)

    async def test_reconnect_after_peer_restart(self) -> None:
        """After a peer goes away, a later send opens a fresh connection to it."""
        sender, _, events = await self.make_node("a")
        first, first_machine, _ = await self.make_node("b")
        sender.send(peer(first), message(0))
        await self.bounded(first_machine.wait_for(1))
        port = parse_address(first.address)[1]
        await first.close()
        await self.bounded(events.wait_for("bcr.connection_closed"))
        second, second_machine, _ = await self.make_node(
            "b2", listen=f"tcp:{port}:interface=127.0.0.1", key=key_of("b")
        )
        self.assertEqual(second.address, first.address)
        sender.send(peer(second), message(1))
        await self.bounded(second_machine.wait_for(1))
        self.assertEqual([m.seq for _, m in second_machine.received], [1])

    async def test_machine_failure_contained(self) -> None:
        """A machine raising on one message still gets the next ones."""
        sender, _, _ = await self.make_node("a")
        receiver, machine, events = await self.make_node(
            "b", RecordingMachine(fail_on=lambda m: m.seq == 0)  # type: ignore[attr-defined]
        )
        for seq in range(3):
            sender.send(peer(receiver), message(seq))
        await self.bounded(machine.wait_for(2))
        self.assertEqual([m.seq for _, m in machine.received], [1, 2])
        self.assertEqual(receiver.machine_errors, 1)
        self.assertEqual(len(events.named("bcr.machine_error")), 1)

    async def test_rejection_in_node_log(self) -> None:
        """Frames the codec refuses are logged in the receiving node's own log."""
        receiver, machine, events = await self.make_node("b")
        from twisted.internet import reactor

        host, port = parse_address(receiver.address)
        protocol = HandshakingClient(key_of("raw"), peer(receiver).key)
        await connectProtocol(TCP4ClientEndpoint(reactor, host, port), protocol)
        await self.bounded(protocol.authenticated)
        protocol.transport.write(struct.pack(">I", 3) + b"\xff\xfe\xfd")  # type: ignore[union-attr]
        rejected = await self.bounded(events.wait_for("bcr.rejected"))
        protocol.transport.loseConnection()  # type: ignore[union-attr]
        self.assertIn("tag", rejected["reason"])
        self.assertEqual(machine.received, [])

    async def test_least_used_connection_closed(self) -> None:
        """At the bound, the idle connection used longest ago is closed; a later send reopens it."""
        sender, _, events = await self.make_node("a", max_outbound=2)
        receivers = [await self.make_node(f"r{n}") for n in range(3)]
        for n, (receiver, machine, _) in enumerate(receivers):
            sender.send(peer(receiver), message(n))
            await self.bounded(machine.wait_for(1))
        self.assertEqual(len(sender._peers), 2)
        self.assertNotIn(peer(receivers[0][0]), sender._peers)
        sender.send(peer(receivers[0][0]), message(9))
        await self.bounded(receivers[0][1].wait_for(2))
        self.assertEqual([m.seq for _, m in receivers[0][1].received], [0, 9])
        self.assertEqual(events.named("bcr.send_failed"), [])

    async def test_send_limit_is_not_the_peer_role_limit(self) -> None:
        """
        What a node takes from a peer is bounded by the peer's role; what it
        sends that peer is bounded only by the frame limit: a replica sends
        a client a result as long as the value it read.
        """
        sender, _, events = await self.make_node("a", RecordingMachine(limit=1024))
        receiver, machine, _ = await self.make_node("b")
        big = ErrorMessage(configuration=0, client=1, seq=0, reason="x" * 10_000)
        sender.send(peer(receiver), big)
        await self.bounded(machine.wait_for(1))
        self.assertEqual(machine.received[0][1], big)
        self.assertEqual(events.named("bcr.send_failed"), [])

    async def test_graceful_exit_flushes(self) -> None:
        """Exit 0 delivers what was sent, closes the connection, then stops."""
        stopped: Deferred[None] = Deferred()
        receiver, machine, _ = await self.make_node("b")
        sender, _, events = await self.make_node(
            "a", stop_reactor=lambda: stopped.callback(None)
        )
        for seq in range(50):
            sender.send(peer(receiver), message(seq))
        sender.exit(0, "retired")
        sender.send(peer(receiver), message(99))
        await self.bounded(stopped)
        await self.bounded(machine.wait_for(50))
        self.assertEqual([m.seq for _, m in machine.received], list(range(50)))
        self.assertEqual(len(events.named("bcr.send_failed")), 1)

    async def test_log_files(self) -> None:
        """Events go to <stem>.json (RFC 7464) and <stem>.log, closed by close()."""
        log_dir = self.mktemp()
        os.makedirs(log_dir)
        node, _, _ = await self.make_node("files", log_dir=log_dir, log_stem="x-files")
        node.log.info("hello {who}", who="world", event="bcr.test")
        await node.close()
        with open(os.path.join(log_dir, "x-files.json"), encoding="utf-8") as f:
            events = list(eventsFromJSONLogFile(f))
        [hello] = [e for e in events if e.get("event") == "bcr.test"]
        self.assertEqual(hello["who"], "world")
        self.assertIn("log_time", hello)
        self.assertEqual(hello["log_namespace"], "bcr.files")
        with open(os.path.join(log_dir, "x-files.log"), encoding="utf-8") as f:
            self.assertIn("hello world", f.read())


class HandshakingClient(Protocol):
    """A raw connection that does the handshake by hand, then writes what a test says."""

    def __init__(self, key: crypto.KeyPair, expected: bytes) -> None:
        self.handshake = Handshake(key, initiator=True, nonce=os.urandom(32))
        self.expected = expected
        self.buffer = b""
        self.authenticated: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.send_frame(self.handshake.hello_frame)

    def send_frame(self, frame: bytes) -> None:
        self.transport.write(struct.pack(">I", len(frame)) + frame)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 4 and self.handshake.peer_key is None:
            (length,) = struct.unpack(">I", self.buffer[:4])
            if len(self.buffer) < 4 + length:
                return
            frame, self.buffer = self.buffer[4 : 4 + length], self.buffer[4 + length :]
            answer = self.handshake.receive(frame)
            if answer is not None:
                self.send_frame(answer)
            if self.handshake.peer_key is not None:
                assert self.handshake.peer_key == self.expected
                self.authenticated.callback(None)


class RawClient(Protocol):
    """A raw connection that writes whatever it is told and notes when it is closed."""

    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)


class AuthenticationTests(LoopbackNodeTests):
    """Every connection proves its key before anything it carries counts."""

    async def test_impostor_gets_nothing(self) -> None:
        """A process at the address that holds another key receives nothing."""
        impostor, machine, _ = await self.make_node("impostor")
        sender, _, events = await self.make_node("a")
        expected = Peer(impostor.address, key_of("the real one").verify_key_bytes)
        sender.send(expected, message(0))
        sender.send(expected, message(1))
        failed = await self.bounded(events.wait_for("bcr.send_failed"))
        self.assertEqual(failed["dropped"], 2)
        [handshake] = events.named("bcr.handshake_failed")
        self.assertIn("another key", handshake["reason"])
        self.assertEqual(machine.received, [])

    async def test_garbage_before_handshake(self) -> None:
        """Bytes that are not a handshake end the connection; nothing is delivered."""
        receiver, machine, events = await self.make_node("b")
        from twisted.internet import reactor

        host, port = parse_address(receiver.address)
        raw = RawClient()
        await connectProtocol(TCP4ClientEndpoint(reactor, host, port), raw)
        raw.transport.write(struct.pack(">I", 3) + b"\xff\xfe\xfd")  # type: ignore[union-attr]
        await self.bounded(raw.closed)
        self.assertEqual(len(events.named("bcr.handshake_failed")), 1)
        self.assertEqual(machine.received, [])

    async def test_strangers_share_one_log_allowance(self) -> None:
        """
        Outsiders that prove fresh keys of their own, one per connection,
        and send garbage get one node-wide allowance of log lines between
        them, not one per connection.
        """
        receiver, machine, events = await self.make_node(
            "b", RecordingMachine(limit=MAX_STRANGER_MESSAGE), clock=Clock()
        )
        from twisted.internet import reactor

        host, port = parse_address(receiver.address)
        for n in range(30):
            protocol = HandshakingClient(key_of(f"outsider {n}"), peer(receiver).key)
            await connectProtocol(TCP4ClientEndpoint(reactor, host, port), protocol)
            await self.bounded(protocol.authenticated)
            for _ in range(12):
                protocol.send_frame(b"\xff\xfe\xfd")
            protocol.send_frame(b"\x00")
            protocol.transport.loseConnection()  # type: ignore[union-attr]
        await self.bounded(_until(lambda: not receiver._inbound))
        self.assertEqual(len(events.named("bcr.rejected")), 10)
        self.assertEqual(events.named("bcr.rejections_suppressed"), [])
        self.assertEqual(machine.received, [])

    async def test_oversized_before_handshake(self) -> None:
        """Before its handshake a peer cannot make the node buffer a big frame."""
        receiver, machine, events = await self.make_node("b")
        from twisted.internet import reactor

        host, port = parse_address(receiver.address)
        raw = RawClient()
        await connectProtocol(TCP4ClientEndpoint(reactor, host, port), raw)
        raw.transport.write(struct.pack(">I", 4 * 1024 * 1024 - 1) + b"x" * 1024)  # type: ignore[union-attr]
        await self.bounded(raw.closed)
        [rejected] = events.named("bcr.rejected")
        self.assertEqual(rejected["reason"], "oversized frame")
        self.assertEqual(machine.received, [])

    async def test_silent_connection_dropped(self) -> None:
        """A connection that never completes its handshake is closed at the deadline."""
        clock = Clock()
        receiver, machine, events = await self.make_node("b", clock=clock)
        from twisted.internet import reactor

        host, port = parse_address(receiver.address)
        raw = RawClient()
        await connectProtocol(TCP4ClientEndpoint(reactor, host, port), raw)
        await self.bounded(_until(lambda: receiver._unauthenticated == 1))
        clock.advance(HANDSHAKE_TIMEOUT_S)
        await self.bounded(raw.closed)
        [failed] = events.named("bcr.handshake_failed")
        self.assertEqual(failed["reason"], "no handshake in time")
        self.assertEqual(receiver._unauthenticated, 0)


def _until(condition: Callable[[], bool]) -> Deferred[None]:
    """Fires once C{condition()} holds, checked on every reactor turn."""
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall

    loop = LoopingCall(lambda: loop.stop() if condition() else None)
    done: Deferred[None] = loop.start(0.01, now=True).addCallback(lambda _: None)
    del reactor
    return done
