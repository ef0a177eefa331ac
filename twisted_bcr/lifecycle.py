# -*- test-case-name: tests.test_lifecycle -*-
"""
The one run lifecycle both bindings share (docs/LIFECYCLE.md).

A run goes through the same phases whether its processes are real
(L{twisted_bcr.launch}) or simulated (L{twisted_bcr.simulation}):

 1. start: Olympus, the spares, the clients and the driver;
 2. workload: wait until every client has finished, within the deadline
    less what the later phases keep for themselves;
 3. finish: the driver asks Olympus to finish the run, which quiesces the
    chain (letting a reconfiguration the trailing traffic asks for run to
    its end) when the workload is done, or retires at once when it is not;
 4. report: wait for Olympus's L{RunReport}: final states, who was silent,
    placements, reconfigurations, faults fired;
 5. stop every process and build the summary (L{build_summary}) from the
    clients' outcomes and the report alone.

A binding supplies the phases' mechanics (L{RunBinding}); this module
decides their order, their deadlines and what an overrun means, once.
Nothing that decides control or the verdict comes from a log.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, Protocol, TypeVar, cast

import attrs
from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from twisted_bcr.checking import build_summary
from twisted_bcr.config import Case, CaseError
from twisted_bcr.core.client import ClientOutcome
from twisted_bcr.messages import RunReport

__all__ = [
    "OneShot",
    "Progress",
    "RunAbandoned",
    "RunBinding",
    "RunFailed",
    "RunSpec",
    "run_lifecycle",
]

_T = TypeVar("_T")

#: How much of the deadline stopping every process may take at most: a
#: second for children to exit on SIGTERM, a second more before SIGKILL.
STOP_RESERVE_S = 2.0


class OneShot:
    """Something that happens once; every L{wait} is its own Deferred."""

    def __init__(self) -> None:
        self.fired = False
        self.value: Any = None
        self._waiting: list[Deferred[Any]] = []

    def fire(self, value: Any = None) -> None:
        if self.fired:
            return
        self.fired, self.value = True, value
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(value)

    def wait(self) -> Deferred[Any]:
        if self.fired:
            return succeed(self.value)
        d: Deferred[Any] = Deferred(lambda d: self._waiting.remove(d))
        self._waiting.append(d)
        return d


@frozen
class Progress:
    """
    How far a run is, as a binding reports it while it runs (the launcher
    as JSON lines to C{bcr}, the simulation by a callback).
    """

    results: int
    requests: int
    configuration: int
    elapsed_s: float

    @classmethod
    def of(
        cls, outcomes: Sequence[ClientOutcome], configurations: Iterable[int], elapsed_s: float
    ) -> Progress:
        return cls(
            results=sum(o.accepted for o in outcomes),
            requests=sum(len(o.operations) for o in outcomes),
            configuration=max(configurations, default=-1),
            elapsed_s=round(elapsed_s, 3),
        )

    def as_line(self) -> str:
        return json.dumps(attrs.asdict(self))

    @classmethod
    def from_line(cls, line: bytes) -> Progress | None:
        try:
            return cls(**json.loads(line))
        except (ValueError, TypeError):
            return None


class RunFailed(Exception):
    """A phase did not complete; the message is one line for the summary's errors."""


class RunAbandoned(RunFailed):
    """No report can come any more (Olympus is gone): skip to stopping."""


@frozen
class RunSpec:
    """What a run is, fixed before anything starts: the parsed case and its bounds."""

    case: Case
    #: Bound on the whole run, every phase included (the binding's clock:
    #: wall-clock with processes, simulated in simulation).
    deadline_s: float
    #: Spare replicas kept beyond configuration 0.
    spares: int

    @property
    def stop_reserve_s(self) -> float:
        """The deadline's last part, kept for stopping every process."""
        return min(STOP_RESERVE_S, self.deadline_s / 6)

    @property
    def report_until_s(self) -> float:
        """Seconds from the run's start by which Olympus's report must have come."""
        return self.deadline_s - self.stop_reserve_s

    @property
    def workload_until_s(self) -> float:
        """
        Seconds from the run's start by which every client must have
        finished: what the deadline leaves once the report's grace (at most
        half the deadline) and the stop are set aside.  Olympus waits two
        step timeouts for final states after a failed workload; the grace,
        three, leaves it room to answer.
        """
        report_reserve = min(self.case.report_grace_s, self.deadline_s / 2)
        return self.report_until_s - report_reserve

    @classmethod
    def checked(cls, case: Case, deadline_s: float, spares: int) -> RunSpec:
        """
        The spec of a run of C{case}, refused before anything starts if the
        run could not end well.

        @raise CaseError: one line naming the problem.
        """
        if case.num_client < 1:
            raise CaseError(case.path, "num_client = 0: a run needs at least one client")
        if not deadline_s > 0:
            raise CaseError(case.path, f"the deadline must be positive, not {deadline_s}")
        if spares < 0:
            raise CaseError(case.path, f"cannot keep {spares} spares")
        return cls(case, deadline_s, spares)


class RunBinding(Protocol):
    """How one binding carries out the phases of L{run_lifecycle}."""

    #: The summary's C{mode}: C{"processes"} or C{"simulation"}.
    mode: str

    def start(self) -> Awaitable[None]:
        """Start every process; L{RunFailed} if that cannot be done."""

    def workload_done(self) -> Deferred[Any]:
        """Fires once every client has finished."""

    def finish(self, reason: str, workload_done: bool) -> None:
        """Have the driver ask Olympus to finish the run."""

    def run_report(self) -> Deferred[RunReport]:
        """Fires with Olympus's report."""

    def wait(
        self,
        waitable: Deferred[_T],
        what: str,
        until_s: float,
        within_s: float | None = None,
        may_end_early: bool = False,
    ) -> Awaitable[_T]:
        """
        C{waitable}'s result, or L{RunFailed} naming C{what} once
        C{until_s} seconds from the run's start have passed, or C{within_s}
        from now if that comes first (or, if C{may_end_early}, once a test
        hook ended the run).
        """

    def stop(self, until_s: float) -> Awaitable[list[str]]:
        """
        Stop every process, signalling those that do not exit by
        themselves so that all are gone C{until_s} seconds from the run's
        start; the errors that came of it.
        """

    def outcomes(self) -> list[ClientOutcome]:
        """What every client recorded."""

    def elapsed_s(self) -> float:
        """From start to the workload's end (or to now, if it did not end)."""

    def failed(self, error: str, failure: Failure | None = None) -> None:
        """Note (log) an error of the run as it happens, with its traceback if any."""


async def run_lifecycle(binding: RunBinding, spec: RunSpec) -> dict[str, Any]:
    """Run every phase in order; return the summary (DESIGN §4)."""
    errors: list[str] = []
    report: RunReport | None = None
    try:
        await binding.start()
        try:
            await binding.wait(
                binding.workload_done(), "every client to finish", spec.workload_until_s,
                may_end_early=True,
            )
            reason, done, within = "every client has finished", True, None
        except RunAbandoned:
            raise
        except RunFailed as e:
            # Still ask Olympus for its account: what it saw (e.g. that more
            # than t replicas seem faulty) and the final states it can get.
            errors.append(str(e))
            binding.failed(str(e))
            reason, done = "the run's deadline passed", False
            within = spec.case.report_grace_s
        binding.finish(reason, done)
        report = await binding.wait(
            binding.run_report(), "Olympus's run report", spec.report_until_s, within
        )
    except RunFailed as e:
        errors.append(str(e))
        binding.failed(str(e))
    except Exception as e:
        errors.append(f"{binding.mode}: {type(e).__name__}: {e}")
        binding.failed(errors[-1], Failure())
    errors += await binding.stop(spec.deadline_s)
    summary = build_summary(
        spec.case, binding.mode, binding.outcomes(), report, binding.elapsed_s(), errors
    )
    # The bounds the run had, so that a failed one can be read against them.
    summary["deadline_s"] = spec.deadline_s
    summary["workload_until_s"] = round(spec.workload_until_s, 3)
    return summary


def result_now(d: Deferred[_T]) -> _T:
    """
    The result of a Deferred that has already fired (a lifecycle whose
    every wait completes synchronously, as in simulation).
    """
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return cast(_T, results[0])
