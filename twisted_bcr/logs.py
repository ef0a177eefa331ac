# -*- test-case-name: tests.test_logs -*-
"""
Per-process log files: one JSON event file and one readable text file.

Every process (and every simulated node) writes C{<dir>/<stem>.json}, RFC 7464
records readable with L{twisted.logger.eventsFromJSONLogFile}, and
C{<dir>/<stem>.log}, one line per event.  Logging every message received and
sent (SPEC §13) is the busiest thing a replica does after checking
signatures, so these observers are cheaper than Twisted's stock file
observers: they write through a buffer instead of flushing every event,
serialise only plain fields, and format timestamps once per second.  The
binding decides when buffers reach the disk (L{LogFiles.flush}): the
processes binding flushes shortly after each burst of events and always
before a process exits, including on a C{crash()} fault.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import IO, Any

from twisted.logger import ILogObserver, LogLevel, formatEvent
from zope.interface import implementer

from twisted_bcr.files import open_private_append

#: Keys Twisted adds that are either objects or already rendered elsewhere.
_UNSERIALISED = frozenset({"log_logger", "log_source", "log_observer", "log_failure"})

_RECORD_SEPARATOR = "\x1e"


def _plain(value: Any) -> Any:
    """What JSON cannot hold as is: bytes as hex, anything else as its C{repr}."""
    if isinstance(value, bytes):
        return value.hex()
    return repr(value)


def _plain_keys(value: Any) -> Any:
    """C{value} with every dictionary key made a string, recursively."""
    if isinstance(value, dict):
        return {str(k): _plain_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_keys(v) for v in value]
    return value


def event_as_json(event: dict[str, Any]) -> str:
    """One event as a JSON object of plain fields (the log level by name)."""
    record = {key: value for key, value in event.items() if key not in _UNSERIALISED}
    level = record.get("log_level")
    if level is not None:
        record["log_level"] = {"name": level.name, "__class_uuid__": _LEVEL_UUID}
    failure = event.get("log_failure")
    if failure is not None:
        record["failure"] = failure.getTraceback()
    try:
        # The C encoder walks the event; only odd values reach _plain.
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_plain)
    except TypeError:
        # A dictionary keyed by something other than str, int, float or bool.
        return json.dumps(
            _plain_keys(record), ensure_ascii=False, separators=(",", ":"), default=_plain
        )


# Twisted's JSON loader recognises a LogLevel by this class id and turns the
# record back into LogLevel.info etc. (twisted.logger._json).
_LEVEL_UUID = "02E59486-F24D-46AD-8224-3ACDF2A5732A"


class _TimeFormatter:
    """ISO-8601 local time with milliseconds, the date part cached per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, when: float) -> str:
        second = int(when)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))
            offset = time.strftime("%z", time.localtime(second))
            self._suffix = offset
        return f"{self._prefix}.{int((when - second) * 1000):03d}{self._suffix}"


def _format_message(event: dict[str, Any]) -> str:
    """
    The event's message.  Our formats name plain fields only, so the C
    implementation of C{str.format_map} renders them; anything fancier (or a
    missing field) falls back to Twisted's own formatter.
    """
    log_format = event.get("log_format")
    if log_format is None:
        return formatEvent(event)
    try:
        return str(log_format.format_map(event))
    except (KeyError, AttributeError, IndexError, ValueError, TypeError):
        return formatEvent(event)


def event_as_text(event: dict[str, Any], format_time: Callable[[float], str]) -> str:
    """One event as a readable line: time, namespace and level, message."""
    when = event.get("log_time") or time.time()
    level = event.get("log_level")
    level_name = level.name if level is not None else "-"
    text = _format_message(event)
    failure = event.get("log_failure")
    if failure is not None:
        text = f"{text}\n{failure.getTraceback()}"
    return (
        f"{format_time(when)} [{event.get('log_namespace', '-')}#{level_name}] "
        f"{text}\n"
    )


@implementer(ILogObserver)
class FailureTally:
    """
    Counts the failures (logged tracebacks) and critical events one process
    logs, and keeps the last one's description (at most 200 characters).
    """

    def __init__(self) -> None:
        self.count = 0
        self.last = ""

    def __call__(self, event: dict[str, Any]) -> None:
        failure = event.get("log_failure")
        if failure is None and event.get("log_level") != LogLevel.critical:
            return
        self.count += 1
        self.last = (
            f"{failure.type.__name__}: {failure.getErrorMessage()}"
            if failure is not None else _format_message(event)
        )[:200]


#: Every L{LogFiles} of this process counts here: the daemons' entry point
#: (L{twisted_bcr.net.twistd}) exits with a status that says whether any
#: failure was logged, so their supervisor never reads a log to know.
PROCESS_FAILURES = FailureTally()


@implementer(ILogObserver)
class LogFiles:
    """
    The JSON and text log files of one process or node, as one observer.

    Both are opened for appending with L{open_private_append}: created 0600,
    tightened to 0600 if an older run left them looser.

    @raise twisted_bcr.files.UnsafeFileError: a symlink, or something not a
        regular file of ours, is at either name.
    """

    def __init__(
        self,
        directory: str,
        stem: str,
        on_write: Callable[[], None] | None = None,
    ) -> None:
        self.json_path = os.path.join(directory, f"{stem}.json")
        self.text_path = os.path.join(directory, f"{stem}.log")
        # The logs hold the replicated state and every request: 0600, and
        # never through a symlink or into a file someone else planted.
        self._json: IO[str] = open_private_append(self.json_path)
        try:
            self._text: IO[str] = open_private_append(self.text_path)
        except BaseException:
            self._json.close()
            raise
        self._format_time = _TimeFormatter()
        self._on_write = on_write
        self.closed = False

    def __call__(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        PROCESS_FAILURES(event)
        self._json.write(_RECORD_SEPARATOR + event_as_json(event) + "\n")
        self._text.write(event_as_text(event, self._format_time))
        if self._on_write is not None:
            self._on_write()

    def flush(self) -> None:
        """Push everything written so far to the files."""
        if not self.closed:
            self._json.flush()
            self._text.flush()

    def close(self) -> None:
        """Flush and close both files; later events are ignored."""
        if not self.closed:
            self.flush()
            self.closed = True
            self._json.close()
            self._text.close()
