# -*- test-case-name: tests.test_node -*-
"""
The processes binding (DESIGN §2): one core machine bound to real TCP.

A L{TcpNode} is the L{IEnvironment} of exactly one machine (a replica,
Olympus, a client or the driver).  It listens on one endpoint and hands every
decoded inbound frame to C{machine.receive}; it keeps one lazily opened
outbound connection per destination address, so messages from this node to
one peer arrive in the order they were sent (SPEC §1: channels are FIFO); it
runs the machine's timers on an injected clock; it writes the machine's log
to its own JSON and text files; and it carries out the machine's
process-control requests: a graceful exit flushes what is queued and stops
the reactor, a crash is an immediate C{os._exit}, and a stall really blocks
this process.

Nothing the network or the machine does raises out of the node: a send to a
dead or unreachable peer is logged and the message lost, and an exception
raised by the machine while handling a message or a timer is logged with its
traceback and counted in L{TcpNode.machine_errors}.
"""

from __future__ import annotations

import gc
import ipaddress
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, maybeDeferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    serverFromString,
)
from twisted.internet.error import CannotListenError, ConnectionDone, ReactorNotRunning
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import (
    ILogObserver,
    Logger,
    LogPublisher,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_bcr import crypto
from twisted_bcr.core.common import MAX_STRANGER_MESSAGE
from twisted_bcr.files import write_atomically
from twisted_bcr.interfaces import IEnvironment, IMachine, IMetrics
from twisted_bcr.logs import LogFiles
from twisted_bcr.messages import message_name
from twisted_bcr.metrics import NO_METRICS
from twisted_bcr.net.framing import DEFAULT_MAX_FRAME, FrameProtocol
from twisted_bcr.net.handshake import HANDSHAKE_MAX_FRAME, NONCE_BYTES, Handshake, HandshakeError
from twisted_bcr.peers import Peer
from twisted_bcr.throttle import Throttle, clip

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_QUEUE",
    "TcpNode",
    "advertised_host",
    "canonical_address",
    "parse_address",
]

#: Where a node listens unless told otherwise: any free port on loopback.
DEFAULT_LISTEN = "tcp:0:interface=127.0.0.1"

#: Messages queued for one peer while its connection is being made; more
#: than that and the newest are dropped (and logged), like a full buffer.
DEFAULT_MAX_QUEUE = 10_000

#: How soon buffered log lines reach the files after they are written.
LOG_FLUSH_DELAY_S = 0.2

#: How long a graceful exit waits for outbound connections to drain.
EXIT_FLUSH_S = 2.0

#: How long an outbound connection attempt may take.
CONNECT_TIMEOUT_S = 5.0

#: How long L{TcpNode.close} waits for connections to close before aborting.
CLOSE_TIMEOUT_S = 2.0

#: How long a connection may take to finish its handshake.
HANDSHAKE_TIMEOUT_S = 10.0

#: Idle connections are closed: outbound ones after this long without
#: traffic, inbound ones after twice that (so the sender, which reopens on
#: its next message, closes first).  Short, because Olympus opens a
#: connection for every registration challenge to the address the
#: registrant claims: a registrant that keeps its end open holds one of
#: Olympus's descriptors for this long, not longer.  Reopening a connection
#: of the chain that was idle this long costs one handshake.
OUTBOUND_IDLE_S = 30.0
INBOUND_IDLE_S = 2 * OUTBOUND_IDLE_S

#: The most connections one node accepts at once, and the most of them
#: still in their handshake: beyond that new connections are closed at once.
MAX_INBOUND_CONNECTIONS = 1024
MAX_UNAUTHENTICATED_CONNECTIONS = 64

#: The most outbound connections one node keeps: beyond that the one used
#: longest ago is closed (it reopens when next needed).  Olympus answers a
#: spare's registration at the address it claims, so without a bound
#: strangers could make it hold connections to addresses of their choice.
MAX_OUTBOUND_CONNECTIONS = 1024

_WILDCARDS = ("", "0.0.0.0", "::")

_HOST_NAME = re.compile(
    r"(?i)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?"
)
_MAX_HOST_NAME = 253


def parse_address(address: str) -> tuple[str, int]:
    """
    Split C{"host:port"} (or C{"[v6host]:port"}) into host and port.

    @raise ValueError: C{address} is not of that form, the port is out of
        range or the host is neither an IP address nor a host name.
    """
    host, separator, port_text = address.rpartition(":")
    if not separator or not host or not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"not a host:port address: {address!r}")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {address!r}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if bracketed or len(host) > _MAX_HOST_NAME or not _HOST_NAME.fullmatch(host):
            raise ValueError(f"not a host name or IP address: {address!r}") from None
    else:
        if bracketed != (ip.version == 6):
            raise ValueError(f"brackets go around IPv6 hosts only: {address!r}")
    return host, port


def canonical_address(address: str) -> str:
    """
    The one spelling of C{address}: IP hosts in their compressed form, host
    names in lower case, the port without leading zeros.

    A node advertises its own address in this form, so the addresses in
    configurations compare equal exactly when they name one endpoint.

    @raise ValueError: as L{parse_address}.
    """
    host, port = parse_address(address)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"{host.lower().rstrip('.')}:{port}"
    if ip.version == 6:
        return f"[{ip.compressed}]:{port}"
    return f"{ip.compressed}:{port}"


def advertised_host(listening: IAddress, fallback: str = "127.0.0.1") -> str:
    """The host part peers should use for C{listening}; wildcards become C{fallback}."""
    host = getattr(listening, "host", "")
    return fallback if host in _WILDCARDS else str(host)


#: Allocations between two young-generation collections (CPython's default: 700).
GC_YOUNG_THRESHOLD = 100_000


def _flush_standard_streams() -> None:
    """
    Before C{os._exit}: hand over what is buffered for standard output and
    error, where C{twist} logs (the journal, under systemd).
    """
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            continue


def tune_garbage_collector() -> None:
    """
    Make garbage collection pauses rare and short in a node's process.

    A replica allocates many short-lived objects per message and keeps large
    long-lived caches (verified signatures, results).  With CPython's
    defaults, full collections walk those caches every few hundred requests
    and stall the chain: in perform900 they doubled the 99th-percentile
    latency (27 ms against 16 ms).  Objects that exist once the node is up
    are frozen out of collection, and young collections run far less often;
    the protocol's data structures hold no reference cycles, so nothing
    waits longer to be freed.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


class _NodeProtocol(FrameProtocol):
    """
    A framed connection that first runs the handshake (L{Handshake}), then
    hands every message on with the peer's authenticated key, and tells its
    node when it is authenticated and when it is gone.
    """

    def __init__(
        self,
        node: TcpNode,
        on_lost: Callable[[_NodeProtocol, Failure], None],
        destination: Peer | None = None,
    ) -> None:
        # The sending side closes an idle connection first, so that nothing
        # it writes meets a connection its peer is closing; the receiving
        # side's longer timeout only clears connections peers abandoned.
        super().__init__(
            self._deliver, node._max_frame,
            idle_timeout_s=OUTBOUND_IDLE_S if destination is not None else INBOUND_IDLE_S,
            clock=node._clock,
        )
        self._node = node
        # What we may send is the deployment's frame limit: the receiving
        # end decides by our role what it takes.
        self.send_limit = node._max_frame
        # Rejections and handler failures go to this node's own log files,
        # and are counted in its metrics.
        self._log = node.log
        self.metrics = node.metrics
        self._on_lost = on_lost
        #: The peer an outbound connection was made to (None if inbound).
        self.destination = destination
        self._handshake = Handshake(
            node._key, initiator=destination is not None, nonce=os.urandom(NONCE_BYTES)
        )
        self._handshake_deadline: IDelayedCall | None = None
        #: The key the peer proved it holds, once the handshake is done.
        self.peer_key: bytes | None = None
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        super().connectionMade()
        # Until the peer has proved who it is, it can make us buffer no
        # more than a handshake frame.
        self.set_frame_limit(HANDSHAKE_MAX_FRAME)
        self._handshake_deadline = self._node._clock.callLater(
            HANDSHAKE_TIMEOUT_S, self._handshake_failed, "no handshake in time",
            "handshake_timeout",
        )
        self.sendString(self._handshake.hello_frame)

    def stringReceived(self, string: bytes) -> None:
        if self.peer_key is not None:
            super().stringReceived(string)
            return
        try:
            answer = self._handshake.receive(string)
        except HandshakeError as e:
            self._handshake_failed(str(e))
            return
        if answer is not None:
            self.sendString(answer)
        if self._handshake.peer_key is None:
            return
        if self.destination is not None and self._handshake.peer_key != self.destination.key:
            self._handshake_failed(
                f"the process at {self.destination.address} holds another key", "wrong_key"
            )
            return
        self._cancel_deadline()
        self.peer_key = self._handshake.peer_key
        self.set_frame_limit(self._node._frame_limit_for(self.peer_key))
        self._node._authenticated(self)

    def refresh_frame_limit(self) -> int:
        # The peer's role, and so its limit, may have grown since the
        # handshake: a spare's connection to Olympus now carries a replica.
        if self.peer_key is not None:
            self.set_frame_limit(self._node._frame_limit_for(self.peer_key))
        return self.MAX_LENGTH

    def _stranger_over_budget(self) -> bool:
        """
        Is the peer a stranger (no proven key yet, or a key with no role
        here) whose line would exceed the node's allowance for strangers?
        A stranger can mint keys and open connections at will, and each
        connection may fail in its own way: they all share one budget.
        """
        return (
            self.peer_key is None or self._node._has_no_role(self.peer_key)
        ) and self._node._throttle.allow("strangers' frames") is None

    def lengthLimitExceeded(self, length: int) -> None:
        if self._stranger_over_budget():
            self._give_up()
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        super().lengthLimitExceeded(length)

    def _log_leftover(self) -> None:
        if not self._stranger_over_budget():
            super()._log_leftover()

    def _reject(self, reason: str, length: int | None) -> None:
        if not self._stranger_over_budget():
            super()._reject(reason, length)

    def _handshake_failed(self, reason: str, why: str = "bad_handshake") -> None:
        self._cancel_deadline()
        self.metrics.connection_rejected(why)
        self._node._note_handshake_failure(self, reason)
        self._give_up()
        self.transport.abortConnection()  # type: ignore[union-attr]

    def _cancel_deadline(self) -> None:
        deadline, self._handshake_deadline = self._handshake_deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _deliver(self, peer: str, message: object) -> None:
        assert self.peer_key is not None
        self._node._deliver(Peer(peer, self.peer_key), message)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        super().connectionLost(reason)
        self._on_lost(self, reason)
        self.lost.callback(None)


class _InboundFactory(Factory):
    """Builds the protocols of connections other nodes open to this one."""

    noisy = False

    def __init__(self, node: TcpNode) -> None:
        self._node = node

    def buildProtocol(self, addr: IAddress | None) -> _NodeProtocol | None:
        # None closes the connection at once: the node is at its limits.
        return self._node._inbound_protocol()


class _OutboundFactory(Factory):
    """Hands out the one protocol of an outbound connection (quietly)."""

    noisy = False

    def __init__(self, protocol: _NodeProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress | None) -> _NodeProtocol:
        return self._protocol


@define
class _Peer:
    """
    The outbound connection to one peer, and what waits for it: messages
    are queued until the peer has proved it holds the expected key.
    """

    peer: Peer
    queue: deque[object] = field(factory=deque)
    #: The connection once it is authenticated.
    protocol: _NodeProtocol | None = None
    #: The connection while it is being made and authenticated.
    pending: _NodeProtocol | None = None
    connecting: Deferred[Any] | None = None
    #: When a message was last sent to it (the node's clock).
    last_used: float = 0.0
    #: Close the connection as soon as the queue is written (graceful exit).
    close_when_flushed: bool = False


@implementer(IEnvironment)
class TcpNode(Service):
    """
    The real-world environment of one core machine.

    @ivar address: C{"host:port"} other nodes reach this one at; set by
        L{listen}.
    @ivar log: The machine's logger; its events go only to this node's files
        and extra observers.
    @ivar machine_errors: How many exceptions the machine raised while
        handling a message or a timer.
    """

    def __init__(
        self,
        reactor: Any,
        name: str,
        *,
        key: crypto.KeyPair,
        listen: str = DEFAULT_LISTEN,
        advertise: str | None = None,
        log_dir: str | None = None,
        log_stem: str | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_outbound: int = MAX_OUTBOUND_CONNECTIONS,
        port_file: str | None = None,
        clock: IReactorTime | None = None,
        observers: Sequence[ILogObserver] = (),
        stop_reactor: Callable[[], None] | None = None,
        exit_process: Callable[[int], Any] = os._exit,
        sleep: Callable[[float], Any] = time.sleep,
        metrics: IMetrics = NO_METRICS,
        start_failed: Callable[[Failure], Any] | None = None,
    ) -> None:
        """
        @param reactor: Provides C{IReactorTCP} (and C{IReactorTime} unless
            C{clock} is given).
        @param name: Names the node in logs (namespace C{bcr.<name>}).
        @param key: The key this node proves it holds on every connection.
        @param listen: A server endpoint description.
        @param advertise: The host peers must use; defaults to the host the
            endpoint listens on (loopback for a wildcard).
        @param log_dir: Where C{<log_stem>.json} and C{<log_stem>.log} go;
            C{None} for no files.
        @param port_file: Written with L{address} once the machine started.
        @param stop_reactor: What a graceful exit finally calls; defaults to
            C{reactor.stop}.
        @param exit_process: What a crash calls with its status.
        @param sleep: What a stall calls; blocking is the point.
        @param metrics: Counts refused frames and connections; the machine
            may count into it too (L{metrics}).
        @param start_failed: Called with the failure when L{startService}
            cannot listen or start the machine, before the process ends
            with status 1 (L{exit_when_running}); a daemonizing twistd's
            parent waits for word of the start (L{twisted_bcr.net.daemon}).
        """
        self.setName(name)
        self._key = key
        self._reactor = reactor
        self._clock: IReactorTime = clock if clock is not None else reactor
        self._listen_description = listen
        self._advertise = advertise
        self._max_frame = max_frame
        self._max_queue = max_queue
        self._max_outbound = max_outbound
        self._port_file = port_file
        self._stop_reactor = stop_reactor if stop_reactor is not None else reactor.stop
        self._exit_process = exit_process
        self._sleep = sleep
        #: Where this node, and the machine it is given to, count events.
        self.metrics = metrics
        self._start_failed_hook = start_failed

        self.address = ""
        self.machine: IMachine | None = None
        self._machine_factory: Callable[[TcpNode], IMachine] | None = None
        self.machine_errors = 0
        self._port: IListeningPort | None = None
        self._peers: dict[Peer, _Peer] = {}
        self._inbound: set[_NodeProtocol] = set()
        #: Inbound connections that have not finished their handshake.
        self._unauthenticated = 0
        self._throttle = Throttle(self._clock.seconds)
        self._timers: dict[str, IDelayedCall] = {}
        self._exiting = False
        self._closed = False
        self._starting: Deferred[None] | None = None
        #: Fires when a graceful exit has no outbound connection left.
        self._drained: Deferred[None] = Deferred()

        self._log_files: LogFiles | None = None
        self._log_flush: IDelayedCall | None = None
        publisher = LogPublisher(*observers)
        if log_dir is not None:
            self._log_files = LogFiles(log_dir, log_stem or name, self._schedule_log_flush)
            publisher.addObserver(self._log_files)
        self._publisher = publisher
        self.log = Logger(namespace=f"bcr.{name}", observer=publisher)

    # ------------------------------------------------------------------
    # Life cycle

    def attach(self, machine: IMachine) -> None:
        """Bind C{machine}: it receives this node's messages and timers."""
        self.machine = machine

    def attach_factory(self, factory: Callable[[TcpNode], IMachine]) -> None:
        """
        Bind the machine C{factory(node)} builds once L{address} is known
        (a replica's name includes its address); used by L{startService}.
        """
        self._machine_factory = factory

    async def listen(self) -> str:
        """Start listening; set and return L{address}."""
        endpoint = serverFromString(self._reactor, self._listen_description)
        port = await endpoint.listen(_InboundFactory(self))
        self._port = port
        listening = port.getHost()
        host = self._advertise or advertised_host(listening)
        if ":" in host:
            host = f"[{host}]"
        # One spelling per endpoint, in configurations and logs.
        self.address = canonical_address(f"{host}:{listening.port}")
        self.log.info(
            "{node} listening on {listen}, reachable at {address}",
            node=self.name, listen=self._listen_description, address=self.address,
            max_frame=self._max_frame, max_queue=self._max_queue, event="bcr.listening",
        )
        return self.address

    def start_machine(self) -> None:
        """Build (if need be) and start the machine; write the port file."""
        if self.machine is None and self._machine_factory is not None:
            self.machine = self._machine_factory(self)
        if self.machine is None:
            raise RuntimeError(f"{self.name}: no machine attached")
        self.machine.start()
        if self._port_file is not None:
            write_atomically(self._port_file, self.address + "\n")

    async def start(self) -> None:
        """L{listen}, then L{start_machine}."""
        await self.listen()
        tune_garbage_collector()
        self.start_machine()

    def startService(self) -> None:
        """Listen and start the machine; a failure ends the process with status 1."""
        super().startService()
        self._starting = ensureDeferred(self.start())
        self._starting.addErrback(self._start_failed)

    def _start_failed(self, failure: Failure) -> None:
        # In this node's log and twistd's own, where an operator looks first.
        for log in (self.log, Logger()):
            if failure.check(CannotListenError):
                # An expected operational problem: one line, no traceback.
                log.error(
                    "{node} could not start: {reason}", node=self.name,
                    reason=failure.getErrorMessage(), event="bcr.start_failed",
                )
            else:
                log.failure(
                    "{node} could not start", failure, node=self.name,
                    event="bcr.start_failed",
                )
        if self._start_failed_hook is not None:
            self._start_failed_hook(failure)
        self.exit_when_running(1, f"could not start: {failure.getErrorMessage()}")

    def stopService(self) -> Deferred[None]:
        """Stop listening, close every connection, then the log files."""
        super().stopService()
        return ensureDeferred(self.close())

    async def close(self) -> None:
        """
        Stop timers and listening, close (then, past a deadline, abort) every
        connection, and close the log files.  Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        for key in list(self._timers):
            self.cancel_timer(key)
        if self._port is not None:
            port, self._port = self._port, None
            await maybeDeferred(port.stopListening)
        waiting: list[Deferred[None]] = []
        for peer in list(self._peers.values()):
            if peer.connecting is not None:
                peer.connecting.cancel()
            for protocol in (peer.protocol, peer.pending):
                if protocol is not None and protocol.transport is not None:
                    waiting.append(protocol.lost)
                    protocol.transport.loseConnection()
        for inbound in list(self._inbound):
            waiting.append(inbound.lost)
            inbound.transport.loseConnection()  # type: ignore[union-attr]
        if waiting:
            await self._within(
                DeferredList(waiting), CLOSE_TIMEOUT_S, self._abort_connections
            )
        self.log.info("{node} closed", node=self.name, event="bcr.closed")
        self._close_logs()

    def _abort_connections(self) -> None:
        outbound = [p.protocol or p.pending for p in self._peers.values()]
        for protocol in outbound + list(self._inbound):
            if protocol is not None and protocol.transport is not None:
                protocol.transport.abortConnection()  # type: ignore[attr-defined]

    async def _within(
        self, waiting: Deferred[Any], seconds: float, on_timeout: Callable[[], None]
    ) -> None:
        """Wait for C{waiting}, calling C{on_timeout} if it takes C{seconds}."""
        call = self._reactor.callLater(seconds, on_timeout)
        try:
            await waiting
        finally:
            if call.active():
                call.cancel()

    def _close_logs(self) -> None:
        if self._log_files is not None:
            self._publisher.removeObserver(self._log_files)
            self._log_files.close()
            self._log_files = None
        if self._log_flush is not None and self._log_flush.active():
            self._log_flush.cancel()

    def _schedule_log_flush(self) -> None:
        # Writing through a buffer and flushing shortly after a burst keeps
        # logging cheap while a run can still be followed as it goes.
        if self._log_flush is None or not self._log_flush.active():
            self._log_flush = self._clock.callLater(LOG_FLUSH_DELAY_S, self._flush_logs)

    def _flush_logs(self) -> None:
        if self._log_files is not None:
            self._log_files.flush()

    # ------------------------------------------------------------------
    # IEnvironment: messages

    def send(self, to: Peer, message: object) -> None:
        """
        Send C{message} to C{to} once the process at C{to.address} proved
        it holds C{to.key}; failures are logged, never raised.
        """
        if self._closed or self._exiting:
            self._send_failed(to, "this node is shutting down", 1)
            return
        peer = self._peers.get(to)
        if peer is None:
            peer = self._connect(to)
            if peer is None:
                return
        peer.last_used = self._clock.seconds()
        if peer.protocol is not None:
            self._write(peer.protocol, to, message)
        elif len(peer.queue) >= self._max_queue:
            self._send_failed(to, f"{self._max_queue} messages already queued", 1)
        else:
            peer.queue.append(message)

    def random_bytes(self, count: int) -> bytes:
        return os.urandom(count)

    def _connect(self, to: Peer) -> _Peer | None:
        try:
            endpoint = self._client_endpoint(to.address)
        except ValueError as e:
            self._send_failed(to, str(e), 1)
            return None
        if len(self._peers) >= self._max_outbound and not self._close_least_used():
            self._send_failed(
                to, f"{self._max_outbound} outbound connections are being made", 1
            )
            return None
        peer = _Peer(to)
        self._peers[to] = peer
        protocol = _NodeProtocol(self, self._outbound_lost, to)
        peer.pending = protocol
        peer.connecting = endpoint.connect(_OutboundFactory(protocol))
        peer.connecting.addCallbacks(
            self._connected, self._connect_failed, callbackArgs=(peer,),
            errbackArgs=(peer,),
        )
        return peer

    def _close_least_used(self) -> bool:
        """Close the idle outbound connection used longest ago; was there one?"""
        idle = [p for p in self._peers.values() if p.protocol is not None and not p.queue]
        if not idle:
            return False
        oldest = min(idle, key=lambda p: p.last_used)
        del self._peers[oldest.peer]
        assert oldest.protocol is not None
        oldest.protocol.transport.loseConnection()  # type: ignore[union-attr]
        return True

    def _client_endpoint(self, address: str) -> IStreamClientEndpoint:
        host, port = parse_address(address)
        if isIPAddress(host):
            return TCP4ClientEndpoint(self._reactor, host, port, CONNECT_TIMEOUT_S)
        if isIPv6Address(host):
            return TCP6ClientEndpoint(self._reactor, host, port, CONNECT_TIMEOUT_S)
        return HostnameEndpoint(self._reactor, host, port, CONNECT_TIMEOUT_S)

    def _connected(self, protocol: _NodeProtocol, peer: _Peer) -> None:
        # Connected, not yet authenticated: the queue waits for that.
        peer.connecting = None

    def _outbound_authenticated(self, protocol: _NodeProtocol) -> None:
        assert protocol.destination is not None
        peer = self._peers.get(protocol.destination)
        if peer is None or peer.pending is not protocol:
            protocol.transport.loseConnection()  # type: ignore[union-attr]
            return
        peer.pending = None
        peer.protocol = protocol
        while peer.queue:
            self._write(protocol, peer.peer, peer.queue.popleft())
        if peer.close_when_flushed or self._closed:
            protocol.transport.loseConnection()  # type: ignore[union-attr]

    def _connect_failed(self, failure: Failure, peer: _Peer) -> None:
        if self._peers.get(peer.peer) is peer:
            del self._peers[peer.peer]
        dropped = len(peer.queue)
        peer.queue.clear()
        self._send_failed(peer.peer, failure.getErrorMessage(), dropped)
        self._maybe_drained()

    def _outbound_lost(self, protocol: _NodeProtocol, reason: Failure) -> None:
        assert protocol.destination is not None
        to = protocol.destination
        peer = self._peers.get(to)
        dropped = 0
        if peer is not None and protocol in (peer.protocol, peer.pending):
            del self._peers[to]
            dropped = len(peer.queue)
            peer.queue.clear()
        if protocol.peer_key is None:
            self._send_failed(to, "the handshake did not complete", dropped)
        elif reason.check(ConnectionDone) or self._exiting or self._closed:
            self.log.info(
                "{node}: connection to {peer} closed", node=self.name, peer=to.address,
                event="bcr.connection_closed",
            )
        else:
            self._send_failed(to, reason.getErrorMessage(), dropped)
        self._maybe_drained()

    def _write(self, protocol: _NodeProtocol, to: Peer, message: object) -> None:
        try:
            protocol.send_message(message)
            # Our own traffic keeps an outbound connection from being idle.
            protocol.resetTimeout()
        except Exception:
            self.log.failure(
                "{node} could not send {message_type} to {peer}",
                node=self.name, message_type=message_name(message), peer=to.address,
                event="bcr.send_failed",
            )

    def _send_failed(self, to: Peer, reason: str, dropped: int) -> None:
        # One allowance for all destinations: a stranger can name addresses
        # (a spare registration is answered at the address it claims).
        suppressed = self._throttle.allow("send failures")
        if suppressed is None:
            return
        self.log.warn(
            "{node}: sending to {peer} failed ({reason}); {dropped} message(s) lost{note}",
            node=self.name, peer=to.address, reason=reason, dropped=dropped,
            note=f" ({suppressed} more failures not logged)" if suppressed else "",
            suppressed=suppressed, event="bcr.send_failed",
        )

    # ------------------------------------------------------------------
    # Inbound

    def _inbound_protocol(self) -> _NodeProtocol | None:
        if len(self._inbound) >= MAX_INBOUND_CONNECTIONS:
            self._note_refused(f"{MAX_INBOUND_CONNECTIONS} connections already open")
            return None
        if self._unauthenticated >= MAX_UNAUTHENTICATED_CONNECTIONS:
            self._note_refused(
                f"{MAX_UNAUTHENTICATED_CONNECTIONS} connections already in their handshake"
            )
            return None
        protocol = _NodeProtocol(self, self._inbound_lost)
        self._inbound.add(protocol)
        self._unauthenticated += 1
        return protocol

    def _note_refused(self, why: str) -> None:
        self.metrics.connection_rejected("too_many_connections")
        suppressed = self._throttle.allow("refused connection")
        if suppressed is not None:
            self.log.warn(
                "{node} refused a connection: {why}{note}", node=self.name, why=why,
                note=f" ({suppressed} more refused)" if suppressed else "",
                event="bcr.connection_refused",
            )

    def _authenticated(self, protocol: _NodeProtocol) -> None:
        if protocol.destination is not None:
            self._outbound_authenticated(protocol)
        else:
            self._unauthenticated -= 1

    def _note_handshake_failure(self, protocol: _NodeProtocol, reason: str) -> None:
        # One allowance for all: a stranger can connect from any address.
        suppressed = self._throttle.allow("handshakes")
        if suppressed is not None:
            self.log.warn(
                "{node}: handshake with {peer} failed: {reason}{note}", node=self.name,
                peer=protocol.peer, reason=clip(reason),
                note=f" ({suppressed} similar lines suppressed)" if suppressed else "",
                event="bcr.handshake_failed",
            )

    def _inbound_lost(self, protocol: _NodeProtocol, reason: Failure) -> None:
        if protocol in self._inbound:
            self._inbound.discard(protocol)
            if protocol.peer_key is None:
                self._unauthenticated -= 1

    def _has_no_role(self, key: bytes) -> bool:
        """Does the machine take from C{key} no more than from anybody at all?"""
        return self._frame_limit_for(key) <= MAX_STRANGER_MESSAGE

    def _frame_limit_for(self, key: bytes) -> int:
        """The largest message a peer holding C{key} may send (its role's bound)."""
        limit = self._max_frame
        if self.machine is not None:
            limit = min(limit, self.machine.max_message_from(key))
        return limit

    def _deliver(self, peer: Peer, message: object) -> None:
        machine = self.machine
        if machine is None or self._closed:
            self.log.warn(
                "{node} dropped {message_type} from {peer}: no machine running",
                node=self.name, message_type=message_name(message), peer=peer.address,
                event="bcr.dropped",
            )
            return
        try:
            machine.receive(peer, message)
        except Exception:
            self.machine_errors += 1
            self.log.failure(
                "{node}: machine failed on {message_type} from {peer}",
                node=self.name, message_type=message_name(message), peer=peer.address,
                event="bcr.machine_error",
            )

    # ------------------------------------------------------------------
    # IEnvironment: timers and clock

    def start_timer(self, key: str, seconds: float) -> None:
        self.cancel_timer(key)
        self._timers[key] = self._clock.callLater(max(seconds, 0.0), self._fire, key)

    def cancel_timer(self, key: str) -> None:
        call = self._timers.pop(key, None)
        if call is not None and call.active():
            call.cancel()

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        if self.machine is None or self._closed:
            return
        try:
            self.machine.timer_expired(key)
        except Exception:
            self.machine_errors += 1
            self.log.failure(
                "{node}: machine failed on timer {key}", node=self.name, key=key,
                event="bcr.machine_error",
            )

    def now(self) -> float:
        return self._clock.seconds()

    # ------------------------------------------------------------------
    # IEnvironment: process control

    def exit(self, status: int, reason: str) -> None:
        """
        Status 0: write what is queued, close outbound connections (at most
        L{EXIT_FLUSH_S}), then stop the reactor.  Otherwise: flush the logs
        and end the process at once with C{status}.
        """
        self.log.info(
            "{node} exits with status {status}: {reason}",
            node=self.name, status=status, reason=reason, event="bcr.exit",
        )
        if status != 0:
            self._flush_logs()
            self._flush_sends()
            _flush_standard_streams()
            self._exit_process(status)
            return
        if self._exiting:
            return
        self._exiting = True
        for key in list(self._timers):
            self.cancel_timer(key)
        for peer in self._peers.values():
            peer.close_when_flushed = True
            if peer.protocol is not None and not peer.queue:
                peer.protocol.transport.loseConnection()  # type: ignore[union-attr]
        self._maybe_drained()
        deadline = self._reactor.callLater(EXIT_FLUSH_S, self._drain_timeout)
        self._drained.addCallback(lambda _: deadline.cancel() if deadline.active() else None)
        self._drained.addCallback(lambda _: self._stop())

    def exit_when_running(self, status: int, reason: str) -> None:
        """
        L{exit}, once the reactor runs (at once if it does): for a failure
        to start, found before the reactor runs.  C{twist} begins logging
        to standard output (the journal) only then, and the lines saying
        why would otherwise be lost with the process.
        """
        self._reactor.callWhenRunning(self.exit, status, reason)

    def _flush_sends(self) -> None:
        """
        Before a crash: hand the kernel what was already written to each
        connection (the report of the crash() fault that ends us, above all)
        without waiting for the reactor; whatever does not fit is lost, as
        in any crash.
        """
        for peer in self._peers.values():
            transport = peer.protocol.transport if peer.protocol is not None else None
            write_now = getattr(transport, "doWrite", None)
            if write_now is None:
                continue
            try:
                write_now()
            except Exception:  # noqa: BLE001 - the process ends next anyway
                continue

    def _stop(self) -> None:
        try:
            self._stop_reactor()
        except ReactorNotRunning:
            # Already stopping for another reason (a SIGTERM arriving with
            # Olympus's shutdown): that is the same outcome.
            pass

    def _maybe_drained(self) -> None:
        if self._exiting and not self._peers and not self._drained.called:
            self._drained.callback(None)

    def _drain_timeout(self) -> None:
        self.log.warn(
            "{node}: outbound connections to {peers} still open after {seconds} s",
            node=self.name, peers=sorted(p.address for p in self._peers), seconds=EXIT_FLUSH_S,
            event="bcr.exit_timeout",
        )
        if not self._drained.called:
            self._drained.callback(None)

    def stall(self, seconds: float) -> None:
        """Block this whole process for C{seconds}: the C{sleep()} fault."""
        self.log.info(
            "{node} stalls for {seconds} s", node=self.name, seconds=seconds,
            event="bcr.stall",
        )
        self._flush_logs()
        self._sleep(seconds)
