# -*- test-case-name: tests.test_framing -*-
"""
Frames on a TCP stream: a 4-byte big-endian length, then that many bytes of
one canonically encoded wire message (docs/PROTOCOL.md).

The protocol is deliberately thin: it turns frames into C{on_message(peer,
message)} calls and messages into frames.  Whatever a peer sends, nothing
raises out of C{dataReceived}: an undecodable frame is logged and dropped
(the stream is still in step, so the connection stays up), a length prefix
over the limit is logged and the connection aborted (nothing after it can be
trusted to be in step, and we will not buffer it), and a frame cut short by
the connection closing is logged.

A peer controls the cost of all of this, so each part is bounded by what
the peer sent:

  - Reassembly is linear in time and memory: a frame that arrives whole in
    one read is sliced out of it, and one spread over reads is appended to
    a growing buffer, so each byte is copied a bounded number of times
    (Int32StringReceiver copies its whole buffer on every read: a 4 MiB
    frame in 1 KiB reads cost gigabytes of copying, twisted#6358) and held
    once (keeping a list of the reads instead would cost some 40 bytes of
    object overhead per byte when a peer sends one byte per read).
  - Rejection log lines go through a per-connection L{Throttle}, and the
    decoder's reason is L{clip}ped: a flood of garbage frames writes a
    bounded number of short lines, then says how many it held back.
  - An optional idle timeout closes connections whose peer has gone silent.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import cast

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from twisted_bcr import codec, messages
from twisted_bcr.interfaces import IMetrics
from twisted_bcr.metrics import NO_METRICS
from twisted_bcr.throttle import Throttle, clip

__all__ = [
    "DEFAULT_MAX_FRAME",
    "REJECTION_LOG_BURST",
    "REJECTION_LOG_INTERVAL_S",
    "FrameFactory",
    "FrameProtocol",
    "MessageHandler",
    "peer_name",
]

#: Largest frame body accepted or sent, in bytes, unless configured otherwise.
#: 4 MiB holds the largest messages we expect (a whole dictionary in a
#: L{messages.RunningState} or a long history in L{messages.Wedged}) with room
#: to spare, while keeping a hostile peer's claim on our memory bounded.
DEFAULT_MAX_FRAME = 4 * 1024 * 1024

#: Per connection, at most this many C{bcr.rejected} lines at once...
REJECTION_LOG_BURST = 10
#: ...and the budget refills at that many lines per this many seconds: a
#: careless peer's mistakes are all visible, a hostile one's flood costs at
#: most one line a second.
REJECTION_LOG_INTERVAL_S = 10.0

#: What a decoded frame is handed to: the peer's address and the message.
MessageHandler = Callable[[str, object], None]

_ALLOWED_TO_SEND = frozenset(messages.WIRE_MESSAGES)
_PREFIX = struct.Struct(">I")
#: The throttle key for this connection's rejection lines.
_REJECTED = "rejected"


def peer_name(address: IAddress) -> str:
    """A printable address: C{host:port}, C{[v6host]:port} or a socket path."""
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
    return str(address)


class FrameProtocol(Protocol, TimeoutMixin):
    """
    One connection carrying length-prefixed wire messages in both directions.

    C{MAX_LENGTH} is set per instance from the configured limit, can be
    changed with L{set_frame_limit}, and applies to both directions: peers
    share one configuration, so what we may not send they would refuse.

    Subclasses may override L{stringReceived}, called with each complete
    frame body in order (a handshake can look at the first frames there and
    then call up), and L{lengthLimitExceeded}.

    Like the Twisted receivers it replaces, it is a push producer for its
    own transport: L{pauseProducing} stops delivering frames (and pauses
    the transport), L{resumeProducing} delivers what arrived meanwhile.

    @ivar peer: The peer's printable address, once connected.
    @ivar paused: Whether delivery is paused.
    """

    _log = Logger()
    paused = False
    #: Counts refused frames (L{IMetrics.frame_rejected}), whether or not
    #: their log lines are suppressed; a node sets its own.
    metrics: IMetrics = NO_METRICS

    def __init__(
        self,
        on_message: MessageHandler,
        max_length: int = DEFAULT_MAX_FRAME,
        *,
        idle_timeout_s: float | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param on_message: Called with each decoded wire message.
        @param max_length: The largest frame body received or sent.
        @param idle_timeout_s: Close the connection when the peer has sent
            nothing for this many seconds; L{None} for never.  Only received
            bytes count, so use it where the peer is expected to talk (an
            inbound connection), not on a connection we only send on.
        @param clock: Runs the idle timeout and times the rejection log
            budget; defaults to the global reactor, imported only when first
            needed.
        """
        _check_limit(max_length)
        if idle_timeout_s is not None and not idle_timeout_s > 0:
            raise ValueError("idle_timeout_s must be positive")
        self.on_message = on_message
        self.MAX_LENGTH = max_length
        #: The largest frame this end sends, when it differs from what it
        #: receives (a node receives by its peer's role, sends by its own).
        self.send_limit: int | None = None
        self.peer = "<not connected>"
        self._idle_timeout_s = idle_timeout_s
        self._clock = clock
        self._rejections = Throttle(
            lambda: self._reactor_time().seconds(),
            burst=REJECTION_LOG_BURST,
            interval_s=REJECTION_LOG_INTERVAL_S,
            max_keys=1,
        )
        # Set once we have given up on the stream; later bytes are ignored.
        self._aborted = False
        # Set once the connection is gone or is being closed for silence.
        self._closing = False
        self._abort_call: IDelayedCall | None = None

        # The frame being received.  While _needed is None we are reading a
        # length prefix into _prefix; then _needed is the declared body
        # length and _body holds what has arrived of it.  bytearray grows
        # geometrically, so appending is amortised constant time per byte.
        self._prefix = bytearray()
        self._needed: int | None = None
        self._body = bytearray()
        # Writes not parsed yet: those that came while paused, or while an
        # earlier write was still being parsed (a handler resuming us).
        # Their prefixes are read, and checked against the limit then
        # current, only as the frames before them are delivered.
        self._backlog: deque[bytes | memoryview] = deque()
        self._parsing = False

    def connectionMade(self) -> None:
        self.peer = peer_name(self.transport.getPeer())  # type: ignore[union-attr]
        # Frames are small and latency-bound (a request crosses 2t+2 hops):
        # Nagle's algorithm with delayed ACKs would hold each one up to 40 ms.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        if self._idle_timeout_s is not None:
            self.setTimeout(self._idle_timeout_s)

    # -- configuration ----------------------------------------------------

    def set_frame_limit(self, max_length: int) -> None:
        """
        Change the frame limit, in both directions, from now on.

        It applies to every frame whose length prefix is read after this
        call, including the rest of a write being parsed (so a handshake
        that raises the limit on its first frame lets a large second frame
        of the same write in) and writes held while paused.  A frame whose
        prefix was already accepted is received whole: it was sent under
        the old limit.

        @raise ValueError: C{max_length} is not a positive integer.
        """
        _check_limit(max_length)
        self.MAX_LENGTH = max_length

    # -- receiving --------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._aborted:
            return
        self.resetTimeout()
        if data:
            # Pieces of it may be kept until their frame is complete: they
            # must not change under us.
            self._backlog.append(data if isinstance(data, bytes) else bytes(data))
            self._parse_backlog()

    def _parse_backlog(self) -> None:
        """Parse held writes in order until they run out, we pause or give up."""
        if self._parsing:
            # Called back from a handler: the loop below carries on.
            return
        self._parsing = True
        try:
            while self._backlog and not self.paused and not self._aborted:
                self._parse(self._backlog.popleft())
        finally:
            self._parsing = False
        if self._aborted:
            self._backlog.clear()

    def _parse(self, data: bytes | memoryview) -> None:
        """Parse one write, delivering the frames it completes."""
        view = memoryview(data)
        end = len(view)
        position = 0
        try:
            while position < end and not (self.paused or self._aborted):
                if self._needed is None:
                    take = min(_PREFIX.size - len(self._prefix), end - position)
                    self._prefix += view[position : position + take]
                    position += take
                    if len(self._prefix) < _PREFIX.size:
                        break
                    (length,) = _PREFIX.unpack(self._prefix)
                    self._prefix.clear()
                    if length > self.MAX_LENGTH and length > self.refresh_frame_limit():
                        # Nothing after this prefix is in step: stop here
                        # whatever the hook does.
                        self.metrics.frame_rejected("oversized")
                        self._give_up()
                        self.lengthLimitExceeded(length)
                        return
                    self._needed = length
                take = min(self._needed - len(self._body), end - position)
                if not self._body and take == self._needed:
                    # The whole frame is in this write: one slice, or none
                    # if it is the whole write.
                    if take == end and isinstance(data, bytes):
                        string = data
                    else:
                        string = bytes(view[position : position + take])
                    position += take
                else:
                    self._body += view[position : position + take]
                    position += take
                    if len(self._body) < self._needed:
                        break
                    string = bytes(self._body)
                    self._body = bytearray()
                self._needed = None
                self.stringReceived(string)
        finally:
            # Paused, or a hook raised: the rest of this write waits its turn.
            if position < end and not self._aborted:
                self._backlog.appendleft(view[position:])

    def _give_up(self) -> None:
        """Stop reading the stream and let go of everything buffered."""
        self._aborted = True
        self._prefix.clear()
        self._body = bytearray()
        self._needed = None
        self._backlog.clear()

    def stringReceived(self, string: bytes) -> None:
        """Decode one frame body and hand the message on, or reject it."""
        try:
            message = codec.decode_wire(string)
        except codec.BadMessage as error:
            self.metrics.frame_rejected("undecodable")
            # The reason may one day quote the input: keep it one short line.
            self._reject(clip(error), len(string))
            return
        try:
            self.on_message(self.peer, message)
        except Exception:
            # A handler bug must not cost the other frames of this connection;
            # log.failure keeps the traceback for the run's error report.
            self._log.failure(
                "handler failed on {message_type} from {peer}",
                message_type=messages.message_name(message),
                peer=self.peer,
                event="bcr.handler_failed",
            )

    def refresh_frame_limit(self) -> int:
        """
        Asked before a frame over C{MAX_LENGTH} is refused: a subclass whose
        peer's limit can grow (a spare that became a replica) sets and
        returns the limit that holds now.  By default it does not change.
        """
        return self.MAX_LENGTH

    def lengthLimitExceeded(self, length: int) -> None:
        """Log the oversized prefix and abort: nothing after it is in step."""
        self._give_up()
        self._log.warn(
            "rejected frame from {peer}: {reason} (length {length})",
            event="bcr.rejected",
            peer=self.peer,
            reason="oversized frame",
            length=length,
        )
        self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self.setTimeout(None)
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        suppressed = self._rejections.forget(_REJECTED)
        if suppressed:
            self._log.warn(
                "{suppressed} more rejected frames from {peer} were not logged",
                event="bcr.rejections_suppressed",
                peer=self.peer,
                suppressed=suppressed,
            )
        if not self._aborted:
            if self._prefix or self._needed is not None or self._backlog:
                # A frame cut short, or whole frames never delivered.
                self.metrics.frame_rejected("truncated")
            self._log_leftover()
        self._give_up()
        super().connectionLost(reason)

    def _log_leftover(self) -> None:
        """Log what is still buffered at the close: one line, never throttled."""
        backlog = sum(len(chunk) for chunk in self._backlog)
        if self._needed is None:
            pending = len(self._prefix) + backlog
            # The prefix may be split between _prefix and the held writes.
            head = bytes(self._prefix) + b"".join(
                bytes(chunk[: _PREFIX.size]) for chunk in islice(self._backlog, _PREFIX.size)
            )
            declared = _PREFIX.unpack_from(head)[0] if len(head) >= _PREFIX.size else None
        else:
            pending = _PREFIX.size + len(self._body) + backlog
            declared = self._needed
        if not pending:
            return
        if declared is not None and pending - _PREFIX.size >= declared:
            # Only possible while paused: whole frames never handed on.
            self._log.warn(
                "rejected frame from {peer}: {reason} (length {length})",
                event="bcr.rejected",
                peer=self.peer,
                reason="undelivered frames",
                length=pending,
            )
        else:
            self._log.warn(
                "rejected frame from {peer}: {reason} ({pending} bytes pending)",
                event="bcr.rejected",
                peer=self.peer,
                reason="truncated frame",
                length=declared,
                pending=pending,
            )

    def _reject(self, reason: str, length: int | None) -> None:
        """
        Log a dropped frame, within this connection's log budget.

        @param reason: Already clipped if it quotes anything the peer sent.
        """
        suppressed = self._rejections.allow(_REJECTED)
        if suppressed is None:
            return
        if suppressed:
            text = (
                "rejected frame from {peer}: {reason} (length {length};"
                " {suppressed} rejections before it not logged)"
            )
        else:
            text = "rejected frame from {peer}: {reason} (length {length})"
        self._log.warn(
            text,
            event="bcr.rejected",
            peer=self.peer,
            reason=reason,
            length=length,
            suppressed=suppressed,
        )

    # -- pausing (IPushProducer for our transport) ------------------------

    def pauseProducing(self) -> None:
        """
        Stop delivering frames until L{resumeProducing}.

        The idle timeout is suspended too: while we do not read, silence
        says nothing about the peer.
        """
        self.paused = True
        self.setTimeout(None)
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        """Deliver what arrived while paused, and read again."""
        self.paused = False
        if self._idle_timeout_s is not None and not self._closing:
            self.setTimeout(self._idle_timeout_s)
        self.transport.resumeProducing()  # type: ignore[union-attr]
        self._parse_backlog()

    def stopProducing(self) -> None:
        """Stop delivering frames for good."""
        self.paused = True
        self.setTimeout(None)
        self.transport.stopProducing()  # type: ignore[union-attr]

    # -- idle timeout -----------------------------------------------------

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        """TimeoutMixin's scheduling hook, on our clock."""
        return self._reactor_time().callLater(period, func)

    def timeoutConnection(self) -> None:
        """
        The peer sent nothing for C{idle_timeout_s}: close the connection.

        Closing, not aborting, lets what we already wrote reach the peer;
        if the peer does not read it either, so that the close cannot
        finish within another C{idle_timeout_s}, the connection is aborted.
        """
        self._closing = True
        # The period that elapsed (also right if someone called setTimeout).
        period = self.timeOut
        self._log.info(
            "closing connection with {peer}: nothing received for {idle_timeout_s} s",
            event="bcr.idle_timeout",
            peer=self.peer,
            idle_timeout_s=period,
        )
        if period:
            self._abort_call = self.callLater(period, self._abort_after_close)
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _abort_after_close(self) -> None:
        self._abort_call = None
        self.transport.abortConnection()  # type: ignore[union-attr]

    def _reactor_time(self) -> IReactorTime:
        if self._clock is None:
            # Imported here, not at module level, so that importing this
            # module installs no reactor.
            from twisted.internet import reactor

            self._clock = cast(IReactorTime, reactor)
        return self._clock

    # -- sending ----------------------------------------------------------

    def send_message(self, message: object) -> None:
        """
        Encode C{message} and send it as one frame.

        @raise ValueError: C{message} is not a wire message, cannot be
            encoded, or encodes to more than C{send_limit} (by default
            C{MAX_LENGTH}) bytes; all sender bugs, since the peer would drop
            or refuse it.
        """
        if type(message) not in _ALLOWED_TO_SEND:
            raise ValueError(f"{type(message).__name__} is not a wire message")
        data = codec.encode(message)
        limit = self.MAX_LENGTH if self.send_limit is None else self.send_limit
        if len(data) > limit:
            raise ValueError(
                f"{messages.message_name(message)} is {len(data)} bytes,"
                f" over the frame limit of {limit}"
            )
        self.sendString(data)

    def sendString(self, string: bytes) -> None:
        """Send C{string} as one frame, unchecked (Int32StringReceiver's name)."""
        # Two pieces, not one concatenation: no copy of a large body.
        self.transport.writeSequence([_PREFIX.pack(len(string)), string])  # type: ignore[union-attr]


def _check_limit(max_length: int) -> None:
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError("max_length must be a positive integer")


class FrameFactory(Factory):
    """Builds L{FrameProtocol}s that share one handler, frame limit, idle timeout and clock."""

    def __init__(
        self,
        on_message: MessageHandler,
        max_length: int = DEFAULT_MAX_FRAME,
        *,
        idle_timeout_s: float | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self.on_message = on_message
        self.max_length = max_length
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock

    def buildProtocol(self, addr: IAddress | None) -> FrameProtocol:
        frame_protocol = FrameProtocol(
            self.on_message,
            self.max_length,
            idle_timeout_s=self.idle_timeout_s,
            clock=self.clock,
        )
        frame_protocol.factory = self
        return frame_protocol
