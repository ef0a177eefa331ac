# -*- test-case-name: tests.test_checking -*-
"""
End-of-run validation (SPEC §12.2) and the summary JSON (DESIGN §4).

Three checks, each independent of how the run was executed:

 - per client: every request was accepted, and replaying the client's own
   workload alone gives the same results (meaningful only for clients whose
   keys nobody else touches, so it is reported but does not fail a run);
 - across clients: all accepted (slot, request, result) merged in slot order
   and replayed on one dictionary must reproduce every accepted result, each
   client's slots must increase with its requests, and the replay's final
   dictionary must equal the replicas' final dictionary;
 - agreement: every replica of the last configuration reports the same
   final dictionary.

The summary's C{ok} is true exactly when C{errors} is empty.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from attrs import define, field

from twisted_bcr import crypto
from twisted_bcr.config import Case
from twisted_bcr.core.client import ClientOutcome
from twisted_bcr.dictionary import apply_operation
from twisted_bcr.messages import RunReport


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def replay_alone(operations: Sequence[tuple[str, tuple[str, ...]]]) -> list[str]:
    """A client's workload replayed on a fresh dictionary of its own."""
    state: dict[str, str] = {}
    return [apply_operation(state, name, args) for name, args in operations]


@define
class SlotReplay:
    """What replaying every accepted result in slot order showed."""

    #: The replay's final dictionary, or None when the slots cannot be
    #: replayed (duplicates or holes, which only a reconfiguration may explain).
    state: dict[str, str] | None = None
    errors: list[str] = field(factory=list)
    #: Clients with a result the replay contradicts, or slots out of order.
    bad_clients: set[int] = field(factory=set)


def replay_in_slot_order(outcomes: Sequence[ClientOutcome]) -> SlotReplay:
    """
    Merge every accepted result in slot order, replay, and note each result
    the replay contradicts.
    """
    replay = SlotReplay()
    errors = replay.errors
    by_slot: dict[int, tuple[int, int]] = {}
    for outcome in outcomes:
        previous = -1
        for seq, slot in enumerate(outcome.slots):
            if slot in by_slot:
                other = by_slot[slot]
                errors.append(
                    f"slot {slot} accepted by both {other[0]}:{other[1]} and "
                    f"{outcome.index}:{seq}"
                )
                return replay
            if slot <= previous:
                replay.bad_clients.add(outcome.index)
                errors.append(
                    f"client {outcome.index}: request {seq} got slot {slot}, "
                    f"not after its previous request's slot {previous}"
                )
            previous = slot
            by_slot[slot] = (outcome.index, seq)
    slots = sorted(by_slot)
    if slots and slots != list(range(slots[0], slots[0] + len(slots))):
        missing = sorted(set(range(slots[0], slots[-1] + 1)) - set(slots))
        errors.append(f"accepted results leave slots {missing[:10]} unaccounted for")
        return replay
    outcome_by_index = {o.index: o for o in outcomes}
    state: dict[str, str] = {}
    for slot in slots:
        client, seq = by_slot[slot]
        outcome = outcome_by_index[client]
        name, args = outcome.operations[seq]
        expected = apply_operation(state, name, args)
        if outcome.results[seq] != expected:
            replay.bad_clients.add(client)
            errors.append(
                f"client {client} request {seq} at slot {slot}: accepted "
                f"{outcome.results[seq]!r}, slot-order replay gives {expected!r}"
            )
    replay.state = state
    return replay


def _workload_time(outcomes: Sequence[ClientOutcome]) -> float:
    """From the first request sent to the last result accepted, start-up aside."""
    starts = [o.first_sent_at for o in outcomes if o.first_sent_at is not None]
    ends = [o.last_accepted_at for o in outcomes if o.last_accepted_at is not None]
    return max(ends) - min(starts) if starts and ends else 0.0


def build_summary(
    case: Case,
    mode: str,
    outcomes: Sequence[ClientOutcome],
    report: RunReport | None,
    elapsed_s: float,
    errors: Sequence[str],
) -> dict[str, Any]:
    """
    The summary JSON of DESIGN §4 for one finished (or abandoned) run, from
    what the clients recorded and Olympus's run report: nothing here comes
    from a log.
    """
    errors = list(errors)
    outcomes = sorted(outcomes, key=lambda o: o.index)
    clients = []
    for outcome in outcomes:
        requested = len(outcome.operations)
        if outcome.accepted != requested:
            errors.append(
                f"client {outcome.index} accepted {outcome.accepted} of "
                f"{requested} requests"
            )
        clients.append(
            {
                "index": outcome.index,
                "requests": requested,
                "accepted": outcome.accepted,
                "results": list(outcome.results),
                "slots": list(outcome.slots),
                "retransmissions": outcome.retransmissions,
                "isolated_replay_matches": (
                    replay_alone(outcome.operations)[: outcome.accepted]
                    == outcome.results
                ),
            }
        )
    if len(outcomes) != case.num_client:
        errors.append(f"{len(outcomes)} of {case.num_client} clients reported")

    replay = replay_in_slot_order(outcomes)
    replayed = replay.state
    errors.extend(replay.errors)
    for entry in clients:
        entry["valid"] = (
            entry["accepted"] == entry["requests"]
            and replayed is not None
            and entry["index"] not in replay.bad_clients
        )

    final_state: dict[str, str] | None = None
    replicas_agree = False
    state_hashes: dict[str, str] = {}
    diverging: list[int] = []
    byzantine: set[int] = set()
    silent: list[int] = []
    reconfigurations: list[Any] = []
    configurations = 0
    faults_fired: list[dict[str, Any]] = []
    if report is None:
        errors.append("no run report from Olympus")
    else:
        errors.extend(f"olympus: {e}" for e in report.errors)
        faults_fired = [
            {
                "configuration": f.configuration, "replica": f.index, "trigger": f.trigger,
                "failure": f.failure, "byzantine": f.byzantine,
            }
            for f in report.faults_fired
        ]
        reconfigurations = json.loads(report.reconfigurations_json)
        configurations = report.configuration + 1
        # SPEC §12.2 asks the live, non-faulty replicas to agree.  Faulty
        # means Byzantine: a fired failure that changed its state or what it
        # sent (extra_op() makes one differ).  A replica that only crashed,
        # slept or dropped a message must still agree.
        byzantine = {
            f.index for f in report.faults_fired
            if f.configuration == report.configuration and f.byzantine
        }
        state_hashes = {
            str(f.index): crypto.state_hash(dict(f.state)).hex() for f in report.final_states
        }
        judged = [f for f in report.final_states if f.index not in byzantine] or list(
            report.final_states
        )
        silent = list(report.silent)
        agreeing_needed = case.t + 1
        trusted = [f for f in report.final_states if f.index not in byzantine]
        if not judged:
            errors.append("no replica reported a final dictionary")
        else:
            if silent and len(trusted) < agreeing_needed:
                # A crashed replica may stay silent, but the final dictionary
                # needs t+1 non-Byzantine replicas to vouch for it.
                errors.append(
                    f"only {len(trusted)} non-Byzantine replicas reported a final "
                    f"dictionary (silent: {silent}); t+1 = {agreeing_needed} are needed"
                )
            final_state = dict(judged[0].state)
            diverging = [f.index for f in report.final_states if dict(f.state) != final_state]
            replicas_agree = all(dict(f.state) == final_state for f in judged[1:])
            if not replicas_agree:
                differing = [f.index for f in judged if dict(f.state) != final_state]
                errors.append(
                    f"replicas {differing} of configuration {report.configuration} "
                    f"disagree with replica {judged[0].index}"
                )
            if replayed is not None and final_state != replayed:
                errors.append(
                    "the replicas' final dictionary differs from the slot-order "
                    "replay of the accepted results"
                )

    latencies = sorted(s * 1000 for o in outcomes for s in o.latencies_s)
    requests = sum(o.accepted for o in outcomes)
    workload_s = _workload_time(outcomes)
    return {
        "case": case.name,
        "mode": mode,
        "ok": not errors,
        "elapsed_s": round(elapsed_s, 4),
        "workload_s": round(workload_s, 4),
        "requests": requests,
        "throughput_ops_s": round(requests / workload_s, 1) if workload_s > 0 else 0.0,
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50), 3),
            "p90": round(percentile(latencies, 0.90), 3),
            "p99": round(percentile(latencies, 0.99), 3),
            "max": round(latencies[-1], 3) if latencies else 0.0,
        },
        "configurations": configurations,
        "reconfigurations": reconfigurations,
        "faults_fired": faults_fired,
        "clients": clients,
        "final_state": final_state,
        "replicas_agree": replicas_agree,
        # Per replica of the last configuration that reported: the hash of
        # its final dictionary; those whose dictionary differs from the one
        # the non-Byzantine replicas agree on; and the Byzantine ones, which
        # the agreement leaves out.
        "final_state_hashes": state_hashes,
        "diverging_replicas": diverging,
        "byzantine_replicas": sorted(byzantine),
        "silent_replicas": silent,
        "linearizable": replayed is not None and not replay.errors,
        "errors": errors,
    }
