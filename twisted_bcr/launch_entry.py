"""
C{python -m twisted_bcr.launch_entry ARGS}: C{python -m twisted_bcr.launch
ARGS}, with the run's fork server started first, so that its imports (0.2 s
of CPU) overlap the launcher's own instead of following them.  This module
imports nothing heavy before it has started the fork server; C{bcr run}
starts its launcher through it.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    """Start the fork server if the run will want one, then be the launcher."""
    arguments = sys.argv[1:]
    # Not for a run against a running Olympus: it starts no daemon.
    wanted = not {"--no-fork-server", "--olympus"} & set(arguments)
    if wanted and "--log-dir" in arguments:
        from twisted_bcr import forkserver

        index = arguments.index("--log-dir") + 1
        if index < len(arguments) and os.path.isdir(arguments[index]):
            forkserver.start_early(arguments[index])
    from twisted_bcr import launch

    launch.main()


if __name__ == "__main__":
    main()
