"""
Tests for L{twisted_bcr.lifecycle}: the order of a run's phases, what an
overrun or an abandoned run means, and the small Deferred helpers the
bindings share.

A fake binding records the calls L{run_lifecycle} makes; its waits complete
at once (the result of a Deferred that has fired, else L{RunFailed}), so
each whole lifecycle runs synchronously.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, fail, succeed
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_checking import CASE, FINAL, good_outcomes, report
from twisted_bcr.checking import build_summary
from twisted_bcr.core.client import ClientOutcome
from twisted_bcr.lifecycle import (
    STOP_RESERVE_S,
    OneShot,
    RunAbandoned,
    RunBinding,
    RunFailed,
    RunSpec,
    result_now,
    run_lifecycle,
)
from twisted_bcr.messages import RunReport

_T = TypeVar("_T")

SPEC = RunSpec(CASE, deadline_s=30.0, spares=1)

WORKLOAD = "every client to finish"
REPORT = "Olympus's run report"


class FakeBinding:
    """
    A L{RunBinding} whose phases are recorded in C{calls}; the workload and
    the report are L{OneShot}s a test fires (or not) beforehand.
    """

    mode = "fake"

    def __init__(
        self,
        outcomes: Sequence[ClientOutcome] | None = None,
        start_error: BaseException | None = None,
        abandon_at: str | None = None,
        stop_errors: Sequence[str] = (),
    ) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.workload = OneShot()
        self.reported = OneShot()
        self._outcomes = list(outcomes) if outcomes is not None else good_outcomes()
        self._start_error = start_error
        #: The C{what} of the wait that raises RunAbandoned.
        self._abandon_at = abandon_at
        self._stop_errors = list(stop_errors)
        self.failures: list[Failure | None] = []

    async def start(self) -> None:
        self.calls.append(("start",))
        if self._start_error is not None:
            raise self._start_error

    def workload_done(self) -> Deferred[Any]:
        self.calls.append(("workload_done",))
        return self.workload.wait()

    def finish(self, reason: str, workload_done: bool) -> None:
        self.calls.append(("finish", reason, workload_done))

    def run_report(self) -> Deferred[RunReport]:
        self.calls.append(("run_report",))
        return self.reported.wait()

    async def wait(
        self,
        waitable: Deferred[_T],
        what: str,
        until_s: float,
        within_s: float | None = None,
        may_end_early: bool = False,
    ) -> _T:
        self.calls.append(("wait", what, until_s, within_s, may_end_early))
        if what == self._abandon_at:
            waitable.cancel()
            waitable.addErrback(lambda _: None)
            raise RunAbandoned(f"olympus is gone while waiting for {what}")
        if not waitable.called:
            waitable.cancel()
            waitable.addErrback(lambda _: None)
            raise RunFailed(f"the deadline passed while waiting for {what}")
        return await waitable

    async def stop(self, until_s: float) -> list[str]:
        self.calls.append(("stop", until_s))
        return list(self._stop_errors)

    def outcomes(self) -> list[ClientOutcome]:
        return list(self._outcomes)

    def elapsed_s(self) -> float:
        return 2.0

    def failed(self, error: str, failure: Failure | None = None) -> None:
        self.calls.append(("failed", error))
        self.failures.append(failure)


def _typed(binding: FakeBinding) -> RunBinding:
    """The fake, checked (by mypy) to implement the protocol."""
    return binding


GOOD_REPORT = report(FINAL, FINAL, FINAL)


class RunLifecycleTests(SynchronousTestCase):
    """run_lifecycle runs the phases in order and judges the run from outcomes and report."""

    def run_fake(self, binding: FakeBinding, spec: RunSpec = SPEC) -> dict[str, Any]:
        """The summary of a lifecycle that, with the fake's waits, completes at once."""
        result: dict[str, Any] = self.successResultOf(
            ensureDeferred(run_lifecycle(_typed(binding), spec))
        )
        return result

    def test_normal_order(self) -> None:
        """start, the workload's wait, finish (done), the report's wait, stop: in that order."""
        binding = FakeBinding()
        binding.workload.fire()
        binding.reported.fire(GOOD_REPORT)
        self.run_fake(binding)
        self.assertEqual(
            binding.calls,
            [
                ("start",),
                ("workload_done",),
                ("wait", WORKLOAD, SPEC.workload_until_s, None, True),
                ("finish", "every client has finished", True),
                ("run_report",),
                ("wait", REPORT, SPEC.report_until_s, None, False),
                ("stop", SPEC.deadline_s),
            ],
        )

    def test_summary_from_outcomes_and_report(self) -> None:
        """The summary is build_summary's of the binding's outcomes, the report and elapsed time."""
        binding = FakeBinding()
        binding.workload.fire()
        binding.reported.fire(GOOD_REPORT)
        summary = self.run_fake(binding)
        self.assertTrue(summary["ok"])
        self.assertEqual(summary["errors"], [])
        self.assertEqual(summary["mode"], "fake")
        self.assertEqual(summary["final_state"], FINAL)
        self.assertEqual(
            summary,
            {
                **build_summary(CASE, "fake", good_outcomes(), GOOD_REPORT, 2.0, []),
                "deadline_s": SPEC.deadline_s,
                "workload_until_s": SPEC.workload_until_s,
            },
        )

    def test_outcomes_judged(self) -> None:
        """What the binding's clients recorded is judged: a wrong result fails the run."""
        outcomes = good_outcomes()
        outcomes[0].results[2] = "star"
        binding = FakeBinding(outcomes)
        binding.workload.fire()
        binding.reported.fire(GOOD_REPORT)
        summary = self.run_fake(binding)
        self.assertFalse(summary["ok"])
        self.assertFalse(summary["linearizable"])

    def test_workload_deadline(self) -> None:
        """
        A workload unfinished by the deadline is an error; the driver still
        finishes the run (workload not done) and the report is awaited for
        the case's report grace.
        """
        binding = FakeBinding()
        binding.reported.fire(GOOD_REPORT)
        summary = self.run_fake(binding)
        deadline = f"the deadline passed while waiting for {WORKLOAD}"
        self.assertEqual(
            binding.calls,
            [
                ("start",),
                ("workload_done",),
                ("wait", WORKLOAD, SPEC.workload_until_s, None, True),
                ("failed", deadline),
                ("finish", "the run's deadline passed", False),
                ("run_report",),
                ("wait", REPORT, SPEC.report_until_s, CASE.report_grace_s, False),
                ("stop", SPEC.deadline_s),
            ],
        )
        self.assertEqual(binding.failures, [None])
        self.assertFalse(summary["ok"])
        self.assertEqual(summary["errors"], [deadline])
        # The report that did come is in the summary.
        self.assertEqual(summary["final_state"], FINAL)

    def test_workload_deadline_no_report(self) -> None:
        """Without a report after the deadline either, both waits' errors are in the summary."""
        binding = FakeBinding()
        summary = self.run_fake(binding)
        self.assertEqual(
            summary["errors"],
            [
                f"the deadline passed while waiting for {WORKLOAD}",
                f"the deadline passed while waiting for {REPORT}",
                "no run report from Olympus",
            ],
        )
        self.assertEqual(binding.calls[-1], ("stop", SPEC.deadline_s))

    def test_no_report(self) -> None:
        """A finished workload without a report: the wait's error, and the run fails."""
        binding = FakeBinding()
        binding.workload.fire()
        summary = self.run_fake(binding)
        error = f"the deadline passed while waiting for {REPORT}"
        self.assertEqual(summary["errors"], [error, "no run report from Olympus"])
        self.assertEqual(binding.calls[-2:], [("failed", error), ("stop", SPEC.deadline_s)])
        self.assertIn(("finish", "every client has finished", True), binding.calls)

    def test_abandoned_during_workload(self) -> None:
        """RunAbandoned while the workload runs skips finish and the report, but still stops."""
        binding = FakeBinding(abandon_at=WORKLOAD)
        binding.reported.fire(GOOD_REPORT)
        summary = self.run_fake(binding)
        error = f"olympus is gone while waiting for {WORKLOAD}"
        self.assertEqual(
            binding.calls,
            [("start",), ("workload_done",), ("wait", WORKLOAD, SPEC.workload_until_s, None, True), ("failed", error), ("stop", SPEC.deadline_s)],
        )
        self.assertEqual(binding.failures, [None])
        self.assertFalse(summary["ok"])
        self.assertEqual(summary["errors"], [error, "no run report from Olympus"])

    def test_start_raises(self) -> None:
        """
        An unexpected exception (a bug) in start is one error line naming the
        mode and the exception, given to failed with its Failure; stop still runs.
        """
        binding = FakeBinding(start_error=ZeroDivisionError("division by zero"))
        summary = self.run_fake(binding)
        error = "fake: ZeroDivisionError: division by zero"
        self.assertEqual(binding.calls, [("start",), ("failed", error), ("stop", SPEC.deadline_s)])
        [failure] = binding.failures
        assert failure is not None
        self.assertIsInstance(failure, Failure)
        self.assertTrue(failure.check(ZeroDivisionError))
        self.assertEqual(summary["errors"], [error, "no run report from Olympus"])
        self.assertFalse(summary["ok"])

    def test_start_fails(self) -> None:
        """A RunFailed from start is its message alone, without a traceback; stop still runs."""
        binding = FakeBinding(start_error=RunFailed("olympus did not start"))
        summary = self.run_fake(binding)
        self.assertEqual(
            binding.calls, [("start",), ("failed", "olympus did not start"), ("stop", SPEC.deadline_s)]
        )
        self.assertEqual(binding.failures, [None])
        self.assertEqual(summary["errors"], ["olympus did not start", "no run report from Olympus"])

    def test_stop_errors(self) -> None:
        """Errors of stopping the processes are errors of the run, after the others."""
        binding = FakeBinding(stop_errors=["olympus did not exit; sent SIGTERM"])
        binding.workload.fire()
        binding.reported.fire(GOOD_REPORT)
        summary = self.run_fake(binding)
        self.assertFalse(summary["ok"])
        self.assertEqual(summary["errors"], ["olympus did not exit; sent SIGTERM"])

    def test_spec(self) -> None:
        """A RunSpec is fixed once made."""
        self.assertEqual((SPEC.case, SPEC.deadline_s, SPEC.spares), (CASE, 30.0, 1))
        with self.assertRaises(attrs.exceptions.FrozenInstanceError):
            SPEC.deadline_s = 1.0  # type: ignore[misc]

    def test_phases_share_the_deadline(self) -> None:
        """
        The deadline bounds the whole run: the workload ends early enough
        for the report's grace and the stop to fit before it.
        """
        self.assertEqual(SPEC.stop_reserve_s, STOP_RESERVE_S)
        self.assertEqual(SPEC.report_until_s, 30.0 - STOP_RESERVE_S)
        self.assertEqual(
            SPEC.workload_until_s, 30.0 - STOP_RESERVE_S - min(CASE.report_grace_s, 15.0)
        )

    def test_short_deadline(self) -> None:
        """
        A short deadline keeps a sixth of it to stop and half for the
        report, whatever the case's timeouts: the workload gets a third.
        """
        spec = RunSpec(CASE, deadline_s=6.0, spares=1)
        self.assertEqual(spec.report_until_s, 5.0)
        self.assertEqual(spec.workload_until_s, 2.0)

    def test_lifecycle_waits_by_the_phases(self) -> None:
        """No wait of the lifecycle ends after the deadline, nor does the stop."""
        binding = FakeBinding()
        self.run_fake(binding)
        untils = [call[2] for call in binding.calls if call[0] == "wait"]
        untils += [call[1] for call in binding.calls if call[0] == "stop"]
        self.assertTrue(untils)
        self.assertLessEqual(max(untils), SPEC.deadline_s)


class OneShotTests(SynchronousTestCase):
    """OneShot: something that happens once, each wait its own Deferred."""

    def test_wait_before(self) -> None:
        """Every wait made before it fires fires with the value, in turn."""
        shot = OneShot()
        first, second = shot.wait(), shot.wait()
        self.assertIsNot(first, second)
        self.assertNoResult(first)
        self.assertFalse(shot.fired)
        shot.fire("value")
        self.assertTrue(shot.fired)
        self.assertEqual(shot.value, "value")
        self.assertEqual(
            (self.successResultOf(first), self.successResultOf(second)), ("value", "value")
        )

    def test_wait_after(self) -> None:
        """A wait made after it fired has the value at once; each is a new Deferred."""
        shot = OneShot()
        shot.fire(7)
        first, second = shot.wait(), shot.wait()
        self.assertIsNot(first, second)
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (7, 7))

    def test_default_value(self) -> None:
        """Fired without a value, waits get None."""
        shot = OneShot()
        waiting = shot.wait()
        shot.fire()
        self.assertIsNone(self.successResultOf(waiting))
        self.assertIsNone(self.successResultOf(shot.wait()))

    def test_fires_once(self) -> None:
        """A second fire changes nothing: the value stays the first."""
        shot = OneShot()
        waiting = shot.wait()
        shot.fire(1)
        shot.fire(2)
        self.assertEqual(shot.value, 1)
        self.assertEqual(self.successResultOf(waiting), 1)
        self.assertEqual(self.successResultOf(shot.wait()), 1)

    def test_cancel(self) -> None:
        """A cancelled wait fails with CancelledError and is forgotten; the others still fire."""
        shot = OneShot()
        cancelled, kept = shot.wait(), shot.wait()
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        # Nothing left holds the cancelled Deferred.
        self.assertEqual(shot._waiting, [kept])
        shot.fire("value")
        self.assertEqual(self.successResultOf(kept), "value")

    def test_cancel_after_fire(self) -> None:
        """Cancelling a wait that already has its result changes nothing."""
        shot = OneShot()
        waiting = shot.wait()
        shot.fire("value")
        waiting.cancel()
        self.assertEqual(self.successResultOf(waiting), "value")


class ResultNowTests(SynchronousTestCase):
    """result_now: the result of a Deferred that has already fired."""

    def test_value(self) -> None:
        """A fired Deferred's value, after its callbacks."""
        self.assertEqual(result_now(succeed(3).addCallback(lambda n: n * 2)), 6)

    def test_failure(self) -> None:
        """A failed Deferred's exception is raised, and the failure is handled."""
        error = ValueError("bad")
        with self.assertRaises(ValueError) as raised:
            result_now(fail(error))
        self.assertIs(raised.exception, error)

    def test_not_fired(self) -> None:
        """A Deferred that has not fired is a programming error."""
        with self.assertRaises(AssertionError):
            result_now(Deferred())

    def test_lifecycle(self) -> None:
        """It gets the summary of a lifecycle whose waits complete synchronously."""
        binding = FakeBinding()
        binding.workload.fire()
        binding.reported.fire(GOOD_REPORT)
        summary = result_now(ensureDeferred(run_lifecycle(binding, SPEC)))
        self.assertTrue(summary["ok"])
