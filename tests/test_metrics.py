"""
Tests for the metrics (docs/OPERATIONS.md, "Metrics"): the no-op sink of
L{twisted_bcr.metrics}, the Prometheus sink of L{twisted_bcr.net.metrics}
counting what the core machines and the network binding report, the
C{--metrics} options, the HTTP endpoint, and real daemons scraped over TCP.

Everything but the last two classes is synchronous and deterministic: the
core runs on fakes or in the simulation, the binding on a memory reactor
and string transports, and latencies are measured on a L{Clock}.
"""

from __future__ import annotations

import io
import os
import struct
import sys
from collections.abc import Callable
from typing import Any, cast

import attrs
from prometheus_client import CollectorRegistry
from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.protocol import ProcessProtocol, Protocol, ServerFactory, connectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from tests.fakes import (
    OLYMPUS_ADDRESS,
    OLYMPUS_KEY,
    STRANGER,
    STRANGER_KEY,
    Chain,
    FakeEnvironment,
    client_address,
    client_request,
    key_for,
    make_configuration,
    make_replica,
    make_shuttle,
    replica_address,
    seal_from_olympus,
    sign_request,
)
from tests.test_core_olympus import (
    CASE,
    OlympusTestCase,
    spare_address,
    spare_key,
    spare_peer,
)
from twisted_bcr import crypto
from twisted_bcr.admission import write_admission
from twisted_bcr.config import parse_case
from twisted_bcr.core.olympus import Olympus
from twisted_bcr.interfaces import IMetrics
from twisted_bcr.messages import ClientRequest, ErrorMessage, GetConfiguration, WedgeRequest
from twisted_bcr.metrics import (
    CONNECTION_REASONS,
    FRAME_REASONS,
    NO_METRICS,
    PHASES,
    REJECTION_REASONS,
    REQUEST_SOURCES,
    REQUESTERS,
    VERIFICATION_KINDS,
)
from twisted_bcr.net.framing import FrameProtocol
from twisted_bcr.net.handshake import HANDSHAKE_MAX_FRAME, Handshake
from twisted_bcr.net.metrics import (
    MAX_METRICS_CONNECTIONS,
    RENDER_CACHE_S,
    MetricsService,
    PrometheusMetrics,
    _MetricsSite,
    metrics_resource,
)
from twisted_bcr.net.node import (
    HANDSHAKE_TIMEOUT_S,
    MAX_UNAUTHENTICATED_CONNECTIONS,
    TcpNode,
    _NodeProtocol,
    parse_address,
)
from twisted_bcr.peers import Peer
from twisted_bcr.replica import tap as replica_tap
from twisted_bcr.simulation import SimulatedCluster, simulate
from twisted_bcr.supervise import child_environment, twistd_command

CASES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "etc", "cases")

#: Bound on a daemon's start-up (waiting for its port file) ...
STARTUP_S = 60.0
#: ... and on every wait after that.
WAIT_S = 15.0


def sink(role: str = "replica") -> tuple[PrometheusMetrics, CollectorRegistry]:
    """A Prometheus sink of C{role} on a registry of its own."""
    registry = CollectorRegistry()
    return PrometheusMetrics(registry, role), registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """The sample C{name} with C{labels}, or None if the registry has none."""
    return registry.get_sample_value(name, labels)


def frame(body: bytes) -> bytes:
    """C{body} with its length prefix."""
    return struct.pack(">I", len(body)) + body


def frames(data: bytes) -> list[bytes]:
    """The frame bodies in C{data} (whole frames only)."""
    bodies = []
    while len(data) >= 4:
        (length,) = struct.unpack(">I", data[:4])
        bodies.append(data[4 : 4 + length])
        data = data[4 + length :]
    return bodies


class SinkTests(SynchronousTestCase):
    """The sinks themselves: interfaces, names, labels and what each event counts."""

    def test_interfaces(self) -> None:
        """Both sinks provide L{IMetrics}; the no-op one accepts every event."""
        verifyObject(IMetrics, NO_METRICS)
        for role in ("replica", "olympus"):
            verifyObject(IMetrics, sink(role)[0])
        for name in IMetrics.names():
            arguments = IMetrics[name].getSignatureInfo()["required"]
            self.assertIsNone(getattr(NO_METRICS, name)(*(["x"] * len(arguments))))

    def test_unlisted_label_values_share_one_series(self) -> None:
        """A label value not listed up front counts as "other": the series are bounded."""
        metrics, registry = sink("replica")
        for n in range(100):
            metrics.message_rejected(f"invented {n}")
        self.assertEqual(value(registry, "bcr_rejected_messages_total", reason="other"), 100)
        self.assertIsNone(value(registry, "bcr_rejected_messages_total", reason="invented 1"))

    def test_unknown_role(self) -> None:
        """A sink is for Olympus or for a replica."""
        self.assertRaises(ValueError, PrometheusMetrics, CollectorRegistry(), "client")

    def test_names_and_labels(self) -> None:
        """
        Every metric is C{bcr_}-prefixed, counters end in C{_total},
        histograms are in seconds, and labels are the few low-cardinality
        ones, each value known up front (exposed at 0 from the start).
        """
        allowed = {"source", "requester", "phase", "kind", "reason"}
        for role in ("replica", "olympus"):
            _, registry = sink(role)
            for family in registry.collect():
                self.assertTrue(family.name.startswith("bcr_"), family.name)
                if family.type == "histogram":
                    self.assertTrue(family.name.endswith("_seconds"), family.name)
                for sample in family.samples:
                    if family.type == "counter" and not sample.name.endswith("_created"):
                        self.assertTrue(sample.name.endswith("_total"), sample.name)
                    self.assertLessEqual(set(sample.labels) - {"le"}, allowed, sample.name)
        _, registry = sink("replica")
        for kind in VERIFICATION_KINDS:
            self.assertEqual(value(registry, "bcr_verification_failures_total", kind=kind), 0)
        for reason in REJECTION_REASONS:
            self.assertEqual(value(registry, "bcr_rejected_messages_total", reason=reason), 0)
        for reason in FRAME_REASONS:
            self.assertEqual(value(registry, "bcr_rejected_frames_total", reason=reason), 0)
        for reason in CONNECTION_REASONS:
            self.assertEqual(value(registry, "bcr_rejected_connections_total", reason=reason), 0)
        for source in REQUEST_SOURCES:
            self.assertEqual(value(registry, "bcr_requests_received_total", source=source), 0)

    def test_roles(self) -> None:
        """Each daemon exposes its own metrics and the common ones, not the other's."""
        _, replica = sink("replica")
        _, olympus = sink("olympus")
        self.assertEqual(value(replica, "bcr_slots_ordered_total"), 0)
        self.assertIsNone(value(olympus, "bcr_slots_ordered_total"))
        self.assertEqual(value(olympus, "bcr_spares"), 0)
        self.assertIsNone(value(replica, "bcr_spares"))
        for registry in (replica, olympus):
            self.assertEqual(value(registry, "bcr_configuration"), -1)
        self.assertEqual(value(replica, "bcr_chain_position"), -1)

    def test_replica_events(self) -> None:
        """Each replica event moves exactly its metric."""
        metrics, registry = sink("replica")
        metrics.request_received("client")
        metrics.request_received("forwarded")
        metrics.request_received("forwarded")
        metrics.slot_ordered()
        for _ in range(3):
            metrics.slot_executed()
        metrics.result_sent()
        metrics.shuttle_completed(0.004)
        metrics.checkpoint_completed()
        metrics.reconfiguration_requested()
        metrics.wedged()
        metrics.chain_position(2)
        metrics.configuration(4)
        self.assertEqual(
            [
                value(registry, "bcr_requests_received_total", source="client"),
                value(registry, "bcr_requests_received_total", source="forwarded"),
                value(registry, "bcr_slots_ordered_total"),
                value(registry, "bcr_slots_executed_total"),
                value(registry, "bcr_results_sent_total"),
                value(registry, "bcr_shuttle_seconds_count"),
                value(registry, "bcr_shuttle_seconds_sum"),
                value(registry, "bcr_shuttle_seconds_bucket", le="0.005"),
                value(registry, "bcr_shuttle_seconds_bucket", le="0.0025"),
                value(registry, "bcr_checkpoints_completed_total"),
                value(registry, "bcr_reconfiguration_requests_sent_total"),
                value(registry, "bcr_wedges_total"),
                value(registry, "bcr_chain_position"),
                value(registry, "bcr_configuration"),
            ],
            [1, 2, 1, 3, 1, 1, 0.004, 1, 0, 1, 1, 1, 2, 4],
        )

    def test_olympus_events(self) -> None:
        """Each Olympus event moves exactly its metric."""
        metrics, registry = sink("olympus")
        metrics.reconfiguration_request_received("replica")
        metrics.reconfiguration_request_received("replica")
        metrics.reconfiguration_request_received("client")
        metrics.reconfiguration_started()
        metrics.wedged_message_received()
        for phase, seconds in zip(PHASES, (0.1, 0.2, 0.3), strict=True):
            metrics.reconfiguration_phase(phase, seconds)
        metrics.reconfiguration_completed(0.5)
        metrics.spares(7)
        metrics.configuration(1)
        self.assertEqual(
            [
                value(registry, "bcr_reconfiguration_requests_received_total", requester=r)
                for r in REQUESTERS
            ]
            + [
                value(registry, "bcr_reconfigurations_started_total"),
                value(registry, "bcr_wedged_messages_received_total"),
            ]
            + [
                value(registry, "bcr_reconfiguration_phase_seconds_sum", phase=p)
                for p in PHASES
            ]
            + [
                value(registry, "bcr_reconfigurations_completed_total"),
                value(registry, "bcr_reconfiguration_duration_seconds_count"),
                value(registry, "bcr_reconfiguration_duration_seconds_sum"),
                value(registry, "bcr_spares"),
                value(registry, "bcr_configuration"),
            ],
            [2, 1, 1, 1, 0.1, 0.2, 0.3, 1, 1, 0.5, 7, 1],
        )

    def test_common_events(self) -> None:
        """Verification failures and refusals count by kind and reason, in either role."""
        for role in ("replica", "olympus"):
            metrics, registry = sink(role)
            metrics.verification_failed("shuttle")
            metrics.message_rejected("not_admitted")
            metrics.frame_rejected("oversized")
            metrics.connection_rejected("bad_handshake")
            self.assertEqual(
                value(registry, "bcr_verification_failures_total", kind="shuttle"), 1
            )
            self.assertEqual(
                value(registry, "bcr_rejected_messages_total", reason="not_admitted"), 1
            )
            self.assertEqual(value(registry, "bcr_rejected_frames_total", reason="oversized"), 1)
            self.assertEqual(
                value(registry, "bcr_rejected_connections_total", reason="bad_handshake"), 1
            )


class ReplicaCountingTests(SynchronousTestCase):
    """A replica on fake environments counts its events into the sink it was given."""

    def setUp(self) -> None:
        self.metrics, self.registry = sink("replica")

    def value(self, name: str, **labels: str) -> float | None:
        return value(self.registry, name, **labels)

    def test_request_through_the_chain(self) -> None:
        """
        One request: received and ordered at the head, executed by all
        three, one result to the client, and the head's shuttle time is
        the clock's time from ordering to the result shuttle's return.
        """
        chain = Chain(make_configuration(), metrics=self.metrics)
        chain.submit(client_request(0, 0, "put", "k", "v"))
        chain.clock.advance(0.25)
        chain.run()
        self.assertEqual(
            [
                self.value("bcr_requests_received_total", source="client"),
                self.value("bcr_slots_ordered_total"),
                self.value("bcr_slots_executed_total"),
                self.value("bcr_results_sent_total"),
                self.value("bcr_shuttle_seconds_count"),
                self.value("bcr_shuttle_seconds_sum"),
            ],
            [1, 1, 3, 1, 1, 0.25],
        )

    def test_forwarded(self) -> None:
        """A request sent to a non-head is forwarded, and counted as such at the head."""
        chain = Chain(make_configuration(), metrics=self.metrics)
        chain.replicas[1].receive(client_address(0), client_request(0, 0, "get", "k"))
        chain.run()
        self.assertEqual(self.value("bcr_requests_received_total", source="client"), 1)
        self.assertEqual(self.value("bcr_requests_received_total", source="forwarded"), 1)
        self.assertEqual(self.value("bcr_slots_ordered_total"), 1)

    def test_checkpoints(self) -> None:
        """A checkpoint completes at every replica of the chain."""
        chain = Chain(make_configuration(checkpt_interval=2), metrics=self.metrics)
        for seq in range(2):
            chain.submit(client_request(0, seq, "put", "k", str(seq)))
            chain.run()
        self.assertEqual(self.value("bcr_checkpoints_completed_total"), 3)

    def test_assignment_sets_gauges(self) -> None:
        """An assigned replica shows its configuration and position."""
        make_replica(make_configuration(number=2), 1, metrics=self.metrics)
        self.assertEqual(self.value("bcr_configuration"), 2)
        self.assertEqual(self.value("bcr_chain_position"), 1)

    def test_bad_signature(self) -> None:
        """A badly signed request is a verification failure and a refusal, and is not ordered."""
        replica, _ = make_replica(make_configuration(), 0, metrics=self.metrics)
        signed = sign_request(0, 0, "put", "k", "v")
        forged = attrs.evolve(signed, signature=bytes(len(signed.signature)))
        replica.receive(client_address(0), ClientRequest(forged))
        self.assertEqual(self.value("bcr_verification_failures_total", kind="request"), 1)
        self.assertEqual(self.value("bcr_rejected_messages_total", reason="verification"), 1)
        self.assertEqual(self.value("bcr_slots_ordered_total"), 0)

    def test_stranger_moves_no_verification_counter(self) -> None:
        """
        A stranger (any fresh key) sending badly signed envelopes is only a
        rejected message: the verification counter, which operators alert
        on, is for peers with a role here.
        """
        configuration = make_configuration()
        replica, _ = make_replica(configuration, 0, metrics=self.metrics)
        sealed = crypto.seal(
            STRANGER_KEY, STRANGER.address, "olympus", WedgeRequest(0),
            recipient=replica_address(0).key, epoch=b"",
        )
        forged = attrs.evolve(sealed, signature=bytes(len(sealed.signature)))
        for _ in range(3):
            replica.receive(STRANGER, forged)
        self.assertEqual(self.value("bcr_verification_failures_total", kind="sealed"), 0)
        self.assertEqual(self.value("bcr_rejected_messages_total", reason="not_allowed"), 3)

    def test_not_allowed(self) -> None:
        """A message from a peer that may not send it is refused as not allowed."""
        replica, _ = make_replica(make_configuration(), 0, metrics=self.metrics)
        replica.receive(STRANGER, client_request(0, 0, "put", "k", "v"))
        replica.receive(STRANGER, ErrorMessage(0, 0, 0, "nonsense"))
        self.assertEqual(self.value("bcr_rejected_messages_total", reason="not_allowed"), 1)
        self.assertEqual(self.value("bcr_rejected_messages_total", reason="unexpected"), 1)

    def test_bad_shuttle(self) -> None:
        """
        A shuttle whose slot leaves a hole fails its check: the replica
        counts that and asks for a reconfiguration.
        """
        configuration = make_configuration()
        replica, _ = make_replica(configuration, 1, metrics=self.metrics)
        signed = sign_request(0, 0, "put", "k", "v")
        replica.receive(replica_address(0), make_shuttle(configuration, 5, signed, "OK", 1))
        self.assertEqual(self.value("bcr_verification_failures_total", kind="shuttle"), 1)
        self.assertEqual(self.value("bcr_reconfiguration_requests_sent_total"), 1)

    def test_wedge(self) -> None:
        """Obeying a wedge request is counted."""
        replica, _ = make_replica(make_configuration(), 1, metrics=self.metrics)
        replica.receive(
            OLYMPUS_ADDRESS, seal_from_olympus(WedgeRequest(0), to=replica_address(1))
        )
        self.assertEqual(self.value("bcr_wedges_total"), 1)


class _Sinks:
    """One Prometheus sink per simulated machine, by address."""

    def __init__(self) -> None:
        self.registries: dict[str, CollectorRegistry] = {}
        self.spares: list[int] = []

    def __call__(self, address: str) -> IMetrics:
        registry = CollectorRegistry()
        self.registries[address] = registry
        if address != "olympus":
            return PrometheusMetrics(registry, "replica")
        metrics = PrometheusMetrics(registry, "olympus")
        spares = metrics.spares

        def recording(count: int) -> None:
            self.spares.append(count)
            spares(count)

        metrics.spares = recording  # type: ignore[method-assign]
        return metrics

    def total(self, addresses: list[str], name: str, **labels: str) -> float:
        return sum(value(self.registries[a], name, **labels) or 0 for a in addresses)


class SimulationTests(SynchronousTestCase):
    """Whole cases in the simulation, every machine with a sink of its own."""

    def run_case(self, name: str) -> tuple[dict[str, Any], SimulatedCluster, _Sinks]:
        sinks = _Sinks()
        clusters: list[SimulatedCluster] = []
        summary = simulate(
            parse_case(os.path.join(CASES, f"{name}.txt")), seed=0,
            prepare=clusters.append, metrics=sinks,
        )
        self.assertTrue(summary["ok"], summary["errors"])
        return summary, clusters[0], sinks

    def test_failure_free(self) -> None:
        """
        Every request is ordered once by the head, executed by every
        replica and answered once; the head timed each; one checkpoint
        completed everywhere; the spare pool grew as spares registered.
        """
        summary, cluster, sinks = self.run_case("failure_free")
        requests = summary["requests"]
        chain = [r.address for r in cluster.replicas_of(0)]
        head = sinks.registries[chain[0]]
        self.assertEqual(value(head, "bcr_slots_ordered_total"), requests)
        self.assertEqual(value(head, "bcr_shuttle_seconds_count"), requests)
        self.assertEqual(
            sinks.total(chain, "bcr_requests_received_total", source="client"), requests
        )
        for address in chain:
            self.assertEqual(value(sinks.registries[address], "bcr_slots_executed_total"), requests)
            self.assertEqual(
                value(sinks.registries[address], "bcr_checkpoints_completed_total"), 1
            )
        self.assertEqual(sinks.total(chain, "bcr_results_sent_total"), requests)
        olympus = sinks.registries["olympus"]
        self.assertEqual(value(olympus, "bcr_configuration"), 0)
        self.assertEqual(value(olympus, "bcr_reconfigurations_started_total"), 0)
        self.assertEqual(value(olympus, "bcr_spares"), len(cluster.olympus.spares))
        # Up by one per registration, down to nothing as the chain takes
        # them, up again as the spares kept ready register.
        self.assertEqual(len(cluster.replicas), 6)
        self.assertEqual(sinks.spares, [1, 2, 3, 2, 1, 0, 1, 2, 3])
        for address in chain:
            self.assertEqual(
                sinks.total([address], "bcr_verification_failures_total", kind="request"), 0
            )

    def test_reconfiguration(self) -> None:
        """
        A lying replica: the tail's check fails, it requests a
        reconfiguration, every replica is wedged, and Olympus goes through
        each phase once, in order, within the duration it records.
        """
        summary, cluster, sinks = self.run_case("shuttle_change_operation")
        self.assertEqual(summary["configurations"], 2)
        old = [r.address for r in cluster.replicas_of(0)]
        new = [r.address for r in cluster.replicas_of(1)]
        olympus = sinks.registries["olympus"]
        self.assertGreaterEqual(
            sinks.total(old, "bcr_verification_failures_total", kind="shuttle"), 1
        )
        self.assertGreaterEqual(sinks.total(old, "bcr_reconfiguration_requests_sent_total"), 1)
        self.assertGreaterEqual(
            value(olympus, "bcr_reconfiguration_requests_received_total", requester="replica")
            or 0,
            1,
        )
        self.assertEqual(sinks.total(old, "bcr_wedges_total"), len(old))
        self.assertGreaterEqual(value(olympus, "bcr_wedged_messages_received_total") or 0, 3)
        self.assertEqual(value(olympus, "bcr_reconfigurations_started_total"), 1)
        self.assertEqual(value(olympus, "bcr_reconfigurations_completed_total"), 1)
        sums = []
        for phase in PHASES:
            self.assertEqual(
                value(olympus, "bcr_reconfiguration_phase_seconds_count", phase=phase), 1
            )
            sums.append(value(olympus, "bcr_reconfiguration_phase_seconds_sum", phase=phase))
        duration = value(olympus, "bcr_reconfiguration_duration_seconds_sum")
        self.assertEqual(sums + [duration], sorted(sums + [duration]))
        self.assertAlmostEqual(duration, summary["reconfigurations"][0]["duration_s"], places=5)
        self.assertEqual(value(olympus, "bcr_configuration"), 1)
        for index, address in enumerate(new):
            self.assertEqual(value(sinks.registries[address], "bcr_configuration"), 1)
            self.assertEqual(value(sinks.registries[address], "bcr_chain_position"), index)


class _NullMachine:
    """Just enough of a machine for a node to take connections."""

    def max_message_from(self, key: bytes) -> int:
        return 1 << 20


class BindingTests(SynchronousTestCase):
    """Frames and connections the network binding refuses, on string transports."""

    def setUp(self) -> None:
        self.metrics, self.registry = sink("replica")
        self.clock = Clock()
        self.node = TcpNode(
            MemoryReactorClock(), "test", key=key_for("node"), clock=self.clock,
            metrics=self.metrics,
        )
        self.node.machine = _NullMachine()  # type: ignore[assignment]

    def connection(self) -> tuple[_NodeProtocol, StringTransport]:
        protocol = self.node._inbound_protocol()
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def connections(self, reason: str) -> float | None:
        return value(self.registry, "bcr_rejected_connections_total", reason=reason)

    def test_bad_handshake(self) -> None:
        """Bytes that are not a handshake."""
        protocol, _ = self.connection()
        protocol.dataReceived(frame(b"\xff\xfe\xfd"))
        self.assertEqual(self.connections("bad_handshake"), 1)

    def test_handshake_timeout(self) -> None:
        """No handshake in time."""
        self.connection()
        self.clock.advance(HANDSHAKE_TIMEOUT_S)
        self.assertEqual(self.connections("handshake_timeout"), 1)

    def test_too_many(self) -> None:
        """Connections beyond the bound of those still in their handshake."""
        for _ in range(MAX_UNAUTHENTICATED_CONNECTIONS):
            self.connection()
        self.assertIsNone(self.node._inbound_protocol())
        self.assertEqual(self.connections("too_many_connections"), 1)

    def test_wrong_key(self) -> None:
        """An outbound connection whose peer proves another key than expected."""
        expected = Peer("127.0.0.1:9", key_for("expected").verify_key_bytes)
        protocol = _NodeProtocol(self.node, self.node._outbound_lost, expected)
        transport = StringTransport()
        protocol.makeConnection(transport)
        impostor = Handshake(key_for("impostor"), initiator=False, nonce=b"n" * 32)
        protocol.dataReceived(frame(impostor.hello_frame))
        for body in frames(transport.value()):
            answer = impostor.receive(body)
            if answer is not None:
                protocol.dataReceived(frame(answer))
        self.assertEqual(self.connections("wrong_key"), 1)

    def test_oversized_before_handshake(self) -> None:
        """A frame over the handshake's limit is refused by the framing."""
        protocol, _ = self.connection()
        protocol.dataReceived(struct.pack(">I", HANDSHAKE_MAX_FRAME + 1))
        self.assertEqual(value(self.registry, "bcr_rejected_frames_total", reason="oversized"), 1)

    def test_framing(self) -> None:
        """Undecodable and truncated frames; a clean close counts nothing."""
        frames_of = FrameProtocol(lambda peer, message: None)
        frames_of.metrics = self.metrics
        frames_of.makeConnection(StringTransport())
        frames_of.dataReceived(frame(b"\xff garbage"))
        frames_of.dataReceived(struct.pack(">I", 10) + b"abc")
        frames_of.connectionLost(Failure(Exception("gone")))
        clean = FrameProtocol(lambda peer, message: None)
        clean.metrics = self.metrics
        clean.makeConnection(StringTransport())
        clean.connectionLost(Failure(Exception("gone")))
        self.assertEqual(
            [
                value(self.registry, "bcr_rejected_frames_total", reason=r)
                for r in ("undecodable", "truncated", "oversized")
            ],
            [1, 1, 0],
        )


class OptionsTests(SynchronousTestCase):
    """C{--metrics} and C{--metrics-port-file} of the daemons."""

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def arguments(self, *extra: str) -> list[str]:
        return [
            "--olympus", "127.0.0.1:7000", "--olympus-key", "00" * 32,
            "--identity-key", os.path.join(self.directory, "identity.key"),
            "--log-dir", self.directory, *extra,
        ]

    def parse(self, *extra: str) -> replica_tap.Options:
        options = replica_tap.Options()
        options.parseOptions(self.arguments(*extra))
        return options

    def refused(self, *extra: str) -> str:
        with self.assertRaises(SystemExit) as caught:
            self.parse(*extra)
        self.assertEqual(caught.exception.code, 1)
        [line] = self.stderr.getvalue().splitlines()
        return line

    def test_default(self) -> None:
        """Without --metrics there is no metrics service, and the node counts nothing."""
        options = self.parse()
        self.assertIsNone(options["metrics"])
        top = cast(MultiService, replica_tap.makeService(options))
        self.assertEqual([service.name for service in top], [options["name"]])
        [node] = list(top)
        self.assertIs(cast(TcpNode, node).metrics, NO_METRICS)

    def test_metrics(self) -> None:
        """
        With --metrics, a metrics service starts before the node, and the
        node and its machine count into one Prometheus sink.
        """
        port_file = os.path.join(self.directory, "metrics.port")
        options = self.parse(
            "--metrics", "tcp:0:interface=127.0.0.1", "--metrics-port-file", port_file
        )
        self.assertEqual(options["metrics"], "tcp:0:interface=127.0.0.1")
        self.assertEqual(options["metrics-port-file"], port_file)
        top = cast(MultiService, replica_tap.makeService(options))
        metrics_service, node = list(top)
        self.assertIsInstance(metrics_service, MetricsService)
        self.assertIsInstance(cast(TcpNode, node).metrics, PrometheusMetrics)

    def test_usage(self) -> None:
        """--help names both options."""
        usage = str(replica_tap.Options())
        self.assertIn("--metrics=", usage)
        self.assertIn("--metrics-port-file=", usage)

    def test_bad_endpoint(self) -> None:
        """An endpoint twisted cannot parse is one line and status 1."""
        for description in ("nonsense:1", "tcp:notaport"):
            self.stderr.truncate(0)
            self.stderr.seek(0)
            line = self.refused("--metrics", description)
            self.assertTrue(line.startswith(f"twistd bcr-replica: --metrics {description!r}"), line)

    def test_port_file_needs_metrics(self) -> None:
        """A metrics port file without metrics is a mistake."""
        line = self.refused("--metrics-port-file", os.path.join(self.directory, "m"))
        self.assertIn("--metrics-port-file needs --metrics", line)

    def test_port_file_directory(self) -> None:
        """A metrics port file must go where it can be written."""
        line = self.refused(
            "--metrics", "tcp:0", "--metrics-port-file", "/nonexistent/dir/metrics.port"
        )
        self.assertIn("--metrics-port-file '/nonexistent/dir/metrics.port'", line)


async def get(url: str, accept: str | None = None) -> tuple[int, Headers, bytes]:
    """One HTTP GET on a fresh connection: status, headers and body."""
    from twisted.internet import reactor

    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    headers = Headers({b"Accept": [accept.encode()]}) if accept else None
    response = await agent.request(b"GET", url.encode(), headers).addTimeout(WAIT_S, reactor)
    body = await readBody(response).addTimeout(WAIT_S, reactor)
    return response.code, response.headers, body


def reactor_of() -> Any:
    from twisted.internet import reactor

    return reactor


class _RawClient(Protocol):
    """A TCP client that records what it receives and when it is closed."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.lost.called:
            self.lost.callback(None)

    def close(self) -> None:
        if self.transport is not None and not self.lost.called:
            self.transport.loseConnection()


class RenderCacheTests(SynchronousTestCase):
    """However often C{/metrics} is asked for, the registry renders once a second."""

    def test_cached_for_a_second(self) -> None:
        from twisted.web.test.requesthelper import DummyRequest

        metrics, registry = sink("replica")
        clock = Clock()
        page = metrics_resource(registry, clock.seconds).getChildWithDefault(
            b"metrics", DummyRequest([b"metrics"])
        )
        first = page.render(DummyRequest([b""]))
        metrics.slot_ordered()
        self.assertEqual(page.render(DummyRequest([b""])), first)
        clock.advance(RENDER_CACHE_S)
        later = page.render(DummyRequest([b""]))
        self.assertIn(b"\nbcr_slots_ordered_total 1.0\n", later)


class RequestBodyTests(SynchronousTestCase):
    """
    A request with a body, declared or chunked, is dropped right after its
    headers: nothing is buffered for it (twisted.web would spool a large
    body to a temporary file first, and answer only once all of it came).
    """

    def channel(self) -> tuple[Any, StringTransport]:
        _, registry = sink("replica")
        site = _MetricsSite(metrics_resource(registry, Clock().seconds))
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        channel.makeConnection(transport)
        # Its idle timer is the global reactor's: ended with the test.
        self.addCleanup(channel.connectionLost, Failure(ConnectionDone()))
        return channel, transport

    def assertDroppedAfterHeaders(self, header: bytes) -> None:
        channel, transport = self.channel()
        channel.dataReceived(b"POST /metrics HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"")

    def test_declared_body(self) -> None:
        self.assertDroppedAfterHeaders(b"Content-Length: 100000000000")

    def test_chunked_body(self) -> None:
        self.assertDroppedAfterHeaders(b"Transfer-Encoding: chunked")

    def test_scrape_without_body(self) -> None:
        """A plain GET is answered."""
        channel, transport = self.channel()
        channel.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertFalse(transport.disconnected)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK"), transport.value()[:80])


class EndpointTests(TestCase):
    """L{MetricsService} serving a registry over real loopback HTTP."""

    timeout = 60

    async def serve(
        self, registry: CollectorRegistry, description: str = "tcp:0:interface=127.0.0.1",
        **kwargs: Any,
    ) -> MetricsService:
        from twisted.internet import reactor

        service = MetricsService(reactor, description, registry, **kwargs)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    async def test_scrape(self) -> None:
        """
        C{/metrics} is the registry in Prometheus text, or OpenMetrics when
        asked for it; the port file names where it listens; nothing else
        is served.
        """
        metrics, registry = sink("replica")
        metrics.slot_ordered()
        metrics.slot_ordered()
        port_file = os.path.join(os.path.abspath(self.mktemp()))
        service = await self.serve(registry, port_file=port_file)
        assert service.listening is not None
        await service.listening
        with open(port_file, encoding="ascii") as f:
            self.assertEqual(f.read(), service.address + "\n")
        url = f"http://{service.address}/metrics"
        code, headers, body = await get(url)
        self.assertEqual(code, 200)
        [content_type] = headers.getRawHeaders(b"content-type") or []
        self.assertTrue(content_type.startswith(b"text/plain; version=0.0.4"), content_type)
        self.assertIn(b"\nbcr_slots_ordered_total 2.0\n", body)
        self.assertIn(b"# TYPE bcr_shuttle_seconds histogram\n", body)
        code, headers, body = await get(url, "application/openmetrics-text; version=1.0.0")
        self.assertEqual(code, 200)
        [content_type] = headers.getRawHeaders(b"content-type") or []
        self.assertTrue(content_type.startswith(b"application/openmetrics-text"), content_type)
        self.assertTrue(body.endswith(b"# EOF\n"), body[-50:])
        code, _, _ = await get(f"http://{service.address}/")
        self.assertEqual(code, 404)

    async def raw(self, address: str, data: bytes = b"") -> _RawClient:
        """A raw TCP connection to C{address} that has sent C{data}."""
        from twisted.internet import reactor

        host, port = address.rsplit(":", 1)
        client = _RawClient()
        await connectProtocol(TCP4ClientEndpoint(reactor, host, int(port)), client)
        self.addCleanup(client.close)
        if data:
            client.transport.write(data)
        return client

    async def test_connections_are_bounded(self) -> None:
        """
        Beyond MAX_METRICS_CONNECTIONS open at once, connections are closed
        as they come: the endpoint cannot take the daemon's descriptors.
        """
        _, registry = sink("replica")
        service = await self.serve(registry)
        assert service.listening is not None
        await service.listening
        clients = [await self.raw(service.address) for _ in range(MAX_METRICS_CONNECTIONS)]
        extra = await self.raw(service.address)
        await extra.lost.addTimeout(WAIT_S, reactor_of())
        self.assertFalse(any(c.lost.called for c in clients))
        clients[0].close()
        await clients[0].lost
        code, _, _ = await get(f"http://{service.address}/metrics")
        self.assertEqual(code, 200)

    async def test_cannot_listen(self) -> None:
        """A port already taken is reported to C{on_failure}, not raised."""
        from twisted.internet import reactor

        taken = reactor.listenTCP(0, ServerFactory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        failures: list[Failure] = []
        await self.serve(
            CollectorRegistry(), f"tcp:{cast(IPv4Address, taken.getHost()).port}:interface=127.0.0.1",
            on_failure=failures.append,
        )
        [failure] = failures
        self.assertTrue(failure.check(CannotListenError))


class _Daemon(ProcessProtocol):
    """A spawned daemon: its output, and a Deferred firing with its exit status."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[Any] = Deferred()
        self.running = True

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        self.ended.callback(cast(Any, reason.value).exitCode)


def _exists(path: str) -> Callable[[], bool]:
    return lambda: os.path.exists(path)


class DaemonTests(TestCase):
    """Real C{twistd bcr-olympus} and C{twistd bcr-replica} processes with --metrics."""

    timeout = 120

    def spawn(self, directory: str, *arguments: str) -> _Daemon:
        from twisted.internet import reactor

        daemon = _Daemon()
        command = twistd_command() + ["-n", "--pidfile=", *arguments]
        process = reactor.spawnProcess(
            daemon, command[0], command, env=child_environment(), path=directory
        )

        async def stop() -> None:
            if daemon.running:
                process.signalProcess("TERM")
                try:
                    await daemon.ended.addTimeout(WAIT_S, reactor)
                except Exception:
                    process.signalProcess("KILL")
                    await daemon.ended

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        return daemon

    async def wait_for(
        self, what: str, check: Callable[[], bool], daemon: _Daemon, seconds: float
    ) -> None:
        """Until C{check()} holds (every 50 ms), the daemon dies, or C{seconds} pass."""
        from twisted.internet import reactor

        deadline = reactor.seconds() + seconds
        while not check():
            if not daemon.running:
                self.fail(f"the daemon ended before {what}: {daemon.output!r}")
            if reactor.seconds() > deadline:
                self.fail(f"no {what} within {seconds} s: {daemon.output!r}")
            await deferLater(reactor, 0.05)

    async def scrape_until(
        self, address: str, wanted: list[bytes], daemon: _Daemon
    ) -> bytes:
        """Scrape C{address} until its text has every line in C{wanted}."""
        from twisted.internet import reactor

        deadline = reactor.seconds() + WAIT_S
        while True:
            _, _, body = await get(f"http://{address}/metrics")
            lines = body.splitlines()
            if all(line in lines for line in wanted):
                return body
            if reactor.seconds() > deadline or not daemon.running:
                self.fail(f"{wanted} not all in {body.decode()}")
            await deferLater(reactor, 0.05)

    async def test_scrape_daemons(self) -> None:
        """
        Olympus and a spare replica, both with C{--metrics tcp:0}: once
        their port files are there, their metrics are served over TCP;
        Olympus's spare pool shows the spare that registered, and the
        garbage a stranger sent it shows as a refused handshake.
        """
        from twisted.internet import reactor

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        olympus_key = os.path.join(directory, "olympus.key")
        crypto.KeyPair.generate().save(olympus_key)
        identity = crypto.KeyPair.generate()
        identity_file = os.path.join(directory, "spare.identity")
        identity.save(identity_file)
        admission = os.path.join(directory, "admitted")
        write_admission(admission, [(identity.verify_key_bytes, "spare")], [])
        path = {
            name: os.path.join(directory, name)
            for name in ("olympus.port", "olympus.metrics", "spare.port", "spare.metrics")
        }
        olympus = self.spawn(
            directory, "bcr-olympus", "--case", os.path.join(CASES, "failure_free.txt"),
            "--admission", admission, "--key-file", olympus_key, "--log-dir", directory,
            "--listen", "tcp:0:interface=127.0.0.1", "--port-file", path["olympus.port"],
            "--metrics", "tcp:0:interface=127.0.0.1",
            "--metrics-port-file", path["olympus.metrics"],
        )
        await self.wait_for("port file", _exists(path["olympus.port"]), olympus, STARTUP_S)
        with open(path["olympus.port"], encoding="ascii") as f:
            olympus_address = f.read().strip()
        with open(path["olympus.metrics"], encoding="ascii") as f:
            olympus_metrics = f.read().strip()
        spare = self.spawn(
            directory, "bcr-replica", "--olympus", olympus_address,
            "--olympus-key", olympus_key + ".pub", "--identity-key", identity_file,
            "--name", "spare", "--log-dir", directory,
            "--listen", "tcp:0:interface=127.0.0.1", "--port-file", path["spare.port"],
            "--metrics", "tcp:0:interface=127.0.0.1",
            "--metrics-port-file", path["spare.metrics"],
        )
        await self.wait_for("port file", _exists(path["spare.port"]), spare, STARTUP_S)
        with open(path["spare.metrics"], encoding="ascii") as f:
            spare_metrics = f.read().strip()

        host, port = parse_address(olympus_address)
        stranger = await connectProtocol(TCP4ClientEndpoint(reactor, host, port), Protocol())
        stranger.transport.write(frame(b"\xff\xfe\xfd"))

        body = await self.scrape_until(
            olympus_metrics,
            [
                b"bcr_spares 1.0",
                b"bcr_configuration -1.0",
                b'bcr_rejected_connections_total{reason="bad_handshake"} 1.0',
            ],
            olympus,
        )
        self.assertNotIn(b"bcr_slots_ordered_total", body)
        body = await self.scrape_until(
            spare_metrics,
            [
                b"bcr_chain_position -1.0",
                b"bcr_configuration -1.0",
                b'bcr_requests_received_total{source="client"} 0.0',
            ],
            spare,
        )
        self.assertNotIn(b"bcr_spares", body)
        # No _created series: a daemon's output is the metrics themselves.
        self.assertNotIn(b"_created", body)


class OlympusStrangerTests(OlympusTestCase):
    """Strangers cannot move the verification counter at Olympus either."""

    def setUp(self) -> None:
        self.metrics, self.registry = sink("olympus")
        self.env = FakeEnvironment(OLYMPUS_ADDRESS)
        self.admission = self.make_admission()
        self.olympus = Olympus(
            self.env, CASE, OLYMPUS_KEY, self.admission, metrics=self.metrics
        )
        self.env.machine = self.olympus
        self.olympus.start()

    def test_forged_envelopes_from_a_stranger(self) -> None:
        """
        Badly signed envelopes from fresh keys are rejected messages only;
        the same from a registered spare is a verification failure.
        """
        for n in range(5):
            key = key_for(f"outsider {n}")
            sealed = self.seal(key, "outsider", "spare", GetConfiguration(0))
            forged = attrs.evolve(sealed, signature=bytes(len(sealed.signature)))
            self.olympus.receive(Peer("outsider", key.verify_key_bytes), forged)
        self.assertEqual(value(self.registry, "bcr_verification_failures_total", kind="sealed"), 0)
        self.assertEqual(
            value(self.registry, "bcr_rejected_messages_total", reason="verification"), 5
        )
        self.register_spare(0)
        sealed = self.seal(spare_key(0), spare_address(0), "spare", GetConfiguration(0))
        forged = attrs.evolve(sealed, signature=bytes(len(sealed.signature)))
        self.olympus.receive(spare_peer(0), forged)
        self.assertEqual(value(self.registry, "bcr_verification_failures_total", kind="sealed"), 1)
