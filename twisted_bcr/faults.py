# -*- test-case-name: tests.test_core_replica -*-
"""
The fault-injection seam of a replica.

A replica asks its L{FaultHooks} about every message of a trigger type it
receives (SPEC §11.1).  The hooks count it, fire matching trigger/failure
pairs, and answer whether the replica should go on processing the message.
A replica without failures uses L{NO_FAULTS}, which counts nothing and always
answers yes, so the failure-free path pays one method call per message.
"""

from __future__ import annotations

from typing import Protocol

from twisted_bcr.config import Case, CaseError


class FaultHooks(Protocol):
    """What a replica's protocol code calls; implemented by the fault plan."""

    def received(self, kind: str, client: int | None) -> bool:
        """
        Count one received message of trigger type C{kind} (for C{client},
        where the trigger has one) and fire what matches.  Returns C{False}
        when the message must be dropped unprocessed.
        """


class _NoFaults:
    """The hooks of a replica without failures: nothing counts, nothing fires."""

    def received(self, kind: str, client: int | None) -> bool:
        return True


NO_FAULTS: FaultHooks = _NoFaults()


def check_case(case: Case) -> None:
    """
    Refuse, before anything starts, a case whose C{failures[c,r]} lines this
    build cannot carry out: fault injection is not implemented yet, and a
    run that silently ignored them would pass for the wrong reason.

    @raise CaseError: the case has failures lines.
    """
    if case.failure_texts:
        (configuration, position), text = sorted(case.failure_texts.items())[0]
        raise CaseError(
            case.path,
            f"failures[{configuration},{position}] cannot be carried out: fault "
            "injection is not implemented yet",
            text,
        )
