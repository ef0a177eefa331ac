"""
Tests for the systemd units in C{etc/systemd/}: what they run (C{twist} by
absolute path, as a user of its own, writing only its state and log
directories), how tightly they are sandboxed (C{systemd-analyze security}
rates each below 4.0 where that tool is installed), and that their command
lines, with the example settings of C{etc/systemd/*.env.example}, parse
with the daemons' own option parsers.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from typing import Any

from twisted.application.twist._options import TwistOptions
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from twisted_bcr import crypto
from twisted_bcr.olympus import tap as olympus_tap
from twisted_bcr.replica import tap as replica_tap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNITS = os.path.join(ROOT, "etc", "systemd")
CASE = os.path.join(ROOT, "etc", "cases", "failure_free.txt")

#: unit file -> (its settings example, the twist subcommand, its Options)
DAEMONS: dict[str, tuple[str, str, type[Any]]] = {
    "bcr-olympus.service": ("olympus.env.example", "bcr-olympus", olympus_tap.Options),
    "bcr-replica@.service": ("replica.env.example", "bcr-replica", replica_tap.Options),
}
#: The instance a template is tested as (a replica's instance is its port).
INSTANCE = "7101"
#: `systemd-analyze security` rates an exposure below this "OK".
EXPOSURE_OK = 4.0

#: Sandboxing every unit must have, with these exact values.
SANDBOXING = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "PrivateUsers": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
    "StateDirectoryMode": "0700",
}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """
    A unit file's settings: section -> key -> every value given, in order
    (systemd allows a key more than once).  Comment lines start with C{#} or
    C{;}; a line ending in a backslash continues on the next one, the
    backslash replaced by a space, as systemd does.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    logical = ""
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not logical and (not stripped or stripped[0] in "#;"):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            if number < len(lines):
                continue
        logical += stripped
        entry, logical = logical.strip(), ""
        if entry.startswith("[") and entry.endswith("]"):
            current = sections.setdefault(entry[1:-1], {})
            continue
        if current is None or "=" not in entry:
            raise ValueError(f"line {number}: {line!r} is not a setting of a section")
        key, value = entry.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def read_unit(name: str) -> dict[str, dict[str, list[str]]]:
    with open(os.path.join(UNITS, name), encoding="utf-8") as f:
        return parse_unit(f.read())


def read_env_example(name: str) -> tuple[str, dict[str, str]]:
    """The path an example settings file is meant for (its first line) and its settings."""
    with open(os.path.join(UNITS, name), encoding="utf-8") as f:
        lines = f.read().splitlines()
    target = lines[0].lstrip("# ").strip()
    settings = {}
    for line in lines[1:]:
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            settings[key.strip()] = value.strip()
    return target, settings


def one(settings: dict[str, list[str]], key: str) -> str:
    """The value of a key given exactly once."""
    values = settings.get(key, [])
    if len(values) != 1:
        raise AssertionError(f"{key}= is given {len(values)} times, expected once")
    return values[0]


def command_line(unit: str) -> list[str]:
    """ExecStart with the example settings and the test instance substituted."""
    example, _, _ = DAEMONS[unit]
    _, settings = read_env_example(example)
    line = one(read_unit(unit)["Service"], "ExecStart")

    def variable(match: re.Match[str]) -> str:
        if match.group(1) not in settings:
            raise AssertionError(f"{unit}: ${{{match.group(1)}}} is not set in {example}")
        return settings[match.group(1)]

    line = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", variable, line)
    line = line.replace("%i", INSTANCE).replace("%%", "%")
    if "$" in line or "%" in line:
        raise AssertionError(f"{unit}: unsupported $ or % left in {line!r}")
    return shlex.split(line)


def option_values(words: list[str], option: str) -> list[str]:
    """The values of C{--option VALUE} and C{--option=VALUE} in C{words}."""
    found = []
    for i, word in enumerate(words):
        if word == option and i + 1 < len(words):
            found.append(words[i + 1])
        elif word.startswith(option + "="):
            found.append(word.split("=", 1)[1])
    return found


class ParseUnitTests(SynchronousTestCase):
    """L{parse_unit}, the small unit file reader these tests use."""

    def test_continuations_and_repeats(self) -> None:
        """Continued lines join with a space; a repeated key keeps every value."""
        sections = parse_unit(
            "# comment\n[Service]\nExecStart=/bin/a \\\n    --b c \\\n    --d\n"
            "; other comment\nX=1\nX=2\n"
        )
        self.assertEqual(
            sections, {"Service": {"ExecStart": ["/bin/a  --b c  --d"], "X": ["1", "2"]}}
        )
        self.assertEqual(shlex.split(sections["Service"]["ExecStart"][0]), ["/bin/a", "--b", "c", "--d"])

    def test_outside_section(self) -> None:
        """A setting before any section header is an error."""
        self.assertRaises(ValueError, parse_unit, "X=1\n")


class UnitContentTests(SynchronousTestCase):
    """What each unit runs, as whom, and where it may write."""

    def test_exec_start(self) -> None:
        """ExecStart runs C{twist} by absolute path, in the foreground, logging to stdout."""
        for unit, (_, subcommand, _) in DAEMONS.items():
            words = command_line(unit)
            program = words[0]
            self.assertTrue(os.path.isabs(program), (unit, program))
            self.assertNotIn(os.path.basename(program), ("env", "twistd"), unit)
            self.assertEqual(os.path.basename(program), "twist", unit)
            self.assertIn(subcommand, words, unit)
            before = words[1:words.index(subcommand)]
            self.assertIn("--log-format=text", before, unit)
            self.assertEqual(option_values(before, "--log-file"), [], unit)
            self.assertEqual(one(read_unit(unit)["Service"], "Type"), "exec", unit)

    def test_own_user(self) -> None:
        """Each unit runs as a user of its own, never root."""
        for unit in DAEMONS:
            service = read_unit(unit)["Service"]
            user = service.get("User", [""])[-1]
            dynamic = service.get("DynamicUser", ["no"])[-1]
            self.assertTrue(user or dynamic == "yes", unit)
            self.assertNotIn(user, ("root", "0"), unit)

    def test_replica_restarts(self) -> None:
        """A replica comes back after every exit, however often it is retired."""
        unit = read_unit("bcr-replica@.service")
        self.assertEqual(one(unit["Service"], "Restart"), "always")
        self.assertEqual(one(unit["Unit"], "StartLimitIntervalSec"), "0")

    def test_sandboxing(self) -> None:
        """The key sandboxing settings are there, with their exact values."""
        for unit in DAEMONS:
            service = read_unit(unit)["Service"]
            for key, value in SANDBOXING.items():
                self.assertEqual(service.get(key, [None])[-1], value, f"{unit}: {key}=")
            self.assertEqual(
                set(one(service, "RestrictAddressFamilies").split()),
                {"AF_INET", "AF_INET6", "AF_UNIX"}, unit,
            )
            self.assertIn("@system-service", service.get("SystemCallFilter", []), unit)
            self.assertNotIn("ReadWritePaths", service, unit)

    def test_writes_only_state_and_logs(self) -> None:
        """Keys live in the StateDirectory, logs in the LogsDirectory, config in /etc/bcr."""
        for unit in DAEMONS:
            service = read_unit(unit)["Service"]
            words = command_line(unit)
            state = "/var/lib/" + one(service, "StateDirectory").replace("%i", INSTANCE)
            logs = "/var/log/" + one(service, "LogsDirectory")
            keys = option_values(words, "--key-file") + option_values(words, "--identity-key")
            self.assertEqual(len(keys), 1, unit)
            self.assertEqual(os.path.dirname(keys[0]), state, unit)
            self.assertEqual(option_values(words, "--log-dir"), [logs], unit)
            for option in ("--case", "--admission", "--olympus-key"):
                for value in option_values(words, option):
                    self.assertTrue(value.startswith("/etc/bcr/"), (unit, option, value))
            example, _, _ = DAEMONS[unit]
            target, _ = read_env_example(example)
            self.assertEqual(one(service, "EnvironmentFile").lstrip("-"), target, unit)


class CommandLineParsesTests(SynchronousTestCase):
    """Each unit's command line is accepted by C{twist} and the daemon's own Options."""

    def parse(self, unit: str) -> tuple[TwistOptions, str]:
        """
        Parse the unit's command line with every path under C{/etc/bcr},
        C{/var/lib/bcr} and C{/var/log/bcr} moved into a temporary
        directory, prepared as the install steps and systemd would.
        """
        from twisted.internet import reactor

        root = os.path.abspath(self.mktemp())
        places = {
            "/etc/bcr": os.path.join(root, "etc"),
            "/var/lib/bcr": os.path.join(root, "state"),
            "/var/log/bcr": os.path.join(root, "log"),
        }
        for directory in places.values():
            os.makedirs(directory)
        shutil.copy(CASE, os.path.join(places["/etc/bcr"], "case.txt"))
        with open(os.path.join(places["/etc/bcr"], "admitted"), "w") as f:
            f.write("# nobody yet\n")
        crypto.KeyPair.generate().save(os.path.join(places["/etc/bcr"], "olympus.key"))
        service = read_unit(unit)["Service"]
        state = one(service, "StateDirectory").replace("%i", INSTANCE)
        os.makedirs(os.path.join(places["/var/lib/bcr"], state.split("/", 1)[1]), 0o700)

        words = []
        for word in command_line(unit)[1:]:
            for old, new in places.items():
                word = re.sub(f"(^|=){re.escape(old)}/", rf"\g<1>{new}/", word)
            words.append(word)
        options = TwistOptions()
        # The reactor is already running this test: do not install another.
        options["reactor"] = reactor
        try:
            options.parseOptions(words)
        except SystemExit as e:
            self.fail(f"{unit}: the command line does not parse (exit {e.code}): {words}")
        return options, root

    def test_olympus(self) -> None:
        """Olympus's command line parses and makes its key, 0600, in the state directory."""
        options, root = self.parse("bcr-olympus.service")
        self.assertEqual(options.subCommand, "bcr-olympus")
        sub = options.subOptions
        self.assertIsInstance(sub, olympus_tap.Options)
        self.assertEqual(sub["key-file"], os.path.join(root, "state", "olympus", "olympus.key"))
        self.assertEqual(os.stat(sub["key-file"]).st_mode & 0o777, 0o600)
        self.assertEqual(sub["listen"], "tcp:7000:interface=0.0.0.0")

    def test_replica(self) -> None:
        """A replica's command line parses and makes its identity key, 0600, in its state directory."""
        options, root = self.parse("bcr-replica@.service")
        self.assertEqual(options.subCommand, "bcr-replica")
        sub = options.subOptions
        self.assertIsInstance(sub, replica_tap.Options)
        self.assertEqual(
            sub["identity-key"],
            os.path.join(root, "state", f"replica-{INSTANCE}", "identity.key"),
        )
        self.assertEqual(os.stat(sub["identity-key"]).st_mode & 0o777, 0o600)
        self.assertEqual(sub["listen"], f"tcp:{INSTANCE}:interface=0.0.0.0")
        self.assertEqual(sub["name"], f"replica-{INSTANCE}")
        self.assertFalse(sub["enable-fault-injection"])


def systemd_analyze() -> str:
    """The C{systemd-analyze} that can rate a unit file offline; else SkipTest."""
    program = shutil.which("systemd-analyze")
    if program is None:
        raise SkipTest("systemd-analyze is not installed (Debian: apt-get install systemd)")
    usage = subprocess.run(
        [program, "security", "--help"], capture_output=True, text=True, timeout=60,
    )
    if "--offline" not in usage.stdout:
        raise SkipTest(f"{program} has no --offline (systemd 252 or later has it)")
    return program


class SecurityRatingTests(SynchronousTestCase):
    """C{systemd-analyze security --offline=true} rates every unit OK."""

    def test_exposure(self) -> None:
        """Each unit's overall exposure is below 4.0, and systemd knows every setting."""
        program = systemd_analyze()
        for unit in DAEMONS:
            result = subprocess.run(
                [program, "security", "--offline=true", "--no-pager", os.path.join(UNITS, unit)],
                capture_output=True, text=True, timeout=60,
            )
            output = result.stdout + result.stderr
            self.assertEqual(result.returncode, 0, output)
            self.assertNotIn("Unknown key", output, unit)
            self.assertNotIn("ignoring", output, unit)
            found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
            assert found is not None, output
            self.assertLess(float(found.group(1)), EXPOSURE_OK, f"{unit}:\n{output}")
