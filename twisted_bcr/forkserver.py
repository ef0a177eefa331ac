# -*- test-case-name: tests.test_forkserver -*-
"""
C{python -m twisted_bcr.forkserver}: one process that has already imported
everything a BCR daemon needs (Twisted, PyNaCl, the protocol, the twistd
plugins) and forks each daemon of a run from there, so that booting Olympus
and 2t+1 replicas and spares costs a fork each instead of a Python start-up
and ~0.4 s of imports each (issue 9; docs/DECISIONS.md, "Fork server").

Each daemon is still a real process of its own: twistd in the foreground
(L{twisted_bcr.net.twistd}), its own pid, its own files, killed by real
signals.  It is the fork server's child, not the launcher's, so the fork
server reports how each ended.  It speaks JSON lines:

  - on its standard input, from the launcher:
    C{{"spawn": ID, "argv": [...], "stdout": PATH, "stderr": PATH}};
  - on its standard output, to the launcher: C{{"started": ID, "pid": N}}
    once forked (or C{{"failed": ID, "error": TEXT}}), and
    C{{"ended": ID, "exit_code": N|null, "signal": N|null, "cpu_s": S}} once
    reaped (C{cpu_s}: the child's user + system CPU seconds), and
    C{{"exiting": true, "cpu_s": S}} (its own) last.

It exits when its standard input closes, after its children have ended (it
waits for them: the launcher stops them first).  Nothing here installs a
reactor: a reactor's epoll descriptor, inherited by every child, would be
one kernel object shared by all of them.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import site
import sys
import traceback
from typing import Any

import twisted_bcr

__all__ = [
    "child_environment",
    "cpu_seconds",
    "main",
    "preload",
    "start",
    "start_early",
    "take_early",
]

#: A fork server started before the launcher's own imports (L{start_early}),
#: waiting for the launcher's supervisor to take it (L{take_early}).
_early: tuple[str, Any, int, int] | None = None


def child_environment() -> dict[str, str]:
    """
    This process's environment, plus the directory twisted_bcr was imported
    from on PYTHONPATH when that is not an installed location (a source
    checkout), so children import the same code.
    """
    environment = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(twisted_bcr.__file__)))
    installed = {os.path.abspath(p) for p in site.getsitepackages()}
    user_site = site.getusersitepackages()
    if isinstance(user_site, str):
        installed.add(os.path.abspath(user_site))
    if package_parent not in installed:
        existing = environment.get("PYTHONPATH")
        environment["PYTHONPATH"] = (
            package_parent + os.pathsep + existing if existing else package_parent
        )
    return environment


def cpu_seconds(usage: resource.struct_rusage) -> float:
    """User + system CPU seconds of a resource usage, as the kernel counted them."""
    return round(usage.ru_utime + usage.ru_stime, 4)


def start(
    directory: str, environment: dict[str, str] | None = None
) -> tuple[Any, int, int]:
    """
    Start a fork server for the run in C{directory}: its process, the
    descriptor to write requests to and the one to read its reports from.
    Its directory is in its command line, so that each daemon (which shares
    it) can be found by its run's directory.  The pipes are plain
    descriptors (no file objects that could close a descriptor number
    twice).
    """
    import subprocess

    to_server, server_in = os.pipe()
    server_out, from_server = os.pipe()
    stderr = os.open(
        os.path.join(directory, "forkserver.stderr"), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        0o600,
    )
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "twisted_bcr.forkserver", directory],
            stdin=to_server, stdout=from_server, stderr=stderr,
            env=environment if environment is not None else child_environment(),
            close_fds=True,
        )
    finally:
        for descriptor in (to_server, from_server, stderr):
            os.close(descriptor)
    return process, server_in, server_out


def start_early(directory: str) -> None:
    """
    L{start} the fork server for the run in C{directory} now, so that its
    imports overlap the launcher's (L{twisted_bcr.launch_entry}); the
    supervisor adopts it with L{take_early}.
    """
    global _early
    _early = (os.path.abspath(directory), *start(directory))


def take_early(directory: str) -> tuple[Any, int, int] | None:
    """The fork server L{start_early} started for C{directory}: its process and pipes."""
    global _early
    if _early is None or _early[0] != os.path.abspath(directory):
        return None
    _, process, server_in, server_out = _early
    _early = None
    return process, server_in, server_out


def preload() -> None:
    """Import what every daemon imports, without installing a reactor."""
    import nacl.signing  # noqa: F401
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    import twisted_bcr.net.daemon  # noqa: F401
    import twisted_bcr.net.twistd  # noqa: F401
    import twisted_bcr.olympus.tap  # noqa: F401
    import twisted_bcr.replica.tap  # noqa: F401
    from twisted_bcr.faultplugins import bcr_failures, bcr_triggers  # noqa: F401

    list(getPlugins(IServiceMaker))  # the twistd plugins, and their cache
    assert "twisted.internet.reactor" not in sys.modules, "a preload installed a reactor"


def _run_child(argv: list[str], stdout: str, stderr: str) -> None:
    """In the forked child: become C{twistd argv} with the given output; never return."""
    status = 1
    try:
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
            signal.signal(number, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        err = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        for source, target in ((null, 0), (out, 1), (err, 2)):
            os.dup2(source, target)
            os.close(source)
        # Nothing of the fork server's: its pipes to the launcher, its
        # selector and wake-up pipe.
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", closefd=False, buffering=1)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
        sys.argv = ["twistd", *argv]
        from twisted_bcr.net import twistd

        twistd.main()
        status = 0
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


class _Server:
    """The fork server's loop: spawn on request, report births and deaths."""

    def __init__(self) -> None:
        self._children: dict[int, str] = {}
        self._closed = False
        self._input = b""

    def _say(self, **fields: Any) -> None:
        os.write(1, json.dumps(fields).encode() + b"\n")

    def _spawn(self, request: dict[str, Any]) -> None:
        ident = str(request.get("spawn"))
        try:
            argv = [str(a) for a in request["argv"]]
            stdout, stderr = str(request["stdout"]), str(request["stderr"])
        except (KeyError, TypeError) as e:
            self._say(failed=ident, error=f"bad request: {e}")
            return
        try:
            pid = os.fork()
        except OSError as e:
            self._say(failed=ident, error=str(e))
            return
        if pid == 0:
            _run_child(argv, stdout, stderr)
        self._children[pid] = ident
        self._say(started=ident, pid=pid)

    def _reap(self) -> None:
        while self._children:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            ident = self._children.pop(pid, None)
            if ident is None:
                continue
            # What the daemon itself spent, as the kernel counted it.
            cpu_s = cpu_seconds(usage)
            if os.WIFSIGNALED(status):
                self._say(ended=ident, exit_code=None, signal=os.WTERMSIG(status), cpu_s=cpu_s)
            else:
                self._say(
                    ended=ident, exit_code=os.waitstatus_to_exitcode(status), signal=None,
                    cpu_s=cpu_s,
                )

    def _read_requests(self) -> None:
        data = os.read(0, 65536)
        if not data:
            self._closed = True
            return
        self._input += data
        *lines, self._input = self._input.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                request = json.loads(line)
            except ValueError:
                self._say(failed="?", error="a request is not JSON")
                continue
            if isinstance(request, dict):
                self._spawn(request)

    def run(self) -> None:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        # The launcher ends its children itself; a SIGTERM or Control-C
        # reaching the whole group must not take their reporter first.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with selectors.DefaultSelector() as selector:
            selector.register(0, selectors.EVENT_READ, "input")
            selector.register(wake_read, selectors.EVENT_READ, "child")
            while not (self._closed and not self._children):
                for key, _ in selector.select():
                    if key.data == "input":
                        self._read_requests()
                        if self._closed:
                            selector.unregister(0)
                    else:
                        os.read(wake_read, 4096)
                self._reap()
        self._say(exiting=True, cpu_s=cpu_seconds(resource.getrusage(resource.RUSAGE_SELF)))


def main() -> None:
    """Preload, then serve until standard input closes."""
    preload()
    _Server().run()


if __name__ == "__main__":
    main()
