# -*- test-case-name: tests.test_cli -*-
"""
What C{bcr run} and C{bcr simulate} print at the end of a run: a short
table a person can read (rich), then one C{PASS:}/C{FAIL:} line that
scripts may look for.  The whole summary stays in C{summary.json} and
C{--json} prints it.
"""

from __future__ import annotations

import os
from typing import IO, Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bar
from rich.table import Table

__all__ = ["LiveProgress", "print_table", "verdict_line"]

#: A run shorter than this shows no progress line; the environment
#: variable C{BCR_PROGRESS_AFTER_S} changes it (0: from the first report).
PROGRESS_AFTER_S = 1.0


class _Progress(Protocol):
    """What a progress report says (L{twisted_bcr.lifecycle.Progress})."""

    @property
    def results(self) -> int: ...
    @property
    def requests(self) -> int: ...
    @property
    def configuration(self) -> int: ...
    @property
    def elapsed_s(self) -> float: ...


class LiveProgress:
    """
    The live line of a run longer than a second, on a terminal: results
    done of all, their rate, the configuration in use and the
    reconfigurations so far.  Fed the launcher's (or the simulation's)
    progress reports.
    """

    def __init__(self, file: IO[str], console: Console | None = None) -> None:
        self._console = console if console is not None else Console(file=file)
        self._after_s = _after_s()
        self._bar: Bar | None = None
        self._task: Any = None
        self._previous: tuple[float, int] | None = None
        self._rate = 0.0

    def __call__(self, progress: _Progress) -> None:
        if progress.elapsed_s < self._after_s and self._bar is None:
            return
        if self._previous is not None and progress.elapsed_s > self._previous[0]:
            then, done = self._previous
            self._rate = (progress.results - done) / (progress.elapsed_s - then)
        self._previous = (progress.elapsed_s, progress.results)
        fields: dict[str, Any] = {
            "rate": f"{self._rate:.0f}",
            "configuration": max(progress.configuration, 0),
            "reconfigurations": max(progress.configuration, 0),
        }
        if self._bar is None:
            self._bar = Bar(
                TextColumn("results"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} req/s, configuration "
                           "{task.fields[configuration]}, "
                           "{task.fields[reconfigurations]} reconfiguration(s)"),
                TimeElapsedColumn(),
                console=self._console, transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("run", total=progress.requests, **fields)
        self._bar.update(
            self._task, completed=progress.results, total=progress.requests, **fields
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _after_s() -> float:
    text = os.environ.get("BCR_PROGRESS_AFTER_S")
    if text is None:
        return PROGRESS_AFTER_S
    try:
        return max(float(text), 0.0)
    except ValueError:
        return PROGRESS_AFTER_S


def verdict_line(summary: dict[str, Any]) -> str:
    """The last line of every run's output."""
    verdict = "PASS" if summary["ok"] else "FAIL"
    unit = " s (simulated)" if summary["mode"] == "simulation" else " s"
    return (
        f"{verdict}: {summary['case']} ({summary['mode']}): {summary['requests']} "
        f"requests in {summary['elapsed_s']}{unit}, {summary['configurations']} "
        f"configuration(s), {len(summary['errors'])} error(s)"
    )


def print_table(summary: dict[str, Any], file: IO[str], report: str | None = None) -> None:
    """
    The run at a glance: verdict, work, speed, configurations, faults,
    errors, logs, and the run report's page if one was written.
    """
    simulated = summary["mode"] == "simulation"
    seconds = "s (simulated)" if simulated else "s"
    clients = summary["clients"]
    asked = sum(c["requests"] for c in clients)
    latency = summary["latency_ms"]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row(
        "verdict", "[green]PASS[/green]" if summary["ok"] else "[red]FAIL[/red]"
    )
    table.add_row("case", f"{summary['case']} ({summary['mode']})")
    table.add_row(
        "requests",
        f"{summary['requests']} of {asked} accepted, {len(clients)} client(s), "
        f"{sum(c['retransmissions'] for c in clients)} retransmission(s)",
    )
    table.add_row(
        "workload",
        f"{summary['workload_s']} {seconds}, {summary['throughput_ops_s']} requests/s"
        f" (whole run {summary['elapsed_s']} {seconds})",
    )
    table.add_row(
        "latency",
        f"p50 {latency['p50']} / p90 {latency['p90']} / p99 {latency['p99']} / "
        f"max {latency['max']} ms" + (" (simulated)" if simulated else ""),
    )
    reconfigurations = summary["reconfigurations"]
    table.add_row(
        "configurations",
        f"{summary['configurations']}, "
        + (
            "; ".join(
                f"{r['from']} -> {r['to']} asked by {', '.join(r['requested_by'])}"
                for r in reconfigurations
            )
            or "no reconfiguration"
        ),
    )
    fired = summary["faults_fired"]
    table.add_row(
        "faults fired",
        "; ".join(
            f"{f['configuration']}.{f['replica']} {f['trigger']}, {f['failure']}" for f in fired
        )
        or "none",
    )
    table.add_row("replicas", _replicas(summary))
    for number, error in enumerate(summary["errors"] or ["none"]):
        table.add_row("errors" if number == 0 else "", error)
    if "log_dir" in summary:
        table.add_row("logs", str(summary["log_dir"]))
    if report is not None:
        table.add_row("report", report)
    Console(file=file, highlight=False, soft_wrap=False).print(table)


def _replicas(summary: dict[str, Any]) -> str:
    parts = ["agree" if summary["replicas_agree"] else "[red]disagree[/red]"]
    if summary["byzantine_replicas"]:
        parts.append(f"Byzantine (left out): {summary['byzantine_replicas']}")
    if summary["diverging_replicas"]:
        parts.append(f"diverging: {summary['diverging_replicas']}")
    if summary["silent_replicas"]:
        parts.append(f"silent: {summary['silent_replicas']}")
    return ", ".join(parts)
