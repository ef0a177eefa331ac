"""Tests for twisted_bcr.logs: the per-process JSON and text log files."""

from __future__ import annotations

import os

from twisted.logger import Logger, LogLevel, LogPublisher, eventsFromJSONLogFile
from twisted.trial.unittest import SynchronousTestCase

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
