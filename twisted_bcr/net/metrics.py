# -*- test-case-name: tests.test_metrics -*-
"""
Metrics of a daemon in Prometheus's text format (and OpenMetrics, if the
scraper asks for it), served over HTTP by twisted.web (docs/OPERATIONS.md,
"Metrics").

L{PrometheusMetrics} is the L{IMetrics} sink of the processes binding: each
event the core or the node reports is one increment, gauge setting or
histogram observation on a metric of a per-process L{CollectorRegistry}.
Labelled metrics are bound to their label values once, up front, so an
event costs no label lookup.  L{MetricsService} serves that registry at
C{/metrics} on the endpoint of C{--metrics}, hardened against whoever can
reach it (docs/SECURITY.md): no request bodies, a few connections, one
rendering a second at most.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.exposition import choose_encoder
from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from twisted_bcr.files import write_atomically
from twisted_bcr.interfaces import IMetrics
from twisted_bcr.metrics import (
    CONNECTION_REASONS,
    FRAME_REASONS,
    PHASES,
    REJECTION_REASONS,
    REQUEST_SOURCES,
    REQUESTERS,
    VERIFICATION_KINDS,
)
from twisted_bcr.net.node import advertised_host, canonical_address

__all__ = [
    "RECONFIGURATION_BUCKETS_S",
    "ROLES",
    "SHUTTLE_BUCKETS_S",
    "MetricsService",
    "PrometheusMetrics",
    "metrics_resource",
]

#: Which daemon a sink counts for: each registers only its own metrics.
ROLES = ("olympus", "replica")

#: Histogram buckets (seconds) of the head's order-to-result time: a
#: request crosses 2t+2 hops of a fraction of a millisecond each on a LAN.
SHUTTLE_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
#: ...and of reconfigurations, which take a few step timeouts at worst.
RECONFIGURATION_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)


class _Children(dict[str, Any]):
    """
    A labelled metric's children by label value, bound up front; any value
    not listed counts as C{"other"}, so no caller can grow the series.
    """

    def __init__(self, metric: Any, values: Iterable[str]) -> None:
        super().__init__((value, metric.labels(value)) for value in values)
        self._metric = metric

    def __missing__(self, value: str) -> Any:
        if "other" not in self:
            dict.__setitem__(self, "other", self._metric.labels("other"))
        return dict.__getitem__(self, "other")


@implementer(IMetrics)
class PrometheusMetrics:
    """
    The L{IMetrics} of one daemon, on C{registry}.

    Only the metrics of C{role} (and those every daemon has) are
    registered, so a replica exposes no spare pool and Olympus no slots;
    events of the other role are still counted, unseen.
    """

    def __init__(self, registry: CollectorRegistry, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        replica = registry if role == "replica" else None
        olympus = registry if role == "olympus" else None

        def counter(name: str, help: str, where: Any, label: str | None = None,
                    values: Iterable[str] = ()) -> Any:
            metric = Counter(name, help, [label] if label else [], registry=where)
            return _Children(metric, values) if label else metric

        # -- a replica
        self._requests_received = counter(
            "bcr_requests_received_total",
            "Signed requests received, from clients directly or forwarded to the head.",
            replica, "source", REQUEST_SOURCES,
        )
        self._slots_ordered = counter(
            "bcr_slots_ordered_total", "Requests the head gave a slot.", replica,
        )
        self._slots_executed = counter(
            "bcr_slots_executed_total",
            "Slots whose operation this replica applied (shuttles and catch-up).", replica,
        )
        self._results_sent = counter(
            "bcr_results_sent_total", "Result messages sent to clients.", replica,
        )
        self._shuttle_seconds = Histogram(
            "bcr_shuttle_seconds",
            "At the head: seconds from ordering a slot to its result coming back.",
            buckets=SHUTTLE_BUCKETS_S, registry=replica,
        )
        self._checkpoints = counter(
            "bcr_checkpoints_completed_total",
            "Completed checkpoints that truncated this replica's history.", replica,
        )
        self._requests_sent = counter(
            "bcr_reconfiguration_requests_sent_total",
            "Reconfiguration requests this replica sent to Olympus.", replica,
        )
        self._wedges = counter(
            "bcr_wedges_total", "Wedge requests this replica obeyed.", replica,
        )
        self._position = Gauge(
            "bcr_chain_position",
            "This replica's position in its chain (0: head); -1 while a spare.",
            registry=replica,
        )
        self._position.set(-1)
        # -- Olympus
        self._requests_in = counter(
            "bcr_reconfiguration_requests_received_total",
            "Reconfiguration requests Olympus received, by requester.",
            olympus, "requester", REQUESTERS,
        )
        self._started = counter(
            "bcr_reconfigurations_started_total",
            "Reconfiguration requests accepted: the chain was sent wedge requests.", olympus,
        )
        phase = Histogram(
            "bcr_reconfiguration_phase_seconds",
            "Seconds from a reconfiguration's start until it reached a phase.",
            ["phase"], buckets=RECONFIGURATION_BUCKETS_S, registry=olympus,
        )
        self._phases = _Children(phase, PHASES)
        self._completed = counter(
            "bcr_reconfigurations_completed_total",
            "Reconfigurations that installed a new configuration.", olympus,
        )
        self._duration = Histogram(
            "bcr_reconfiguration_duration_seconds",
            "Seconds from a reconfiguration's start until the new configuration was installed.",
            buckets=RECONFIGURATION_BUCKETS_S, registry=olympus,
        )
        self._wedged_messages = counter(
            "bcr_wedged_messages_received_total",
            "Valid wedged messages Olympus received.", olympus,
        )
        self._spares = Gauge(
            "bcr_spares", "Spare replicas registered and waiting to be placed.",
            registry=olympus,
        )
        # -- every daemon
        self._configuration = Gauge(
            "bcr_configuration",
            "The configuration this daemon serves (-1 before the first).",
            registry=registry,
        )
        self._configuration.set(-1)
        self._verification = counter(
            "bcr_verification_failures_total",
            "Signature and statement checks that failed, by what was checked.",
            registry, "kind", VERIFICATION_KINDS,
        )
        self._rejected = counter(
            "bcr_rejected_messages_total",
            "Decoded messages from authenticated peers that were refused, by reason.",
            registry, "reason", REJECTION_REASONS,
        )
        self._frames = counter(
            "bcr_rejected_frames_total", "Frames refused by the framing layer, by reason.",
            registry, "reason", FRAME_REASONS,
        )
        self._connections = counter(
            "bcr_rejected_connections_total",
            "Connections refused or closed before their handshake completed, by reason.",
            registry, "reason", CONNECTION_REASONS,
        )

    def request_received(self, source: str) -> None:
        self._requests_received[source].inc()

    def slot_ordered(self) -> None:
        self._slots_ordered.inc()

    def slot_executed(self) -> None:
        self._slots_executed.inc()

    def result_sent(self) -> None:
        self._results_sent.inc()

    def shuttle_completed(self, seconds: float) -> None:
        self._shuttle_seconds.observe(seconds)

    def checkpoint_completed(self) -> None:
        self._checkpoints.inc()

    def reconfiguration_requested(self) -> None:
        self._requests_sent.inc()

    def wedged(self) -> None:
        self._wedges.inc()

    def chain_position(self, index: int) -> None:
        self._position.set(index)

    def reconfiguration_request_received(self, requester: str) -> None:
        self._requests_in[requester].inc()

    def reconfiguration_started(self) -> None:
        self._started.inc()

    def reconfiguration_phase(self, phase: str, seconds: float) -> None:
        self._phases[phase].observe(seconds)

    def reconfiguration_completed(self, seconds: float) -> None:
        self._completed.inc()
        self._duration.observe(seconds)

    def wedged_message_received(self) -> None:
        self._wedged_messages.inc()

    def spares(self, count: int) -> None:
        self._spares.set(count)

    def configuration(self, number: int) -> None:
        self._configuration.set(number)

    def verification_failed(self, kind: str) -> None:
        self._verification[kind].inc()

    def message_rejected(self, reason: str) -> None:
        self._rejected[reason].inc()

    def frame_rejected(self, reason: str) -> None:
        self._frames[reason].inc()

    def connection_rejected(self, reason: str) -> None:
        self._connections[reason].inc()


#: The most connections the endpoint holds open at once: a scraper needs
#: one; more are closed as they come, so the endpoint cannot take the
#: daemon's file descriptors.
MAX_METRICS_CONNECTIONS = 8
#: A connection idle this long is closed.
METRICS_IDLE_TIMEOUT_S = 10
#: A rendering is served again for this long: however often it is asked
#: for, the registry is rendered at most once a second per format.
RENDER_CACHE_S = 1.0
#: Renderings kept at once (one per content type a scraper asked for).
MAX_CACHED_FORMATS = 4


class _MetricsRequest(Request):
    """
    A request that may carry no body: a scrape is a GET, and twisted.web
    would otherwise buffer any body (to a temporary file above 100 kB)
    before answering it.
    """

    def gotLength(self, length: int | None) -> None:
        if length != 0:  # a declared body, or a chunked one (None)
            super().gotLength(0)
            transport = self.channel.transport if self.channel is not None else None
            if transport is not None:
                transport.abortConnection()  # type: ignore[attr-defined]
            return
        super().gotLength(length)


class _MetricsSite(Site):
    """
    The endpoint's site: bodiless requests only, a few connections at
    once, no access log line (a scrape every few seconds is not news).
    """

    noisy = False
    requestFactory = _MetricsRequest

    def __init__(self, resource: IResource) -> None:
        super().__init__(resource, timeout=METRICS_IDLE_TIMEOUT_S)
        self._channels: set[Any] = set()
        self._all_closed: list[Deferred[None]] = []

    @property
    def open_connections(self) -> int:
        return len(self._channels)

    def buildProtocol(self, addr: Any) -> Any:
        if len(self._channels) >= MAX_METRICS_CONNECTIONS:
            return None
        channel = super().buildProtocol(addr)
        self._channels.add(channel)
        lost = channel.connectionLost

        def connection_lost(reason: Failure) -> None:
            self._channels.discard(channel)
            lost(reason)
            if not self._channels:
                waiting, self._all_closed = self._all_closed, []
                for d in waiting:
                    d.callback(None)

        channel.connectionLost = connection_lost
        return channel

    def close_all(self) -> Deferred[None]:
        """Close every open connection; fires once all are closed."""
        if not self._channels:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._all_closed.append(d)
        for channel in list(self._channels):
            # twisted.web's protocol is a proxy; the transport is its channel's.
            transport = getattr(getattr(channel, "_channel", channel), "transport", None)
            if transport is not None:
                transport.loseConnection()
        return d

    def log(self, request: Any) -> None:
        pass


class _MetricsPage(Resource):
    """
    C{/metrics}: the registry in the format the scraper's C{Accept} asks
    for (prometheus_client's choice: Prometheus text or OpenMetrics),
    rendered in the reactor's thread (no thread pool in the daemon) and
    cached for L{RENDER_CACHE_S}.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float]) -> None:
        super().__init__()
        self._registry = registry
        self._clock = clock
        #: Content type -> (when rendered, body); a few formats at most.
        self._cache: dict[str, tuple[float, bytes]] = {}

    def render_GET(self, request: Request) -> bytes:
        encoder, content_type = choose_encoder(request.getHeader("accept") or "")
        now = self._clock()
        cached = self._cache.get(content_type)
        if cached is None or now - cached[0] >= RENDER_CACHE_S:
            if len(self._cache) >= MAX_CACHED_FORMATS:
                # The Accept header is the scraper's to choose: bounded.
                self._cache.clear()
            cached = self._cache[content_type] = (now, bytes(encoder(self._registry)))
        request.setHeader("content-type", content_type)
        return cached[1]


def metrics_resource(registry: CollectorRegistry, clock: Callable[[], float]) -> IResource:
    """A resource tree serving C{registry} at C{/metrics}."""
    root = Resource()
    root.putChild(b"metrics", _MetricsPage(registry, clock))
    return root


class MetricsService(Service):
    """
    Serves a registry over HTTP on a server endpoint while running.

    @ivar address: C{host:port} it listens at, once started (TCP only).
    """

    def __init__(
        self,
        reactor: Any,
        description: str,
        registry: CollectorRegistry,
        *,
        port_file: str | None = None,
        on_failure: Callable[[Failure], object] | None = None,
    ) -> None:
        """
        @param description: A server endpoint description (C{--metrics}).
        @param port_file: Written with L{address} once listening.
        @param on_failure: Called with the failure if it cannot listen.
        """
        self.setName("metrics")
        self._reactor = reactor
        self._description = description
        self._registry = registry
        self._port_file = port_file
        self._on_failure = on_failure
        self._port: IListeningPort | None = None
        self._site: _MetricsSite | None = None
        self.address = ""
        #: Fires with the listening port, or fails, once L{startService} ran.
        self.listening: Deferred[IListeningPort] | None = None

    def startService(self) -> None:
        super().startService()
        endpoint = serverFromString(self._reactor, self._description)
        site = self._site = _MetricsSite(metrics_resource(self._registry, self._reactor.seconds))
        self.listening = endpoint.listen(site)
        # An error writing the port file fails the service too.
        self.listening.addCallback(self._listening).addErrback(self._failed)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self._port = port
        listening = port.getHost()
        host = advertised_host(listening)
        if ":" in host:
            host = f"[{host}]"
        self.address = canonical_address(f"{host}:{getattr(listening, 'port', 0)}")
        if self._port_file is not None:
            write_atomically(self._port_file, self.address + "\n")
        return port

    def _failed(self, failure: Failure) -> Failure | None:
        if self._on_failure is None:
            return failure
        self._on_failure(failure)
        return None

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return ensureDeferred(self._stop_listening())

    async def _stop_listening(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            await maybeDeferred(port.stopListening)
        if self._site is not None:
            await self._site.close_all()
