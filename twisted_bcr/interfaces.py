"""
The seams between the pure protocol core and whatever runs it.

A core machine (L{twisted_bcr.core.replica.Replica}, L{...olympus.Olympus},
L{...client.Client}) is driven through L{IMachine} and acts on the world only
through the L{IEnvironment} it was given.  Two bindings provide environments:
real processes over TCP (L{twisted_bcr.net.node}) and the deterministic
in-memory simulation (L{twisted_bcr.simulation}).  Neither the core nor these
interfaces import a reactor or socket code.
"""

from __future__ import annotations

from typing import Any

from zope.interface import Attribute, Interface


class IEnvironment(Interface):
    """
    Everything a core machine may do to the outside world.

    Messages go to and come from L{twisted_bcr.peers.Peer}s: an address
    (C{"host:port"} in the processes binding, a node name in the simulation)
    and the verify key of the process there.  The binding delivers a message
    to C{to} only if the process at C{to.address} proves it holds C{to.key};
    and every message it hands the machine comes with the peer whose key the
    sending end proved (docs/SECURITY.md).  Sending never fails from the
    caller's point of view: a message to an unreachable, dead or impostor
    peer is logged by the binding and lost, exactly like a message to a
    crashed process.
    """

    address: str = Attribute("The address this machine is reachable at.")
    log: Any = Attribute(
        "A twisted.logger.Logger whose events go to this machine's own log files."
    )

    def send(to: Any, message: object) -> None:
        """
        Send C{message} (a wire message of L{twisted_bcr.messages}) to the
        L{twisted_bcr.peers.Peer} C{to}.
        """

    def start_timer(key: str, seconds: float) -> None:
        """
        Call the machine's C{timer_expired(key)} after C{seconds}, replacing
        any timer already running under C{key}.
        """

    def cancel_timer(key: str) -> None:
        """Cancel the timer under C{key}, if any."""

    def now() -> float:
        """The binding's clock, in seconds (for latencies and deadlines only)."""

    def random_bytes(count: int) -> bytes:
        """
        C{count} unpredictable bytes (nonces, epochs): the operating
        system's randomness in the processes binding, the seed's in the
        simulation.
        """

    def exit(status: int, reason: str) -> None:
        """
        End this machine's process after flushing logs: a retired replica
        exits 0, a C{crash()} fault exits at once with a non-zero status.
        """

    def stall(seconds: float) -> None:
        """Stall this machine's whole process for C{seconds} (the C{sleep()} fault)."""


class IMachine(Interface):
    """What a binding calls on a core machine."""

    def start() -> None:
        """Begin: register with Olympus, set up the initial configuration, ..."""

    def receive(sender: Any, message: object) -> None:
        """
        Handle one decoded wire message that arrived from C{sender}, the
        authenticated L{twisted_bcr.peers.Peer} that sent it.
        """

    def timer_expired(key: str) -> None:
        """A timer started through L{IEnvironment.start_timer} has expired."""

    def max_message_from(key: bytes) -> int:
        """
        The largest encoded message this machine takes from the peer that
        authenticated with C{key}: its role's bound (a client's request is
        small; a stranger's smaller still).  The binding refuses larger
        frames before buffering them.
        """


# ---------------------------------------------------------------------------
# Fault plugins (SPEC §11).  Discovered with twisted.plugin.getPlugins in the
# package twisted_bcr.faultplugins (the built-ins) and in any directory a
# user adds per experiment (such as the repository's top-level plugins/).


class ITrigger(Interface):
    """
    When a fault fires: a name used in case files (C{shuttle(c,m)}), and a
    test on the messages a replica counts (SPEC §11.1).  The replica counts;
    a trigger only says whether the C{number}'th message of its kind (for a
    client, where the kind is counted per client) matches its arguments.
    """

    name: str = Attribute("The name in case files, e.g. 'shuttle'.")
    arity: int = Attribute("How many integer arguments it takes.")
    counted: str = Attribute(
        "The kind of received message it counts: 'client_request', "
        "'forwarded_request', 'shuttle', 'result_shuttle', 'wedge_request', "
        "'new_configuration', 'checkpoint', 'completed_checkpoint', "
        "'get_running_state' or 'catch_up'."
    )
    per_client: bool = Attribute("Whether messages are counted per client.")

    def fires(client: int | None, number: int, args: tuple[int, ...]) -> bool:
        """Does the C{number}'th counted message (of C{client}) match C{args}?"""


class IFailure(Interface):
    """What a replica does wrong when a trigger fires (SPEC §11.2)."""

    name: str = Attribute("The name in case files, e.g. 'crash'.")
    arity: int = Attribute("How many integer arguments it takes.")
    stage: int = Attribute(
        "Its place among the failures firing on one message (SPEC §11 "
        "'order of effects'): 0 crash, 1 sleep, 2 change of state or slot, "
        "3 arm a tampering with a later outgoing message, 4 drop."
    )

    def fire(misbehave: IMisbehave, args: tuple[int, ...], text: str) -> None:
        """Do it, through C{misbehave} only; C{text} is the pair, for logs."""


class IMisbehave(Interface):
    """
    The narrow API through which failures act on a replica.  Failures never
    touch replica internals: everything they may do is here.
    """

    name: str = Attribute("The replica's name, e.g. 'replica 0.2'.")
    is_head: bool = Attribute("Whether it is the head of its chain.")
    is_tail: bool = Attribute("Whether it is the tail of its chain.")
    t: int = Attribute("The configuration's t.")
    index: int = Attribute("Its position in the chain.")
    configuration: int = Attribute("Its configuration number.")

    def crash() -> None:
        """End the process at once, after flushing the logs; nothing more is processed."""

    def sleep(seconds: float) -> None:
        """Stall the whole process for C{seconds}."""

    def drop() -> None:
        """Do not process the triggering message at all."""

    def apply(name: str, args: tuple[str, ...]) -> None:
        """Apply a dictionary operation to the running state, outside the protocol."""

    def skip_slot() -> None:
        """Make the head skip its next slot number (no effect elsewhere)."""

    def arm(text: str, point: str, tamper: Any) -> None:
        """
        Change the next value the replica produces at C{point} with
        C{tamper(value, misbehave)}; once used it is disarmed, and arming
        the same failure again replaces it.  Points: 'own_statements' (the
        signed order and result statements it adds for its next request),
        'result_message' (its next result message to a client),
        'result_proof' (the result proof of its next outgoing result message
        or result shuttle; at the tail the same proof goes to both),
        'wedged' (the history in its next wedged message) and
        'completed_checkpoint' (the statements of its next completed proof).
        """

    def sign(statement: object) -> Any:
        """A L{twisted_bcr.messages.Signed} of C{statement} with the replica's key."""

    def corrupt(signed: Any) -> Any:
        """C{signed} with an invalid signature (SPEC §2.4)."""

    def decode(signed: Any) -> object:
        """The statement inside a L{twisted_bcr.messages.Signed} (no check)."""

    def log(message: str) -> None:
        """Say something in the replica's log."""


class IAdmission(Interface):
    """
    Which long-term identities the operator admitted (docs/SECURITY.md):
    Olympus asks this on every registration, so a change takes effect on
    the next one.
    """

    def admits_replica(identity_key: bytes) -> bool:
        """May a process holding C{identity_key} register as a spare?"""

    def client_key(index: int) -> bytes | None:
        """The one key that may act as client C{index}, if any."""


class IMetrics(Interface):
    """
    Where a machine and its binding count what happens, for monitoring
    (docs/OPERATIONS.md, "Metrics").  The core calls it on its hot paths, so
    every method is one counter increment, gauge setting or histogram
    observation: no formatting, no I/O, never raising.  Label arguments are
    short constant strings from the code, never from the input or per
    client or per slot, so the number of time series stays small.

    L{twisted_bcr.metrics.NO_METRICS} does nothing (the simulation, tests,
    a daemon without C{--metrics}); L{twisted_bcr.net.metrics} counts with
    prometheus_client.
    """

    # -- a replica --------------------------------------------------------

    def request_received(source: str) -> None:
        """A signed request arrived: C{source} 'client' or 'forwarded' (to the head)."""

    def slot_ordered() -> None:
        """The head gave a request the next slot."""

    def slot_executed() -> None:
        """A slot's operation was applied to the running state (shuttle or catch-up)."""

    def result_sent() -> None:
        """A result message went to a client (the tail's, or a retransmission's)."""

    def shuttle_completed(seconds: float) -> None:
        """At the head: a slot's result came back C{seconds} after it was ordered."""

    def checkpoint_completed() -> None:
        """A completed checkpoint proof truncated this replica's history."""

    def reconfiguration_requested() -> None:
        """This replica asked Olympus for a reconfiguration."""

    def wedged() -> None:
        """This replica obeyed a wedge request: it is immutable now."""

    def chain_position(index: int) -> None:
        """This replica's position in its chain (0 is the head); -1 while a spare."""

    # -- Olympus ----------------------------------------------------------

    def reconfiguration_request_received(requester: str) -> None:
        """A reconfiguration request arrived from a 'replica' or a 'client'."""

    def reconfiguration_started() -> None:
        """A reconfiguration request was accepted: wedge requests went out."""

    def reconfiguration_phase(phase: str, seconds: float) -> None:
        """
        A reconfiguration reached C{phase}, C{seconds} after it started:
        'quorum' (a consistent quorum of wedged messages is being caught
        up), 'caught_up' (its members' state hashes agree) or
        'running_state' (a running state with that hash was chosen).
        """

    def reconfiguration_completed(seconds: float) -> None:
        """The next configuration was installed, C{seconds} after the request."""

    def wedged_message_received() -> None:
        """A valid wedged message arrived during a reconfiguration."""

    def spares(count: int) -> None:
        """The number of spares registered and waiting to be placed."""

    # -- both -------------------------------------------------------------

    def configuration(number: int) -> None:
        """The configuration this machine serves now (-1 before the first)."""

    def verification_failed(kind: str) -> None:
        """
        A signature or statement check failed: C{kind} names what was
        checked ('request', 'shuttle', 'result_shuttle', 'result_statement',
        'checkpoint', 'completed_checkpoint', 'sealed', 'recovered_result',
        'registration', 'wedged', 'quorum', 'caught_up', 'running_state').
        """

    def message_rejected(reason: str) -> None:
        """
        A decoded message from an authenticated peer was refused:
        'verification' (a check failed), 'not_allowed' (that peer may not
        send it), 'not_admitted' (an identity or key the admission file
        does not list), 'over_limit' (a bound was reached) or 'unexpected'
        (not now, not here, not for this configuration).
        """

    # -- the binding ------------------------------------------------------

    def frame_rejected(reason: str) -> None:
        """A frame was refused: 'oversized', 'undecodable' or 'truncated'."""

    def connection_rejected(reason: str) -> None:
        """
        A connection was refused or closed before carrying messages:
        'bad_handshake', 'handshake_timeout', 'wrong_key' (an outbound
        peer proved another key) or 'too_many_connections'.
        """
