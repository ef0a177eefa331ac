# -*- test-case-name: tests.test_metrics -*-
"""
The metrics sink the core counts into when nobody is watching, and the
label values the core and the bindings use.

L{NO_METRICS} provides L{IMetrics} and does nothing at all: the core's
machines use it unless they are given a real sink, so the simulation,
the tests and a daemon started without C{--metrics} pay one empty method
call per event.  The Prometheus sink is L{twisted_bcr.net.metrics}; this
module imports neither it nor prometheus_client, so the core may import
it.
"""

from __future__ import annotations

from zope.interface import implementer

from twisted_bcr.interfaces import IMetrics

__all__ = [
    "CONNECTION_REASONS",
    "FRAME_REASONS",
    "NO_METRICS",
    "PHASES",
    "REJECTION_REASONS",
    "REQUESTERS",
    "REQUEST_SOURCES",
    "VERIFICATION_KINDS",
    "NoMetrics",
]

#: The label values of each labelled metric (L{IMetrics} says what they mean).
REQUEST_SOURCES = ("client", "forwarded")
REQUESTERS = ("replica", "client")
PHASES = ("quorum", "caught_up", "running_state")
VERIFICATION_KINDS = (
    "request",
    "shuttle",
    "result_shuttle",
    "result_statement",
    "checkpoint",
    "completed_checkpoint",
    "sealed",
    "recovered_result",
    "registration",
    "wedged",
    "quorum",
    "caught_up",
    "running_state",
)
REJECTION_REASONS = ("verification", "not_allowed", "not_admitted", "over_limit", "unexpected")
FRAME_REASONS = ("oversized", "undecodable", "truncated")
CONNECTION_REASONS = ("bad_handshake", "handshake_timeout", "wrong_key", "too_many_connections")


@implementer(IMetrics)
class NoMetrics:
    """An L{IMetrics} that counts nothing."""

    def request_received(self, source: str) -> None:
        pass

    def slot_ordered(self) -> None:
        pass

    def slot_executed(self) -> None:
        pass

    def result_sent(self) -> None:
        pass

    def shuttle_completed(self, seconds: float) -> None:
        pass

    def checkpoint_completed(self) -> None:
        pass

    def reconfiguration_requested(self) -> None:
        pass

    def wedged(self) -> None:
        pass

    def chain_position(self, index: int) -> None:
        pass

    def reconfiguration_request_received(self, requester: str) -> None:
        pass

    def reconfiguration_started(self) -> None:
        pass

    def reconfiguration_phase(self, phase: str, seconds: float) -> None:
        pass

    def reconfiguration_completed(self, seconds: float) -> None:
        pass

    def wedged_message_received(self) -> None:
        pass

    def spares(self, count: int) -> None:
        pass

    def configuration(self, number: int) -> None:
        pass

    def verification_failed(self, kind: str) -> None:
        pass

    def message_rejected(self, reason: str) -> None:
        pass

    def frame_rejected(self, reason: str) -> None:
        pass

    def connection_rejected(self, reason: str) -> None:
        pass


#: The one sink that counts nothing.
NO_METRICS: IMetrics = NoMetrics()
