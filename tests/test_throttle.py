"""
Tests for L{twisted_bcr.throttle}: hostile text rendered harmless by C{clip},
and log lines rate-limited per key by C{Throttle} on an injected clock.
"""

from __future__ import annotations

import sys

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_bcr.throttle import Throttle, clip


class ClipTests(SynchronousTestCase):
    """clip() turns anything into one short printable line."""

    def test_plain_text_unchanged(self) -> None:
        """Short printable text comes back as it is."""
        self.assertEqual(clip("unknown tag 254"), "unknown tag 254")
        self.assertEqual(clip("réplica ünïcode"), "réplica ünïcode")

    def test_newlines_and_controls_escaped(self) -> None:
        """A forged second log line or a terminal escape stays visible but inert."""
        self.assertEqual(
            clip("bad\nFAKE event=bcr.ok\r\x1b[2J\x00"),
            "bad\\nFAKE event=bcr.ok\\r\\x1b[2J\\x00",
        )

    def test_backslash_escaped(self) -> None:
        """A literal backslash is doubled, so an escape in the output is never ambiguous."""
        self.assertEqual(clip("a\\nb"), "a\\\\nb")
        self.assertNotEqual(clip("a\\nb"), clip("a\nb"))

    def test_unicode_line_breaks_and_bidi_escaped(self) -> None:
        """Unicode line separators and direction overrides are escaped too."""
        self.assertEqual(clip("a\u2028b\u202ec\x85"), "a\\u2028b\\u202ec\\x85")

    def test_lone_surrogate_escaped(self) -> None:
        """A lone surrogate is escaped, so the line can always be written as UTF-8."""
        self.assertEqual(clip("x\ud800"), "x\\ud800")

    def test_bytes_rendered_like_repr(self) -> None:
        """Bytes show printable ASCII as it is and everything else as \\x escapes."""
        self.assertEqual(clip(b"ab\xff\n'\"\\"), "b'ab\\xff\\n\\'\"\\\\'")
        self.assertEqual(clip(bytearray(b"\x00")), "b'\\x00'")

    def test_other_objects_use_str(self) -> None:
        """Anything else is rendered with str() and then escaped."""
        self.assertEqual(clip(ValueError("bad\nthing")), "bad\\nthing")
        self.assertEqual(clip(None), "None")
        self.assertEqual(clip(12), "12")

    def test_unprintable_object(self) -> None:
        """An object whose str() raises still gives a line instead of an exception."""

        class Hostile:
            def __str__(self) -> str:
                raise RuntimeError("no")

        self.assertEqual(clip(Hostile()), "<unprintable Hostile>")

    def test_long_text_truncated_with_count(self) -> None:
        """Text over the limit is cut, and the suffix says how much was cut."""
        result = clip("x" * 1000, limit=50)
        self.assertLessEqual(len(result), 50)
        shown = result.count("x")
        self.assertTrue(result.endswith(f"...[{1000 - shown} more chars]"))
        self.assertEqual(result, "x" * shown + f"...[{1000 - shown} more chars]")

    def test_truncated_bytes_counted_in_bytes(self) -> None:
        """Cut bytes are counted as bytes."""
        result = clip(b"\xff" * 100, limit=40)
        self.assertLessEqual(len(result), 40)
        shown = result.count("\\xff")
        self.assertEqual(result, "b'" + "\\xff" * shown + f"'...[{100 - shown} more bytes]")

    def test_text_exactly_at_limit_kept(self) -> None:
        """Text of exactly the limit is not cut."""
        self.assertEqual(clip("y" * 160), "y" * 160)
        self.assertIn("more chars", clip("y" * 161))

    def test_escape_never_split(self) -> None:
        """Truncation never cuts an escape sequence in half."""
        result = clip("\n" * 100, limit=41)
        body = result.split("...[")[0]
        self.assertEqual(body, "\\n" * (len(body) // 2))
        self.assertEqual(len(body) % 2, 0)

    def test_tiny_limit(self) -> None:
        """A limit too small for the suffix still gives just the suffix."""
        self.assertEqual(clip("abcdef", limit=3), "...[6 more chars]")
        self.assertEqual(clip("", limit=0), "")
        self.assertRaises(ValueError, clip, "x", -1)

    def test_huge_text_cheap(self) -> None:
        """Only about limit characters of a huge string are ever escaped."""
        huge = "\n" * (50 * 1024 * 1024)
        result = clip(huge)
        self.assertLessEqual(len(result), 160)
        self.assertIn(f"{len(huge) - result.count(chr(92) + 'n')} more chars", result)

    @given(st.one_of(st.text(), st.binary()), st.integers(0, 300))
    def test_always_one_bounded_printable_line(self, text: str | bytes, limit: int) -> None:
        """Whatever the input, the result is one printable line within the limit."""
        result = clip(text, limit)
        self.assertTrue(result.isprintable(), repr(result))
        self.assertEqual(len(result.splitlines()), min(1, len(result)))
        result.encode("utf-8")
        if len(result) > limit:
            # Only when the limit cannot even hold the suffix.
            self.assertRegex(result, r"^\.\.\.\[\d+ more (chars|bytes)\]$")

    def test_every_code_point(self) -> None:
        """No code point survives unescaped unless it is printable."""
        every = "".join(map(chr, range(sys.maxunicode + 1)))
        rendered = clip(every, limit=10 * len(every))
        self.assertNotIn("more chars", rendered)
        self.assertTrue(rendered.isprintable())
        self.assertEqual(len(rendered.splitlines()), 1)
        rendered.encode("utf-8")


class ThrottleTests(SynchronousTestCase):
    """Throttle lets a burst through, then one line per refill, counting the rest."""

    def make(self, **kwargs: object) -> tuple[Clock, Throttle]:
        """A throttle on a fresh Clock."""
        clock = Clock()
        return clock, Throttle(clock.seconds, **kwargs)  # type: ignore[arg-type]

    def test_defaults(self) -> None:
        """The defaults are a burst of 10 per 10 seconds over at most 1024 keys."""
        throttle = Throttle(lambda: 0.0)
        self.assertEqual((throttle.burst, throttle.interval_s, throttle.max_keys), (10, 10.0, 1024))

    def test_burst_then_suppressed(self) -> None:
        """The first burst lines are allowed with nothing suppressed, then None."""
        clock, throttle = self.make(burst=3, interval_s=3.0)
        self.assertEqual([throttle.allow("k") for _ in range(5)], [0, 0, 0, None, None])

    def test_flood_bounded(self) -> None:
        """A flood of 100 000 lines at one instant lets exactly the burst through."""
        clock, throttle = self.make()
        allowed = [n for n in (throttle.allow("peer") for _ in range(100_000)) if n is not None]
        self.assertEqual(allowed, [0] * 10)

    def test_suppressed_count_reported_on_next_allowed(self) -> None:
        """After a refill, the next allowed line says how many were suppressed."""
        clock, throttle = self.make(burst=2, interval_s=2.0)
        for _ in range(2 + 7):
            throttle.allow("k")
        self.assertIsNone(throttle.allow("k"))
        clock.advance(1.0)
        self.assertEqual(throttle.allow("k"), 8)
        self.assertIsNone(throttle.allow("k"))
        clock.advance(1.0)
        self.assertEqual(throttle.allow("k"), 1)

    def test_refill_rate(self) -> None:
        """Tokens come back at burst per interval, never beyond the burst."""
        clock, throttle = self.make(burst=10, interval_s=10.0)
        for _ in range(10):
            throttle.allow("k")
        clock.advance(0.5)
        self.assertIsNone(throttle.allow("k"))
        clock.advance(0.5)
        self.assertEqual(throttle.allow("k"), 1)
        # A long silence refills the bucket to the burst, not more.
        clock.advance(1000.0)
        results = [throttle.allow("k") for _ in range(12)]
        self.assertEqual(results, [0] * 10 + [None, None])

    def test_sustained_rate_bounded(self) -> None:
        """Over a long flood, allowed lines are at most burst plus the refill."""
        clock, throttle = self.make(burst=5, interval_s=10.0)
        allowed = 0
        for _ in range(10_000):
            clock.advance(0.01)
            if throttle.allow("k") is not None:
                allowed += 1
        # 100 seconds at 0.5 lines/second, plus the initial burst.
        self.assertLessEqual(allowed, 5 + 50 + 1)
        self.assertGreaterEqual(allowed, 5 + 50 - 1)

    def test_keys_independent(self) -> None:
        """One key's flood does not use up another key's burst."""
        clock, throttle = self.make(burst=1)
        self.assertEqual(throttle.allow("a"), 0)
        self.assertIsNone(throttle.allow("a"))
        self.assertEqual(throttle.allow("b"), 0)

    def test_clock_going_backwards(self) -> None:
        """A clock stepped back gives no extra tokens, and stepping forward again no double refill."""
        now = [100.0]
        throttle = Throttle(lambda: now[0], burst=1, interval_s=10.0)
        self.assertEqual(throttle.allow("k"), 0)
        now[0] = 50.0
        self.assertIsNone(throttle.allow("k"))
        now[0] = 105.0
        self.assertIsNone(throttle.allow("k"))
        now[0] = 110.0
        self.assertEqual(throttle.allow("k"), 2)

    def test_memory_bounded(self) -> None:
        """A million distinct keys leave at most max_keys tracked."""
        clock, throttle = self.make(max_keys=16)
        for index in range(100_000):
            throttle.allow(f"peer-{index}")
        self.assertEqual(throttle.keys_tracked, 16)

    def test_evicts_least_recently_used(self) -> None:
        """The key evicted is the one used longest ago."""
        clock, throttle = self.make(burst=1, max_keys=2)
        throttle.allow("a")
        throttle.allow("b")
        throttle.allow("a")  # a is now the more recent
        throttle.allow("c")  # evicts b
        self.assertEqual(throttle.keys_tracked, 2)
        self.assertIsNone(throttle.allow("a"))
        self.assertEqual(throttle.allow("b"), 0)  # forgotten: a fresh burst

    def test_forget_returns_suppressed(self) -> None:
        """forget() drops a key and returns what was suppressed and never reported."""
        clock, throttle = self.make(burst=1)
        throttle.allow("k")
        throttle.allow("k")
        throttle.allow("k")
        self.assertEqual(throttle.forget("k"), 2)
        self.assertEqual(throttle.keys_tracked, 0)
        self.assertEqual(throttle.forget("k"), 0)
        self.assertEqual(throttle.allow("k"), 0)

    def test_invalid_parameters(self) -> None:
        """Burst, interval and key count must be positive."""
        for kwargs in ({"burst": 0}, {"interval_s": 0.0}, {"max_keys": 0}):
            self.assertRaises(ValueError, Throttle, lambda: 0.0, **kwargs)
