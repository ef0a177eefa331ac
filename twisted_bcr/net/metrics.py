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
C{/metrics} on the endpoint of C{--metrics}; prometheus_client renders it
in a thread of the reactor's pool, away from the protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site
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
    """A labelled metric's children by label value, bound up front; others on first use."""

    def __init__(self, metric: Any, values: Iterable[str]) -> None:
        super().__init__((value, metric.labels(value)) for value in values)
        self._metric = metric

    def __missing__(self, value: str) -> Any:
        child = self[value] = self._metric.labels(value)
        return child


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


class _QuietSite(Site):
    """A Site that writes no access log line: a scrape every few seconds is not news."""

    noisy = False

    def log(self, request: Request) -> None:
        pass


def metrics_resource(registry: CollectorRegistry) -> IResource:
    """A resource tree serving C{registry} at C{/metrics}."""
    # Imported here: prometheus_client.twisted imports the global reactor,
    # whose thread pool renders the registry.
    from prometheus_client.twisted import MetricsResource

    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=registry))
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
        self.address = ""
        #: Fires with the listening port, or fails, once L{startService} ran.
        self.listening: Deferred[IListeningPort] | None = None

    def startService(self) -> None:
        super().startService()
        endpoint = serverFromString(self._reactor, self._description)
        self.listening = endpoint.listen(_QuietSite(metrics_resource(self._registry)))
        self.listening.addCallbacks(self._listening, self._failed)

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
