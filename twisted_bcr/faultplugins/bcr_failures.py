"""
The built-in failures of SPEC §11.2.  Each acts on its replica only through
L{twisted_bcr.interfaces.IMisbehave}; those that change "the next outgoing"
message arm a tampering that the replica applies once.
"""

from __future__ import annotations

from typing import Any

from attrs import evolve, frozen
from twisted.plugin import IPlugin
from zope.interface import implementer

from twisted_bcr.crypto import result_hash
from twisted_bcr.interfaces import IFailure, IMisbehave
from twisted_bcr.messages import Operation, Signed

#: Stages: the order in which failures firing on one message take effect.
CRASH, SLEEP, STATE, ARM, DROP = range(5)

#: What change_operation() puts in its statements instead of the real operation.
FAKE_OPERATION = Operation("get", ("x",))

#: A statement left out of a proof, keeping its place: it verifies for nobody.
MISSING_STATEMENT = Signed(b"", b"")


@implementer(IPlugin, IFailure)
@frozen
class Crash:
    """crash(): flush the logs and end the process; the message is not processed."""

    name: str = "crash"
    arity: int = 0
    stage: int = CRASH

    def fire(self, misbehave: IMisbehave, args: tuple[int, ...], text: str) -> None:
        misbehave.crash()


@implementer(IPlugin, IFailure)
@frozen
class Sleep:
    """sleep(ms): stall the whole process before processing the message."""

    name: str = "sleep"
    arity: int = 1
    stage: int = SLEEP

    def fire(self, misbehave: IMisbehave, args: tuple[int, ...], text: str) -> None:
        misbehave.sleep(args[0] / 1000)


@implementer(IPlugin, IFailure)
@frozen
class Drop:
    """drop(): ignore the triggering message (it still counts)."""

    name: str = "drop"
    arity: int = 0
    stage: int = DROP

    def fire(self, misbehave: IMisbehave, args: tuple[int, ...], text: str) -> None:
        misbehave.drop()


@implementer(IPlugin, IFailure)
@frozen
class ExtraOp:
    """extra_op(): apply put('a','a') to the running state, outside the protocol."""

    name: str = "extra_op"
    arity: int = 0
    stage: int = STATE

    def fire(self, misbehave: IMisbehave, args: tuple[int, ...], text: str) -> None:
        misbehave.apply("put", ("a", "a"))


@implementer(IPlugin, IFailure)
@frozen
class IncrementSlot:
    """increment_slot(): the head skips a slot number; no effect elsewhere."""

    name: str = "increment_slot"
    arity: int = 0
    stage: int = STATE

    def fire(self, misbehave: IMisbehave, args: tuple[int, ...], text: str) -> None:
        if misbehave.is_head:
            misbehave.skip_slot()
        else:
            misbehave.log(f"{text}: not the head, no effect")


def _own(proof: tuple[Any, ...], misbehave: IMisbehave) -> int | None:
    """The position of this replica's statement in a result proof, if there."""
    return misbehave.index if misbehave.index < len(proof) else None


@implementer(IPlugin, IFailure)
@frozen
class ChangeOperation:
    """
    change_operation(): the order and result statements this replica adds
    for its next request name get('x'), validly signed; it still executes
    the real operation.
    """

    name: str = "change_operation"
    arity: int = 0
    stage: int = ARM

    def fire(self, misbehave: IMisbehave, args: tuple[int, ...], text: str) -> None:
        def tamper(statements: tuple[Any, Any], misbehave: IMisbehave) -> tuple[Any, Any]:
            order, result = (misbehave.decode(s) for s in statements)
            return (
                misbehave.sign(evolve(order, operation=FAKE_OPERATION)),  # type: ignore[misc]
                misbehave.sign(evolve(result, operation=FAKE_OPERATION)),  # type: ignore[misc]
            )

        misbehave.arm(text, "own_statements", tamper)


@implementer(IPlugin, IFailure)
@frozen
class InvalidOrderSig:
    """invalid_order_sig(): its next order statement carries an invalid signature."""

    name: str = "invalid_order_sig"
    arity: int = 0
    stage: int = ARM

    def fire(self, misbehave: IMisbehave, args: tuple[int, ...], text: str) -> None:
        def tamper(statements: tuple[Any, Any], misbehave: IMisbehave) -> tuple[Any, Any]:
            order, result = statements
            return misbehave.corrupt(order), result

        misbehave.arm(text, "own_statements", tamper)


@implementer(IPlugin, IFailure)
@frozen
class InvalidResultSig:
    """
    invalid_result_sig(): not at the tail, its result statement in its next
    forward shuttle; at the tail, its statement in its next result message
    to a client — an invalid signature either way.
    """

    name: str = "invalid_result_sig"
    arity: int = 0
    stage: int = ARM

    def fire(self, misbehave: IMisbehave, args: tuple[int, ...], text: str) -> None:
        if misbehave.is_tail:
            def spoil_message(message: Any, misbehave: IMisbehave) -> Any:
                proof = list(message.result_proof)
                position = _own(message.result_proof, misbehave)
                if position is not None:
                    proof[position] = misbehave.corrupt(proof[position])
                return evolve(message, result_proof=tuple(proof))

            misbehave.arm(text, "result_message", spoil_message)
        else:
            def spoil_statement(statements: tuple[Any, Any], misbehave: IMisbehave) -> tuple[Any, Any]:
                order, result = statements
                return order, misbehave.corrupt(result)

            misbehave.arm(text, "own_statements", spoil_statement)


@implementer(IPlugin, IFailure)
@frozen
class ChangeResult:
    """
    change_result(): in its next outgoing result message or result shuttle,
    its own result statement carries hash('OK'), validly re-signed.
    """

    name: str = "change_result"
    arity: int = 0
    stage: int = ARM

    def fire(self, misbehave: IMisbehave, args: tuple[int, ...], text: str) -> None:
        def tamper(proof: tuple[Any, ...], misbehave: IMisbehave) -> tuple[Any, ...]:
            position = _own(proof, misbehave)
            if position is None:
                return proof
            statement = misbehave.decode(proof[position])
            changed = list(proof)
            changed[position] = misbehave.sign(
                evolve(statement, result_hash=result_hash("OK"))  # type: ignore[misc]
            )
            return tuple(changed)

        misbehave.arm(text, "result_proof", tamper)


@implementer(IPlugin, IFailure)
@frozen
class DropResultStmt:
    """
    drop_result_stmt(): its next outgoing result proof lacks the head's
    statement.  The place stays, empty, so every other statement is still
    checked against its own replica's key: the client accepts with the 2t
    left (SPEC §11.2) and the predecessor finds position 0 missing.
    """

    name: str = "drop_result_stmt"
    arity: int = 0
    stage: int = ARM

    def fire(self, misbehave: IMisbehave, args: tuple[int, ...], text: str) -> None:
        misbehave.arm(
            text, "result_proof",
            lambda proof, misbehave: (MISSING_STATEMENT, *proof[1:]) if proof else proof,
        )


@implementer(IPlugin, IFailure)
@frozen
class TruncateHistory:
    """truncate_history(n): its next wedged message leaves out the last n entries."""

    name: str = "truncate_history"
    arity: int = 1
    stage: int = ARM

    def fire(self, misbehave: IMisbehave, args: tuple[int, ...], text: str) -> None:
        (n,) = args
        misbehave.arm(
            text, "wedged", lambda history, misbehave: tuple(history[: max(len(history) - n, 0)])
        )


@implementer(IPlugin, IFailure)
@frozen
class DropCheckptStmts:
    """drop_checkpt_stmts(): its next completed checkpoint proof lacks the first t+1 statements."""

    name: str = "drop_checkpt_stmts"
    arity: int = 0
    stage: int = ARM

    def fire(self, misbehave: IMisbehave, args: tuple[int, ...], text: str) -> None:
        misbehave.arm(
            text, "completed_checkpoint",
            lambda statements, misbehave: tuple(statements[misbehave.t + 1 :]),
        )


crash = Crash()
sleep = Sleep()
drop = Drop()
extra_op = ExtraOp()
increment_slot = IncrementSlot()
change_operation = ChangeOperation()
invalid_order_sig = InvalidOrderSig()
invalid_result_sig = InvalidResultSig()
change_result = ChangeResult()
drop_result_stmt = DropResultStmt()
truncate_history = TruncateHistory()
drop_checkpt_stmts = DropCheckptStmts()
