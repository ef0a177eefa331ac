"""
Tests for L{twisted_bcr.net.framing}: frames in and out over a
C{StringTransport}, and hostile streams ending in logged rejections.
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_bcr import codec, messages
from twisted_bcr.net.framing import (
    DEFAULT_MAX_FRAME,
    FrameFactory,
    FrameProtocol,
    peer_name,
)

SHUTDOWN_ERROR = messages.ErrorMessage(
    configuration=0, client=1, seq=2, reason="immutable"
)
REQUEST = messages.ClientRequest(messages.Signed(b"request bytes", b"\x05" * 64))

wire_messages = st.sampled_from(
    [
        SHUTDOWN_ERROR,
        REQUEST,
        messages.Sealed("127.0.0.1:1", "olympus", b"\x2f" + b"\x00" * 8, b"s" * 64),
    ]
)


def frame(payload: bytes) -> bytes:
    """C{payload} with its 4-byte big-endian length prefix."""
    return struct.pack(">I", len(payload)) + payload


class Harness:
    """A connected protocol, its transport, and what it delivered."""

    def __init__(self, max_length: int = DEFAULT_MAX_FRAME) -> None:
        self.delivered: list[tuple[str, object]] = []
        self.protocol = FrameProtocol(self.receive, max_length)
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", "10.0.0.7", 4242)
        )
        self.protocol.makeConnection(self.transport)

    def receive(self, peer: str, message: object) -> None:
        self.delivered.append((peer, message))


class FramingTestCase(SynchronousTestCase):
    """Captures bcr.rejected events from the global log publisher."""

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)  # type: ignore[arg-type]

    def rejections(self) -> list[dict[str, object]]:
        """The bcr.rejected events logged so far."""
        return [
            dict(event) for event in self.events if event.get("event") == "bcr.rejected"
        ]


class ReceiveTests(FramingTestCase):
    """Frames become on_message calls, whatever the chunking."""

    @given(st.lists(wire_messages, max_size=6), st.integers(1, 7))
    def test_round_trip_any_chunking(self, sent: list[object], chunk_size: int) -> None:
        """Messages sent by one protocol arrive in order at another, in any chunks."""
        sender = Harness()
        for message in sent:
            sender.protocol.send_message(message)
        stream = sender.transport.value()
        receiver = Harness()
        for start in range(0, len(stream), chunk_size):
            receiver.protocol.dataReceived(stream[start : start + chunk_size])
        self.assertEqual(
            receiver.delivered, [("10.0.0.7:4242", message) for message in sent]
        )

    def test_garbage_dropped_then_next_delivered(self) -> None:
        """An undecodable frame is logged and dropped; the next frame still arrives."""
        harness = Harness()
        garbage = b"\xfe\x00garbage"
        harness.protocol.dataReceived(frame(garbage) + frame(codec.encode(REQUEST)))
        self.assertEqual(harness.delivered, [("10.0.0.7:4242", REQUEST)])
        self.assertFalse(harness.transport.disconnecting)
        [event] = self.rejections()
        self.assertEqual(event["peer"], "10.0.0.7:4242")
        self.assertEqual(event["length"], len(garbage))
        self.assertIn("unknown tag", str(event["reason"]))

    def test_non_wire_message_dropped(self) -> None:
        """A valid encoding of a message that may not travel bare is rejected."""
        harness = Harness()
        harness.protocol.dataReceived(frame(codec.encode(messages.WedgeRequest(0))))
        self.assertEqual(harness.delivered, [])
        [event] = self.rejections()
        self.assertIn("unexpected", str(event["reason"]))

    def test_empty_frame(self) -> None:
        """A zero-length frame is rejected without dropping the connection."""
        harness = Harness()
        harness.protocol.dataReceived(frame(b""))
        self.assertEqual(harness.delivered, [])
        self.assertFalse(harness.transport.disconnecting)
        self.assertEqual(len(self.rejections()), 1)

    @given(st.binary(max_size=300))
    def test_hostile_bytes_never_raise(self, data: bytes) -> None:
        """No byte stream makes dataReceived raise."""
        harness = Harness(max_length=64)
        harness.protocol.dataReceived(data)
        harness.protocol.connectionLost(Failure(ConnectionError()))

    def test_handler_failure_contained(self) -> None:
        """A handler that raises is logged as a failure; later frames still arrive."""
        delivered: list[object] = []

        def fragile(peer: str, message: object) -> None:
            if not delivered:
                delivered.append(None)
                raise RuntimeError("handler bug")
            delivered.append(message)

        protocol = FrameProtocol(fragile)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(frame(codec.encode(REQUEST)) * 2)
        self.assertEqual(delivered, [None, REQUEST])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        [event] = [
            event for event in self.events if event.get("event") == "bcr.handler_failed"
        ]
        self.assertEqual(event["message_type"], "client_request")


class LimitTests(FramingTestCase):
    """Oversized and truncated frames end in logged rejections."""

    def test_max_length_per_instance(self) -> None:
        """The frame limit comes from the constructor, with a 4 MiB default."""
        self.assertEqual(FrameProtocol(lambda p, m: None).MAX_LENGTH, 4 * 1024 * 1024)
        self.assertEqual(FrameProtocol(lambda p, m: None, 1000).MAX_LENGTH, 1000)
        self.assertRaises(ValueError, FrameProtocol, lambda p, m: None, 0)

    def test_oversized_prefix_aborts(self) -> None:
        """A length prefix over the limit is logged and the connection aborted."""
        harness = Harness(max_length=100)
        harness.protocol.dataReceived(struct.pack(">I", 101) + b"x" * 10)
        self.assertTrue(harness.transport.disconnecting)
        [event] = self.rejections()
        self.assertEqual(event["reason"], "oversized frame")
        self.assertEqual(event["length"], 101)
        # Later bytes and the close add nothing: the stream was given up.
        harness.protocol.dataReceived(frame(codec.encode(REQUEST)))
        harness.protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(harness.delivered, [])
        self.assertEqual(len(self.rejections()), 1)

    def test_hostile_max_prefix(self) -> None:
        """A 0xFFFFFFFF length prefix is refused before any buffering."""
        harness = Harness()
        harness.protocol.dataReceived(b"\xff\xff\xff\xff")
        self.assertTrue(harness.transport.disconnecting)
        self.assertEqual(self.rejections()[0]["length"], 0xFFFFFFFF)

    def test_frame_at_limit_accepted(self) -> None:
        """A frame of exactly MAX_LENGTH bytes is delivered."""
        data = codec.encode(REQUEST)
        harness = Harness(max_length=len(data))
        harness.protocol.dataReceived(frame(data))
        self.assertEqual(harness.delivered, [("10.0.0.7:4242", REQUEST)])

    def test_truncated_at_close(self) -> None:
        """A frame cut short by the close is logged with its pending bytes."""
        harness = Harness()
        data = frame(codec.encode(REQUEST))
        harness.protocol.dataReceived(data[:-3])
        harness.protocol.connectionLost(Failure(ConnectionError()))
        [event] = self.rejections()
        self.assertEqual(event["reason"], "truncated frame")
        self.assertEqual(event["pending"], len(data) - 3)
        self.assertEqual(event["length"], len(data) - 4)

    def test_truncated_prefix_at_close(self) -> None:
        """Part of a length prefix left at close is logged too, with no length."""
        harness = Harness()
        harness.protocol.dataReceived(b"\x00\x00")
        harness.protocol.connectionLost(Failure(ConnectionError()))
        [event] = self.rejections()
        self.assertEqual(
            (event["reason"], event["pending"], event["length"]),
            ("truncated frame", 2, None),
        )

    def test_undelivered_while_paused(self) -> None:
        """Whole frames still buffered by a paused protocol at close are logged."""
        harness = Harness()
        harness.protocol.pauseProducing()
        data = frame(codec.encode(REQUEST))
        harness.protocol.dataReceived(data)
        self.assertEqual(harness.delivered, [])
        harness.protocol.connectionLost(Failure(ConnectionError()))
        [event] = self.rejections()
        self.assertEqual(
            (event["reason"], event["length"]), ("undelivered frames", len(data))
        )

    def test_clean_close_quiet(self) -> None:
        """Closing between frames logs nothing."""
        harness = Harness()
        harness.protocol.dataReceived(frame(codec.encode(REQUEST)))
        harness.protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(self.rejections(), [])


class SendTests(FramingTestCase):
    """send_message writes one frame and refuses what the peer would refuse."""

    def test_send_writes_frame(self) -> None:
        """The bytes written are the length prefix and the canonical encoding."""
        harness = Harness()
        harness.protocol.send_message(SHUTDOWN_ERROR)
        self.assertEqual(harness.transport.value(), frame(codec.encode(SHUTDOWN_ERROR)))

    def test_send_too_large(self) -> None:
        """A message over the frame limit raises ValueError and writes nothing."""
        harness = Harness(max_length=50)
        big = messages.ErrorMessage(0, 0, 0, "x" * 100)
        self.assertRaises(ValueError, harness.protocol.send_message, big)
        self.assertEqual(harness.transport.value(), b"")

    def test_send_non_wire(self) -> None:
        """Statements and sealed-only messages cannot be sent bare."""
        harness = Harness()
        self.assertRaises(
            ValueError, harness.protocol.send_message, messages.WedgeRequest(0)
        )
        self.assertRaises(
            ValueError, harness.protocol.send_message, messages.Shutdown(0)
        )


class FactoryAndAddressTests(SynchronousTestCase):
    """The factory configures its protocols; peers get readable names."""

    def test_factory(self) -> None:
        """Built protocols share the factory's handler and limit."""

        def handler(peer: str, message: object) -> None:
            pass

        factory = FrameFactory(handler, max_length=1234)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        self.assertEqual(protocol.MAX_LENGTH, 1234)
        self.assertIs(protocol.on_message, handler)
        self.assertIs(protocol.factory, factory)

    def test_peer_names(self) -> None:
        """IPv4, IPv6 and UNIX addresses print as host:port, [host]:port and path."""
        self.assertEqual(peer_name(IPv4Address("TCP", "1.2.3.4", 5)), "1.2.3.4:5")
        self.assertEqual(peer_name(IPv6Address("TCP", "::1", 5)), "[::1]:5")
        self.assertEqual(peer_name(UNIXAddress(b"/tmp/sock")), "/tmp/sock")
