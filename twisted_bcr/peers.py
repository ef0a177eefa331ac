# -*- test-case-name: tests.test_core_replica -*-
"""
Who a message comes from and who it goes to: a L{Peer} is an address
together with the Ed25519 verify key of the process there.

The bindings authenticate every connection once, when it is made
(docs/SECURITY.md): both ends prove they hold the private half of the key
they claim.  So a message handed to a core machine comes with the L{Peer}
that really sent it (its C{key} proven, its C{address} only where the
connection came from, for logs), and a message a machine sends goes to a
L{Peer} whose key the binding checks before anything is written: a process
at that address with another key gets nothing.

The core decides what a sender may say from its key alone (its role in the
configuration); addresses are never evidence.
"""

from __future__ import annotations

from attrs import frozen

from twisted_bcr.messages import ClientInfo, ReplicaInfo

__all__ = ["Peer", "peer_of"]


@frozen
class Peer:
    """A process: where it is reached and the key it authenticates with."""

    address: str
    key: bytes

    def __str__(self) -> str:
        # Logs name peers by address, as they did before keys were checked.
        return self.address


def peer_of(info: ReplicaInfo | ClientInfo) -> Peer:
    """The peer a configuration entry describes."""
    return Peer(info.address, info.verify_key)
