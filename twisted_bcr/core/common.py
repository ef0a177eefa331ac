# -*- test-case-name: tests.test_core_replica -*-
"""
Small pieces shared by the core machines: replica modes, seal/unseal of
control messages, and proof checks that replicas, clients and Olympus all
make the same way.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from attrs import frozen

from twisted_bcr import codec, crypto
from twisted_bcr.dictionary import operation_problem
from twisted_bcr.messages import (
    CheckpointProof,
    CheckpointStatement,
    Configuration,
    Request,
    ResultStatement,
    Sealed,
    Signed,
)
from twisted_bcr.peers import Peer

T = TypeVar("T")


@frozen
class Rule:
    """
    One row of a machine's acceptance table: who may send a message, in
    which modes it is handled, and by what.  C{sender} names the principal
    (for logs and docs/SECURITY.md); C{allowed(machine, peer, message)}
    decides it from the authenticated key.
    """

    sender: str
    allowed: Callable[[Any, Peer, Any], bool]
    #: The modes it is handled in (a machine without modes: L{ALWAYS}).
    modes: frozenset[Any]
    handler: Callable[..., None]


#: The modes of a rule that holds whatever state its machine is in.
ALWAYS: frozenset[Any] = frozenset({"always"})

#: Message size bounds by the sender's role (docs/SECURITY.md).  The largest
#: messages are Olympus's and the chain's: a whole dictionary in an
#: assignment or running state, a long history in a wedged message.
MAX_MESSAGE = 4 * 1024 * 1024
#: A client's request, or a result or configuration for a client.
MAX_CLIENT_MESSAGE = 64 * 1024
#: A key with no role yet: a spare registering, or nobody we know.
MAX_STRANGER_MESSAGE = 4 * 1024

#: The signer name Olympus uses on everything it seals.
OLYMPUS = "olympus"


class Mode(enum.Enum):
    """A replica's mode (SPEC §2.2)."""

    PENDING = "pending"
    ACTIVE = "active"
    IMMUTABLE = "immutable"


def replica_name(configuration: int, index: int) -> str:
    """The name a replica uses in logs and as a signer: C{replica 0.2}."""
    return f"replica {configuration}.{index}"


def client_name(index: int) -> str:
    """The name a client uses in logs and as a signer: C{client 3}."""
    return f"client {index}"


def is_checkpoint_slot(slot: int, interval: int) -> bool:
    """SPEC §8: slot C{s} closes a checkpoint when C{(s + 1) % interval == 0}."""
    return interval > 0 and (slot + 1) % interval == 0


def requesting_client(signed: Signed) -> int:
    """
    The client a signed request names, read straight from its canonical
    encoding (tag byte, then C{client} as a signed 64-bit big-endian integer,
    docs/PROTOCOL.md) so that a request already verified costs no decoding.
    Garbage yields some number; the signature check that follows decides.
    """
    return int.from_bytes(signed.body[1:9], "big", signed=True)


def check_request(
    verifier: crypto.Verifier, signed: Signed, client_keys: dict[int, bytes]
) -> Request:
    """
    The request inside C{signed}, after checking it is signed by the client
    it names and asks for an operation the dictionary can execute.  Raises
    L{crypto.BadSignature} or L{codec.BadMessage}.
    """
    client = requesting_client(signed)
    key = client_keys.get(client)
    if key is None:
        raise crypto.BadSignature(f"request from unknown client {client}")
    verified = verifier.verify(signed, key, Request)
    if verified.client != client:
        # Only if the encoding of Request changed without this function.
        raise codec.BadMessage(f"request names client {verified.client}, not {client}")
    problem = operation_problem(verified.operation.name, verified.operation.args)
    if problem is not None:
        raise codec.BadMessage(f"request {verified.request_id}: {problem}")
    return verified


class ProofError(Exception):
    """A proof is malformed, badly signed, or contradicts what it should show."""


def check_statements(
    verifier: crypto.Verifier,
    statements: Sequence[Signed],
    keys: Sequence[bytes],
    expected_type: type[T],
) -> list[T]:
    """
    Verify C{statements[j]} with C{keys[j]} (chain position order) and return
    the decoded statements.  Raises L{ProofError} naming the first bad one.
    """
    if len(statements) > len(keys):
        raise ProofError(f"{len(statements)} statements for {len(keys)} replicas")
    decoded = []
    for position, (signed, key) in enumerate(zip(statements, keys, strict=False)):
        try:
            statement = verifier.verify(signed, key, expected_type)
        except (crypto.BadSignature, codec.BadMessage) as e:
            raise ProofError(f"statement {position}: {e}") from None
        decoded.append(statement)
    return decoded


def count_matching_results(
    verifier: crypto.Verifier,
    statements: Sequence[Signed],
    keys: Sequence[bytes],
    expected: ResultStatement,
) -> tuple[int, list[str], bool]:
    """
    For a client: how many of C{statements} are validly signed by the replica
    at their position and equal C{expected}; a list of what was wrong with
    the others (for the log); and whether some validly signed statement
    contradicts C{expected}, which together with a matching one proves
    misbehaviour.  Invalid signatures only reduce the count: they prove
    nothing (SPEC §5 step 6).
    """
    matching = 0
    contradicted = False
    problems: list[str] = []
    for position, signed in enumerate(statements[: len(keys)]):
        try:
            statement = verifier.verify(signed, keys[position], ResultStatement)
        except (crypto.BadSignature, codec.BadMessage) as e:
            problems.append(f"statement {position}: {e}")
            continue
        if statement == expected:
            matching += 1
        else:
            contradicted = True
            problems.append(f"statement {position} contradicts the result")
    return matching, problems, contradicted


def check_checkpoint_proof(
    verifier: crypto.Verifier,
    proof: CheckpointProof,
    keys: Sequence[bytes],
    required: int,
    state_hash: bytes | None,
) -> None:
    """
    Check that C{proof} holds exactly C{required} validly signed statements
    from chain positions C{0..required-1}, all for its slot and configuration
    and, if C{state_hash} is given, all carrying it.  Raises L{ProofError}.
    """
    if len(proof.statements) != required:
        raise ProofError(
            f"checkpoint proof for slot {proof.slot} has "
            f"{len(proof.statements)} statements, {required} required"
        )
    for position, statement in enumerate(
        check_statements(verifier, proof.statements, keys, CheckpointStatement)
    ):
        if statement.slot != proof.slot or statement.configuration != proof.configuration:
            raise ProofError(f"checkpoint statement {position} names another slot")
        if state_hash is not None and statement.state_hash != state_hash:
            raise ProofError(
                f"checkpoint statement {position} carries state hash "
                f"{statement.state_hash.hex()[:16]}, ours is {state_hash.hex()[:16]}"
            )


class Misaddressed(codec.BadMessage):
    """A sealed message for another recipient, or from another Olympus boot."""


def unseal(
    verifier: crypto.Verifier,
    sealed: Sealed,
    verify_key: bytes,
    recipient: bytes,
    epoch: bytes | None = None,
) -> object:
    """
    Open a L{Sealed} control message signed with C{verify_key} and meant
    for C{recipient}; with C{epoch}, it must also be of that Olympus boot.

    @raise crypto.BadSignature: the signature does not verify.
    @raise codec.BadMessage: its body is not a control message, or it is
        L{Misaddressed}.
    """
    inner = verifier.open_sealed(sealed, verify_key)
    if sealed.recipient != recipient:
        raise Misaddressed("sealed for another recipient")
    if epoch is not None and sealed.epoch != epoch:
        raise Misaddressed("sealed in another Olympus epoch")
    return inner


def from_olympus(
    verifier: crypto.Verifier,
    message: object,
    olympus_key: bytes,
    recipient: bytes,
    epoch: bytes | None = None,
) -> object:
    """
    The control message inside C{message}, which must be sealed by Olympus
    for C{recipient} (and, with C{epoch}, in that boot of Olympus).

    @raise crypto.BadSignature: not a L{Sealed} envelope signed by Olympus.
    @raise codec.BadMessage: its body is not a control message, or it is
        L{Misaddressed}.
    """
    if not isinstance(message, Sealed) or message.signer != OLYMPUS:
        raise crypto.BadSignature("not sealed by Olympus")
    return unseal(verifier, message, olympus_key, recipient, epoch)


def replica_keys(configuration: Configuration) -> list[bytes]:
    """The replicas' verify keys of a configuration, in chain order."""
    return [info.verify_key for info in configuration.replicas]
