"""Tests for twisted_bcr.logs: the per-process JSON and text log files."""

from __future__ import annotations

import os
import stat

from twisted.logger import Logger, LogLevel, LogPublisher, eventsFromJSONLogFile
from twisted.trial.unittest import SynchronousTestCase

from twisted_bcr.files import UnsafeFileError
from twisted_bcr.logs import LogFiles, event_as_text


class LogFilesTests(SynchronousTestCase):
    """LogFiles writes every event to both files, readable back by Twisted."""

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.files = LogFiles(self.directory, "replica-0.1")
        self.addCleanup(self.files.close)
        self.log = Logger(namespace="bcr.test", observer=LogPublisher(self.files))

    def test_json_round_trip(self) -> None:
        """Events come back from eventsFromJSONLogFile with their fields, level and message."""
        self.log.info(
            "{name} sent {result!r} at slot {slot}", name="replica 0.1",
            result="star wars", slot=7, event="bcr.send", state={"a": "b"},
            key=b"\x01\x02",
        )
        self.files.close()
        with open(self.files.json_path, encoding="utf-8") as f:
            [event] = list(eventsFromJSONLogFile(f))
        self.assertEqual(event["slot"], 7)
        self.assertEqual(event["state"], {"a": "b"})
        self.assertEqual(event["key"], "0102")
        self.assertEqual(event["event"], "bcr.send")
        self.assertIs(event["log_level"], LogLevel.info)
        self.assertEqual(event["log_namespace"], "bcr.test")

    def test_text_line(self) -> None:
        """The text file holds one line per event: time, namespace and level, message."""
        self.log.warn("{what} rejected", what="garbage")
        self.files.close()
        with open(self.files.text_path, encoding="utf-8") as f:
            [line] = f.read().splitlines()
        self.assertRegex(
            line,
            r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4} "
            r"\[bcr\.test#warn\] garbage rejected$",
        )

    def test_buffered_until_flush(self) -> None:
        """Lines stay in the buffer until flush, which makes them visible."""
        self.log.info("one")
        with open(self.files.text_path, encoding="utf-8") as f:
            self.assertEqual(f.read(), "")
        self.files.flush()
        with open(self.files.text_path, encoding="utf-8") as f:
            self.assertIn("one", f.read())

    def test_events_after_close_ignored(self) -> None:
        """An event after close neither raises nor reaches the files."""
        self.files.close()
        self.log.info("late")
        with open(self.files.text_path, encoding="utf-8") as f:
            self.assertEqual(f.read(), "")

    def test_on_write_called(self) -> None:
        """The binding hears of every write, so it can schedule a flush."""
        calls = []
        files = LogFiles(self.directory, "other", lambda: calls.append(1))
        self.addCleanup(files.close)
        Logger(observer=LogPublisher(files)).info("x")
        self.assertEqual(calls, [1])

    def test_failure_traceback(self) -> None:
        """A logged failure's traceback goes to both files."""
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            self.log.failure("handler failed")
        self.files.close()
        with open(self.files.text_path, encoding="utf-8") as f:
            self.assertIn("ZeroDivisionError", f.read())
        with open(self.files.json_path, encoding="utf-8") as f:
            [event] = list(eventsFromJSONLogFile(f))
        self.assertIn("ZeroDivisionError", event["failure"])


class LogFilesPrivacyTests(SynchronousTestCase):
    """The log files hold the replicated state: private, and never redirected."""

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        self.victim = os.path.join(outside, "victim")
        with open(self.victim, "w", encoding="utf-8") as f:
            f.write("precious\n")

    def test_created_0600_despite_umask(self) -> None:
        """Both files are created 0600 even with an empty umask."""
        old = os.umask(0)
        self.addCleanup(os.umask, old)
        files = LogFiles(self.directory, "replica-0.1")
        self.addCleanup(files.close)
        for path in (files.json_path, files.text_path):
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_appends_and_tightens(self) -> None:
        """A world-readable log left by an older run is appended to and made 0600."""
        text_path = os.path.join(self.directory, "olympus.log")
        with open(text_path, "w", encoding="utf-8") as f:
            f.write("old line\n")
        os.chmod(text_path, 0o644)
        files = LogFiles(self.directory, "olympus")
        Logger(observer=LogPublisher(files)).info("new line")
        files.close()
        self.assertEqual(stat.S_IMODE(os.stat(text_path).st_mode), 0o600)
        with open(text_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], "old line")
        self.assertTrue(lines[1].endswith("new line"))

    def test_symlink_refused(self) -> None:
        """A symlink planted at either name is refused and its target untouched."""
        for suffix in (".json", ".log"):
            stem = f"planted{suffix[1:]}"
            os.symlink(self.victim, os.path.join(self.directory, stem + suffix))
            error = self.assertRaises(UnsafeFileError, LogFiles, self.directory, stem)
            self.assertIn("symbolic link", str(error))
        with open(self.victim, encoding="utf-8") as f:
            self.assertEqual(f.read(), "precious\n")

    def test_refusal_closes_first_file(self) -> None:
        """When the text file is refused, the JSON file opened before it is closed."""
        os.symlink(self.victim, os.path.join(self.directory, "x.log"))
        opened: list[object] = []
        real_fdopen = os.fdopen

        def spy(*args: object, **kwargs: object) -> object:
            f = real_fdopen(*args, **kwargs)  # type: ignore[call-overload]
            opened.append(f)
            return f

        self.patch(os, "fdopen", spy)
        self.assertRaises(UnsafeFileError, LogFiles, self.directory, "x")
        self.assertTrue(all(f.closed for f in opened))  # type: ignore[attr-defined]


class TextFormatTests(SynchronousTestCase):
    """event_as_text renders what Twisted's formatter would."""

    def test_conversion_and_format_spec(self) -> None:
        """!r conversions and format specs render like str.format."""
        event = {
            "log_format": "{a!r} {ms:.1f}", "a": "x", "ms": 1.25,
            "log_time": 0.0, "log_namespace": "n", "log_level": LogLevel.info,
        }
        self.assertTrue(event_as_text(event, lambda t: "T").endswith("'x' 1.2\n"))

    def test_fallback_to_twisted(self) -> None:
        """A missing field falls back to Twisted's formatter instead of raising."""
        event = {
            "log_format": "{missing}", "log_time": 0.0, "log_namespace": "n",
            "log_level": LogLevel.info,
        }
        self.assertIn("Unable to format event", event_as_text(event, lambda t: "T"))
