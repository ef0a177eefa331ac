# -*- test-case-name: tests.test_processes -*-
"""
What the twistd subcommands of L{twisted_bcr.olympus.tap} and
L{twisted_bcr.replica.tap} share: the node options (where to listen, what to
advertise, where logs and the port file go, the frame limit), their
validation, and the service that runs one machine on a L{TcpNode}.

Everything is checked in C{postOptions}, so a bad option ends twistd with a
one-line C{twistd: ...} error and status 1 before anything starts.
"""

from __future__ import annotations

import os
import string
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from twisted_bcr import crypto
from twisted_bcr.faults import PluginError, Registry, load_registry
from twisted_bcr.files import UnsafeFileError, make_private_directory
from twisted_bcr.interfaces import IMachine, IMetrics
from twisted_bcr.metrics import NO_METRICS
from twisted_bcr.net.framing import DEFAULT_MAX_FRAME
from twisted_bcr.net.node import DEFAULT_LISTEN, TcpNode, parse_address

if TYPE_CHECKING:
    from twisted_bcr.net.metrics import MetricsService

__all__ = [
    "NodeOptions",
    "check_address",
    "check_name",
    "load_or_create_key",
    "node_service",
    "read_verify_key_option",
]

#: Frames smaller than this could not carry a configuration of one replica.
MINIMUM_MAX_FRAME = 1024

#: How much of a start-up failure a daemonizing twistd's parent reads.
STATUS_PIPE_BYTES = 100


class NodeOptions(usage.Options):
    """Options every BCR daemon has; subclasses add their own and extend postOptions."""

    optParameters: list[list[Any]] = [
        ["listen", None, DEFAULT_LISTEN, "Server endpoint to listen on."],
        [
            "advertise", None, None,
            "Host other processes use to reach this one "
            "[default: the listen interface, or 127.0.0.1 for a wildcard].",
        ],
        [
            "port-file", None, None,
            "Write HOST:PORT to this file (atomically) once listening and started.",
        ],
        ["log-dir", None, ".", "Directory for the JSON and text log files."],
        [
            "max-frame", None, DEFAULT_MAX_FRAME,
            "Largest frame accepted or sent, in bytes.", int,
        ],
        [
            "metrics", None, None,
            "Serve Prometheus metrics at /metrics on this server endpoint, "
            "e.g. tcp:9101:interface=127.0.0.1 [default: no metrics].",
        ],
        [
            "metrics-port-file", None, None,
            "Write HOST:PORT of the metrics endpoint to this file (atomically) "
            "once it listens; needs --metrics.",
        ],
    ]

    #: The twistd subcommand, for error messages.
    command = "bcr"

    def __init__(self) -> None:
        super().__init__()
        self["fault-plugins"] = []

    def opt_fault_plugins(self, directory: str) -> None:
        """Also load fault plugins from this directory (repeatable)."""
        self["fault-plugins"].append(directory)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse, and end bad input with one line on standard error and status
        1.  twistd would print the whole usage text before the error, which
        buries the one line that matters in a service's journal; C{--help}
        still prints the usage.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            sys.stderr.write(f"twistd {self.command}: {e}\n")
            raise SystemExit(1) from None

    def fault_registry(self) -> Registry:
        """The fault plugins: the built-ins and those of --fault-plugins."""
        try:
            return load_registry(self["fault-plugins"])
        except PluginError as e:
            raise usage.UsageError(str(e)) from None

    def postOptions(self) -> None:
        try:
            serverFromString(None, self["listen"])
        except (ValueError, KeyError, TypeError) as e:
            raise usage.UsageError(f"--listen {self['listen']!r}: {e}") from None
        advertise = self["advertise"]
        if advertise is not None:
            try:
                parse_address(f"[{advertise}]:1" if ":" in advertise else f"{advertise}:1")
            except ValueError:
                raise usage.UsageError(
                    f"--advertise {advertise!r}: not a host name or address"
                ) from None
        if self["max-frame"] < MINIMUM_MAX_FRAME:
            raise usage.UsageError(f"--max-frame must be at least {MINIMUM_MAX_FRAME} bytes")
        log_dir = self["log-dir"]
        try:
            make_private_directory(log_dir)
        except OSError as e:
            raise usage.UsageError(f"--log-dir {log_dir!r}: {e.strerror}") from None
        if not os.access(log_dir, os.W_OK | os.X_OK):
            raise usage.UsageError(f"--log-dir {log_dir!r}: not writable")
        port_file = self["port-file"]
        if port_file is not None:
            directory = os.path.dirname(os.path.abspath(port_file))
            if not os.access(directory, os.W_OK | os.X_OK):
                raise usage.UsageError(f"--port-file {port_file!r}: directory not writable")
        self._check_metrics()

    def _check_metrics(self) -> None:
        metrics = self["metrics"]
        if metrics is not None:
            try:
                serverFromString(None, metrics)
            except (ValueError, KeyError, TypeError) as e:
                raise usage.UsageError(f"--metrics {metrics!r}: {e}") from None
        port_file = self["metrics-port-file"]
        if port_file is not None:
            if metrics is None:
                raise usage.UsageError("--metrics-port-file needs --metrics")
            directory = os.path.dirname(os.path.abspath(port_file))
            if not os.access(directory, os.W_OK | os.X_OK):
                raise usage.UsageError(
                    f"--metrics-port-file {port_file!r}: directory not writable"
                )


def check_address(option: str, value: str | None) -> str:
    """C{value} if it is a C{host:port} address; otherwise a UsageError."""
    if value is None:
        raise usage.UsageError(f"--{option} HOST:PORT is required")
    try:
        parse_address(value)
    except ValueError as e:
        raise usage.UsageError(f"--{option}: {e}") from None
    return value


def check_name(name: str) -> str:
    """C{name} if it can be a log file stem; otherwise a UsageError."""
    if not name or name.startswith(".") or any(
        c not in string.ascii_letters + string.digits + "._-" for c in name
    ):
        raise usage.UsageError(f"--name {name!r}: use letters, digits, '.', '_', '-'")
    return name


def read_verify_key_option(option: str, value: str | None) -> bytes:
    """A public key given as 64 hex digits or as the path of a C{.pub} file."""
    if value is None:
        raise usage.UsageError(f"--{option} HEX|PATH is required")
    if len(value) == 2 * crypto.VERIFY_KEY_BYTES and all(
        c in string.hexdigits for c in value
    ):
        return bytes.fromhex(value)
    try:
        return crypto.read_verify_key(value)
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) else str(e)
        raise usage.UsageError(
            f"--{option} {value!r}: neither 64 hex digits nor a readable .pub file"
            f" ({reason})"
        ) from None


def load_or_create_key(path: str, option: str = "key-file") -> crypto.KeyPair:
    """
    The key pair saved at C{path}, or a new one saved there (the seed 0600,
    its C{.pub} 0644) if there is nothing at all at C{path}.  A seed that is
    a symlink (even a dangling one), not ours, or readable by anyone else is
    refused rather than used or replaced.  Raises a one-line UsageError
    naming the file.
    """
    # lexists: a dangling symlink is refused by load, not replaced by a key.
    if os.path.lexists(path):
        try:
            return crypto.KeyPair.load(path)
        except UnsafeFileError as e:
            raise usage.UsageError(f"--{option} {path!r}: {e.problem}") from None
        except OSError as e:
            raise usage.UsageError(f"--{option} {path!r}: {e.strerror}") from None
        except ValueError as e:
            raise usage.UsageError(f"--{option} {path!r}: {e}") from None
    key = crypto.KeyPair.generate()
    try:
        key.save(path)
    except OSError as e:
        raise usage.UsageError(f"--{option} {path!r}: {e.strerror}") from None
    return key


def node_service(
    options: NodeOptions,
    name: str,
    log_stem: str,
    machine_factory: Callable[[TcpNode], IMachine],
    key: crypto.KeyPair,
    role: str = "replica",
) -> IService:
    """
    The service tree of a daemon: one L{TcpNode} running one machine,
    authenticating its connections with C{key}; with C{--metrics}, also
    a L{MetricsService} serving what the node and the machine count
    (C{role} says which metrics: L{PrometheusMetrics}).  The machine
    factory finds the sink at C{node.metrics}.
    """
    from twisted.internet import reactor

    metrics: IMetrics = NO_METRICS
    metrics_service: MetricsService | None = None
    if options["metrics"] is not None:
        # Imported only when asked for: every daemon's start-up counts.
        from prometheus_client import CollectorRegistry, disable_created_metrics

        from twisted_bcr.net.metrics import MetricsService, PrometheusMetrics

        # The samples themselves, not their creation times beside them
        # (prometheus_client's setting is per process: this daemon's).
        disable_created_metrics()
        registry = CollectorRegistry()
        metrics = PrometheusMetrics(registry, role)
        metrics_service = MetricsService(
            reactor, options["metrics"], registry,
            port_file=options["metrics-port-file"],
            on_failure=lambda failure: metrics_failed(failure),
        )
    node = TcpNode(
        reactor,
        name,
        key=key,
        listen=options["listen"],
        advertise=options["advertise"],
        log_dir=options["log-dir"],
        log_stem=log_stem,
        max_frame=options["max-frame"],
        port_file=options["port-file"],
        start_failed=lambda failure: top.start_failed(failure),
        metrics=metrics,
    )
    node.attach_factory(machine_factory)

    def metrics_failed(failure: Failure) -> None:
        # Asked for and not served: as fatal as a --listen that fails.
        top.start_failed(failure)
        for log in (node.log, Logger()):
            log.error(
                "{node} could not serve metrics on {endpoint}: {reason}", node=name,
                endpoint=options["metrics"], reason=failure.getErrorMessage(),
                event="bcr.start_failed",
            )
        node.exit_when_running(1, f"could not serve metrics: {failure.getErrorMessage()}")

    top = _DaemonService(getattr(options, "parent", None))
    if metrics_service is not None:
        # Started first: listening before the node's port file says "started".
        metrics_service.setServiceParent(top)
    node.setServiceParent(top)
    return top


class _DaemonService(MultiService):
    """
    The top of a daemon's service tree: tells a daemonizing twistd why the
    daemon could not start.

    Without C{--nodaemon}, twistd's parent process waits on a pipe for the
    daemon's word that it started (C{statusPipe} in twistd's options,
    C{UnixApplicationRunner.postApplication}), which twistd writes only
    when C{startService} returns ("0", started) or raises.  A node that
    cannot start logs why and ends its process (L{TcpNode.exit_when_running}):
    ending it inside C{startService} left the parent, which holds the
    pipe's other end too, waiting for ever; ending it later would let
    twistd report success.  So while this service starts, a start failure
    is written to that pipe first (L{report_start_failure}): the parent
    prints it and exits 1.
    """

    def __init__(self, twistd_options: usage.Options | None) -> None:
        super().__init__()
        self._twistd_options = twistd_options
        self._starting = False
        #: A child could not start.
        self.failed = False

    def startService(self) -> None:
        self._starting = True
        try:
            # MultiService's, but no later child starts once one failed (a
            # metrics endpoint that cannot listen keeps the node from
            # listening and writing its port file).
            Service.startService(self)
            for service in list(self):
                if self.failed:
                    break
                service.startService()
        finally:
            self._starting = False

    def start_failed(self, failure: Failure) -> None:
        """Report C{failure} to a waiting twistd parent, if there is one now."""
        self.failed = True
        if self._starting and self._twistd_options is not None:
            report_start_failure(self._twistd_options, start_failure_line(failure))


def start_failure_line(failure: Failure) -> str:
    """One line naming why a node could not start."""
    if failure.check(CannotListenError):
        return failure.getErrorMessage()
    kind = failure.type.__name__ if failure.type is not None else "Error"
    return f"{kind}: {failure.getErrorMessage()}"


def report_start_failure(twistd_options: usage.Options, cause: str) -> None:
    """
    Write C{cause} to twistd's status pipe, if it has one that it has not
    used yet, and remove the pid file twistd wrote (the process is about
    to end without twistd's clean-up).  twistd's parent reads at most 100
    bytes and prints them as C{An error has occurred: ...}.
    """
    pipe = twistd_options.get("statusPipe")
    if pipe is None:
        return
    # Used once: twistd would write its own status to the same number.
    twistd_options["statusPipe"] = None
    message = b"1 " + cause.encode("ascii", "backslashreplace")
    if len(message) > STATUS_PIPE_BYTES:
        message = message[: STATUS_PIPE_BYTES - 3] + b"..."
    try:
        os.write(pipe, message)
        os.close(pipe)
    except OSError:
        pass
    pidfile = twistd_options.get("pidfile")
    if pidfile:
        try:
            with open(pidfile, "rb") as f:
                ours = f.read().strip() == str(os.getpid()).encode()
            if ours:
                os.unlink(pidfile)
        except OSError:
            pass
