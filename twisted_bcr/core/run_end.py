# -*- test-case-name: tests.test_core_olympus -*-
"""
The end of a run at Olympus (docs/DECISIONS.md "End of a run",
docs/LIFECYCLE.md): pure, like the rest of the core.

When the driver asks Olympus to finish a run whose workload is done, the
current configuration is first quiesced: its replicas finish the work in
flight, and a reconfiguration that work asks for runs to its end (then the
new configuration is quiesced).  Then the configuration and every spare are
retired, final states collected for two step timeouts (a crashed replica
never answers), and Olympus sends the driver its L{RunReport}.  A run whose
workload is not done is retired at once.

L{RunEnd} also keeps the account that report carries beyond final states:
which spare took each place, and the faults replicas reported firing.
"""

from __future__ import annotations

import json
from collections.abc import Container
from typing import TYPE_CHECKING

from attrs import define, field

from twisted_bcr.core.common import OLYMPUS, replica_name
from twisted_bcr.messages import (
    FaultFired,
    FinalState,
    FinishRun,
    Placement,
    Quiesce,
    Quiescent,
    RunReport,
    Shutdown,
)
from twisted_bcr.peers import Peer, peer_of
from twisted_bcr.throttle import clip

if TYPE_CHECKING:
    from twisted_bcr.core.olympus import Olympus

__all__ = ["ANNOUNCE_TIMER", "FINISH_TIMER", "RunEnd"]

#: Olympus's timers this module starts or stops.
FINISH_TIMER = "finish"
ANNOUNCE_TIMER = "announce"


@define
class _Finishing:
    """
    A run being wound up (docs/DECISIONS.md "End of a run"): quiesced, then retired.

    While quiescing, the replicas of configuration C{quiescing} finish the
    work in flight and say so; a reconfiguration that work asks for runs to
    its end first (C{quiescing} is None meanwhile), and then its new
    configuration is quiesced.  Once C{retiring}, the final states of the
    C{expected} replicas are collected for the report.
    """

    driver: Peer
    quiescing: int | None = None
    quiescent: set[int] = field(factory=set)
    retiring: bool = False
    expected: int = 0
    final_states: dict[int, FinalState] = field(factory=dict)
    errors: list[str] = field(factory=list)
    reported: bool = False


def _missing(count: int, answered: Container[int]) -> list[int]:
    """The positions 0 .. C{count}-1 that are not in C{answered}."""
    return [i for i in range(count) if i not in answered]



class RunEnd:
    """The end of one run at one Olympus, and the account of the run."""

    def __init__(self, olympus: Olympus) -> None:
        self._olympus = olympus
        self._env = olympus._env
        self._log = olympus._log
        self._case = olympus._case
        self.finishing: _Finishing | None = None
        #: Which spare took each place, for the run report.
        self.placements: list[Placement] = []
        #: The faults replicas reported firing, at most one record per
        #: trigger/failure pair their failures line names.
        self.faults_fired: list[FaultFired] = []
        #: When Olympus received each of those (its clock).
        self._fired_at: dict[FaultFired, float] = {}

    @property
    def started(self) -> bool:
        """The driver asked to finish the run."""
        return self.finishing is not None

    @property
    def retiring(self) -> bool:
        """The replicas are being retired: too late for a reconfiguration."""
        return self.finishing is not None and self.finishing.retiring

    def placed(self, placement: Placement) -> None:
        self.placements.append(placement)

    def reconfiguration_started(self) -> None:
        """
        Work that trailed the workload revealed misbehaviour: the run ends
        after this reconfiguration, within its own allowance.
        """
        if self.finishing is not None:
            self.finishing.quiescing = None
            self._env.start_timer(FINISH_TIMER, self._reconfiguration_allowance_s())

    def configuration_installed(self) -> None:
        """A reconfiguration ended; quiesce the new configuration if the run is finishing."""
        if self.finishing is not None:
            # Its assignments went first on the same connections.
            self._quiesce(self.finishing)

    def timer_expired(self) -> None:
        if self.finishing is not None:
            self._finish_step_expired(self.finishing)

    def on_finish_run(self, sender: Peer, message: FinishRun) -> None:
        if self.finishing is not None:
            self._olympus._reject(sender, "the run is already finishing")
            return
        finishing = self.finishing = _Finishing(driver=sender)
        self._env.cancel_timer(ANNOUNCE_TIMER)
        self._log.info(
            "olympus winding up the run ({reason}){waiting}",
            reason=clip(message.reason),
            workload_done=message.workload_done,
            waiting=(
                f": waiting for the reconfiguration of configuration "
                f"{self._olympus.reconfiguring.number} to end"
                if self._olympus.reconfiguring is not None and message.workload_done else ""
            ),
            event="bcr.finish", node=OLYMPUS,
        )
        if self._olympus.configuration is None:
            self._retire_all(finishing)
        elif not message.workload_done:
            # The run failed or was ended: what is in flight no longer matters.
            self._olympus.abandon_reconfiguration()
            self._retire_all(finishing)
        elif self._olympus.reconfiguring is not None:
            self._env.start_timer(FINISH_TIMER, self._reconfiguration_allowance_s())
        else:
            self._quiesce(finishing)

    def _reconfiguration_allowance_s(self) -> float:
        """
        How long a run's end waits for a reconfiguration: the wedge step and
        t+1 quorum attempts of two steps each (catch-up, running state).
        """
        return (2 * self._case.t + 3) * self._case.step_timeout_s

    def _quiesce(self, finishing: _Finishing) -> None:
        """Ask the current configuration to finish its work in flight."""
        assert self._olympus.configuration is not None
        number = self._olympus.configuration.number
        finishing.quiescing = number
        finishing.quiescent = set()
        # The clients are done: a configuration installed now is not announced.
        self._env.cancel_timer(ANNOUNCE_TIMER)
        for replica in self._olympus.configuration.replicas:
            self._olympus._send_sealed(peer_of(replica), Quiesce(number), number)
        # A replica drains for at most one step timeout, then answers.
        self._env.start_timer(FINISH_TIMER, 2 * self._case.step_timeout_s)

    def on_quiescent(self, signer: str, message: Quiescent) -> None:
        finishing = self.finishing
        if finishing is None or finishing.quiescing != message.configuration:
            # Late (a reconfiguration began, or the deadline passed): harmless.
            return
        finishing.quiescent.add(message.index)
        if not message.drained:
            self._log.warn(
                "olympus: {replica} is quiescent with work still in flight",
                replica=signer, event="bcr.quiescent", drained=False, node=OLYMPUS,
            )
        assert self._olympus.configuration is not None
        if len(finishing.quiescent) == len(self._olympus.configuration.replicas):
            self._retire_all(finishing)

    def _finish_step_expired(self, finishing: _Finishing) -> None:
        if finishing.retiring:
            # Not an error in itself: a crashed replica never answers.  The
            # report names the silent ones; the verdict needs t+1 answers.
            self._log.warn(
                "olympus: no final state from replicas {missing} before the deadline",
                missing=self._silent(), event="bcr.final_state_timeout", node=OLYMPUS,
            )
            self._report()
            return
        if self._olympus.reconfiguring is not None:
            self._olympus.abandon_reconfiguration()
        else:
            # Crashed or stalled replicas never answer; retiring them is
            # all that is left to do.
            assert self._olympus.configuration is not None
            self._log.warn(
                "olympus: replicas {silent} did not say they are quiescent in time",
                silent=_missing(len(self._olympus.configuration.replicas), finishing.quiescent),
                event="bcr.quiesce_timeout", node=OLYMPUS,
            )
        self._retire_all(finishing)

    def _retire_all(self, finishing: _Finishing) -> None:
        """Retire the current configuration and every spare, then collect final states."""
        finishing.retiring = True
        finishing.quiescing = None
        self._env.cancel_timer(FINISH_TIMER)
        finishing.expected = len(self._olympus.configuration.replicas) if self._olympus.configuration else 0
        self._log.info(
            "olympus finishing the run: retiring {count} replicas",
            count=finishing.expected, event="bcr.retire_all", node=OLYMPUS,
        )
        if self._olympus.configuration is not None:
            number = self._olympus.configuration.number
            for replica in self._olympus.configuration.replicas:
                self._olympus._send_sealed(peer_of(replica), Shutdown(number), number)
        for spare in self._olympus.spares:
            self._olympus._send_sealed(peer_of(spare), Shutdown(-1))
        if finishing.expected == 0:
            self._report()
            return
        # Replicas may take one step timeout to drain before reporting.
        self._env.start_timer(FINISH_TIMER, 2 * self._case.step_timeout_s)

    def on_final_state(self, sender: Peer, signer: str, message: FinalState) -> None:
        finishing = self.finishing
        current = self._olympus.configuration
        if (
            current is not None and message.configuration < current.number
            and signer == replica_name(message.configuration, message.index)
        ):
            # A replica of a replaced configuration, retired by Olympus.
            self._log.info(
                "olympus: retired {replica} reports its final dictionary {state!r}",
                replica=signer, state=dict(sorted(message.state.items())),
                last_slot=message.last_slot, event="bcr.retired", node=OLYMPUS,
            )
            return
        if finishing is None or not finishing.retiring or finishing.reported:
            self._olympus._reject(sender, "final state outside the end of a run")
            return
        if self._olympus.configuration is None or signer != replica_name(
            self._olympus.configuration.number, message.index
        ):
            # A replica may only report its own dictionary.
            self._olympus._reject(
                sender,
                f"final state of replica {message.configuration}.{message.index} "
                f"sealed by {signer!r}",
            )
            return
        finishing.final_states[message.index] = message
        self._log.info(
            "olympus got the final dictionary of {replica}: {state!r}",
            replica=signer, state=dict(sorted(message.state.items())),
            last_slot=message.last_slot, event="bcr.final_state", node=OLYMPUS,
        )
        if len(finishing.final_states) == finishing.expected:
            self._env.cancel_timer(FINISH_TIMER)
            self._report()

    def on_fault_fired(self, sender: Peer, signer: str, message: FaultFired) -> None:
        # Only faults the case gave this place, each recorded once: a
        # replica cannot grow the report beyond its own failures line.
        planned = self._case.failures_for(message.configuration, message.index)
        recorded = [
            f for f in self.faults_fired
            if (f.configuration, f.index) == (message.configuration, message.index)
        ]
        if message in recorded:
            return
        if len(recorded) >= len(planned):
            self._olympus._reject(sender, f"more fault reports than {signer} has failures")
            return
        self.faults_fired.append(message)
        self._fired_at[message] = self._env.now()

    def _silent(self) -> list[int]:
        """The replicas of the last configuration whose final state is missing."""
        assert self.finishing is not None
        return _missing(self.finishing.expected, self.finishing.final_states)

    def _report(self) -> None:
        finishing = self.finishing
        assert finishing is not None and not finishing.reported
        finishing.reported = True
        # By place; each replica's own in the order it fired them.
        fired = sorted(self.faults_fired, key=lambda f: (f.configuration, f.index))
        report = RunReport(
            configuration=self._olympus.configuration.number if self._olympus.configuration else -1,
            final_states=tuple(
                finishing.final_states[i] for i in sorted(finishing.final_states)
            ),
            reconfigurations_json=json.dumps(self._olympus.reconfigurations),
            errors=tuple(
                self._olympus.errors + self._olympus.registration_errors() + finishing.errors
            ),
            silent=tuple(self._silent()),
            placements=tuple(self.placements),
            faults_fired=tuple(fired),
            faults_fired_at_us=tuple(round(self._fired_at[f] * 1e6) for f in fired),
        )
        self._log.info(
            "olympus reports the run to {driver}", driver=finishing.driver.address,
            errors=list(finishing.errors), event="bcr.report", node=OLYMPUS,
        )
        self._olympus._send_sealed(finishing.driver, report)
