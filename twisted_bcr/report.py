# -*- test-case-name: tests.test_report -*-
"""
The run report: a small static HTML page with charts of one finished run,
written into the run's directory (C{<dir>/report/index.html}) by C{bcr run}
and C{bcr simulate --log-dir}, and rebuilt by C{bcr report DIR}
(docs/REPORT.md).

It shows the latency distribution (CDF and histogram), the throughput over
time, and a timeline of the configurations, the reconfigurations' phases
and the faults that fired, every time in seconds since the run's start
(simulated seconds for a simulated run).

Like the verdict, the report is built only from data the run recorded
itself, never from a log file:

 - C{summary.json}, whose C{timeline} field (added by L{record_run}) gives
   the clock's origin and when Olympus received each fired fault; its
   C{reconfigurations} carry their phase times on the same clock;
 - C{requests.csv} (L{REQUESTS_FILE}), one row per accepted result: its
   client, sequence number, slot, configuration, and when it was sent and
   accepted.  It holds what is too big for the summary (up to a million
   rows).

Writing the data (L{record_run}) is cheap and needs nothing beyond the
standard library; drawing (L{build_report}) imports matplotlib, lazily, with
its Agg backend, so neither C{bcr}'s start-up nor a run pays for it.
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from attrs import define

from twisted_bcr.files import make_private_directory, write_atomically

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from numpy.typing import NDArray

    from twisted_bcr.core.client import ClientOutcome
    from twisted_bcr.messages import RunReport

__all__ = [
    "REPORT_DIRECTORY",
    "REQUESTS_FILE",
    "ReportError",
    "build_report",
    "record_run",
]

#: The per-request data file in a run's directory.
REQUESTS_FILE = "requests.csv"
#: The largest summary and request table a report reads (a run of the
#: most requests a case may have, 1,000,000, writes about 45 MB of rows).
MAX_SUMMARY_BYTES = 64 * 2**20
MAX_REQUESTS_BYTES = 128 * 2**20
#: Its columns; times are seconds since the run's start, latency in ms.
REQUEST_COLUMNS = (
    "client", "seq", "slot", "configuration", "sent_s", "accepted_s", "latency_ms",
)
#: Where in a run's directory the report goes.
REPORT_DIRECTORY = "report"
SUMMARY_FILE = "summary.json"

#: The charts, in the order the page shows them: file name and caption.
CHARTS = (
    ("timeline.png", "Configurations, reconfiguration phases and fired faults over time"),
    ("throughput.png", "Accepted results per second over time"),
    ("latency_cdf.png", "Latency distribution (CDF)"),
    ("latency_histogram.png", "Latency histogram"),
)

#: At most this many rows of a table, or points of one series in a chart.
MAX_TABLE_ROWS = 200
MAX_POINTS = 20_000
#: Fault markers labelled with their place and failure in the timeline.
MAX_FAULT_LABELS = 12
#: Client rows in the timeline; more clients share one row.
MAX_CLIENT_ROWS = 8

_PHASES = (
    ("wedge", "#f4a261"),
    ("catch-up, running state", "#e76f51"),
    ("install", "#8e6bbf"),
)


class ReportError(Exception):
    """Why a report cannot be built; C{str()} is one line."""


# ----------------------------------------------------------------------
# The data, written by the run


def requests_csv(outcomes: Sequence[ClientOutcome], started_at: float) -> str:
    """
    The text of L{REQUESTS_FILE}: every accepted result of every client, in
    workload order per client, times relative to C{started_at}.
    """
    lines = [",".join(REQUEST_COLUMNS)]
    for outcome in sorted(outcomes, key=lambda o: o.index):
        rows = zip(
            outcome.slots, outcome.accepted_in, outcome.accepted_at, outcome.latencies_s,
            strict=False,
        )
        for seq, (slot, configuration, at, latency) in enumerate(rows):
            accepted = at - started_at
            lines.append(
                f"{outcome.index},{seq},{slot},{configuration},"
                f"{accepted - latency:.6f},{accepted:.6f},{latency * 1000:.3f}"
            )
    lines.append("")
    return "\n".join(lines)


def timeline(report: RunReport | None, started_at: float, simulated: bool) -> dict[str, Any]:
    """
    The summary's C{timeline} field: the clock its C{*_at} times are on,
    that clock at the run's start, and when Olympus received each of the
    summary's C{faults_fired} (in the same order; None when unknown).
    """
    fired_at: list[float | None] = []
    if report is not None:
        stamps = report.faults_fired_at_us
        if len(stamps) == len(report.faults_fired):
            fired_at = [round(us / 1e6, 6) for us in stamps]
        else:
            fired_at = [None] * len(report.faults_fired)
    return {
        "clock": "simulated" if simulated else "wall-clock",
        "started_at": started_at,
        "faults_fired_at": fired_at,
        "requests_file": REQUESTS_FILE,
    }


def record_run(
    summary: dict[str, Any],
    log_dir: str,
    outcomes: Sequence[ClientOutcome],
    report: RunReport | None,
    started_at: float,
    simulated: bool,
) -> None:
    """
    Add the C{timeline} field to C{summary} and write L{REQUESTS_FILE} into
    C{log_dir}: what the run report needs beyond the summary.  A binding
    calls this before it writes C{summary.json}.
    """
    summary["timeline"] = timeline(report, started_at, simulated)
    try:
        write_atomically(
            os.path.join(log_dir, REQUESTS_FILE), requests_csv(outcomes, started_at)
        )
    except OSError as e:
        # The verdict does not depend on it: the summary says what is missing.
        summary["timeline"]["requests_file"] = None
        summary["timeline"]["requests_problem"] = str(e.strerror or e)


# ----------------------------------------------------------------------
# Reading a run directory


@define
class _Requests:
    """The columns of L{REQUESTS_FILE}, as arrays (numpy: a million rows is fine)."""

    client: NDArray[Any]
    configuration: NDArray[Any]
    sent_s: NDArray[Any]
    accepted_s: NDArray[Any]
    latency_ms: NDArray[Any]

    @classmethod
    def of(cls, table: NDArray[Any]) -> _Requests:
        """From the rows of the file, as a float array of its columns."""
        return cls(
            client=table[:, 0].astype(int), configuration=table[:, 3].astype(int),
            sent_s=table[:, 4], accepted_s=table[:, 5], latency_ms=table[:, 6],
        )

    @classmethod
    def none(cls) -> _Requests:
        import numpy

        return cls.of(numpy.empty((0, len(REQUEST_COLUMNS))))

    def __len__(self) -> int:
        return len(self.accepted_s)


@define
class RunData:
    """A finished run as its directory records it."""

    directory: str
    summary: dict[str, Any]
    requests: _Requests
    #: Why there are no per-request rows, if there are none.
    requests_problem: str | None = None

    @property
    def simulated(self) -> bool:
        return bool(self.summary.get("mode") == "simulation")

    @property
    def started_at(self) -> float | None:
        value = self.summary.get("timeline", {}).get("started_at")
        return float(value) if isinstance(value, int | float) else None

    def relative(self, at: Any) -> float | None:
        """A time of the summary (the run's clock) in seconds since the start."""
        origin = self.started_at
        if origin is None or not isinstance(at, int | float):
            return None
        return float(at) - origin

    @property
    def seconds(self) -> str:
        return "s, simulated" if self.simulated else "s"


def load_run(directory: str) -> RunData:
    """
    Read the summary and the per-request rows of the run in C{directory}.

    @raise ReportError: C{directory} is not the directory of a finished run.
    """
    path = os.path.join(directory, SUMMARY_FILE)
    if not os.path.isdir(directory):
        why = "not a directory" if os.path.exists(directory) else "no such directory"
        raise ReportError(f"{directory}: {why}")
    try:
        summary = json.loads(_read_regular(path, MAX_SUMMARY_BYTES))
    except FileNotFoundError:
        raise ReportError(
            f"{directory} is not a run directory: it has no {SUMMARY_FILE}"
        ) from None
    except OSError as e:
        raise ReportError(f"{path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ReportError(f"{path}: not a run summary ({e})") from None
    if not isinstance(summary, dict) or not {"case", "mode", "ok"} <= summary.keys():
        raise ReportError(f"{path}: not a run summary")
    problem: str | None = None
    try:
        requests = _read_requests(os.path.join(directory, REQUESTS_FILE))
    except FileNotFoundError:
        problem = f"the run recorded no {REQUESTS_FILE}"
    except (OSError, ValueError) as e:
        problem = f"{REQUESTS_FILE} is unreadable: {str(e).splitlines()[0] if str(e) else e}"
    if problem is not None:
        requests = _Requests.none()
    return RunData(directory, summary, requests, problem)


def _read_regular(path: str, limit: int) -> str:
    """
    The text of the regular file C{path}, at most C{limit} bytes: a run
    directory may be someone else's, so no symlink is followed and a FIFO
    or a device is refused rather than read (or waited on) for ever.

    @raise FileNotFoundError: there is none.
    @raise ValueError: it is no regular file, or too large.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as f:
        status = os.fstat(f.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise ValueError("it is not a regular file")
        if status.st_size > limit:
            raise ValueError(f"it is larger than {limit} bytes")
        return f.read(limit + 1).decode("utf-8")


def _read_requests(path: str) -> _Requests:
    import numpy

    with io.StringIO(_read_regular(path, MAX_REQUESTS_BYTES), newline="") as f:
        header = f.readline().rstrip("\r\n")
        if header != ",".join(REQUEST_COLUMNS):
            raise ValueError(f"its header is not {','.join(REQUEST_COLUMNS)}")
        table = numpy.loadtxt(f, delimiter=",", dtype=float, ndmin=2)
    if table.size == 0:
        return _Requests.none()
    if table.shape[1] != len(REQUEST_COLUMNS):
        raise ValueError(f"its rows have {table.shape[1]} fields")
    return _Requests.of(table)


# ----------------------------------------------------------------------
# Events on the run's time line


@define
class _Reconfiguration:
    """One reconfiguration's span and phases, in seconds since the start."""

    source: int
    target: int
    started: float
    ended: float
    #: (phase name, start, end) for each phase whose times are known.
    phases: list[tuple[str, float, float]]


@define
class _Fault:
    at: float
    label: str


def _reconfigurations(run: RunData) -> list[_Reconfiguration]:
    spans = []
    for record in run.summary.get("reconfigurations") or []:
        started = run.relative(record.get("started_at"))
        duration = record.get("duration_s")
        if started is None or not isinstance(duration, int | float):
            continue
        ended = started + float(duration)
        marks = [started]
        for key in ("quorum_at", "state_at"):
            at = run.relative(record.get(key))
            marks.append(at if at is not None and marks[-1] <= at <= ended else marks[-1])
        marks.append(ended)
        phases = [
            (name, begin, end)
            for (name, _), begin, end in zip(_PHASES, marks, marks[1:], strict=False)
            if end > begin
        ]
        spans.append(
            _Reconfiguration(int(record.get("from", -1)), int(record.get("to", -1)),
                             started, ended, phases)
        )
    return spans


def _faults(run: RunData) -> list[_Fault]:
    fired = run.summary.get("faults_fired") or []
    stamps = run.summary.get("timeline", {}).get("faults_fired_at") or []
    faults = []
    for fault, at in zip(fired, stamps, strict=False):
        relative = run.relative(at)
        if relative is not None:
            faults.append(_Fault(relative, _fault_label(fault)))
    return faults


def _fault_label(fault: dict[str, Any]) -> str:
    return f"{fault.get('configuration')}.{fault.get('replica')} {fault.get('failure')}"


def _window(run: RunData) -> tuple[float, float]:
    """The time span the charts show: the workload and every event, padded."""
    requests = run.requests
    points = [r.started for r in _reconfigurations(run)] + [
        r.ended for r in _reconfigurations(run)
    ] + [f.at for f in _faults(run)]
    if len(requests):
        points += [float(requests.sent_s.min()), float(requests.accepted_s.max())]
    if not points:
        end = float(run.summary.get("elapsed_s") or 1.0)
        return 0.0, max(end, 1e-3)
    low, high = min(points), max(points)
    pad = max((high - low) * 0.03, 1e-4)
    return max(0.0, low - pad) if low >= 0 else low - pad, high + pad


# ----------------------------------------------------------------------
# Charts


def _figure(width: float = 9.0, height: float = 4.2) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _no_data(axes: Axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes,
              color="#666666")
    axes.set_xticks([])
    axes.set_yticks([])


def _title(run: RunData, what: str) -> str:
    mode = "simulated" if run.simulated else "processes"
    return f"{what} — {run.summary.get('case')} ({mode})"


def _uses_log_scale(values: NDArray[Any]) -> bool:
    positive = values[values > 0]
    return bool(len(positive)) and float(positive.max()) / float(positive.min()) > 100


def _log_axis(axes: Axes) -> None:
    """A logarithmic x axis labelled 1, 2, 5, 10, 20, ... in plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())


def _percentile_lines(axes: Axes, ordered: NDArray[Any]) -> None:
    """The summary's percentiles (nearest rank) of the sorted latencies, as lines."""
    for fraction, style in ((0.5, ":"), (0.9, "--"), (0.99, "-.")):
        rank = max(1, math.ceil(fraction * len(ordered)))
        value = float(ordered[rank - 1])
        axes.axvline(value, color="#444444", linestyle=style, linewidth=1,
                     label=f"p{round(fraction * 100)} = {value:.4g} ms")


def _latency_cdf(run: RunData) -> bytes:
    figure = _figure()
    axes = figure.add_subplot()
    axes.set_title(_title(run, "Latency CDF"))
    import numpy

    ordered = numpy.sort(run.requests.latency_ms)
    if not len(ordered):
        _no_data(axes, run.requests_problem or "no result was accepted")
        return _png(figure)
    step = max(1, len(ordered) // MAX_POINTS)
    ranks = numpy.append(numpy.arange(0, len(ordered), step), len(ordered) - 1)
    axes.step(ordered[ranks], (ranks + 1) / len(ordered), where="post", color="#1f77b4",
              linewidth=2, label=f"all {len(ordered):,} requests")
    _percentile_lines(axes, ordered)
    if _uses_log_scale(ordered):
        _log_axis(axes)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel(f"latency, request sent to result accepted (ms{_sim(run)})")
    axes.set_ylabel("fraction of requests ≤ latency")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    return _png(figure)


def _sim(run: RunData) -> str:
    return ", simulated" if run.simulated else ""


def _latency_histogram(run: RunData) -> bytes:
    figure = _figure()
    axes = figure.add_subplot()
    axes.set_title(_title(run, "Latency histogram"))
    import numpy

    latencies = run.requests.latency_ms
    if not len(latencies):
        _no_data(axes, run.requests_problem or "no result was accepted")
        return _png(figure)
    count = min(60, max(10, int(math.sqrt(len(latencies)))))
    low, high = float(latencies.min()), float(latencies.max())
    if _uses_log_scale(latencies):
        low = float(latencies[latencies > 0].min())
        edges = numpy.geomspace(low, high, count + 1)
        _log_axis(axes)
    elif high == low:
        edges = numpy.array([low - 0.5, low + 0.5])
    else:
        edges = numpy.linspace(low, high, count + 1)
    counts, edges = numpy.histogram(numpy.clip(latencies, edges[0], edges[-1]), bins=edges)
    axes.stairs(counts, edges, fill=True, color="#1f77b4", label=f"{len(latencies):,} requests")
    axes.stairs(counts, edges, color="white", linewidth=0.5)
    _percentile_lines(axes, numpy.sort(latencies))
    axes.set_xlabel(f"latency, request sent to result accepted (ms{_sim(run)})")
    axes.set_ylabel("requests")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(loc="upper right")
    return _png(figure)


def _mark_events(axes: Axes, run: RunData) -> None:
    """Reconfiguration spans and fault markers behind a chart over time."""
    for number, span in enumerate(_reconfigurations(run)):
        axes.axvspan(span.started, span.ended, color="#f4a261", alpha=0.25, linewidth=0,
                     zorder=0, label="reconfiguration" if number == 0 else None)
    for number, fault in enumerate(_faults(run)):
        axes.axvline(fault.at, color="#d62728", linestyle="--", linewidth=1,
                     label="fault fired" if number == 0 else None)


def _throughput(run: RunData) -> bytes:
    figure = _figure()
    axes = figure.add_subplot()
    axes.set_title(_title(run, "Throughput"))
    import numpy

    accepted = run.requests.accepted_s
    low, high = _window(run)
    if not len(accepted):
        _no_data(axes, run.requests_problem or "no result was accepted")
        return _png(figure)
    # Whole bins over the window, so that no bin is cut off at its edge.
    bins = max(5, min(60, len(accepted) // 4))
    counts, edges = numpy.histogram(accepted, bins=bins, range=(low, high))
    width = (high - low) / bins
    axes.bar(edges[:-1], counts / width, width=width, align="edge", color="#2a9d8f", zorder=2,
             label=f"results accepted per second ({_duration(width)} bins)")
    _mark_events(axes, run)
    axes.set_xlim(low, high)
    axes.set_xlabel(f"time since the run's start ({run.seconds})")
    axes.set_ylabel("accepted results per second")
    axes.grid(True, axis="y", alpha=0.3)
    figure.legend(loc="outside lower center", ncols=3, fontsize=8)
    return _png(figure)


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def _event_times(run: RunData) -> list[float]:
    """Every reconfiguration phase boundary and fault, in seconds since the start."""
    times = [f.at for f in _faults(run)]
    for span in _reconfigurations(run):
        times += [span.started, span.ended] + [begin for _, begin, _ in span.phases]
    return sorted(times)


def _zoom(run: RunData, low: float, high: float) -> tuple[float, float] | None:
    """
    A close-up window when the events crowd into a small part of the run
    (faults and a reconfiguration within milliseconds, then a timeout of
    seconds): the largest group of events no gap of a tenth of the run
    separates, if it spans under a fifth of the run.
    """
    times = _event_times(run)
    span = high - low
    if len(times) < 2 or span <= 0:
        return None
    groups = [[times[0]]]
    for at in times[1:]:
        if at - groups[-1][-1] > span / 10:
            groups.append([])
        groups[-1].append(at)
    group = max(groups, key=len)
    width = group[-1] - group[0]
    if len(group) < 2 or width > span / 5:
        return None
    pad = max(width * 0.15, span * 1e-4)
    return group[0] - pad, group[-1] + pad


class _Labels:
    """Places text labels on up to three levels so that they do not overlap."""

    def __init__(self, low: float, high: float, width_px: float, offsets: Sequence[int]) -> None:
        self._low = low
        self._scale = width_px / (high - low)
        self._offsets = offsets
        self._ends = [-math.inf] * len(offsets)

    def place(self, at: float, text: str) -> int | None:
        """The vertical offset (points) for a label at C{at}, or None: no room."""
        x = (at - self._low) * self._scale
        for level, end in enumerate(self._ends):
            if x >= end:
                self._ends[level] = x + 6 * len(text) + 12
                return self._offsets[level]
        return None


_COLORS = ["#4c78a8", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#9d755d", "#bab0ac"]


def _draw_timeline(
    axes: Axes, run: RunData, rows: list[str], clients: list[int], low: float, high: float
) -> None:
    requests = run.requests
    y = {name: len(rows) - 1 - i for i, name in enumerate(rows)}
    width_px = 820.0
    px = width_px / (high - low)
    spans = _reconfigurations(run)
    # Each configuration is in use from the end of the reconfiguration that
    # installed it until the end of the one that replaced it.
    starts = [(0, min(low, 0.0))] + [(s.target, s.ended) for s in spans]
    for number, (configuration, begin) in enumerate(starts):
        end = starts[number + 1][1] if number + 1 < len(starts) else max(high, begin)
        axes.broken_barh([(begin, end - begin)], (y["configuration"] - 0.35, 0.7),
                         facecolors=_COLORS[configuration % len(_COLORS)], edgecolor="white")
        shown_begin, shown_end = max(begin, low), min(end, high)
        if (shown_end - shown_begin) * px >= 8 + 7 * len(str(configuration)):
            axes.text((shown_begin + shown_end) / 2, y["configuration"], f"{configuration}",
                      ha="center", va="center", color="white", fontweight="bold")
    if not spans:
        _row_note(axes, y["reconfiguration"], "none")
    labels = _Labels(low, high, width_px, (3, 14))
    for span in spans:
        for name, begin, end in span.phases:
            axes.broken_barh([(begin, end - begin)], (y["reconfiguration"] - 0.3, 0.6),
                             facecolors=dict(_PHASES)[name], edgecolor="none")
        text = f"{span.source}→{span.target}"
        offset = labels.place(span.started, text)
        if offset is not None and low <= span.started <= high:
            axes.annotate(text, (span.started, y["reconfiguration"] + 0.3),
                          textcoords="offset points", xytext=(0, offset), fontsize=8)
    faults = _faults(run)
    if faults:
        axes.plot([f.at for f in faults], [y["faults"]] * len(faults), linestyle="none",
                  marker="X", markersize=9, color="#d62728")
        labels = _Labels(low, high, width_px, (5, -9, 16))
        for fault in faults[: MAX_FAULT_LABELS * 4]:
            offset = labels.place(fault.at, fault.label)
            if offset is not None and low <= fault.at <= high:
                axes.annotate(fault.label, (fault.at, y["faults"]), textcoords="offset points",
                              xytext=(7, offset - 3), fontsize=8, color="#d62728")
    else:
        _row_note(axes, y["faults"], "fired; times not recorded"
                  if run.summary.get("faults_fired") else "none")
    grouped = len(rows) - 3 < len(clients)
    for index, name in enumerate(rows[3:]):
        chosen = (
            requests.accepted_s if grouped
            else requests.accepted_s[requests.client == clients[index]]
        )
        shown = chosen[:: max(1, len(chosen) // MAX_POINTS)]
        axes.plot(shown, [y[name]] * len(shown), linestyle="none",
                  marker="|", markersize=12, markeredgewidth=1.5, color="#222222",
                  alpha=0.7)
    axes.set_yticks([y[name] for name in rows], rows)
    axes.set_ylim(-0.7, len(rows) - 0.1)
    axes.set_xlim(low, high)
    axes.set_xlabel(f"time since the run's start ({run.seconds})")
    axes.grid(True, axis="x", alpha=0.3)


def _row_note(axes: Axes, row: float, text: str) -> None:
    axes.text(0.01, row, text, va="center", fontsize=8, color="#666666",
              transform=axes.get_yaxis_transform())


def _timeline(run: RunData) -> bytes:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    clients = sorted(int(c) for c in set(run.requests.client.tolist())) or [
        int(c.get("index", i)) for i, c in enumerate(run.summary.get("clients") or [])
    ]
    client_rows = (
        [f"results ({len(clients)} clients)"] if len(clients) > MAX_CLIENT_ROWS
        else [f"client {c} results" for c in clients]
    )
    rows = ["configuration", "reconfiguration", "faults", *client_rows]
    low, high = _window(run)
    zoom = _zoom(run, low, high)
    panel = 1.0 + 0.42 * len(rows)
    figure = _figure(9.0, 1.0 + panel * (2 if zoom else 1))
    figure.suptitle(_title(run, "Timeline"))
    panels = [(low, high, "the workload and every event")]
    if zoom is not None:
        panels.append((*zoom, "close-up of the busiest stretch"))
    for number, (begin, end, what) in enumerate(panels):
        axes = figure.add_subplot(len(panels), 1, number + 1)
        axes.set_title(f"{what}: {_duration_span(begin, end)}", fontsize=9)
        _draw_timeline(axes, run, rows, clients, begin, end)
    handles = [
        Patch(facecolor=_COLORS[0], label="configuration in use (its number)"),
        *(Patch(facecolor=color, label=f"reconfiguration: {name}") for name, color in _PHASES),
        Line2D([], [], linestyle="none", marker="X", color="#d62728",
               label="fault fired (when Olympus heard)"),
        Line2D([], [], linestyle="none", marker="|", color="#333333",
               label="result accepted by a client"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    return _png(figure)


def _duration_span(begin: float, end: float) -> str:
    return f"{begin:.4g} to {end:.4g} s"


# ----------------------------------------------------------------------
# The page


def _cell(value: Any) -> str:
    return f"<td>{html.escape(str(value))}</td>"


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.4f}"


def _facts(run: RunData) -> list[tuple[str, str]]:
    summary = run.summary
    latency = summary.get("latency_ms") or {}
    clients = summary.get("clients") or []
    asked = sum(int(c.get("requests", 0)) for c in clients)
    unit = run.seconds
    return [
        ("verdict", "PASS" if summary.get("ok") else "FAIL"),
        ("case", f"{summary.get('case')} ({summary.get('mode')})"),
        ("requests", f"{summary.get('requests')} of {asked} accepted, {len(clients)} client(s)"),
        ("workload", f"{summary.get('workload_s')} {unit}, "
                     f"{summary.get('throughput_ops_s')} requests/s"),
        ("whole run", f"{summary.get('elapsed_s')} {unit}"),
        ("latency", " / ".join(f"{k} {latency.get(k)}" for k in ("p50", "p90", "p99", "max"))
         + f" ms{_sim(run)}"),
        ("configurations", str(summary.get("configurations"))),
        ("faults fired", str(len(summary.get("faults_fired") or []))),
        ("times", f"seconds since the run's start ({summary.get('timeline', {}).get('clock', 'clock unknown')})"),
        ("directory", os.path.abspath(run.directory)),
    ]


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows[:MAX_TABLE_ROWS]
    )
    more = (
        f"<p>… and {len(rows) - MAX_TABLE_ROWS} more (in summary.json)</p>"
        if len(rows) > MAX_TABLE_ROWS else ""
    )
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _page(run: RunData, charts: Sequence[tuple[str, str]]) -> str:
    summary = run.summary
    verdict_class = "pass" if summary.get("ok") else "fail"
    facts = "".join(
        f"<tr><th>{html.escape(k)}</th><td"
        + (f' class="{verdict_class}"' if k == "verdict" else "")
        + f">{html.escape(v)}</td></tr>"
        for k, v in _facts(run)
    )
    reconfigurations = []
    for record, span in zip(summary.get("reconfigurations") or [], _reconfigurations(run),
                            strict=False):
        phases = {name: end - begin for name, begin, end in span.phases}
        reconfigurations.append((
            f"{record.get('from')} → {record.get('to')}",
            ", ".join(record.get("requested_by") or []),
            str(record.get("reason", ""))[:200],
            _seconds(span.started),
            *(_seconds(phases.get(name)) for name, _ in _PHASES),
            _seconds(span.ended - span.started),
            record.get("quorum"),
        ))
    stamps = summary.get("timeline", {}).get("faults_fired_at") or []
    faults = [
        (
            _seconds(run.relative(stamps[i]) if i < len(stamps) else None),
            f"{f.get('configuration')}.{f.get('replica')}", f.get("trigger"),
            f.get("failure"), "yes" if f.get("byzantine") else "no",
        )
        for i, f in enumerate(summary.get("faults_fired") or [])
    ]
    errors = summary.get("errors") or []
    figures = "".join(
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}" width="900">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in charts
    )
    note = (
        f'<p class="note">No per-request charts: {html.escape(run.requests_problem)}.</p>'
        if run.requests_problem else ""
    )
    unit = html.escape(run.seconds)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>bcr run report: {html.escape(str(summary.get("case")))}</title>
<style>
body {{ font-family: sans-serif; max-width: 960px; margin: 1em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left;
          vertical-align: top; font-size: 0.9em; }}
.pass {{ color: #1a7f37; font-weight: bold; }}
.fail {{ color: #cf222e; font-weight: bold; }}
.note {{ color: #666; }}
figure {{ margin: 1em 0; }}
figcaption {{ color: #555; font-size: 0.9em; }}
</style>
</head>
<body>
<h1>Run report: {html.escape(str(summary.get("case")))}</h1>
<table>{facts}</table>
<h2>Errors</h2>
{_table(["error"], [(e,) for e in errors])}
{note}
{figures}
<h2>Reconfigurations</h2>
{_table(["from → to", "requested by", "reason", f"started ({unit})",
         *(f"{name} ({unit})" for name, _ in _PHASES), f"total ({unit})", "quorum"],
        reconfigurations)}
<h2>Faults fired</h2>
{_table([f"received by Olympus ({unit})", "replica", "trigger", "failure", "Byzantine"],
        faults)}
<h2>Data</h2>
<p>Built from the run's own records: <a href="../summary.json">summary.json</a>
and <a href="../{REQUESTS_FILE}">{REQUESTS_FILE}</a> (one row per accepted
result; see docs/REPORT.md).</p>
</body>
</html>
"""


def build_report(directory: str) -> str:
    """
    Build (or rebuild) the report of the finished run in C{directory};
    return the path of its C{index.html}.

    @raise ReportError: C{directory} is not a run directory, or the report
        cannot be written (one line saying why).
    """
    run = load_run(directory)
    # Each chart draws on its own Figure with an Agg canvas (L{_figure}):
    # no pyplot, no global backend, no display needed.
    drawers = {
        "timeline.png": _timeline,
        "throughput.png": _throughput,
        "latency_cdf.png": _latency_cdf,
        "latency_histogram.png": _latency_histogram,
    }
    target = os.path.join(directory, REPORT_DIRECTORY)
    if os.path.islink(target):
        raise ReportError(f"{target} is a symbolic link: the report is not written through it")
    if os.path.lexists(target) and not os.path.isdir(target):
        raise ReportError(f"{target} is in the way: it is not a directory")
    try:
        make_private_directory(target)
        for name, _ in CHARTS:
            write_atomically(os.path.join(target, name), drawers[name](run))
        index = os.path.join(target, "index.html")
        write_atomically(index, _page(run, CHARTS))
    except OSError as e:
        raise ReportError(f"{target}: {e.strerror or e}") from None
    return index
