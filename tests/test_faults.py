"""
Tests for L{twisted_bcr.faults} and the built-in fault plugins (SPEC §11):
the registry, a replica's L{FaultPlan} (counting per SPEC §11.1, firing in
the SPEC §11 order of effects, arming "next outgoing" failures), the effect
of each built-in failure on the value it changes, and the replica's side of
the seam (L{ReplicaMisbehaviour} and the hooks in the protocol code).

The plan is driven through L{RecordingMisbehave}, a fake L{IMisbehave} that
records what the failures ask of it and signs with a real key, so tampered
statements can be checked like a successor would check them.
"""

from __future__ import annotations

import os
import textwrap
from typing import Any

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.fakes import (
    OLYMPUS_ADDRESS,
    STRANGER,
    client_address,
    make_assignment,
    make_replica,
    make_result_shuttle,
    make_shuttle,
    make_spare,
    reconfiguration_requests,
    replica_address,
    replica_key,
    request_of,
    result_proof,
    seal_from_olympus,
    sign_request,
    wire_configuration,
)
from twisted_bcr import codec, crypto
from twisted_bcr.config import FAILURES, TRIGGERS
from twisted_bcr.core.common import Mode, replica_name
from twisted_bcr.core.replica import CRASH_STATUS, ReplicaMisbehaviour, fault_plan_factory
from twisted_bcr.dictionary import apply_operation
from twisted_bcr.faultplugins.bcr_failures import MISSING_STATEMENT
from twisted_bcr.faults import NO_FAULTS, FaultPlan, PluginError, Registry, load_registry
from twisted_bcr.interfaces import IFailure, IMisbehave, ITrigger
from twisted_bcr.messages import (
    ClientRequest,
    FaultFired,
    HistoryEntry,
    Operation,
    OrderStatement,
    Ready,
    ResultMessage,
    ResultStatement,
    Shuttle,
    Signed,
    Wedged,
    WedgeRequest,
)

#: SPEC §11.1: every trigger and its number of arguments.
SPEC_TRIGGERS = {
    "client_request": 2,
    "forwarded_request": 2,
    "shuttle": 2,
    "result_shuttle": 2,
    "wedge_request": 1,
    "new_configuration": 1,
    "checkpoint": 1,
    "completed_checkpoint": 1,
    "get_running_state": 1,
    "catch_up": 1,
}

#: SPEC §11.2: every failure and its number of arguments.
SPEC_FAILURES = {
    "change_operation": 0,
    "change_result": 0,
    "drop_result_stmt": 0,
    "crash": 0,
    "truncate_history": 1,
    "sleep": 1,
    "drop": 0,
    "increment_slot": 0,
    "extra_op": 0,
    "invalid_order_sig": 0,
    "invalid_result_sig": 0,
    "drop_checkpt_stmts": 0,
}

#: SPEC §11 order of effects: crash, sleep, state/slot change, arm, drop.
SPEC_STAGES = {
    "crash": 0,
    "sleep": 1,
    "extra_op": 2,
    "increment_slot": 2,
    "change_operation": 3,
    "change_result": 3,
    "drop_result_stmt": 3,
    "truncate_history": 3,
    "invalid_order_sig": 3,
    "invalid_result_sig": 3,
    "drop_checkpt_stmts": 3,
    "drop": 4,
}

PER_CLIENT = ("client_request", "forwarded_request", "shuttle", "result_shuttle")
GLOBAL = (
    "wedge_request", "new_configuration", "checkpoint", "completed_checkpoint",
    "get_running_state", "catch_up",
)

REGISTRY = load_registry()

T1 = wire_configuration(t=1)
T2 = wire_configuration(t=2)
REQUEST = sign_request(0, 3, "append", "k", "v")


# ---------------------------------------------------------------------------
# A recording IMisbehave


@implementer(IMisbehave)
class RecordingMisbehave:
    """
    An L{IMisbehave} for the replica at C{index} of a configuration with
    C{t}: it records every call in L{calls} (together with the plan's log
    events, so their order can be checked) and signs with that replica's
    real key.
    """

    def __init__(self, index: int = 1, t: int = 1, configuration: int = 0) -> None:
        self.index = index
        self.t = t
        self.configuration = configuration
        self.is_head = index == 0
        self.is_tail = index == 2 * t
        self.name = replica_name(configuration, index)
        self.key = replica_key(index, configuration)
        self.state: dict[str, str] = {}
        self.plan: FaultPlan | None = None
        #: ("crash",), ("sleep", s), ("drop",), ("apply", name, args),
        #: ("skip_slot",), ("arm", text, point), ("log", text), and the plan's
        #: log events as ("event", event name, failure text).
        self.calls: list[tuple[Any, ...]] = []

    def crash(self) -> None:
        self.calls.append(("crash",))
        assert self.plan is not None
        self.plan.drop()

    def sleep(self, seconds: float) -> None:
        self.calls.append(("sleep", seconds))

    def drop(self) -> None:
        self.calls.append(("drop",))
        assert self.plan is not None
        self.plan.drop()

    def apply(self, name: str, args: tuple[str, ...]) -> None:
        self.calls.append(("apply", name, args))
        apply_operation(self.state, name, args)

    def skip_slot(self) -> None:
        self.calls.append(("skip_slot",))

    def arm(self, text: str, point: str, tamper: Any) -> None:
        self.calls.append(("arm", text, point))
        assert self.plan is not None
        self.plan.arm(text, point, tamper)

    def sign(self, statement: object) -> Signed:
        return crypto.sign(self.key, statement)

    def corrupt(self, signed: Any) -> Any:
        return crypto.corrupt(signed)

    def decode(self, signed: Any) -> object:
        return codec.decode(signed.body)

    def log(self, message: str) -> None:
        self.calls.append(("log", message))

    # Inspection ------------------------------------------------------------

    def effects(self) -> list[tuple[Any, ...]]:
        """The calls, without log lines and log events."""
        return [c for c in self.calls if c[0] not in ("log", "event")]


def plan_for(
    text: str, index: int = 1, t: int = 1, configuration: int = 0,
    registry: Registry = REGISTRY,
) -> tuple[FaultPlan, RecordingMisbehave, list[dict[str, Any]]]:
    """The plan of C{failures[configuration,index] = text}, its fake and its log events."""
    misbehave = RecordingMisbehave(index, t, configuration)
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        events.append(event)
        misbehave.calls.append(("event", event.get("event"), event.get("failure")))

    plan = FaultPlan.from_text(text, registry, misbehave, Logger(observer=observe))
    misbehave.plan = plan
    return plan, misbehave, events


def fired(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The bcr.fault_fired events as (configuration, replica, trigger, failure)."""
    return [
        (e["configuration"], e["replica"], e["trigger"], e["failure"])
        for e in events if e.get("event") == "bcr.fault_fired"
    ]


def own_statements(
    index: int = 1, configuration: Any = T1, request: Signed = REQUEST, slot: int = 7,
    result: str = "fail",
) -> tuple[Signed, Signed]:
    """The order and result statements replica C{index} signs for C{request}."""
    decoded = request_of(request)
    key = replica_key(index, configuration.number)
    order = OrderStatement(configuration.number, slot, decoded.client, decoded.seq, decoded.operation)
    outcome = ResultStatement(
        configuration.number, slot, decoded.client, decoded.seq, decoded.operation,
        crypto.result_hash(result),
    )
    return crypto.sign(key, order), crypto.sign(key, outcome)


def verified(signed: Signed, index: int, cls: type, configuration: Any = T1) -> Any:
    """C{signed} checked with the key of replica C{index}, as a successor checks it."""
    return crypto.Verifier().verify(signed, replica_key(index, configuration.number).verify_key_bytes, cls)


# ---------------------------------------------------------------------------
# The registry


class RegistryTests(SynchronousTestCase):
    """L{load_registry} and the built-in plugins it finds."""

    def test_triggers(self) -> None:
        """Exactly the ten triggers of SPEC §11.1 are found, with their arities."""
        self.assertEqual(REGISTRY.trigger_arities(), SPEC_TRIGGERS)

    def test_trigger_counting(self) -> None:
        """Each trigger counts the message it is named after, per client for the four with a client."""
        for name, trigger in REGISTRY.triggers.items():
            self.assertTrue(verifyObject(ITrigger, trigger), name)
            self.assertEqual(trigger.counted, name)
            self.assertEqual(trigger.per_client, name in PER_CLIENT, name)

    def test_failures(self) -> None:
        """Exactly the twelve failures of SPEC §11.2 are found, with their arities."""
        self.assertEqual(REGISTRY.failure_arities(), SPEC_FAILURES)

    def test_failure_stages(self) -> None:
        """Each failure has its place in the SPEC §11 order of effects."""
        for name, failure in REGISTRY.failures.items():
            self.assertTrue(verifyObject(IFailure, failure), name)
        self.assertEqual(
            {name: failure.stage for name, failure in REGISTRY.failures.items()}, SPEC_STAGES
        )

    def test_tables_match_parser_defaults(self) -> None:
        """The registry's name tables are the case parser's built-in ones."""
        self.assertEqual(REGISTRY.tables(), {"triggers": TRIGGERS, "failures": FAILURES})

    def test_missing_directory(self) -> None:
        """A plugin directory that does not exist is a one-line PluginError."""
        missing = os.path.abspath(self.mktemp())
        e = self.assertRaises(PluginError, load_registry, [missing])
        self.assertIn(missing, str(e))
        self.assertNotIn("\n", str(e))

    def write_plugin(self, source: str) -> tuple[str, str]:
        """A fresh plugin directory holding one module; its path and the module's name."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        module = f"extra_{abs(hash(directory)):x}"
        with open(os.path.join(directory, module + ".py"), "w") as f:
            f.write(textwrap.dedent(source))
        return directory, module

    def test_broken_module(self) -> None:
        """A plugin module that does not import is a one-line PluginError naming the file."""
        directory, module = self.write_plugin("raise RuntimeError('line one\\nline two')\n")
        e = self.assertRaises(PluginError, load_registry, [directory])
        self.assertIn(module + ".py", str(e))
        self.assertIn("RuntimeError", str(e))
        self.assertNotIn("\n", str(e))
        load_registry()

    def test_extra_directory(self) -> None:
        """A user directory adds its plugins for that registry only."""
        directory, _ = self.write_plugin(
            """
            from twisted_bcr.faultplugins.bcr_triggers import CountingTrigger
            third_shuttle = CountingTrigger("any_shuttle", "shuttle", True)
            """
        )
        extended = load_registry([directory])
        self.assertEqual(set(extended.triggers), set(SPEC_TRIGGERS) | {"any_shuttle"})
        self.assertEqual(set(load_registry().triggers), set(SPEC_TRIGGERS))


# ---------------------------------------------------------------------------
# Counting (SPEC §11.1)


class CountingTests(SynchronousTestCase):
    """Which received message is a trigger's m'th."""

    def test_counters_start_at_zero(self) -> None:
        """The first message of a kind is number 0."""
        plan, misbehave, events = plan_for("shuttle(0,0), extra_op()")
        plan.received("shuttle", 0)
        self.assertEqual(fired(events), [(0, 1, "shuttle(0,0)", "extra_op()")])

    def test_mth_message_fires(self) -> None:
        """Only the m'th message fires, neither those before nor those after."""
        plan, misbehave, events = plan_for("checkpoint(2), extra_op()")
        for expected in (0, 0, 1, 1, 1):
            plan.received("checkpoint", None)
            self.assertEqual(len(fired(events)), expected)
        self.assertEqual(misbehave.effects(), [("apply", "put", ("a", "a"))])

    def test_per_client(self) -> None:
        """The four kinds with a client are counted per client."""
        for kind in PER_CLIENT:
            plan, misbehave, events = plan_for(f"{kind}(1,1), extra_op()")
            for client in (0, 0, 1, 0, 0):
                plan.received(kind, client)
            self.assertEqual(fired(events), [], kind)
            plan.received(kind, 1)
            self.assertEqual(len(fired(events)), 1, kind)
            plan.received(kind, 0)
            plan.received(kind, 1)
            self.assertEqual(len(fired(events)), 1, kind)

    def test_global(self) -> None:
        """The other six kinds are counted once per replica."""
        for kind in GLOBAL:
            plan, misbehave, events = plan_for(f"{kind}(2), extra_op()")
            plan.received(kind, None)
            plan.received(kind, None)
            self.assertEqual(fired(events), [], kind)
            plan.received(kind, None)
            self.assertEqual([f[2] for f in fired(events)], [f"{kind}(2)"], kind)

    def test_kinds_counted_apart(self) -> None:
        """Each kind has its own counter: direct and forwarded requests do not share one."""
        plan, misbehave, events = plan_for(
            "forwarded_request(0,1), extra_op(); client_request(0,2), increment_slot()", index=0
        )
        plan.received("client_request", 0)
        plan.received("client_request", 0)
        plan.received("forwarded_request", 0)
        plan.received("shuttle", 0)
        self.assertEqual(fired(events), [])
        plan.received("forwarded_request", 0)
        self.assertEqual(fired(events), [(0, 0, "forwarded_request(0,1)", "extra_op()")])
        plan.received("client_request", 0)
        self.assertEqual(fired(events)[1:], [(0, 0, "client_request(0,2)", "increment_slot()")])

    def test_trigger_never_occurs(self) -> None:
        """A pair whose trigger message never arrives never fires."""
        plan, misbehave, events = plan_for("result_shuttle(0,0), crash(); shuttle(0,5), crash()")
        for _ in range(5):
            for kind in ("client_request", "forwarded_request", "shuttle"):
                self.assertTrue(plan.received(kind, 0))
            self.assertTrue(plan.received("result_shuttle", 1))
            for kind in GLOBAL:
                self.assertTrue(plan.received(kind, None))
        self.assertEqual(fired(events), [])
        self.assertEqual(misbehave.calls, [])

    def test_dropped_messages_count(self) -> None:
        """A dropped message still counts: the next one is number 1."""
        plan, misbehave, events = plan_for("shuttle(0,0), drop(); shuttle(0,1), extra_op()")
        self.assertFalse(plan.received("shuttle", 0))
        self.assertTrue(plan.received("shuttle", 0))
        self.assertEqual(
            [f[2:] for f in fired(events)],
            [("shuttle(0,0)", "drop()"), ("shuttle(0,1)", "extra_op()")],
        )

    def test_repeated_pairs_kept(self) -> None:
        """Two equal pairs both fire (they are not keyed by failure name)."""
        plan, misbehave, events = plan_for(
            "client_request(0,0), sleep(300); client_request(0,0), sleep(300); "
            "client_request(0,1), sleep(300)", index=0,
        )
        plan.received("client_request", 0)
        plan.received("client_request", 0)
        self.assertEqual(misbehave.effects(), [("sleep", 0.3)] * 3)


# ---------------------------------------------------------------------------
# Firing (SPEC §11 order of effects)


class FiringTests(SynchronousTestCase):
    """What happens when pairs fire on one message."""

    def test_order_of_effects(self) -> None:
        """Pairs firing together act as crash, sleep, extra_op/increment_slot, arm, drop, whatever their order in the text."""
        plan, misbehave, events = plan_for(
            "client_request(0,0), drop(); client_request(0,0), change_operation(); "
            "client_request(0,0), increment_slot(); client_request(0,0), sleep(5); "
            "client_request(0,0), extra_op()",
            index=0,
        )
        self.assertFalse(plan.received("client_request", 0))
        self.assertEqual(
            misbehave.effects(),
            [
                ("sleep", 0.005),
                ("skip_slot",),
                ("apply", "put", ("a", "a")),
                ("arm", "client_request(0,0), change_operation()", "own_statements"),
                ("drop",),
            ],
        )

    def test_all_logged_first(self) -> None:
        """Every pair that fires is logged, with its configuration, replica, trigger and failure, before any effect."""
        plan, misbehave, events = plan_for(
            "shuttle(0,1), change_operation(); shuttle(0,1), sleep(250); "
            "shuttle(1,1), truncate_history(2)",
            index=2, configuration=3,
        )
        plan.received("shuttle", 0)
        plan.received("shuttle", 0)
        self.assertEqual(
            fired(events),
            [(3, 2, "shuttle(0,1)", "change_operation()"), (3, 2, "shuttle(0,1)", "sleep(250)")],
        )
        self.assertEqual(
            [e["pair"] for e in events if e.get("event") == "bcr.fault_fired"],
            ["shuttle(0,1), change_operation()", "shuttle(0,1), sleep(250)"],
        )
        self.assertEqual(
            [c[0] for c in misbehave.calls if c[0] != "log"], ["event", "event", "sleep", "arm"]
        )
        for event in events:
            self.assertEqual(event["node"], "replica 3.2")

    def test_drop_returns_false(self) -> None:
        """drop() makes received() say the message must not be processed, for that message only."""
        plan, misbehave, events = plan_for("wedge_request(0), drop()")
        self.assertFalse(plan.received("wedge_request", None))
        self.assertTrue(plan.received("wedge_request", None))
        self.assertEqual(misbehave.effects(), [("drop",)])

    def test_no_pair_returns_true(self) -> None:
        """A message that fires nothing, or fires only effects other than dropping, is processed."""
        plan, misbehave, events = plan_for("catch_up(1), sleep(10)")
        self.assertTrue(plan.received("catch_up", None))
        self.assertTrue(plan.received("catch_up", None))
        self.assertEqual(misbehave.effects(), [("sleep", 0.01)])

    def test_crash_stops_further_effects(self) -> None:
        """After crash() nothing else happens, though every pair is logged."""
        plan, misbehave, events = plan_for(
            "shuttle(0,0), drop(); shuttle(0,0), sleep(5); shuttle(0,0), extra_op(); "
            "shuttle(0,0), change_operation(); shuttle(0,0), crash()"
        )
        self.assertFalse(plan.received("shuttle", 0))
        self.assertEqual(misbehave.effects(), [("crash",)])
        self.assertEqual(len(fired(events)), 5)
        statements = own_statements()
        self.assertEqual(plan.tamper("own_statements", statements), statements)


# ---------------------------------------------------------------------------
# Arming "next outgoing" failures


class ArmingTests(SynchronousTestCase):
    """A deferred failure applies once to the next value at its point."""

    def test_applies_once(self) -> None:
        """An armed tampering changes the next value at its point, then is disarmed."""
        plan, misbehave, events = plan_for("shuttle(0,0), drop_result_stmt()")
        proof = result_proof(T1, 7, REQUEST, "fail", 3)
        self.assertEqual(plan.tamper("result_proof", proof), proof)
        plan.received("shuttle", 0)
        self.assertEqual(plan.tamper("result_proof", proof), (MISSING_STATEMENT, *proof[1:]))
        self.assertEqual(plan.tamper("result_proof", proof), proof)
        [applied] = [e for e in events if e.get("event") == "bcr.fault_applied"]
        self.assertEqual((applied["pair"], applied["point"]), ("shuttle(0,0), drop_result_stmt()", "result_proof"))

    def test_other_points_untouched(self) -> None:
        """An armed tampering leaves values at other points alone and stays armed."""
        plan, misbehave, events = plan_for("wedge_request(0), truncate_history(1)")
        plan.received("wedge_request", None)
        statements = own_statements()
        proof = result_proof(T1, 7, REQUEST, "fail", 3)
        self.assertEqual(plan.tamper("own_statements", statements), statements)
        self.assertEqual(plan.tamper("result_proof", proof), proof)
        self.assertEqual(plan.tamper("completed_checkpoint", proof), proof)
        self.assertEqual(plan.tamper("wedged", (1, 2, 3)), (1, 2))

    def test_armed_twice_applies_once(self) -> None:
        """Arming the same failure twice before it is used applies it once."""
        plan, misbehave, events = plan_for("shuttle(0,0), drop_result_stmt(); shuttle(0,1), drop_result_stmt()")
        plan.received("shuttle", 0)
        plan.received("shuttle", 0)
        proof = result_proof(T1, 7, REQUEST, "fail", 3)
        self.assertEqual(plan.tamper("result_proof", proof), (MISSING_STATEMENT, *proof[1:]))
        self.assertEqual(plan.tamper("result_proof", proof), proof)

    def test_truncate_history_keeps_latest(self) -> None:
        """truncate_history armed twice before a wedged message uses the latest n, once."""
        plan, misbehave, events = plan_for(
            "shuttle(0,0), truncate_history(1); shuttle(0,1), truncate_history(3)"
        )
        plan.received("shuttle", 0)
        plan.received("shuttle", 0)
        history = (0, 1, 2, 3, 4, 5)
        self.assertEqual(plan.tamper("wedged", history), (0, 1, 2))
        self.assertEqual(plan.tamper("wedged", history), history)

    def test_different_failures_both_apply(self) -> None:
        """Two different failures armed at one point both change the next value there."""
        plan, misbehave, events = plan_for(
            "shuttle(0,0), change_result(); shuttle(0,0), drop_result_stmt()"
        )
        plan.received("shuttle", 0)
        proof = result_proof(T1, 7, REQUEST, "fail", 3)
        tampered = plan.tamper("result_proof", proof)
        self.assertEqual(tampered[0], MISSING_STATEMENT)
        self.assertNotEqual(tampered[1:], proof[1:])
        self.assertEqual(plan.tamper("result_proof", proof), proof)


# ---------------------------------------------------------------------------
# Each built-in failure


class FailureEffectTests(SynchronousTestCase):
    """What each built-in failure does to the value at its point (SPEC §11.2)."""

    def armed(self, failure: str, index: int = 1, t: int = 1) -> tuple[FaultPlan, RecordingMisbehave]:
        """A plan whose C{failure} has just fired (on a wedge request)."""
        plan, misbehave, events = plan_for(f"wedge_request(0), {failure}", index=index, t=t)
        plan.received("wedge_request", None)
        return plan, misbehave

    def test_change_operation(self) -> None:
        """change_operation() re-signs both own statements, validly, naming get('x')."""
        plan, misbehave = self.armed("change_operation()")
        order, outcome = own_statements()
        new_order, new_outcome = plan.tamper("own_statements", (order, outcome))
        fake = Operation("get", ("x",))
        self.assertEqual(verified(new_order, 1, OrderStatement), OrderStatement(0, 7, 0, 3, fake))
        self.assertEqual(
            verified(new_outcome, 1, ResultStatement),
            ResultStatement(0, 7, 0, 3, fake, crypto.result_hash("fail")),
        )

    def test_change_operation_at_tail(self) -> None:
        """At the tail change_operation() changes the statements it adds for its next request too."""
        plan, misbehave = self.armed("change_operation()", index=2)
        new_order, new_outcome = plan.tamper("own_statements", own_statements(index=2))
        self.assertEqual(verified(new_order, 2, OrderStatement).operation, Operation("get", ("x",)))
        self.assertEqual(verified(new_outcome, 2, ResultStatement).operation, Operation("get", ("x",)))

    def test_invalid_order_sig(self) -> None:
        """invalid_order_sig() corrupts the first signature byte of its order statement only."""
        plan, misbehave = self.armed("invalid_order_sig()")
        order, outcome = own_statements()
        new_order, new_outcome = plan.tamper("own_statements", (order, outcome))
        self.assertEqual(new_order.body, order.body)
        self.assertEqual(new_order.signature[0], (order.signature[0] + 1) % 256)
        self.assertEqual(new_order.signature[1:], order.signature[1:])
        self.assertRaises(crypto.BadSignature, verified, new_order, 1, OrderStatement)
        self.assertEqual(new_outcome, outcome)

    def test_invalid_result_sig_non_tail(self) -> None:
        """invalid_result_sig() not at the tail corrupts the result statement of its next shuttle."""
        plan, misbehave = self.armed("invalid_result_sig()")
        order, outcome = own_statements()
        message = ResultMessage(0, 7, 0, 3, "fail", result_proof(T1, 7, REQUEST, "fail", 3))
        self.assertEqual(plan.tamper("result_message", message), message)
        new_order, new_outcome = plan.tamper("own_statements", (order, outcome))
        self.assertEqual(new_order, order)
        self.assertEqual(new_outcome.body, outcome.body)
        self.assertRaises(crypto.BadSignature, verified, new_outcome, 1, ResultStatement)

    def test_invalid_result_sig_at_tail(self) -> None:
        """invalid_result_sig() at the tail corrupts its own statement in its next result message."""
        plan, misbehave = self.armed("invalid_result_sig()", index=2)
        statements = own_statements(index=2)
        self.assertEqual(plan.tamper("own_statements", statements), statements)
        proof = result_proof(T1, 7, REQUEST, "fail", 3)
        message = ResultMessage(0, 7, 0, 3, "fail", proof)
        tampered = plan.tamper("result_message", message)
        self.assertEqual(tampered.result_proof[:2], proof[:2])
        self.assertEqual(tampered.result_proof[2].body, proof[2].body)
        self.assertRaises(crypto.BadSignature, verified, tampered.result_proof[2], 2, ResultStatement)
        self.assertEqual(
            (tampered.configuration, tampered.slot, tampered.client, tampered.seq, tampered.result),
            (0, 7, 0, 3, "fail"),
        )
        self.assertEqual(plan.tamper("result_message", message), message)

    def test_change_result(self) -> None:
        """change_result() re-signs its own result statement, validly, with hash('OK')."""
        for index in (1, 2):
            plan, misbehave = self.armed("change_result()", index=index)
            proof = result_proof(T1, 7, REQUEST, "fail", 3)
            tampered = plan.tamper("result_proof", proof)
            others = [j for j in range(3) if j != index]
            self.assertEqual([tampered[j] for j in others], [proof[j] for j in others])
            original = verified(proof[index], index, ResultStatement)
            changed = verified(tampered[index], index, ResultStatement)
            self.assertEqual(changed.result_hash, crypto.result_hash("OK"))
            self.assertEqual(
                (changed.configuration, changed.slot, changed.client, changed.seq, changed.operation),
                (original.configuration, original.slot, original.client, original.seq, original.operation),
            )

    def test_drop_result_stmt(self) -> None:
        """drop_result_stmt() removes the head's statement, position 0."""
        plan, misbehave = self.armed("drop_result_stmt()", index=2)
        proof = result_proof(T1, 7, REQUEST, "fail", 3)
        self.assertEqual(plan.tamper("result_proof", proof), (MISSING_STATEMENT, *proof[1:]))

    def test_truncate_history(self) -> None:
        """truncate_history(n) leaves out the last n history entries, all of them if fewer."""
        plan, misbehave = self.armed("truncate_history(2)")
        self.assertEqual(plan.tamper("wedged", ("a", "b", "c", "d", "e")), ("a", "b", "c"))
        plan, misbehave = self.armed("truncate_history(2)")
        self.assertEqual(plan.tamper("wedged", ("a",)), ())

    def test_drop_checkpt_stmts(self) -> None:
        """drop_checkpt_stmts() removes the first t+1 statements of its next completed proof."""
        plan, misbehave = self.armed("drop_checkpt_stmts()", index=1, t=1)
        self.assertEqual(plan.tamper("completed_checkpoint", ("s0", "s1", "s2")), ("s2",))
        plan, misbehave = self.armed("drop_checkpt_stmts()", index=3, t=2)
        self.assertEqual(
            plan.tamper("completed_checkpoint", ("s0", "s1", "s2", "s3", "s4")), ("s3", "s4")
        )

    def test_increment_slot_at_head(self) -> None:
        """increment_slot() makes the head skip a slot."""
        plan, misbehave = self.armed("increment_slot()", index=0)
        self.assertEqual(misbehave.effects(), [("skip_slot",)])

    def test_increment_slot_elsewhere(self) -> None:
        """increment_slot() at a non-head has no effect but a log line."""
        plan, misbehave = self.armed("increment_slot()", index=1)
        self.assertEqual(misbehave.effects(), [])
        self.assertEqual(
            [c for c in misbehave.calls if c[0] == "log"],
            [("log", "wedge_request(0), increment_slot(): not the head, no effect")],
        )

    def test_extra_op(self) -> None:
        """extra_op() applies put('a','a') to the running state."""
        plan, misbehave = self.armed("extra_op()")
        self.assertEqual(misbehave.effects(), [("apply", "put", ("a", "a"))])
        self.assertEqual(misbehave.state, {"a": "a"})

    def test_sleep(self) -> None:
        """sleep(ms) stalls for ms/1000 seconds."""
        plan, misbehave = self.armed("sleep(1500)")
        self.assertEqual(misbehave.effects(), [("sleep", 1.5)])

    def test_crash(self) -> None:
        """crash() ends the replica."""
        plan, misbehave = self.armed("crash()")
        self.assertEqual(misbehave.effects(), [("crash",)])

    def test_drop(self) -> None:
        """drop() asks for the message to be dropped."""
        plan, misbehave = self.armed("drop()")
        self.assertEqual(misbehave.effects(), [("drop",)])


# ---------------------------------------------------------------------------
# Building a plan from text


class FromTextTests(SynchronousTestCase):
    """L{FaultPlan.from_text} checks the names and arities it is given."""

    def refused(self, text: str) -> str:
        """The one-line message of the PluginError from_text raises for C{text}."""
        misbehave = RecordingMisbehave(2, 1, 4)
        e = self.assertRaises(PluginError, FaultPlan.from_text, text, REGISTRY, misbehave, Logger())
        message = str(e)
        self.assertNotIn("\n", message)
        self.assertIn("failures[4,2]", message)
        return message

    def test_unknown_trigger(self) -> None:
        """An unknown trigger name is refused, naming the pair."""
        self.assertIn("shuttel(0,1)", self.refused("shuttel(0,1), crash()"))

    def test_unknown_failure(self) -> None:
        """An unknown failure name (the withdrawn omit_send) is refused, naming the pair."""
        self.assertIn("omit_send", self.refused("shuttle(0,1), omit_send()"))

    def test_misspelt_failure(self) -> None:
        """A known misspelling is refused."""
        self.assertIn("drop_checkpoint_stmts", self.refused("checkpoint(0), drop_checkpoint_stmts()"))

    def test_trigger_arity(self) -> None:
        """A trigger with the wrong number of arguments is refused."""
        self.refused("shuttle(1), crash()")
        self.refused("get_running_state(), crash()")
        self.refused("wedge_request(0,1), crash()")

    def test_failure_arity(self) -> None:
        """A failure with the wrong number of arguments is refused."""
        self.refused("shuttle(0,1), crash(1)")
        self.refused("shuttle(0,1), sleep()")
        self.refused("shuttle(0,1), truncate_history(1,2)")

    def test_a_bad_pair_among_good_ones(self) -> None:
        """One bad pair spoils the whole text."""
        self.refused("shuttle(0,1), crash(); checkpoint(0), omit_send()")

    def test_empty(self) -> None:
        """An empty text gives a plan that never fires."""
        plan, misbehave, events = plan_for("")
        self.assertTrue(plan.received("shuttle", 0))
        self.assertEqual(events, [])

    def test_blanks_and_trailing_semicolon(self) -> None:
        """Blanks and a trailing ';' do not matter."""
        plan, misbehave, events = plan_for(" shuttle( 0 , 0 ) ,extra_op( ) ; ")
        plan.received("shuttle", 0)
        self.assertEqual(fired(events), [(0, 1, "shuttle(0,0)", "extra_op()")])


class NoFaultsTests(SynchronousTestCase):
    """L{NO_FAULTS}, the hooks of a replica without failures."""

    def test_nothing_happens(self) -> None:
        """Every message is processed and every value goes out unchanged."""
        for kind in PER_CLIENT:
            self.assertTrue(NO_FAULTS.received(kind, 0))
        for kind in GLOBAL:
            self.assertTrue(NO_FAULTS.received(kind, None))
        statements = own_statements()
        self.assertIs(NO_FAULTS.tamper("own_statements", statements), statements)


# ---------------------------------------------------------------------------
# The replica's side


def faulty_replica(index: int, failures: str, configuration: Any = T1) -> tuple[Any, Any]:
    """A replica at C{index} with C{failures}, through the real plan factory."""
    return make_replica(
        configuration, index, failures=failures, fault_injection=True,
        faults_factory=fault_plan_factory(REGISTRY),
    )


class ReplicaMisbehaviourTests(SynchronousTestCase):
    """L{ReplicaMisbehaviour} and the fault hooks of the replica's protocol code."""

    def test_provides_interface(self) -> None:
        """A replica's misbehaviour object provides IMisbehave."""
        replica, env = faulty_replica(1, "shuttle(0,0), crash()")
        self.assertTrue(verifyObject(IMisbehave, ReplicaMisbehaviour(replica)))

    def test_crash(self) -> None:
        """crash() exits with status 255 and the triggering message is not processed."""
        replica, env = faulty_replica(1, "shuttle(0,0), crash()")
        replica.receive(replica_address(0), make_shuttle(T1, 0, REQUEST, "fail", 1))
        self.assertEqual([status for status, _ in env.exits], [CRASH_STATUS])
        # Nothing but the report of the fault to Olympus, sent before it acts.
        [report] = env.sent
        self.assertEqual(report.to, OLYMPUS_ADDRESS)
        self.assertEqual(report.inner, FaultFired(0, 1, "shuttle(0,0)", "crash()", False))
        self.assertEqual(replica.last_executed, -1)

    def test_sleep_before_processing(self) -> None:
        """sleep(ms) stalls the process before the triggering message is handled."""
        replica, env = faulty_replica(1, "shuttle(0,0), sleep(250)")
        env.actions.clear()
        replica.receive(replica_address(0), make_shuttle(T1, 0, REQUEST, "fail", 1))
        # The report of the fault to Olympus, then the stall, then the shuttle.
        self.assertEqual([kind for kind, _ in env.actions], ["send", "stall", "send"])
        self.assertEqual(env.stalls, [0.25])

    def test_extra_op(self) -> None:
        """extra_op() puts 'a' into the running state before the message is processed."""
        replica, env = faulty_replica(1, "shuttle(0,0), extra_op()")
        put = sign_request(0, 0, "put", "k", "v")
        replica.receive(replica_address(0), make_shuttle(T1, 0, put, "OK", 1))
        self.assertEqual(replica.state, {"a": "a", "k": "v"})

    def test_increment_slot(self) -> None:
        """increment_slot() at the head gives the triggering request the slot after the next one."""
        replica, env = faulty_replica(0, "client_request(0,1), increment_slot()")
        replica.receive(client_address(0), ClientRequest(sign_request(0, 0, "put", "k", "v")))
        replica.receive(client_address(0), ClientRequest(sign_request(0, 1, "get", "k")))
        self.assertEqual([s.slot for s in env.of_type(Shuttle)], [0, 2])

    def test_tampered_statements_go_out_only(self) -> None:
        """A tampered own statement goes out in the shuttle; history and most recent result keep the real one."""
        replica, env = faulty_replica(1, "shuttle(0,0), invalid_result_sig(); shuttle(0,0), invalid_order_sig()")
        put = sign_request(0, 0, "put", "k", "v")
        replica.receive(replica_address(0), make_shuttle(T1, 0, put, "OK", 1))
        [shuttle] = env.of_type(Shuttle)
        self.assertRaises(crypto.BadSignature, verified, shuttle.order_proof[1], 1, OrderStatement)
        self.assertRaises(crypto.BadSignature, verified, shuttle.result_proof[1], 1, ResultStatement)
        entry = replica.history[0]
        self.assertIsInstance(entry, HistoryEntry)
        verified(entry.order_proof[1], 1, OrderStatement)
        verified(replica.last_results[0].statement, 1, ResultStatement)

    def test_change_result_on_result_shuttle(self) -> None:
        """change_result() at a middle replica changes its statement in the result shuttle it passes on, not what it caches."""
        replica, env = faulty_replica(1, "result_shuttle(0,0), change_result()")
        get = sign_request(0, 0, "get", "k")
        replica.receive(replica_address(0), make_shuttle(T1, 0, get, "", 1))
        env.take()
        incoming = make_result_shuttle(T1, 0, get, "")
        replica.receive(replica_address(2), incoming)
        [outgoing] = [s.message for s in env.take() if s.to == replica_address(0)]
        self.assertEqual(verified(outgoing.result_proof[1], 1, ResultStatement).result_hash, crypto.result_hash("OK"))
        self.assertEqual(outgoing.result_proof[0], incoming.result_proof[0])
        self.assertEqual(outgoing.result_proof[2], incoming.result_proof[2])
        self.assertEqual(replica._result_cache[(0, 0)], incoming)

    def test_truncate_history_in_wedged(self) -> None:
        """truncate_history(n) leaves the last n entries out of the wedged message."""
        replica, env = faulty_replica(1, "wedge_request(0), truncate_history(1)")
        for slot in range(3):
            request = sign_request(0, slot, "put", "k", str(slot))
            replica.receive(replica_address(0), make_shuttle(T1, slot, request, "OK", 1))
        env.take()
        replica.receive(
            OLYMPUS_ADDRESS, seal_from_olympus(WedgeRequest(0), to=replica_address(1))
        )
        [wedged] = env.of_type(Wedged)
        self.assertEqual([entry.slot for entry in wedged.history], [0, 1])
        self.assertEqual(sorted(replica.history), [0, 1, 2])

    def test_new_configuration_drop_stays_pending(self) -> None:
        """A replica that drops its new_configuration stays PENDING and ignores wedge requests."""
        configuration = wire_configuration(number=1)
        spare, env = make_spare(
            configuration, 1, fault_injection=True, faults_factory=fault_plan_factory(REGISTRY)
        )
        assignment = make_assignment(configuration, 1, failures="new_configuration(0), drop()")
        spare.receive(OLYMPUS_ADDRESS, seal_from_olympus(assignment, to=replica_address(1, 1)))
        self.assertIs(spare.mode, Mode.PENDING)
        # It did not take up its position, so it does not claim to be ready.
        self.assertEqual(env.of_type(Ready), [])
        env.take()
        put = sign_request(0, 0, "put", "k", "v")
        spare.receive(replica_address(0, 1), make_shuttle(configuration, 0, put, "OK", 1))
        spare.receive(
            OLYMPUS_ADDRESS, seal_from_olympus(WedgeRequest(1), to=replica_address(1, 1))
        )
        self.assertIs(spare.mode, Mode.PENDING)
        self.assertEqual(env.take(), [])
        self.assertEqual(spare.state, {})
        reasons = [e["reason"] for e in env.events_named("bcr.rejected")]
        self.assertEqual(len(reasons), 2, reasons)
        self.assertTrue(reasons[0].startswith("dropped shuttle"), reasons)
        self.assertIn("pending", reasons[0])
        self.assertIn("wedge_request while pending", reasons[1])

    def test_new_configuration_extra_op(self) -> None:
        """new_configuration(0), extra_op() acts on the state just installed."""
        configuration = wire_configuration(number=1)
        spare, env = make_spare(
            configuration, 2, fault_injection=True, faults_factory=fault_plan_factory(REGISTRY)
        )
        assignment = make_assignment(
            configuration, 2, state={"k": "v"}, failures="new_configuration(0), extra_op()"
        )
        spare.receive(OLYMPUS_ADDRESS, seal_from_olympus(assignment, to=replica_address(2, 1)))
        self.assertIs(spare.mode, Mode.ACTIVE)
        self.assertEqual(spare.state, {"a": "a", "k": "v"})
        self.assertEqual(env.of_type(Ready), [Ready(1, 2)])

    def test_no_new_configuration_in_configuration_zero(self) -> None:
        """The set-up of configuration 0 is not a new-configuration message."""
        replica, env = faulty_replica(2, "new_configuration(0), extra_op()")
        self.assertIs(replica.mode, Mode.ACTIVE)
        self.assertEqual(replica.state, {})


class UnauthorisedMessagesTests(SynchronousTestCase):
    """
    Messages a replica drops because of who sent them are not received in
    the sense of SPEC §11.1: they count for no trigger, so an outsider
    cannot fire (or use up) a replica's failures.
    """

    def test_outsider_shuttle_does_not_count(self) -> None:
        """A stranger's copy of the m'th shuttle neither fires the failure nor takes its place."""
        replica, env = faulty_replica(1, "shuttle(0,0), crash()")
        put = sign_request(0, 0, "put", "k", "v")
        shuttle = make_shuttle(T1, 0, put, "OK", 1)
        replica.receive(STRANGER, shuttle)
        self.assertEqual(env.exits, [])
        self.assertEqual(env.events_named("bcr.fault_fired"), [])
        self.assertEqual((env.sent, replica.state), ([], {}))
        replica.receive(replica_address(0), shuttle)
        self.assertEqual([status for status, _ in env.exits], [CRASH_STATUS])
        self.assertEqual(len(env.events_named("bcr.fault_fired")), 1)

    def test_shuttle_from_wrong_position_does_not_count(self) -> None:
        """A chain member that is not the predecessor cannot trigger a shuttle failure either."""
        replica, env = faulty_replica(1, "shuttle(0,0), extra_op()")
        put = sign_request(0, 0, "put", "k", "v")
        shuttle = make_shuttle(T1, 0, put, "OK", 1)
        replica.receive(replica_address(2), shuttle)
        self.assertEqual(replica.state, {})
        self.assertEqual(env.events_named("bcr.fault_fired"), [])
        self.assertEqual(reconfiguration_requests(env), [])
        replica.receive(replica_address(0), shuttle)
        self.assertEqual(replica.state, {"a": "a", "k": "v"})

    def test_outsider_control_message_does_not_count(self) -> None:
        """A wedge request sealed by Olympus but delivered by a stranger counts for nothing."""
        replica, env = faulty_replica(1, "wedge_request(0), crash()")
        wedge = seal_from_olympus(WedgeRequest(0), to=replica_address(1))
        replica.receive(STRANGER, wedge)
        self.assertEqual((env.exits, env.sent), ([], []))
        self.assertIs(replica.mode, Mode.ACTIVE)
        replica.receive(OLYMPUS_ADDRESS, wedge)
        self.assertEqual([status for status, _ in env.exits], [CRASH_STATUS])

    def test_result_shuttle_from_predecessor_does_not_count(self) -> None:
        """A result shuttle from the predecessor is dropped before any trigger counts it."""
        replica, env = faulty_replica(1, "result_shuttle(0,0), crash()")
        get = sign_request(0, 0, "get", "k")
        replica.receive(replica_address(0), make_shuttle(T1, 0, get, "", 1))
        env.take()
        incoming = make_result_shuttle(T1, 0, get, "")
        replica.receive(replica_address(0), incoming)
        self.assertEqual((env.exits, env.sent), ([], []))
        replica.receive(replica_address(2), incoming)
        self.assertEqual([status for status, _ in env.exits], [CRASH_STATUS])
