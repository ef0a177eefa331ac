# -*- test-case-name: tests.test_throttle -*-
"""
Keeping a hostile peer out of our log files.

Two tools for every place that logs something a peer caused:

  - L{clip} renders attacker-controlled text (an error message that quotes
    input, a name from a frame) as one short printable line, so it can
    neither forge log lines, nor drive a terminal, nor fill the disk one
    line at a time.
  - L{Throttle} limits how many lines each key (a connection, a peer, a kind
    of event) may write, and counts the lines it held back so the next line
    can say so.

Both are pure: nothing here imports a reactor.  The clock is passed in, so
the protocol core, which must not touch C{twisted.internet}, can use them
with its environment's time, and tests with a C{Clock}.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from attrs import define, field
from attrs.validators import ge, gt, instance_of

__all__ = ["Throttle", "clip"]


def _escape_byte(value: int) -> str:
    """One byte as C{repr} shows it inside C{b'...'}."""
    if value == 0x27:
        return "\\'"
    if value == 0x5C:
        return "\\\\"
    if 0x20 <= value < 0x7F:
        return chr(value)
    return {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}.get(value, f"\\x{value:02x}")


_BYTE_ESCAPES = tuple(_escape_byte(value) for value in range(256))


def _escape_char(char: str) -> str:
    """
    One character as C{repr} would show it: itself when printable, otherwise
    an escape.  Every line break (C{\\n}, C{\\r}, C{\\x85}, C{\\u2028}, ...),
    control, format character (bidi overrides) and lone surrogate is
    non-printable, so the result is one line that always encodes as UTF-8.
    The backslash is doubled so that an escape in the output always means
    the character was really there.
    """
    if char.isprintable() and char != "\\":
        return char
    return repr(char)[1:-1]


def clip(text: object, limit: int = 160) -> str:
    """
    A printable, single-line rendering of C{text}, at most C{limit}
    characters long.

    Strings are escaped the way C{repr} escapes them, without the quotes;
    bytes are shown as their C{repr} (C{b'...'}); anything else as its
    C{str()}, escaped.  When the rendering would be longer than C{limit},
    it is cut (never inside an escape) and ends with C{...[N more chars]}
    (or C{bytes}), N counting the characters or bytes of C{text} not shown.
    Only about C{limit} characters of C{text} are ever looked at, so clipping
    a 4 MiB string costs no more than clipping a short one.

    @param limit: The longest result.  A limit too small to hold even the
        suffix gives the suffix alone, which is then the only case where
        the result is longer than C{limit}.
    @raise ValueError: C{limit} is negative.
    """
    if limit < 0:
        raise ValueError("limit must not be negative")
    # Every unit renders as at least one character, so more than `limit`
    # units can never fit, and the first `limit` are all we need to escape.
    if isinstance(text, bytes | bytearray | memoryview):
        raw = bytes(text)
        pieces = [_BYTE_ESCAPES[value] for value in raw[:limit]]
        return _fit(pieces, len(raw), limit, "bytes", "b'", "'")
    if isinstance(text, str):
        string = text
    else:
        try:
            string = str(text)
        except Exception:
            # Whatever made str() fail, the caller wanted a line, not a traceback.
            string = f"<unprintable {type(text).__name__}>"
    pieces = [_escape_char(char) for char in string[:limit]]
    return _fit(pieces, len(string), limit, "chars", "", "")


def _fit(
    pieces: list[str], total: int, limit: int, unit_name: str, opening: str, closing: str
) -> str:
    """
    The escaped C{pieces} of the first units of C{total}, between C{opening}
    and C{closing}, cut to C{limit} characters with a suffix if need be.
    """
    frame = len(opening) + len(closing)
    if total <= limit and frame + sum(map(len, pieces)) <= limit:
        return opening + "".join(pieces) + closing
    # The suffix for cutting everything is the longest one we can need.
    budget = limit - frame - len(_suffix(total, unit_name))
    if budget < 0:
        return _suffix(total, unit_name)
    shown = used = 0
    for piece in pieces:
        if used + len(piece) > budget:
            break
        used += len(piece)
        shown += 1
    return opening + "".join(pieces[:shown]) + closing + _suffix(total - shown, unit_name)


def _suffix(cut: int, unit_name: str) -> str:
    return f"...[{cut} more {unit_name}]"


@define
class _Bucket:
    """One key's tokens, when they were last topped up, and what it missed."""

    tokens: float
    updated: float
    suppressed: int = 0


@define
class Throttle:
    """
    Per-key rate limits for log lines, with a count of what was held back.

    Each key has a token bucket: it starts full with C{burst} tokens, gains
    C{burst} tokens per C{interval_s} seconds up to C{burst}, and each
    allowed line takes one.  So a key writes at most C{burst} lines at once
    and, in any period of T seconds, at most C{burst * (1 + T / interval_s)}
    lines.  A token bucket rather than fixed windows because it has no
    window boundary at which a flood gets two bursts back to back.

    Memory is bounded: at most C{max_keys} keys are tracked, and a new key
    beyond that evicts the least recently used one.  An evicted key starts
    again with a full bucket, so keys should be chosen by the caller from a
    small set (this connection, this kind of event), never taken from what a
    peer sent, or a peer could mint keys to get a fresh burst each time.

    A clock that goes backwards (C{now} is often wall-clock time) gives no
    tokens, and the time it went back is not credited again when it catches
    up.

    @ivar now: Returns the current time in seconds (C{reactor.seconds},
        C{Clock.seconds}, an environment's C{now}).
    """

    now: Callable[[], float]
    burst: int = field(default=10, validator=[instance_of(int), ge(1)])
    interval_s: float = field(default=10.0, validator=gt(0))
    max_keys: int = field(default=1024, validator=[instance_of(int), ge(1)])
    _buckets: OrderedDict[str, _Bucket] = field(init=False, factory=OrderedDict)

    @property
    def keys_tracked(self) -> int:
        """How many keys the throttle currently remembers."""
        return len(self._buckets)

    def allow(self, key: str) -> int | None:
        """
        Whether a line for C{key} may be written now.

        @return: L{None} if the line must be suppressed; otherwise how many
            lines for C{key} were suppressed since the last allowed one
            (usually 0), for the caller to report as "N similar lines
            suppressed".
        """
        now = self.now()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), updated=now)
        else:
            self._buckets.move_to_end(key)
            if now > bucket.updated:
                # Multiply before dividing: exact for the round numbers
                # configurations use.
                refill = (now - bucket.updated) * self.burst / self.interval_s
                bucket.tokens = min(float(self.burst), bucket.tokens + refill)
                bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            suppressed, bucket.suppressed = bucket.suppressed, 0
            return suppressed
        bucket.suppressed += 1
        return None

    def forget(self, key: str) -> int:
        """
        Stop tracking C{key} (its connection is gone, say).

        @return: How many lines for C{key} were suppressed and never
            reported, for a last summary line.
        """
        bucket = self._buckets.pop(key, None)
        return 0 if bucket is None else bucket.suppressed
