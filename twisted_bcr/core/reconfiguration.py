# -*- test-case-name: tests.test_core_reconfiguration -*-
"""
The pure decisions Olympus makes while it reconfigures a chain (SPEC §9):
which wedged messages are valid, which candidate quorums to try and in what
order, the longest history (LH) of a quorum and what each member must catch
up on, and which clients' results t+1 members vouch for.

Nothing here sends anything or keeps state between calls: L{Olympus} drives
the protocol and calls these functions, and tests call them directly on
hand-made histories.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

from attrs import frozen

from twisted_bcr import codec, crypto
from twisted_bcr.core.common import ProofError, check_statements, replica_keys
from twisted_bcr.messages import (
    CaughtUp,
    CheckpointProof,
    CheckpointStatement,
    Configuration,
    HistoryEntry,
    OrderStatement,
    Request,
    ResultFromOlympus,
    ResultStatement,
    Signed,
    Wedged,
)


@frozen
class WedgedReplica:
    """A replica's valid wedged message, reduced to what the quorum search needs."""

    index: int
    #: The slot of its latest completed checkpoint (or the slot before the
    #: configuration's first slot when it has none).
    checkpoint_slot: int
    history: tuple[HistoryEntry, ...]

    @property
    def last_slot(self) -> int:
        """The last slot this replica executed, as its history shows."""
        return self.history[-1].slot if self.history else self.checkpoint_slot


@frozen
class QuorumPlan:
    """A consistent candidate quorum, its longest history and its catch-up lists."""

    quorum: tuple[int, ...]
    #: The highest completed checkpoint any member holds; LH starts after it.
    checkpoint_slot: int
    longest_history: tuple[HistoryEntry, ...]
    catch_up: Mapping[int, tuple[HistoryEntry, ...]]

    @property
    def last_slot(self) -> int:
        """The last slot of LH: the new configuration starts right after it."""
        return (
            self.longest_history[-1].slot if self.longest_history else self.checkpoint_slot
        )


def validate_wedged(
    verifier: crypto.Verifier,
    wedged: Wedged,
    configuration: Configuration,
    first_slot: int,
    client_keys: Mapping[int, bytes],
) -> WedgedReplica:
    """
    Check a wedged message as SPEC §9.3 says and reduce it.

    @param first_slot: The first slot of C{configuration}: a history without
        a checkpoint must start there.
    @raise ProofError: why the message is invalid.
    """
    keys = replica_keys(configuration)
    checkpoint_slot = first_slot - 1
    if wedged.checkpoint is not None:
        check_olympus_checkpoint(verifier, wedged.checkpoint, configuration)
        checkpoint_slot = wedged.checkpoint.slot
    expected_slot = checkpoint_slot + 1
    for entry in wedged.history:
        if entry.slot != expected_slot:
            raise ProofError(f"history has slot {entry.slot} where {expected_slot} belongs")
        expected_slot += 1
        check_history_entry(verifier, entry, configuration.number, keys, client_keys)
    return WedgedReplica(wedged.index, checkpoint_slot, tuple(wedged.history))


def check_history_entry(
    verifier: crypto.Verifier,
    entry: HistoryEntry,
    configuration: int,
    keys: Sequence[bytes],
    client_keys: Mapping[int, bytes],
) -> Request:
    """
    A history entry's request, once its client signature and its order
    proof (statements from chain positions 0..k, all for this slot and
    operation) check out.

    @raise ProofError: what is wrong with it.
    """
    try:
        request = codec.decode(entry.request.body, Request)
        assert isinstance(request, Request)
        key = client_keys.get(request.client)
        if key is None:
            raise ProofError(f"slot {entry.slot}: request of unknown client {request.client}")
        verifier.verify(entry.request, key, Request)
    except (crypto.BadSignature, codec.BadMessage) as e:
        raise ProofError(f"slot {entry.slot}: client request: {e}") from None
    if not entry.order_proof:
        raise ProofError(f"slot {entry.slot}: empty order proof")
    expected = OrderStatement(
        configuration, entry.slot, request.client, request.seq, request.operation
    )
    for position, statement in enumerate(
        check_statements(verifier, entry.order_proof, keys, OrderStatement)
    ):
        if statement != expected:
            raise ProofError(
                f"slot {entry.slot}: order statement {position} contradicts the request"
            )
    return request


def check_olympus_checkpoint(
    verifier: crypto.Verifier, proof: CheckpointProof, configuration: Configuration
) -> None:
    """
    Olympus's rule for a completed checkpoint proof (SPEC §8): at least t+1
    statements, each validly signed by the replica at its position, all for
    the proof's slot and one state hash.

    @raise ProofError: fewer than t+1 such statements.
    """
    keys = replica_keys(configuration)
    hashes: Counter[bytes] = Counter()
    for position, signed in enumerate(proof.statements[: len(keys)]):
        try:
            statement = verifier.verify(signed, keys[position], CheckpointStatement)
        except (crypto.BadSignature, codec.BadMessage):
            continue
        if statement.slot == proof.slot and statement.configuration == proof.configuration:
            hashes[statement.state_hash] += 1
    best = max(hashes.values(), default=0)
    if best < configuration.t + 1:
        raise ProofError(
            f"checkpoint proof for slot {proof.slot} has {best} valid matching "
            f"statements, {configuration.t + 1} needed"
        )


def candidate_quorums(
    valid: Sequence[int], t: int, tried: set[tuple[int, ...]]
) -> Iterator[tuple[int, ...]]:
    """
    Quorums of t+1 replicas with valid wedged messages not tried yet, in
    increasing replica-index order (SPEC §9.4: deterministic search).
    """
    for quorum in itertools.combinations(sorted(valid), t + 1):
        if quorum not in tried:
            yield quorum


def plan_quorum(members: Sequence[WedgedReplica]) -> QuorumPlan:
    """
    Align the members' histories by the highest checkpoint among them, check
    that they are consistent (each a prefix of the longest), and compute
    what each member must execute to reach the end of LH.  (Olympus adds
    what it sent a member in an earlier catch-up to its history.)

    @raise ProofError: the histories are inconsistent, or a member is
        behind the checkpoint and cannot be caught up from LH.
    """
    checkpoint_slot = max(member.checkpoint_slot for member in members)
    aligned = {
        member.index: [e for e in member.history if e.slot > checkpoint_slot]
        for member in members
    }
    longest = max(aligned.values(), key=len)
    by_slot = {entry.slot: entry.request for entry in longest}
    catch_up: dict[int, tuple[HistoryEntry, ...]] = {}
    for member in members:
        for entry in aligned[member.index]:
            if by_slot.get(entry.slot) != entry.request:
                raise ProofError(
                    f"replica {member.index}'s history differs from the longest at "
                    f"slot {entry.slot}"
                )
        executed = member.last_slot
        if executed < checkpoint_slot:
            raise ProofError(
                f"replica {member.index} executed up to slot {executed}, before the "
                f"checkpoint at {checkpoint_slot}"
            )
        catch_up[member.index] = tuple(e for e in longest if e.slot > executed)
    return QuorumPlan(
        quorum=tuple(sorted(aligned)),
        checkpoint_slot=checkpoint_slot,
        longest_history=tuple(longest),
        catch_up=catch_up,
    )


def vouched_results(
    verifier: crypto.Verifier,
    caught_up: Mapping[int, CaughtUp],
    configuration: Configuration,
) -> list[ResultFromOlympus]:
    """
    SPEC §9.6: for each client, the result that at least t+1 members report,
    each with a result statement validly signed by that member for the same
    request and result; at most one per client (the newest request wins).
    """
    keys = replica_keys(configuration)
    # client -> (seq, slot, result) -> the statements of the members reporting it
    reports: dict[int, dict[tuple[int, int, str], list[Signed]]] = {}
    for index, message in sorted(caught_up.items()):
        for client_result in message.client_results:
            try:
                statement = verifier.verify(
                    client_result.statement, keys[index], ResultStatement
                )
            except (crypto.BadSignature, codec.BadMessage, IndexError):
                continue
            if (
                statement.client != client_result.client
                or statement.seq != client_result.seq
                or statement.result_hash != crypto.result_hash(client_result.result)
            ):
                continue
            reports.setdefault(client_result.client, {}).setdefault(
                (client_result.seq, statement.slot, client_result.result), []
            ).append(client_result.statement)
    vouchers = []
    for client, by_result in sorted(reports.items()):
        backed = [
            (key, statements)
            for key, statements in by_result.items()
            if len(statements) >= configuration.t + 1
        ]
        if not backed:
            continue
        (seq, slot, result), statements = max(backed)
        vouchers.append(
            ResultFromOlympus(
                client=client,
                seq=seq,
                slot=slot,
                result=result,
                statements=tuple(statements[: configuration.t + 1]),
            )
        )
    return vouchers
