# -*- test-case-name: tests.test_simulation -*-
"""
The test driver's side of a run (SPEC §1 "Run lifecycle"): pure.

When every client has finished, the driver asks Olympus (sealing the request
with Olympus's own key, which only the operator who started Olympus holds)
to retire every replica, and receives Olympus's L{RunReport}: the final
dictionaries and the reconfiguration history.  Both bindings use this class;
what happens with the report (summary JSON, exit status) is theirs.
"""

from __future__ import annotations

from collections.abc import Callable

from zope.interface import implementer

from twisted_bcr import codec, crypto
from twisted_bcr.core.common import MAX_MESSAGE, OLYMPUS, from_olympus
from twisted_bcr.interfaces import IEnvironment, IMachine
from twisted_bcr.messages import FinishRun, RunReport
from twisted_bcr.peers import Peer
from twisted_bcr.throttle import Throttle, clip


@implementer(IMachine)
class Driver:
    """Ends a run on request and hands Olympus's report to C{on_report}."""

    def __init__(
        self,
        env: IEnvironment,
        olympus: Peer,
        olympus_key: crypto.KeyPair,
        on_report: Callable[[RunReport], None],
    ) -> None:
        self._env = env
        self._log = env.log
        self._olympus = olympus
        self._olympus_key = olympus_key
        self._on_report = on_report
        self._verifier = crypto.Verifier()
        self.report: RunReport | None = None
        self._throttle = Throttle(env.now)

    def start(self) -> None:
        """Nothing happens until L{finish}."""

    def finish(self, reason: str, workload_done: bool = True) -> None:
        """
        Ask Olympus to retire every replica and report: once quiescent if
        C{workload_done}, else at once (the run failed or was ended).
        """
        self._log.info(
            "driver asks Olympus to finish the run: {reason}",
            reason=reason, event="bcr.finish", node="driver",
        )
        sealed = crypto.seal(
            self._olympus_key, self._env.address, OLYMPUS, FinishRun(reason, workload_done),
            # Its first and only message: it has not heard Olympus's epoch.
            recipient=self._olympus.key, epoch=b"",
        )
        self._env.send(self._olympus, sealed)

    def receive(self, sender: Peer, message: object) -> None:
        """Accept Olympus's sealed run report; reject anything else."""
        try:
            if sender.key != self._olympus.key:
                raise crypto.BadSignature("not from Olympus")
            report = from_olympus(
                self._verifier, message, self._olympus_key.verify_key_bytes,
                self._olympus_key.verify_key_bytes,
            )
            if not isinstance(report, RunReport):
                raise codec.BadMessage(f"unexpected {type(report).__name__}")
        except (crypto.BadSignature, codec.BadMessage) as e:
            if self._throttle.allow("all") is not None:
                self._log.warn(
                    "driver rejected input from {peer}: {reason}",
                    peer=sender.address, reason=clip(e), event="bcr.rejected", node="driver",
                )
            return
        if self.report is None:
            self.report = report
            self._log.info(
                "driver got the run report: configuration {configuration}, "
                "{count} final states", configuration=report.configuration,
                count=len(report.final_states), event="bcr.report", node="driver",
            )
            self._on_report(report)

    def max_message_from(self, key: bytes) -> int:
        # Olympus's run report carries every final dictionary.
        return MAX_MESSAGE

    def timer_expired(self, key: str) -> None:
        """The driver sets no timers; its binding owns the run deadline."""
