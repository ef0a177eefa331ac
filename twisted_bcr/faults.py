# -*- test-case-name: tests.test_faults -*-
"""
Fault injection (SPEC §11): the registry of fault plugins, and the fault
plan of one replica.

Triggers and failures are Twisted plugins (L{ITrigger}, L{IFailure}): the
built-ins of the package C{twisted_bcr.faultplugins} and those of any
directory a user adds per experiment (such as the top-level C{plugins/}).
L{load_registry} finds them and fails loudly, with one line, on a plugin
module that does not import, instead of letting it silently go missing.

A replica asks its L{FaultHooks} about every received message of a trigger
type; L{FaultPlan} counts them per SPEC §11.1, fires the matching
trigger/failure pairs in the order SPEC §11 gives, and applies "next
outgoing message" failures when the replica produces that message.  A
replica without failures uses L{NO_FAULTS}: one method call per message.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from attrs import frozen
from twisted.plugin import getPlugins

from twisted_bcr.config import (
    Case,
    CaseError,
    FaultPair,
    case_plugin_dirs,
    parse_case,
    parse_failures,
)
from twisted_bcr.interfaces import IFailure, IMisbehave, ITrigger
from twisted_bcr.messages import FaultFired


class FaultHooks(Protocol):
    """What a replica's protocol code calls; implemented by the fault plan."""

    def received(self, kind: str, client: int | None) -> bool:
        """
        Count one received message of trigger type C{kind} (for C{client},
        where the trigger has one) and fire what matches.  Returns C{False}
        when the message must not be processed.
        """

    def tamper(self, point: str, value: Any) -> Any:
        """C{value} as an armed failure changes it at C{point}, else unchanged."""


class _NoFaults:
    """The hooks of a replica without failures: nothing counts, nothing fires."""

    def received(self, kind: str, client: int | None) -> bool:
        return True

    def tamper(self, point: str, value: Any) -> Any:
        return value


NO_FAULTS: FaultHooks = _NoFaults()


# ---------------------------------------------------------------------------
# The registry


class PluginError(ValueError):
    """A fault plugin directory or module that cannot be used; one line."""


@frozen
class Registry:
    """Every trigger and failure available by name."""

    triggers: dict[str, ITrigger]
    failures: dict[str, IFailure]

    def trigger_arities(self) -> dict[str, int]:
        return {name: trigger.arity for name, trigger in self.triggers.items()}

    def failure_arities(self) -> dict[str, int]:
        return {name: failure.arity for name, failure in self.failures.items()}

    def tables(self) -> dict[str, dict[str, int]]:
        """The name tables for L{twisted_bcr.config.parse_case}: C{parse_case(path, **r.tables())}."""
        return {"triggers": self.trigger_arities(), "failures": self.failure_arities()}

    def parse_failures(self, text: str, where: str) -> tuple[FaultPair, ...]:
        """A failures[c,r] value, checked against these names."""
        return parse_failures(
            text, where, triggers=self.trigger_arities(), failures=self.failure_arities()
        )


_BASE_PATH: list[str] | None = None



#: The stages (IFailure.stage) of failures that make a replica Byzantine: it
#: changes its state or slots, or tampers with what it sends.  Crashing,
#: stalling and dropping a message are omissions: such a replica's state
#: is still correct, and it counts in the agreement check.
BYZANTINE_STAGES = frozenset({2, 3})


def is_byzantine(failure: IFailure) -> bool:
    """Does C{failure} make the replica that carries it out Byzantine?"""
    return failure.stage in BYZANTINE_STAGES

def load_registry(directories: Sequence[str] = ()) -> Registry:
    """
    The fault plugins of the built-in package plus C{directories}.

    @raise PluginError: a directory that does not exist, a plugin module
        that does not import, or two plugins with the same name.
    """
    import twisted_bcr.faultplugins as faultplugins

    global _BASE_PATH
    if _BASE_PATH is None:
        _BASE_PATH = list(faultplugins.__path__)
    extra = []
    for directory in directories:
        if not os.path.isdir(directory):
            raise PluginError(f"fault plugin directory {directory!r} does not exist")
        extra.append(os.path.abspath(directory))
    _refuse_hidden_modules(_BASE_PATH, extra)
    # A fresh search path each time: an experiment sees only its own directories.
    faultplugins.__path__[:] = _BASE_PATH + extra
    _import_every_module(faultplugins.__name__, faultplugins.__path__)
    triggers: dict[str, ITrigger] = {}
    failures: dict[str, IFailure] = {}
    for interface, found in ((ITrigger, triggers), (IFailure, failures)):
        for plugin in getPlugins(interface, faultplugins):
            name = plugin.name  # type: ignore[attr-defined]
            if name in found and found[name] is not plugin:
                raise PluginError(f"two fault plugins are called {name!r}")
            found[name] = plugin  # type: ignore[assignment]
    return Registry(triggers, failures)


def _module_names(directory: str) -> set[str]:
    if not os.path.isdir(directory):
        return set()
    return {
        name[:-3] for name in os.listdir(directory)
        if name.endswith(".py") and name != "__init__.py"
    }


def _refuse_hidden_modules(base: Sequence[str], extra: Sequence[str]) -> None:
    """
    A plugin module is found by its basename, first match on the search path
    wins: one in a user directory named like another would silently never
    load.
    """
    seen = {name: "the built-in plugins" for d in base for name in _module_names(d)}
    for directory in extra:
        for name in sorted(_module_names(directory)):
            if name in seen:
                raise PluginError(
                    f"{os.path.join(directory, name + '.py')}: a fault plugin module "
                    f"named {name!r} is already in {seen[name]}; rename it"
                )
            seen[name] = directory


def _import_every_module(package: str, path: Sequence[str]) -> None:
    """
    Import each plugin module ourselves first: getPlugins would log a broken
    one and go on without it, and a misspelt experiment would run without
    its fault.
    """
    for directory in path:
        if not os.path.isdir(directory):
            # pluginPackagePaths names a candidate under every sys.path entry.
            continue
        try:
            names = sorted(os.listdir(directory))
        except OSError as e:
            raise PluginError(f"cannot read fault plugin directory {directory!r}: {e}") from None
        for filename in names:
            module, extension = os.path.splitext(filename)
            if extension != ".py" or module == "__init__" or not module.isidentifier():
                continue
            try:
                importlib.import_module(f"{package}.{module}")
            except Exception as e:
                where = os.path.join(directory, filename)
                # One line, even for an exception whose text has several.
                detail = f"{type(e).__name__}: {e}".replace("\r", "\\r").replace("\n", "\\n")
                raise PluginError(
                    f"{where}: the fault plugin module does not import: {detail}"
                ) from None


def load_case(path: str, plugin_dirs: Sequence[str] = ()) -> tuple[Case, Registry]:
    """
    Read a case file with the fault plugins it can name: the built-ins,
    C{plugin_dirs} (from the command line) and the directories of its own
    C{fault_plugins} key.

    @raise CaseError: the case is invalid (file, line and text).
    @raise PluginError: a plugin directory or module cannot be used.
    """
    registry = load_registry([*plugin_dirs, *case_plugin_dirs(path)])
    return parse_case(path, **registry.tables()), registry


def registry_for(case: Case, plugin_dirs: Sequence[str] = ()) -> Registry:
    """The fault plugins of an already parsed case, plus C{plugin_dirs}."""
    return load_registry([*plugin_dirs, *case.fault_plugin_dirs])


# ---------------------------------------------------------------------------
# The plan of one replica


@frozen
class _Pair:
    trigger: ITrigger
    trigger_args: tuple[int, ...]
    failure: IFailure
    failure_args: tuple[int, ...]
    text: str


class FaultPlan:
    """The failure scenario of one replica: counters, firing, armed tamperings."""

    def __init__(
        self,
        pairs: Sequence[FaultPair],
        registry: Registry,
        misbehave: IMisbehave,
        log: Any,
        on_fired: Callable[[FaultFired], None] = lambda fired: None,
    ) -> None:
        """
        @param on_fired: Told of every pair that fires, before it acts: the
            replica reports it to Olympus for the run report.
        """
        self._pairs = [
            _Pair(
                registry.triggers[p.trigger], p.trigger_args,
                registry.failures[p.failure], p.failure_args, p.text,
            )
            for p in pairs
        ]
        self._misbehave = misbehave
        self._log = log
        self._on_fired = on_fired
        self._counters: dict[tuple[str, int | None], int] = {}
        #: failure name -> (point, tamper, pair text); arming again replaces.
        self._armed: dict[str, tuple[str, Callable[[Any, IMisbehave], Any], str]] = {}
        self.dropped = False
        self._firing: _Pair | None = None

    @classmethod
    def from_text(
        cls,
        text: str,
        registry: Registry,
        misbehave: IMisbehave,
        log: Any,
        on_fired: Callable[[FaultFired], None] = lambda fired: None,
    ) -> FaultPlan:
        """The plan for a failures[c,r] value, as Olympus hands it over."""
        where = f"failures[{misbehave.configuration},{misbehave.index}]"
        try:
            pairs = registry.parse_failures(text, where)
        except CaseError as e:
            raise PluginError(str(e)) from None
        return cls(pairs, registry, misbehave, log, on_fired)

    def received(self, kind: str, client: int | None) -> bool:
        key = (kind, client)
        number = self._counters.get(key, 0)
        self._counters[key] = number + 1
        fired = [
            pair for pair in self._pairs
            if pair.trigger.counted == kind
            and pair.trigger.fires(client if pair.trigger.per_client else None, number, pair.trigger_args)
        ]
        if not fired:
            return True
        for pair in fired:
            record = FaultFired(
                self._misbehave.configuration, self._misbehave.index,
                _trigger_text(pair), _failure_text(pair), is_byzantine(pair.failure),
            )
            self._log.warn(
                "{name} fault fired: {pair}", name=self._misbehave.name, pair=pair.text,
                configuration=record.configuration, replica=record.index,
                trigger=record.trigger, failure=record.failure, byzantine=record.byzantine,
                event="bcr.fault_fired",
                node=self._misbehave.name,
            )
            self._on_fired(record)
        self.dropped = False
        for pair in sorted(fired, key=lambda p: p.failure.stage):
            self._firing = pair
            pair.failure.fire(self._misbehave, pair.failure_args, pair.text)
            if self.dropped and pair.failure.stage == 0:
                break  # crashed: nothing after it happens
        self._firing = None
        dropped, self.dropped = self.dropped, False
        return not dropped

    def drop(self) -> None:
        """The message being handled must not be processed (drop(), crash())."""
        self.dropped = True

    def arm(self, text: str, point: str, tamper: Callable[[Any, IMisbehave], Any]) -> None:
        """Arm a tampering for the failure firing now; arming it again replaces it."""
        name = self._firing.failure.name if self._firing is not None else text
        self._armed[name] = (point, tamper, text)

    def tamper(self, point: str, value: Any) -> Any:
        for failure, (armed_point, tamper, text) in list(self._armed.items()):
            if armed_point != point:
                continue
            del self._armed[failure]
            value = tamper(value, self._misbehave)
            self._log.warn(
                "{name} applied {pair} to its {point}", name=self._misbehave.name,
                pair=text, point=point, event="bcr.fault_applied",
                node=self._misbehave.name,
            )
        return value


def _trigger_text(pair: _Pair) -> str:
    return f"{pair.trigger.name}({','.join(str(a) for a in pair.trigger_args)})"


def _failure_text(pair: _Pair) -> str:
    return f"{pair.failure.name}({','.join(str(a) for a in pair.failure_args)})"

