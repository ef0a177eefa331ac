"""
Tests for fault plugins (SPEC §11, STYLE.md §2): every discovered plugin
provides its interface, the example third-party plugin in the top-level
C{plugins/} folder works by name in simulation, from the C{bcr} script and
with real processes, and plugin directories that cannot be used are refused
with one line.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.plugin import IPlugin
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import twisted_bcr.faultplugins as faultplugins
from tests.test_cli import run_cli
from twisted_bcr.config import CaseError, parse_case, parse_case_text
from twisted_bcr.faults import PluginError, Registry, load_registry
from twisted_bcr.interfaces import IFailure, ITrigger
from twisted_bcr.launch import run_case_blocking
from twisted_bcr.simulation import simulate

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
PLUGINS = os.path.abspath(os.path.join(ROOT, "plugins"))
CASES = os.path.abspath(os.path.join(ROOT, "etc", "cases"))

#: The tail swaps the first two statements of the result proof of client 0's
#: first request.  Its predecessor finds statement 0 signed by the wrong
#: replica and asks for a reconfiguration.  The client can verify only one
#: statement (t+1 = 2 needed), so it waits, and Olympus delivers the result
#: once the reconfiguration is over: the run cannot end halfway through it.
SWAP_CASE = """\
test_case_name = swap_result_stmts
t = 1
num_client = 1
workload[0] = put('a','b'); append('a','c'); get('a')
failures[0,2] = shuttle(0,0), swap_result_stmts()
"""
#: The line of SWAP_CASE that names the plugin's failure.
SWAP_LINE = 5
SWAP_FIRED = [
    {"configuration": 0, "replica": 2, "trigger": "shuttle(0,0)",
     "failure": "swap_result_stmts()", "byzantine": True},
]

#: A plugin module that defines a failure no case file uses.
UNRELATED_PLUGIN = """\
from attrs import frozen
from twisted.plugin import IPlugin
from zope.interface import implementer

from twisted_bcr.interfaces import IFailure


@implementer(IPlugin, IFailure)
@frozen
class Unrelated:
    name: str = "test_unrelated_noop"
    arity: int = 0
    stage: int = 4

    def fire(self, misbehave, args, text):
        misbehave.log(text)


test_unrelated_noop = Unrelated()
"""

#: A plugin module whose failure takes the name of a built-in.
DUPLICATE_PLUGIN = UNRELATED_PLUGIN.replace('"test_unrelated_noop"', '"crash"')


class PluginTestCase(SynchronousTestCase):
    """Leaves the fault plugin search path of the process as it found it."""

    def setUp(self) -> None:
        saved = list(faultplugins.__path__)

        def restore() -> None:
            load_registry()
            faultplugins.__path__[:] = saved

        self.addCleanup(restore)

    def plugin_dir(self, **modules: str) -> str:
        """A fresh directory holding the plugin modules C{name=source}."""
        directory: str = self.mktemp()
        os.makedirs(directory)
        for name, source in modules.items():
            with open(os.path.join(directory, f"{name}.py"), "w", encoding="utf-8") as f:
                f.write(source)
        return os.path.abspath(directory)

    def swap_case_file(self) -> str:
        """SWAP_CASE written to a file of its own."""
        path: str = os.path.abspath(self.mktemp() + ".txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(SWAP_CASE)
        return path


class DiscoveryTests(PluginTestCase):
    """Every discovered plugin provides the interface it is found by."""

    def test_every_plugin_provides_its_interface(self) -> None:
        """Each trigger and failure, built-in or from plugins/, passes verifyObject."""
        registry = load_registry([PLUGINS])
        self.assertEqual(len(registry.triggers), 10)
        self.assertEqual(len(registry.failures), 13)
        for trigger in registry.triggers.values():
            self.assertTrue(verifyObject(IPlugin, trigger))
            self.assertTrue(verifyObject(ITrigger, trigger))
        for failure in registry.failures.values():
            self.assertTrue(verifyObject(IPlugin, failure))
            self.assertTrue(verifyObject(IFailure, failure))
            self.assertIn(failure.stage, range(5))

    def test_plugins_folder_is_not_a_package(self) -> None:
        """plugins/ has no __init__.py, so no top-level package called plugins exists."""
        self.assertFalse(os.path.exists(os.path.join(PLUGINS, "__init__.py")))

    def test_example_only_with_its_directory(self) -> None:
        """swap_result_stmts exists with plugins/ loaded and is gone again without it."""
        self.assertIn("swap_result_stmts", load_registry([PLUGINS]).failures)
        self.assertNotIn("swap_result_stmts", load_registry().failures)


class ExamplePluginTests(PluginTestCase):
    """The example plugin's failure, used by name in a case file, in simulation."""

    def test_swap_causes_one_reconfiguration(self) -> None:
        """swap_result_stmts() fires at the tail and its predecessor asks for exactly one reconfiguration."""
        registry = load_registry([PLUGINS])
        case = parse_case_text(SWAP_CASE, "swap.txt", **registry.tables())
        summary = simulate(case, seed=0, registry=registry)
        self.assertEqual(summary["errors"], [])
        self.assertTrue(summary["ok"])
        self.assertEqual(summary["faults_fired"], SWAP_FIRED)
        self.assertEqual(summary["configurations"], 2)
        (reconfiguration,) = summary["reconfigurations"]
        self.assertEqual(reconfiguration["requested_by"], ["replica 0.1"])
        self.assertIn("statement 0: signature does not verify", reconfiguration["reason"])
        self.assertEqual(summary["clients"][0]["results"], ["OK", "OK", "bc"])
        self.assertEqual(summary["final_state"], {"a": "bc"})

    def test_refused_without_the_directory(self) -> None:
        """Without plugins/ the case is refused at its failures line, listing the names there are."""
        path = self.swap_case_file()
        with self.assertRaises(CaseError) as caught:
            parse_case(path, **load_registry().tables())
        message = str(caught.exception)
        self.assertEqual(len(message.splitlines()), 1)
        self.assertTrue(message.startswith(f"{path}:{SWAP_LINE}: unknown failure 'swap_result_stmts'"))
        self.assertIn("valid: change_operation, change_result, crash,", message)

    def test_unrelated_directory_changes_nothing(self) -> None:
        """An empty directory or one with an unused plugin leaves a run's summary unchanged."""
        path = os.path.join(CASES, "shuttle_change_operation.txt")

        def summary_with(directories: list[str]) -> dict[str, Any]:
            registry = load_registry(directories)
            return simulate(parse_case(path, **registry.tables()), seed=5, registry=registry)

        plain = summary_with([])
        self.assertTrue(plain["ok"])
        self.assertEqual(len(plain["faults_fired"]), 1)
        unrelated = self.plugin_dir(bcr_test_unrelated=UNRELATED_PLUGIN)
        self.assertEqual(summary_with([unrelated]), plain)
        self.assertEqual(summary_with([self.plugin_dir()]), plain)


class BadDirectoryTests(PluginTestCase):
    """Plugin directories that cannot be used stop everything with one line."""

    def assert_plugin_error(self, directories: list[str], *fragments: str) -> str:
        with self.assertRaises(PluginError) as caught:
            load_registry(directories)
        message = str(caught.exception)
        self.assertEqual(len(message.splitlines()), 1)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message

    def test_module_that_does_not_import(self) -> None:
        """A module that raises at import names its file and the exception."""
        directory = self.plugin_dir(
            bcr_test_broken="raise RuntimeError('not today\\nnor tomorrow')\n"
        )
        self.assert_plugin_error(
            [directory],
            os.path.join(directory, "bcr_test_broken.py"),
            "RuntimeError: not today",
        )

    def test_missing_directory(self) -> None:
        """A directory that does not exist is refused."""
        missing = os.path.abspath(self.mktemp())
        self.assert_plugin_error([missing], missing, "does not exist")

    def test_two_plugins_with_one_name(self) -> None:
        """A plugin named like a built-in is refused, naming the name."""
        directory = self.plugin_dir(bcr_test_duplicate=DUPLICATE_PLUGIN)
        self.assert_plugin_error([directory], "'crash'")

    def test_registry_usable_after_a_refusal(self) -> None:
        """After a refused directory the built-ins load as before."""
        self.assert_plugin_error([os.path.abspath(self.mktemp())], "does not exist")
        self.assertIsInstance(load_registry(), Registry)
        self.assertNotIn("swap_result_stmts", load_registry().failures)


class CommandLineTests(PluginTestCase):
    """bcr simulate --fault-plugins."""

    def test_simulate_with_example(self) -> None:
        """The swap case passes with plugins/ and fails with one line without it."""
        path = self.swap_case_file()
        status, out, err = run_cli("simulate", path, "--fault-plugins", PLUGINS, "--quiet")
        self.assertEqual((status, err), (0, ""))
        self.assertTrue(out.startswith("PASS: swap_result_stmts (simulation)"), out)
        self.assertIn("2 configuration(s)", out)
        status, out, err = run_cli("simulate", path, "--quiet")
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(len(err.splitlines()), 1)
        self.assertTrue(err.startswith(f"bcr: {path}:{SWAP_LINE}: unknown failure"), err)

    def test_simulate_with_broken_directory(self) -> None:
        """A plugin module that does not import is one line on standard error and status 1."""
        directory = self.plugin_dir(bcr_test_broken_cli="import no_such_module_anywhere\n")
        status, out, err = run_cli(
            "simulate", self.swap_case_file(), "--fault-plugins", PLUGINS,
            "--fault-plugins", directory,
        )
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(len(err.splitlines()), 1)
        self.assertTrue(
            err.startswith(f"bcr: {os.path.join(directory, 'bcr_test_broken_cli.py')}: "), err
        )
        self.assertIn("ModuleNotFoundError", err)


class RealProcessTests(PluginTestCase):
    """bcr run with a third-party plugin directory: Olympus and the replicas load it too."""

    def test_run_with_example(self) -> None:
        """The swap case passes with real processes and reports the fired fault."""
        log_dir = os.path.abspath(self.mktemp())
        summary = run_case_blocking(self.swap_case_file(), log_dir, 60.0, fault_plugins=[PLUGINS])
        self.assertEqual(summary["errors"], [])
        self.assertTrue(summary["ok"])
        self.assertEqual(summary["mode"], "processes")
        self.assertEqual(summary["faults_fired"], SWAP_FIRED)
        self.assertEqual(summary["configurations"], 2)
        self.assertEqual(summary["clients"][0]["results"], ["OK", "OK", "bc"])


class HiddenModuleTests(SynchronousTestCase):
    """A user plugin module named like another one is refused, not silently hidden."""

    def test_same_basename_as_builtin(self) -> None:
        """A module called bcr_failures.py in a user directory is refused with one line naming it."""
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "bcr_failures.py"), "w") as f:
            f.write('"""Would hide the built-ins."""\n')
        self.addCleanup(load_registry)
        error = self.assertRaises(PluginError, load_registry, [directory])
        self.assertIn("bcr_failures.py: a fault plugin module named 'bcr_failures'", str(error))
        self.assertNotIn("\n", str(error))

    def test_same_basename_in_two_user_directories(self) -> None:
        """Two user directories with the same module name are refused."""
        first, second = self.mktemp(), self.mktemp()
        for directory in (first, second):
            os.makedirs(directory)
            with open(os.path.join(directory, "bcr_twin_plugin.py"), "w") as f:
                f.write('"""A twin."""\n')
        self.addCleanup(load_registry)
        error = self.assertRaises(PluginError, load_registry, [first, second])
        self.assertIn(os.path.join(second, "bcr_twin_plugin.py"), str(error))
