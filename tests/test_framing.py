"""
Tests for L{twisted_bcr.net.framing}: frames in and out over a
C{StringTransport}, and hostile streams ending in logged rejections.
"""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_bcr import codec, messages
from twisted_bcr.net.framing import (
    DEFAULT_MAX_FRAME,
    REJECTION_LOG_BURST,
    REJECTION_LOG_INTERVAL_S,
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
        messages.Sealed(
            sender="127.0.0.1:1",
            signer="olympus",
            recipient=b"\x01" * 32,
            epoch=b"",
            configuration=-1,
            body=b"\x2f" + b"\x00" * 8,
            signature=b"s" * 64,
        ),
    ]
)


def frame(payload: bytes) -> bytes:
    """C{payload} with its 4-byte big-endian length prefix."""
    return struct.pack(">I", len(payload)) + payload


class Harness:
    """A connected protocol, its transport, and what it delivered."""

    def __init__(
        self,
        max_length: int = DEFAULT_MAX_FRAME,
        idle_timeout_s: float | None = None,
        protocol_class: type[FrameProtocol] = FrameProtocol,
    ) -> None:
        self.delivered: list[tuple[str, object]] = []
        self.clock = Clock()
        self.protocol = protocol_class(
            self.receive, max_length, idle_timeout_s=idle_timeout_s, clock=self.clock
        )
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
        return self.named("bcr.rejected")

    def named(self, name: str) -> list[dict[str, object]]:
        """The events with C{event=name} logged so far."""
        return [dict(event) for event in self.events if event.get("event") == name]


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


@contextmanager
def traced_memory() -> Iterator[None]:
    """Trace allocations for the duration, unless something already does."""
    already = tracemalloc.is_tracing()
    if not already:
        tracemalloc.start()
    try:
        yield
    finally:
        if not already:
            tracemalloc.stop()


class RawFrames(FrameProtocol):
    """Records raw frame bodies through the per-frame hook, without decoding."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.frames: list[bytes] = []

    def stringReceived(self, string: bytes) -> None:
        self.frames.append(string)


class LinearBufferingTests(FramingTestCase):
    """Reassembling frames costs time and memory linear in the bytes received."""

    def test_large_frame_in_small_writes_is_linear(self) -> None:
        """
        A 4 MiB frame arriving in 1 KiB writes allocates a few copies of the
        frame in all, no write but the last allocates more than a fraction
        of it, and the last allocates one copy.  (Rebuilding the buffer on
        each write, as Int32StringReceiver does, allocates the whole buffer
        so far on every write: 2000 copies of the frame in all, 8 GB.)
        """
        body = bytes(range(256)) * (DEFAULT_MAX_FRAME // 256)
        stream = frame(body)
        writes = [stream[start : start + 1024] for start in range(0, len(stream), 1024)]
        harness = Harness(protocol_class=RawFrames)
        allocated: list[int] = []
        with traced_memory():
            for data in writes:
                tracemalloc.reset_peak()
                before, _ = tracemalloc.get_traced_memory()
                harness.protocol.dataReceived(data)
                _, peak = tracemalloc.get_traced_memory()
                allocated.append(peak - before)
        self.assertEqual(harness.protocol.frames, [body])  # type: ignore[attr-defined]
        # Measured: 2.6 copies in all, at most 1/8 of the frame (the
        # buffer's geometric growth) in any write but the last.
        self.assertLess(sum(allocated), 4 * len(body))
        self.assertLess(max(allocated[:-1]), len(body) / 4)
        self.assertLess(allocated[-1], len(body) + 64 * 1024)

    def test_tiny_writes_do_not_amplify_memory(self) -> None:
        """
        Half a frame sent two bytes per write is held in about its own size
        (a list of the writes would hold some 40 bytes of objects per byte).
        """
        stream = frame(b"\x07" * (1024 * 1024))
        received = 128 * 1024
        harness = Harness(protocol_class=RawFrames)
        with traced_memory():
            before, _ = tracemalloc.get_traced_memory()
            for start in range(0, received, 2):
                harness.protocol.dataReceived(stream[start : start + 2])
            held, _ = tracemalloc.get_traced_memory()
        self.assertLess(held - before, 2 * received)
        harness.protocol.dataReceived(stream[received:])
        self.assertEqual(harness.protocol.frames, [stream[4:]])  # type: ignore[attr-defined]

    def test_nothing_buffered_after_abort(self) -> None:
        """Bytes after an oversized prefix are dropped, not kept."""
        harness = Harness(max_length=100)
        harness.protocol.dataReceived(struct.pack(">I", 101))
        with traced_memory():
            before, _ = tracemalloc.get_traced_memory()
            for _ in range(8):
                harness.protocol.dataReceived(b"x" * 1024 * 1024)
            after, _ = tracemalloc.get_traced_memory()
        self.assertLess(after - before, 64 * 1024)

    def stream_and_expected(self) -> tuple[bytes, list[object], list[tuple[object, object]]]:
        """Frames of every kind in one stream, and what one write of it gives."""
        stream = (
            frame(codec.encode(REQUEST))
            + frame(b"")
            + frame(codec.encode(SHUTDOWN_ERROR))
            + frame(b"\xfe\x00garbage")
            + frame(codec.encode(REQUEST))
        )
        expected = [REQUEST, SHUTDOWN_ERROR, REQUEST]
        rejected: list[tuple[object, object]] = [("empty", 0), ("unknown tag 254", 9)]
        return stream, expected, rejected

    def feed(self, pieces: list[bytes]) -> tuple[list[object], list[tuple[object, object]]]:
        """What a fresh protocol delivers and rejects when fed C{pieces}."""
        harness = Harness()
        already = len(self.rejections())
        for piece in pieces:
            harness.protocol.dataReceived(piece)
        self.assertFalse(harness.transport.disconnecting)
        return [message for _, message in harness.delivered], [
            (event["reason"], event["length"]) for event in self.rejections()[already:]
        ]

    def test_split_at_every_byte_boundary(self) -> None:
        """Cutting the stream in two anywhere changes nothing."""
        stream, expected, rejected = self.stream_and_expected()
        self.assertEqual(self.feed([stream]), (expected, rejected))
        for cut in range(len(stream) + 1):
            self.assertEqual(
                self.feed([stream[:cut], stream[cut:]]), (expected, rejected), cut
            )

    def test_split_at_every_pair_of_boundaries(self) -> None:
        """Cutting a stream in three anywhere changes nothing."""
        stream = frame(codec.encode(SHUTDOWN_ERROR)) + frame(b"") + frame(b"\xfe")
        expected = ([SHUTDOWN_ERROR], [("empty", 0), ("unknown tag 254", 1)])
        for first in range(len(stream) + 1):
            for second in range(first, len(stream) + 1):
                pieces = [stream[:first], stream[first:second], stream[second:]]
                self.assertEqual(self.feed(pieces), expected, (first, second))

    def test_byte_at_a_time(self) -> None:
        """One byte per write delivers the same as one write."""
        stream, expected, rejected = self.stream_and_expected()
        self.assertEqual(
            self.feed([stream[i : i + 1] for i in range(len(stream))]), (expected, rejected)
        )

    def test_many_frames_in_one_write(self) -> None:
        """Ten thousand frames in one write are all delivered, in order."""
        harness = Harness()
        sent = [
            messages.ErrorMessage(configuration=0, client=1, seq=seq, reason="r")
            for seq in range(10_000)
        ]
        harness.protocol.dataReceived(b"".join(frame(codec.encode(m)) for m in sent))
        self.assertEqual([message for _, message in harness.delivered], sent)

    def test_empty_writes_harmless(self) -> None:
        """Empty writes, between and inside frames, change nothing."""
        harness = Harness()
        data = frame(codec.encode(REQUEST))
        for piece in [b"", data[:2], b"", data[2:9], b"", data[9:], b""]:
            harness.protocol.dataReceived(piece)
        self.assertEqual(harness.delivered, [("10.0.0.7:4242", REQUEST)])


class PauseTests(FramingTestCase):
    """A paused protocol delivers nothing, and resumes where it stopped."""

    def test_pause_inside_handler(self) -> None:
        """Pausing while handling one frame holds back the rest of the same write."""
        delivered: list[object] = []

        def handler(peer: str, message: object) -> None:
            delivered.append(message)
            if len(delivered) == 1:
                protocol.pauseProducing()

        protocol = FrameProtocol(handler, clock=Clock())
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(frame(codec.encode(REQUEST)) * 3)
        self.assertEqual(delivered, [REQUEST])
        self.assertEqual(transport.producerState, "paused")
        protocol.resumeProducing()
        self.assertEqual(delivered, [REQUEST] * 3)
        self.assertEqual(transport.producerState, "producing")

    def test_pause_and_resume_inside_handler(self) -> None:
        """Resuming from inside the handler keeps frames in order and delivers each once."""
        delivered: list[object] = []

        def handler(peer: str, message: object) -> None:
            delivered.append(message)
            protocol.pauseProducing()
            protocol.resumeProducing()

        protocol = FrameProtocol(handler, clock=Clock())
        protocol.makeConnection(StringTransport())
        sent = [REQUEST, SHUTDOWN_ERROR, REQUEST]
        protocol.dataReceived(b"".join(frame(codec.encode(m)) for m in sent))
        self.assertEqual(delivered, sent)

    def test_data_while_paused_mid_frame(self) -> None:
        """Bytes that arrive while paused, finishing a frame, are delivered on resume."""
        harness = Harness()
        data = frame(codec.encode(REQUEST)) * 2
        harness.protocol.dataReceived(data[:7])
        harness.protocol.pauseProducing()
        harness.protocol.dataReceived(data[7:])
        self.assertEqual(harness.delivered, [])
        harness.protocol.resumeProducing()
        self.assertEqual(harness.delivered, [("10.0.0.7:4242", REQUEST)] * 2)

    def test_truncated_while_paused(self) -> None:
        """An incomplete frame buffered while paused is still logged as truncated."""
        harness = Harness()
        data = frame(codec.encode(REQUEST))
        harness.protocol.dataReceived(data[:2])
        harness.protocol.pauseProducing()
        harness.protocol.dataReceived(data[2:-1])
        harness.protocol.connectionLost(Failure(ConnectionError()))
        [event] = self.rejections()
        self.assertEqual(
            (event["reason"], event["length"], event["pending"]),
            ("truncated frame", len(data) - 4, len(data) - 1),
        )

    def test_undelivered_after_partial_frame(self) -> None:
        """A whole frame completed while paused counts as undelivered, with all bytes."""
        harness = Harness()
        data = frame(codec.encode(REQUEST))
        harness.protocol.dataReceived(data[:6])
        harness.protocol.pauseProducing()
        harness.protocol.dataReceived(data[6:] + data[:3])
        harness.protocol.connectionLost(Failure(ConnectionError()))
        [event] = self.rejections()
        self.assertEqual(
            (event["reason"], event["length"]), ("undelivered frames", len(data) + 3)
        )

    def test_oversized_found_on_resume(self) -> None:
        """An oversized prefix that arrived while paused aborts on resume."""
        harness = Harness(max_length=100)
        harness.protocol.pauseProducing()
        harness.protocol.dataReceived(struct.pack(">I", 1000) + b"x" * 10)
        self.assertFalse(harness.transport.disconnecting)
        harness.protocol.resumeProducing()
        self.assertTrue(harness.transport.disconnecting)
        [event] = self.rejections()
        self.assertEqual((event["reason"], event["length"]), ("oversized frame", 1000))

    def test_stop_producing(self) -> None:
        """stopProducing stops delivery and tells the transport."""
        harness = Harness()
        harness.protocol.stopProducing()
        harness.protocol.dataReceived(frame(codec.encode(REQUEST)))
        self.assertEqual(harness.delivered, [])
        self.assertEqual(harness.transport.producerState, "stopped")


class FrameLimitTests(FramingTestCase):
    """set_frame_limit changes the limit for frames whose prefix comes later."""

    def test_lowering(self) -> None:
        """After lowering the limit, a frame over it aborts the connection."""
        data = codec.encode(REQUEST)
        harness = Harness()
        harness.protocol.set_frame_limit(len(data) - 1)
        self.assertEqual(harness.protocol.MAX_LENGTH, len(data) - 1)
        harness.protocol.dataReceived(frame(data))
        self.assertEqual(harness.delivered, [])
        self.assertTrue(harness.transport.disconnecting)
        [event] = self.rejections()
        self.assertEqual((event["reason"], event["length"]), ("oversized frame", len(data)))

    def test_raising(self) -> None:
        """After raising the limit, a frame that was too large is accepted."""
        data = codec.encode(REQUEST)
        harness = Harness(max_length=8)
        harness.protocol.set_frame_limit(len(data))
        harness.protocol.dataReceived(frame(data))
        self.assertEqual(harness.delivered, [("10.0.0.7:4242", REQUEST)])
        self.assertFalse(harness.transport.disconnecting)

    def test_raised_by_first_frame_applies_to_rest_of_write(self) -> None:
        """
        A handshake that raises the limit on its first frame lets a large
        frame in the same write through (the limit is applied as each
        prefix is read, not when the write arrives).
        """

        class Handshake(FrameProtocol):
            def stringReceived(self, string: bytes) -> None:
                if string == b"hello":
                    self.set_frame_limit(DEFAULT_MAX_FRAME)
                    return
                super().stringReceived(string)

        harness = Harness(max_length=16, protocol_class=Handshake)
        harness.protocol.dataReceived(frame(b"hello") + frame(codec.encode(REQUEST)))
        self.assertEqual(harness.delivered, [("10.0.0.7:4242", REQUEST)])
        self.assertEqual(self.rejections(), [])

    def test_lowered_by_frame_applies_to_rest_of_write(self) -> None:
        """A limit lowered while handling a frame refuses the next frame of the same write."""

        class Lowering(FrameProtocol):
            def stringReceived(self, string: bytes) -> None:
                super().stringReceived(string)
                self.set_frame_limit(4)

        data = frame(codec.encode(REQUEST))
        harness = Harness(protocol_class=Lowering)
        harness.protocol.dataReceived(data * 3)
        self.assertEqual(harness.delivered, [("10.0.0.7:4242", REQUEST)])
        self.assertTrue(harness.transport.disconnecting)

    def test_frame_in_progress_keeps_its_limit(self) -> None:
        """A frame whose prefix was accepted is received whole, whatever the new limit."""
        data = frame(codec.encode(REQUEST))
        harness = Harness()
        harness.protocol.dataReceived(data[:10])
        harness.protocol.set_frame_limit(5)
        harness.protocol.dataReceived(data[10:])
        self.assertEqual(harness.delivered, [("10.0.0.7:4242", REQUEST)])
        harness.protocol.dataReceived(data)
        self.assertTrue(harness.transport.disconnecting)

    def test_applies_to_sending(self) -> None:
        """send_message refuses what is over the current limit."""
        harness = Harness()
        harness.protocol.set_frame_limit(10)
        self.assertRaises(ValueError, harness.protocol.send_message, REQUEST)
        self.assertEqual(harness.transport.value(), b"")

    def test_invalid(self) -> None:
        """A limit must be a positive integer."""
        harness = Harness()
        self.assertRaises(ValueError, harness.protocol.set_frame_limit, 0)
        self.assertRaises(ValueError, harness.protocol.set_frame_limit, -5)
        self.assertEqual(harness.protocol.MAX_LENGTH, DEFAULT_MAX_FRAME)


class IdleTimeoutTests(FramingTestCase):
    """A peer that sends nothing for idle_timeout_s seconds is disconnected."""

    def test_off_by_default(self) -> None:
        """Without idle_timeout_s nothing is scheduled and nothing times out."""
        harness = Harness()
        self.assertEqual(harness.clock.getDelayedCalls(), [])
        harness.clock.advance(10**6)
        self.assertFalse(harness.transport.disconnecting)

    def test_not_armed_before_connection(self) -> None:
        """The timer starts when the connection is made, not when the protocol is built."""
        clock = Clock()
        protocol = FrameProtocol(lambda p, m: None, idle_timeout_s=5, clock=clock)
        self.assertEqual(clock.getDelayedCalls(), [])
        protocol.makeConnection(StringTransport())
        self.assertEqual(len(clock.getDelayedCalls()), 1)

    def test_fires(self) -> None:
        """Silence for the whole timeout is logged and closes the connection."""
        harness = Harness(idle_timeout_s=30)
        harness.clock.advance(29.9)
        self.assertFalse(harness.transport.disconnecting)
        harness.clock.advance(0.1)
        self.assertTrue(harness.transport.disconnecting)
        # Closed, not aborted: what we already wrote may still reach the peer.
        self.assertFalse(harness.transport.disconnected)
        [event] = self.named("bcr.idle_timeout")
        self.assertEqual((event["peer"], event["idle_timeout_s"]), ("10.0.0.7:4242", 30))

    def test_aborts_when_close_does_not_finish(self) -> None:
        """A peer that also stops reading is aborted after another timeout period."""
        harness = Harness(idle_timeout_s=30)
        harness.clock.advance(30)
        harness.clock.advance(29.9)
        self.assertFalse(harness.transport.disconnected)
        harness.clock.advance(0.1)
        self.assertTrue(harness.transport.disconnected)
        harness.protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(harness.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.named("bcr.idle_timeout")), 1)

    def test_reset_by_any_data(self) -> None:
        """Any bytes, even one byte of a prefix or a garbage frame, restart the timer."""
        harness = Harness(idle_timeout_s=30)
        harness.clock.advance(20)
        harness.protocol.dataReceived(b"\x00")
        harness.clock.advance(20)
        harness.protocol.dataReceived(b"\x00\x00\x01\xfe")
        harness.clock.advance(29)
        self.assertFalse(harness.transport.disconnecting)
        harness.clock.advance(1)
        self.assertTrue(harness.transport.disconnecting)

    def test_sending_does_not_reset(self) -> None:
        """Only what the peer sends counts: our own writes do not keep it alive."""
        harness = Harness(idle_timeout_s=30)
        for _ in range(3):
            harness.clock.advance(10)
            harness.protocol.send_message(REQUEST)
        self.assertTrue(harness.transport.disconnecting)

    def test_cancelled_by_connection_lost(self) -> None:
        """A closed connection leaves no timer behind, before or after a timeout."""
        harness = Harness(idle_timeout_s=30)
        harness.protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(harness.clock.getDelayedCalls(), [])
        harness.clock.advance(100)
        self.assertEqual(self.named("bcr.idle_timeout"), [])
        other = Harness(idle_timeout_s=30)
        other.clock.advance(30)
        other.protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(other.clock.getDelayedCalls(), [])
        other.clock.advance(100)
        self.assertFalse(other.transport.disconnected)

    def test_suspended_while_paused(self) -> None:
        """A paused protocol reads nothing, so its silence is not the peer's; resume restarts the timer."""
        harness = Harness(idle_timeout_s=30)
        harness.clock.advance(20)
        harness.protocol.pauseProducing()
        harness.clock.advance(1000)
        self.assertFalse(harness.transport.disconnecting)
        harness.protocol.resumeProducing()
        harness.clock.advance(29)
        self.assertFalse(harness.transport.disconnecting)
        harness.clock.advance(1)
        self.assertTrue(harness.transport.disconnecting)

    def test_timeout_mixin_clock_attribute(self) -> None:
        """Pointing TimeoutMixin's callLater at a Clock works too."""
        clock = Clock()
        protocol = FrameProtocol(lambda p, m: None, idle_timeout_s=1)
        protocol.callLater = clock.callLater  # type: ignore[method-assign, assignment]
        transport = StringTransport()
        protocol.makeConnection(transport)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_invalid(self) -> None:
        """A timeout must be positive."""
        self.assertRaises(
            ValueError, FrameProtocol, lambda p, m: None, idle_timeout_s=0
        )


class RejectionLogTests(FramingTestCase):
    """A flood of bad frames writes a bounded amount of log, and hostile text is clipped."""

    def flood(self, harness: Harness, count: int) -> None:
        """Send C{count} garbage frames in one write."""
        harness.protocol.dataReceived(frame(b"\xfe" * 97) * count)

    def test_flood_bounded(self) -> None:
        """A thousand garbage frames log the burst, and the stream stays usable."""
        harness = Harness()
        self.flood(harness, 1000)
        harness.protocol.dataReceived(frame(codec.encode(REQUEST)))
        self.assertEqual(len(self.rejections()), REJECTION_LOG_BURST)
        self.assertEqual(harness.delivered, [("10.0.0.7:4242", REQUEST)])
        self.assertFalse(harness.transport.disconnecting)
        text = sum(len(formatEvent(event)) for event in self.events)
        self.assertLess(text, 200 * REJECTION_LOG_BURST)

    def test_next_line_counts_suppressed(self) -> None:
        """Once the budget refills, the next rejection says how many were not logged."""
        harness = Harness()
        self.flood(harness, 1000)
        harness.clock.advance(REJECTION_LOG_INTERVAL_S / REJECTION_LOG_BURST)
        self.flood(harness, 1)
        events = self.rejections()
        self.assertEqual(len(events), REJECTION_LOG_BURST + 1)
        self.assertEqual(
            [event["suppressed"] for event in events], [0] * REJECTION_LOG_BURST + [990]
        )
        self.assertIn("990", formatEvent(events[-1]))

    def test_summary_at_close(self) -> None:
        """Rejections never reported by a later line are counted in one line at close."""
        harness = Harness()
        self.flood(harness, 1000)
        harness.protocol.connectionLost(Failure(ConnectionError()))
        [event] = self.named("bcr.rejections_suppressed")
        self.assertEqual((event["peer"], event["suppressed"]), ("10.0.0.7:4242", 990))

    def test_no_summary_without_suppression(self) -> None:
        """A connection with few rejections logs no summary."""
        harness = Harness()
        self.flood(harness, REJECTION_LOG_BURST)
        harness.protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(self.named("bcr.rejections_suppressed"), [])

    def test_end_of_stream_lines_never_suppressed(self) -> None:
        """After a flood, an oversized prefix or a truncated frame is still logged."""
        harness = Harness(max_length=200)
        self.flood(harness, 1000)
        harness.protocol.dataReceived(struct.pack(">I", 201))
        self.assertEqual(self.rejections()[-1]["reason"], "oversized frame")
        other = Harness()
        self.flood(other, 1000)
        other.protocol.dataReceived(b"\x00\x00")
        other.protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(self.rejections()[-1]["reason"], "truncated frame")

    def test_per_connection_budget(self) -> None:
        """One connection's flood does not silence another's rejections."""
        first, second = Harness(), Harness()
        self.flood(first, 100)
        self.flood(second, 1)
        self.assertEqual(len(self.rejections()), REJECTION_LOG_BURST + 1)

    def test_hostile_reason_clipped(self) -> None:
        """A decode error quoting the input is logged as one short printable line."""

        def quoting_decoder(data: bytes) -> object:
            raise codec.BadMessage("bad name " + data.decode("latin-1"))

        # framing looks decode_wire up on the codec module at each frame.
        self.patch(codec, "decode_wire", quoting_decoder)
        harness = Harness()
        hostile = b"\nFAKE event=bcr.ok\x1b[2J" + b"A" * 10_000
        harness.protocol.dataReceived(frame(hostile))
        [event] = self.rejections()
        reason = str(event["reason"])
        self.assertLessEqual(len(reason), 160)
        self.assertTrue(reason.startswith("bad name \\nFAKE event=bcr.ok\\x1b[2J"))
        self.assertTrue(reason.isprintable())
        self.assertEqual(event["length"], len(hostile))
        self.assertEqual(len(formatEvent(event).splitlines()), 1)


class FactoryOptionsTests(SynchronousTestCase):
    """The factory hands its idle timeout and clock to each protocol."""

    def test_factory_passes_idle_timeout_and_clock(self) -> None:
        """A built protocol times out on the factory's clock."""
        clock = Clock()
        factory = FrameFactory(lambda p, m: None, idle_timeout_s=5, clock=clock)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        clock.advance(5)
        self.assertTrue(transport.disconnecting)
