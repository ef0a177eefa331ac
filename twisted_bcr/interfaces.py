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

    Addresses are opaque strings: C{"host:port"} in the processes binding,
    node names in the simulation.  Sending never fails from the caller's
    point of view: a message to an unreachable or dead peer is logged by the
    binding and lost, exactly like a message to a crashed process.
    """

    address: str = Attribute("The address this machine is reachable at.")
    log: Any = Attribute(
        "A twisted.logger.Logger whose events go to this machine's own log files."
    )

    def send(to: str, message: object) -> None:
        """Send C{message} (a wire message of L{twisted_bcr.messages}) to C{to}."""

    def start_timer(key: str, seconds: float) -> None:
        """
        Call the machine's C{timer_expired(key)} after C{seconds}, replacing
        any timer already running under C{key}.
        """

    def cancel_timer(key: str) -> None:
        """Cancel the timer under C{key}, if any."""

    def now() -> float:
        """The binding's clock, in seconds (for latencies and deadlines only)."""

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

    def receive(sender: str, message: object) -> None:
        """Handle one decoded wire message that arrived from C{sender}."""

    def timer_expired(key: str) -> None:
        """A timer started through L{IEnvironment.start_timer} has expired."""
