# -*- test-case-name: tests.test_cli -*-
"""
The C{bcr} console script (DESIGN §4): C{run}, C{simulate}, C{bench}, C{cases}
and C{report} (the run report of a finished run, L{twisted_bcr.report}).

Every command prints a one-line C{bcr: ...} error and exits 1 on bad input,
before anything is started; C{run} and C{simulate} exit 0 exactly when the
run passed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from twisted_bcr.config import Case, CaseError
from twisted_bcr.examples import cases_directory, examples, resolve_case
from twisted_bcr.faults import PluginError, Registry, load_case
from twisted_bcr.files import make_private_directory
from twisted_bcr.verdict import LiveProgress, print_table, verdict_line

#: The case the README's quick start runs.
#: The packaged case C{bcr run} and C{bcr simulate} run by default.
DEFAULT_CASE = "failure_free"
CASE_HELP = "case file, or the name of a packaged case (bcr cases lists them)"


class UsageProblem(Exception):
    """Bad input from the command line, reported as one line."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bcr", description="Byzantine Chain Replication on Twisted."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run a case with real twistd processes on this host"
    )
    run.add_argument("case", nargs="?", default=DEFAULT_CASE, help=CASE_HELP)
    run.add_argument("--summary", help="where to write the summary JSON")
    run.add_argument("--log-dir", help="directory for every process's logs")
    run.add_argument(
        "--deadline", type=float,
        help="wall-clock bound on the whole run, start-up and stop included, in seconds "
        "[default: from the case]",
    )
    run.add_argument(
        "--hosts",
        help="';'-separated addresses replicas bind to instead of 127.0.0.1 "
        "(the case file's hosts are reported but never used unless given here)",
    )
    run.add_argument(
        "--spares", type=int,
        help="spare replica processes kept ready for reconfigurations [default: 2t+1]",
    )
    run.add_argument(
        "--olympus", metavar="HOST:PORT",
        help="use this running Olympus and its registered spares instead of starting "
        "processes (needs --olympus-key-file)",
    )
    run.add_argument(
        "--olympus-key-file", metavar="PATH",
        help="that Olympus's private key file, which ends the run",
    )
    run.add_argument(
        "--fault-plugins", action="append", default=[], metavar="DIR",
        help="also load fault plugins from DIR (repeatable)",
    )
    _output_options(run)

    simulate = commands.add_parser(
        "simulate", help="run a case in the deterministic simulation"
    )
    simulate.add_argument("case", nargs="?", default=DEFAULT_CASE, help=CASE_HELP)
    simulate.add_argument("--seed", type=int, default=0, help="seed of the simulated run")
    simulate.add_argument("--summary", help="where to write the summary JSON")
    simulate.add_argument("--log-dir", help="directory for every node's logs")
    simulate.add_argument("--deadline", type=float, help="simulated seconds before giving up")
    simulate.add_argument(
        "--chaos", type=int, default=0, metavar="N",
        help="inject N random kills and stalls of replicas, drawn from the seed",
    )
    simulate.add_argument(
        "--fault-plugins", action="append", default=[], metavar="DIR",
        help="also load fault plugins from DIR (repeatable)",
    )
    _output_options(simulate)

    commands.add_parser("cases", help="list the example cases shipped with bcr")
    report = commands.add_parser(
        "report", help="(re)build the report (charts, HTML) of a finished run's directory"
    )
    report.add_argument("directory", help="the run's log directory (has summary.json)")
    bench = commands.add_parser(
        "bench", help="measure throughput and latency with real processes"
    )
    bench.add_argument(
        "case", nargs="?", default="perform900", help=CASE_HELP
    )
    bench.add_argument("--runs", type=int, default=3, help="how many runs (median reported)")
    bench.add_argument("--clients", type=int, help="override the number of clients")
    bench.add_argument("--requests", type=int, help="pseudorandom requests per client")
    bench.add_argument("--t", type=int, help="override t")
    bench.add_argument("--output", help="where to write the benchmark JSON")
    bench.add_argument("--log-dir", help="directory for the runs' logs")
    bench.add_argument(
        "--hosts", help="';'-separated local addresses to spread processes over"
    )
    bench.add_argument(
        "--kill-head-after", type=int, metavar="RESULTS",
        help="the recovery scenario: SIGKILL the head once clients accepted RESULTS "
        "results, and measure the reconfiguration",
    )
    bench.add_argument(
        "--compare", metavar="BCR",
        help="also run another installed version's bcr (e.g. an older commit's "
        "virtualenv's bin/bcr), alternating runs, and print the ratios",
    )
    bench.add_argument(
        "--json", action="store_true", help="print the whole JSON, not the summary line"
    )
    return parser


def _load_case(path: str, plugin_dirs: Sequence[str] = ()) -> tuple[Case, Registry]:
    """
    The case, read with the names of every available fault plugin.  Its
    warnings go to standard error, naming the user's file and line.
    """
    try:
        case, registry = load_case(resolve_case(path), plugin_dirs)
    except (CaseError, PluginError) as e:
        raise UsageProblem(str(e)) from None
    for warning in case.warnings:
        print(f"bcr: warning: {warning}", file=sys.stderr)
    return case, registry


def _unwritable(path: str, directory: bool) -> str | None:
    """
    Why C{path} (a directory to make or use, or a file to write) cannot be
    written, or None; nothing is created to find out.
    """
    path = os.path.abspath(path)
    if os.path.exists(path):
        if directory and not os.path.isdir(path):
            return f"{path} is not a directory"
        if not directory and os.path.isdir(path):
            return f"{path} is a directory"
        wanted = os.W_OK | (os.X_OK if directory else 0)
        return None if os.access(path, wanted) else "permission denied"
    ancestor = os.path.dirname(path)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        return f"{ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"permission denied in {ancestor}"
    return None


def _check_outputs(args: argparse.Namespace, json_option: str = "summary") -> None:
    """
    Refuse, before anything runs, a log directory or JSON file that cannot
    be written: a run's verdict must not be lost at its end.
    """
    for option, path, directory in (
        ("--log-dir", getattr(args, "log_dir", None), True),
        (f"--{json_option}", getattr(args, json_option, None), False),
    ):
        if path is not None and (why := _unwritable(path, directory)) is not None:
            raise UsageProblem(f"{option} {path}: {why}")


def _write_json(option: str, path: str | None, document: Any) -> int:
    """Write C{document} to C{path}; 0, or 1 after a one-line error."""
    if path is None:
        return 0
    try:
        make_private_directory(os.path.dirname(os.path.abspath(path)))
        with open(path, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2, sort_keys=False)
            f.write("\n")
    except OSError as e:
        print(f"bcr: {option} {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


def _output_options(parser: argparse.ArgumentParser) -> None:
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument(
        "--quiet", action="store_true", help="print only the PASS/FAIL line"
    )
    shown.add_argument(
        "--json", action="store_true", help="print the whole summary JSON, not the table"
    )
    parser.add_argument(
        "--no-report", action="store_true",
        help="do not write the run report (report/index.html) into the log directory",
    )


def _write_report(directory: str | None, args: argparse.Namespace) -> str | None:
    """
    Build the run report in C{directory} once the verdict is known; its
    path, or None.  A failure is one line on standard error: it never
    changes the run's verdict or exit status.
    """
    if directory is None or args.no_report:
        return None
    from twisted_bcr.report import ReportError, build_report

    try:
        return build_report(directory)
    except ReportError as e:
        print(f"bcr: no run report: {e}", file=sys.stderr)
    except Exception as e:  # a bug in the report must not lose the verdict
        print(f"bcr: no run report: {type(e).__name__}: {e}", file=sys.stderr)
    except KeyboardInterrupt:  # nor must Control-C while it is drawn
        print("bcr: no run report: interrupted", file=sys.stderr)
    return None


def _print_summary(
    summary: dict[str, Any], args: argparse.Namespace, report: str | None = None
) -> None:
    if args.json:
        print(json.dumps(summary, indent=2))
    elif not args.quiet:
        print_table(summary, sys.stdout, report=report)
    print(verdict_line(summary))


def _hosts(text: str | None) -> list[str] | None:
    if not text:
        return None
    hosts = [h.strip() for h in text.split(";") if h.strip()]
    if not hosts:
        raise UsageProblem(f"--hosts names no address: {text!r}")
    return hosts


def _live_progress(args: argparse.Namespace) -> LiveProgress | None:
    """A live line only for a person watching: never in a pipe or a file."""
    watching = sys.stdout.isatty() and not (args.json or args.quiet)
    return LiveProgress(sys.stdout) if watching else None


def _simulate(args: argparse.Namespace) -> int:
    from twisted_bcr.simulation import simulate

    case, registry = _load_case(args.case, args.fault_plugins)
    if args.chaos < 0:
        raise UsageProblem("--chaos must be at least 0")
    _check_outputs(args)
    live = _live_progress(args)
    try:
        summary = simulate(
            case, seed=args.seed, log_dir=args.log_dir, deadline_s=args.deadline,
            chaos=args.chaos, registry=registry, on_progress=live,
        )
    except CaseError as e:
        raise UsageProblem(str(e)) from None
    finally:
        if live is not None:
            live.close()
    _print_summary(summary, args, _write_report(args.log_dir, args))
    written = _write_json("--summary", args.summary, summary)
    return 0 if summary["ok"] and not written else 1


def _run(args: argparse.Namespace) -> int:
    from twisted_bcr import launch

    case, _ = _load_case(args.case, args.fault_plugins)
    hosts = _hosts(args.hosts)
    if args.spares is not None and args.spares < 0:
        raise UsageProblem("--spares must be at least 0")
    _check_outputs(args)
    live = _live_progress(args)
    try:
        summary = launch.run_case_blocking(
            case, log_dir=args.log_dir, deadline_s=args.deadline, hosts=hosts,
            spares=args.spares, olympus=args.olympus,
            olympus_key_file=args.olympus_key_file, fault_plugins=args.fault_plugins,
            on_progress=live,
        )
    except ValueError as e:
        raise UsageProblem(str(e)) from None
    finally:
        if live is not None:
            live.close()
    _print_summary(summary, args, _write_report(summary.get("log_dir"), args))
    written = _write_json("--summary", args.summary, summary)
    if summary.get("interrupted"):
        return 130
    return 0 if summary["ok"] and not written else 1


def _bench(args: argparse.Namespace) -> int:
    from twisted_bcr import bench

    case, _ = _load_case(args.case)
    if args.runs < 1:
        raise UsageProblem("--runs must be at least 1")
    try:
        case = bench.scaled_case(case, clients=args.clients, requests=args.requests, t=args.t)
    except ValueError as e:
        raise UsageProblem(str(e)) from None
    if args.kill_head_after is not None and args.kill_head_after < 1:
        raise UsageProblem("--kill-head-after must be at least 1")
    _check_outputs(args, "output")
    hosts = _hosts(args.hosts)
    if args.compare is not None:
        return _bench_compare(args, case, hosts)
    result = bench.run_benchmark(
        case, runs=args.runs, log_dir=args.log_dir, hosts=hosts,
        kill_head_after=args.kill_head_after,
    )
    print(json.dumps(result, indent=2) if args.json else bench.summary_line(result))
    written = _write_json("--output", args.output, result)
    return 0 if result["ok"] and not written else 1


def _bench_compare(args: argparse.Namespace, case: Case, hosts: list[str] | None) -> int:
    import tempfile

    from twisted_bcr import bench

    reference = args.compare
    if not (os.path.isfile(reference) and os.access(reference, os.X_OK)):
        raise UsageProblem(f"--compare {reference!r}: not an executable bcr")
    # The same case file and options, for a version that may know no
    # packaged case names.
    arguments = [os.path.abspath(case.path)]
    for option, value in (
        ("--clients", args.clients), ("--requests", args.requests), ("--t", args.t),
        ("--hosts", args.hosts), ("--kill-head-after", args.kill_head_after),
    ):
        if value is not None:
            arguments += [option, str(value)]
    counter = iter(range(1_000_000))

    def ours() -> dict[str, Any]:
        number = next(counter)
        log_dir = f"{args.log_dir}/ours-{number}" if args.log_dir else None
        return bench.run_benchmark(
            case, runs=1, log_dir=log_dir, hosts=hosts, kill_head_after=args.kill_head_after
        )

    with tempfile.TemporaryDirectory(prefix="bcr-compare-") as directory:
        try:
            comparison = bench.compare(
                ours, bench.reference_benchmark(reference, arguments, directory), args.runs
            )
        except ValueError as e:
            raise UsageProblem(str(e)) from None
    comparison["reference"] = reference
    if args.json:
        print(json.dumps(comparison, indent=2))
    else:
        print("\n".join(bench.compare_lines(comparison, reference)))
    written = _write_json("--output", args.output, comparison)
    return 0 if comparison["ok"] and not written else 1


def _report(args: argparse.Namespace) -> int:
    from twisted_bcr.report import ReportError, build_report

    try:
        print(build_report(args.directory))
    except ReportError as e:
        raise UsageProblem(str(e)) from None
    except Exception as e:  # a summary that parses but holds nonsense
        raise UsageProblem(
            f"{args.directory}: cannot draw its report: {type(e).__name__}: {e}"
        ) from None
    return 0


def _cases(args: argparse.Namespace) -> int:
    listed = examples()
    width = max(len(e.name) for e in listed)
    for example in listed:
        print(f"{example.name:<{width}}  {example.summary}")
    print(f"(in {cases_directory()}; run one with: bcr run NAME)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the C{bcr} script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "run":
            return _run(args)
        if args.command == "cases":
            return _cases(args)
        if args.command == "report":
            return _report(args)
        return _bench(args)
    except UsageProblem as e:
        print(f"bcr: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bcr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
