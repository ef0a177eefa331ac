# -*- test-case-name: tests.test_supervise -*-
"""
C{python -m twisted_bcr.net.twistd ARGS}: C{twistd ARGS}, with an exit
status that tells the supervisor whether the daemon logged a failure.

twistd exits 0 however many tracebacks the daemon logged.  The launcher
must know without reading a log (logs are output, not an API), so it starts
its daemons through this entry point: it is twistd itself, plus one
observer counting the failures this process logs (its own log files count
theirs in L{twisted_bcr.logs.PROCESS_FAILURES}); when twistd returns, a
non-zero count becomes exit status L{FAILURES_LOGGED}.  Operators may run
C{twistd} directly; the count only matters to a supervisor.
"""

from __future__ import annotations

import sys

from twisted.logger import globalLogPublisher

from twisted_bcr.logs import PROCESS_FAILURES

__all__ = ["FAILURES_LOGGED", "main"]

#: EX_SOFTWARE: the daemon ran, but logged at least one failure.
FAILURES_LOGGED = 70


def main() -> None:
    """Run twistd with C{sys.argv}; exit L{FAILURES_LOGGED} if anything failed."""
    from twisted.scripts.twistd import run

    # Failures outside the node's own log files (an unhandled error in a
    # Deferred, a service that failed to start) reach the global publisher.
    globalLogPublisher.addObserver(PROCESS_FAILURES)
    run()
    if PROCESS_FAILURES.count:
        print(
            f"{PROCESS_FAILURES.count} failure(s) logged; last: {PROCESS_FAILURES.last}",
            file=sys.stderr,
        )
        raise SystemExit(FAILURES_LOGGED)


if __name__ == "__main__":
    main()
