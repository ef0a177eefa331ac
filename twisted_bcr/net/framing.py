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
"""

from __future__ import annotations

from collections.abc import Callable
from struct import unpack_from

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from twisted_bcr import codec, messages

__all__ = [
    "DEFAULT_MAX_FRAME",
    "FrameFactory",
    "FrameProtocol",
    "MessageHandler",
    "peer_name",
]

#: Largest frame body accepted or sent, in bytes, unless configured otherwise.
#: 4 MiB holds the largest messages we expect (a whole dictionary in a
#: L{messages.RunningState} or a long history in L{messages.Wedged}) with room
#: to spare, while keeping Int32StringReceiver's copy-on-every-read buffering
#: (twisted#6358) and a hostile peer's claim on our memory bounded.
DEFAULT_MAX_FRAME = 4 * 1024 * 1024

#: What a decoded frame is handed to: the peer's address and the message.
MessageHandler = Callable[[str, object], None]

_ALLOWED_TO_SEND = frozenset(messages.WIRE_MESSAGES)


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


class FrameProtocol(Int32StringReceiver):
    """
    One connection carrying length-prefixed wire messages in both directions.

    C{MAX_LENGTH} is set per instance from the configured limit and applies
    to both directions: peers share one configuration, so what we may not
    send they would refuse.
    """

    _log = Logger()

    def __init__(
        self,
        on_message: MessageHandler,
        max_length: int = DEFAULT_MAX_FRAME,
    ) -> None:
        if max_length < 1:
            raise ValueError("max_length must be positive")
        self.on_message = on_message
        self.MAX_LENGTH = max_length
        self.peer = "<not connected>"
        # Set once we have given up on the stream; later bytes are ignored.
        self._aborted = False

    def connectionMade(self) -> None:
        self.peer = peer_name(self.transport.getPeer())  # type: ignore[union-attr]
        # Frames are small and latency-bound (a request crosses 2t+2 hops):
        # Nagle's algorithm with delayed ACKs would hold each one up to 40 ms.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)

    # -- receiving --------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._aborted:
            return
        super().dataReceived(data)

    def stringReceived(self, string: bytes) -> None:
        try:
            message = codec.decode_wire(string)
        except codec.BadMessage as error:
            self._reject(str(error), len(string))
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

    def lengthLimitExceeded(self, length: int) -> None:
        self._reject("oversized frame", length)
        self._aborted = True
        self._unprocessed = b""
        self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        pending = self._unprocessed
        if pending and not self._aborted:
            declared = unpack_from("!I", pending)[0] if len(pending) >= 4 else None
            if declared is not None and len(pending) - 4 >= declared:
                # Only possible while paused: whole frames never handed on.
                self._reject("undelivered frames", len(pending))
            else:
                self._log.warn(
                    "rejected frame from {peer}: {reason} ({pending} bytes pending)",
                    event="bcr.rejected",
                    peer=self.peer,
                    reason="truncated frame",
                    length=declared,
                    pending=len(pending),
                )
        self._unprocessed = b""
        super().connectionLost(reason)

    def _reject(self, reason: str, length: int | None) -> None:
        self._log.warn(
            "rejected frame from {peer}: {reason} (length {length})",
            event="bcr.rejected",
            peer=self.peer,
            reason=reason,
            length=length,
        )

    # -- sending ----------------------------------------------------------

    def send_message(self, message: object) -> None:
        """
        Encode C{message} and send it as one frame.

        @raise ValueError: C{message} is not a wire message, cannot be
            encoded, or encodes to more than C{MAX_LENGTH} bytes; all sender
            bugs, since the peer would drop or refuse it.
        """
        if type(message) not in _ALLOWED_TO_SEND:
            raise ValueError(f"{type(message).__name__} is not a wire message")
        data = codec.encode(message)
        if len(data) > self.MAX_LENGTH:
            raise ValueError(
                f"{messages.message_name(message)} is {len(data)} bytes,"
                f" over the frame limit of {self.MAX_LENGTH}"
            )
        self.sendString(data)


class FrameFactory(Factory):
    """Builds L{FrameProtocol}s that share one handler and one frame limit."""

    def __init__(
        self,
        on_message: MessageHandler,
        max_length: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self.on_message = on_message
        self.max_length = max_length

    def buildProtocol(self, addr: IAddress | None) -> FrameProtocol:
        frame_protocol = FrameProtocol(self.on_message, self.max_length)
        frame_protocol.factory = self
        return frame_protocol
