# -*- test-case-name: tests.test_supervise -*-
"""
C{python -m twisted_bcr.net.twistd ARGS}: C{twistd ARGS}, with an exit
status that tells the supervisor whether the daemon logged a failure.

twistd exits 0 however many tracebacks the daemon logged.  The launcher
must know without reading a log (logs are output, not an API), so it starts
its daemons through this entry point: it is twistd itself, plus one
observer counting the failures this process logs (its own log files count
theirs in L{twisted_bcr.logs.PROCESS_FAILURES}); when twistd returns, a
non-zero count becomes exit status L{FAILURES_LOGGED}, whether the daemon
ended by itself or by SIGTERM.  It follows C{twisted.scripts.twistd.runApp}
(Twisted 24-25) step for step.  Operators may run C{twistd} directly; the
count only matters to a supervisor.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application import app
from twisted.logger import globalLogPublisher
from twisted.scripts._twistd_unix import ServerOptions, UnixApplicationRunner

from twisted_bcr.logs import PROCESS_FAILURES

__all__ = ["FAILURES_LOGGED", "main"]

#: EX_SOFTWARE: the daemon ran, but logged at least one failure.
FAILURES_LOGGED = 70


def _run_app(config: Any) -> None:
    """
    twistd's own C{runApp}, with one step between the reactor's end and
    the exit: a daemon that logged a failure exits L{FAILURES_LOGGED}, also
    when a signal (SIGTERM) stopped it, which twistd would otherwise re-raise
    and so hide the count.
    """
    runner = UnixApplicationRunner(config)
    runner.run()
    if PROCESS_FAILURES.count:
        # twistd replaced sys.stderr with a logging file whose observer is
        # gone by now: write to the process's real standard error.
        print(
            f"{PROCESS_FAILURES.count} failure(s) logged; last: {PROCESS_FAILURES.last}",
            file=sys.__stderr__,
            flush=True,
        )
        raise SystemExit(FAILURES_LOGGED)
    if runner._exitSignal is not None:
        app._exitWithSignal(runner._exitSignal)


def main() -> None:
    """Run twistd with C{sys.argv}; exit L{FAILURES_LOGGED} if anything failed."""
    # Failures outside the node's own log files (an unhandled error in a
    # Deferred, a service that failed to start) reach the global publisher.
    globalLogPublisher.addObserver(PROCESS_FAILURES)
    app.run(_run_app, ServerOptions)


if __name__ == "__main__":
    main()
