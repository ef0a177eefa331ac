"""Tests for L{twisted_bcr.dictionary}, the replicated object of SPEC §3."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_bcr.dictionary import FAIL, OK, OPERATIONS, apply_operation, operation_problem


def run(state: dict[str, str], *operations: tuple[str, tuple[str, ...]]) -> list[str]:
    """Apply C{operations} in order to C{state} and return their results."""
    return [apply_operation(state, name, args) for name, args in operations]


class OperationTableTests(SynchronousTestCase):
    """The public table of operations and argument counts."""

    def test_table(self) -> None:
        """The four operations of SPEC §3 with their argument counts, nothing else."""
        self.assertEqual(OPERATIONS, {"put": 2, "get": 1, "append": 2, "slice": 2})

    def test_result_words(self) -> None:
        """Success is C{'OK'} and failure is lower-case C{'fail'}, not the seed's C{'FAIL'}."""
        self.assertEqual((OK, FAIL), ("OK", "fail"))


class SpecExampleTests(SynchronousTestCase):
    """Every example listed in SPEC §3."""

    def test_put_append_get(self) -> None:
        """put, append with a leading blank, get gives C{'star wars'}."""
        state: dict[str, str] = {}
        results = run(
            state,
            ("put", ("movie", "star")),
            ("append", ("movie", " wars")),
            ("get", ("movie",)),
        )
        self.assertEqual(results, ["OK", "OK", "star wars"])
        self.assertEqual(state, {"movie": "star wars"})

    def test_put_slice_get(self) -> None:
        """Slicing C{'luke skywalker'} with C{'0:4'} leaves C{'luke'}."""
        state: dict[str, str] = {}
        results = run(
            state,
            ("put", ("jedi", "luke skywalker")),
            ("slice", ("jedi", "0:4")),
            ("get", ("jedi",)),
        )
        self.assertEqual(results, ["OK", "OK", "luke"])

    def test_get_missing(self) -> None:
        """get on an empty dictionary returns the empty string."""
        self.assertEqual(apply_operation({}, "get", ("movie",)), "")

    def test_append_missing(self) -> None:
        """append to a missing key fails and adds nothing."""
        state: dict[str, str] = {}
        self.assertEqual(apply_operation(state, "append", ("movie", "stars")), "fail")
        self.assertEqual(state, {})

    def test_slice_missing(self) -> None:
        """slice of a missing key fails and adds nothing."""
        state: dict[str, str] = {}
        self.assertEqual(apply_operation(state, "slice", ("movie", "0:4")), "fail")
        self.assertEqual(state, {})

    def test_slice_past_end(self) -> None:
        """slice C{'8:10'} of the 9-character C{'star wars'} fails and changes nothing."""
        state: dict[str, str] = {}
        results = run(
            state,
            ("put", ("movie", "star")),
            ("append", ("movie", " wars")),
            ("slice", ("movie", "8:10")),
        )
        self.assertEqual(results, ["OK", "OK", "fail"])
        self.assertEqual(state, {"movie": "star wars"})

    def test_slice_middle(self) -> None:
        """slice C{'3:6'} of C{'star wars'} succeeds and leaves C{'r w'}."""
        state = {"movie": "star wars"}
        self.assertEqual(apply_operation(state, "slice", ("movie", "3:6")), "OK")
        self.assertEqual(state, {"movie": "r w"})


class OperationTests(SynchronousTestCase):
    """Details of each operation beyond the SPEC examples."""

    def test_put_overwrites(self) -> None:
        """put replaces an existing value and always returns C{'OK'}."""
        state = {"k": "old"}
        self.assertEqual(apply_operation(state, "put", ("k", "new")), "OK")
        self.assertEqual(state, {"k": "new"})

    def test_get_empty_value(self) -> None:
        """get of a key holding C{''} returns C{''}, like a missing key (intended)."""
        self.assertEqual(apply_operation({"k": ""}, "get", ("k",)), "")

    def test_get_does_not_change_state(self) -> None:
        """get leaves the dictionary alone, including for a missing key."""
        state = {"k": "v"}
        apply_operation(state, "get", ("k",))
        apply_operation(state, "get", ("other",))
        self.assertEqual(state, {"k": "v"})

    def test_append_to_empty_value(self) -> None:
        """append succeeds on a key that is present with an empty value."""
        state = {"k": ""}
        self.assertEqual(apply_operation(state, "append", ("k", "x")), "OK")
        self.assertEqual(state, {"k": "x"})

    def test_values_kept_exactly(self) -> None:
        """Blanks and quotes in values are stored verbatim."""
        state: dict[str, str] = {}
        apply_operation(state, "put", ("k", "  'a' "))
        self.assertEqual(state, {"k": "  'a' "})


class SliceValidityTests(SynchronousTestCase):
    """The slice rule of SPEC §3: C{'i:j'} with C{0 <= i <= j <= len}, else C{'fail'}."""

    def check(self, bounds: str, expected_value: str | None) -> None:
        """Slice C{'abcdef'} by C{bounds}; C{None} means the slice must fail."""
        state = {"k": "abcdef"}
        result = apply_operation(state, "slice", ("k", bounds))
        if expected_value is None:
            self.assertEqual((result, state), ("fail", {"k": "abcdef"}), bounds)
        else:
            self.assertEqual((result, state), ("OK", {"k": expected_value}), bounds)

    def test_valid(self) -> None:
        """In-range bounds, the full range and leading zeros are accepted."""
        self.check("0:6", "abcdef")
        self.check("1:3", "bc")
        self.check("6:6", "")
        self.check("00:02", "ab")

    def test_empty_range(self) -> None:
        """C{i == j} is valid and leaves the empty string."""
        self.check("2:2", "")

    def test_end_beyond_length(self) -> None:
        """C{j > len} fails even though Python slicing would clamp it."""
        self.check("0:7", None)
        self.check("7:7", None)

    def test_start_after_end(self) -> None:
        """C{i > j} fails."""
        self.check("4:2", None)

    def test_malformed(self) -> None:
        """Empty bounds, steps, negatives, signs, blanks, junk and non-ASCII digits fail."""
        for bounds in [
            "",
            ":",
            ":4",
            "0:",
            "0:4:1",
            "0::4",
            "-1:4",
            "0:-1",
            "+0:4",
            " 0:4",
            "0:4 ",
            "0 : 4",
            "0:4\n",
            "a:b",
            "0.0:4",
            "04",
            "\u0660:\u0664",
        ]:
            self.check(bounds, None)

    def test_huge_bounds(self) -> None:
        """Bounds with thousands of digits fail instead of raising from int()."""
        self.check("0:" + "9" * 5000, None)
        self.check("0" * 5000 + "1:2", "b")


class ErrorTests(SynchronousTestCase):
    """Malformed operations raise ValueError rather than returning a result."""

    def test_unknown_operation(self) -> None:
        """An unknown name raises ValueError naming it, whatever the argument count."""
        for args in [(), ("k",), ("k", "v"), ("k", "v", "w")]:
            error = self.assertRaises(ValueError, apply_operation, {}, "reconfig", args)
            self.assertIn("reconfig", str(error))

    def test_wrong_argument_count(self) -> None:
        """A known operation with the wrong number of arguments raises ValueError."""
        self.assertRaises(ValueError, apply_operation, {}, "get", ())
        self.assertRaises(ValueError, apply_operation, {}, "get", ("a", "b"))
        self.assertRaises(ValueError, apply_operation, {}, "put", ("a",))
        self.assertRaises(ValueError, apply_operation, {}, "append", ("a", "b", "c"))
        self.assertRaises(ValueError, apply_operation, {}, "slice", ())

    def test_error_leaves_state(self) -> None:
        """A rejected operation does not touch the state."""
        state = {"k": "v"}
        self.assertRaises(ValueError, apply_operation, state, "put", ("k",))
        self.assertEqual(state, {"k": "v"})


class OperationProblemTests(SynchronousTestCase):
    """
    L{operation_problem} says beforehand, without a state, whether
    L{apply_operation} would refuse an operation (the head asks it before
    giving a request a slot).
    """

    def test_executable(self) -> None:
        """Every operation of the table with its argument count has no problem, whatever the values."""
        for name, count in OPERATIONS.items():
            self.assertIsNone(operation_problem(name, ("x",) * count))
        # A slice text that fails at execution is still executable.
        self.assertIsNone(operation_problem("slice", ("k", "not a range")))

    def test_unknown(self) -> None:
        """An unknown name is a problem naming it, as apply_operation's error does."""
        for args in [(), ("x",), ("k", "v")]:
            problem = operation_problem("foo", args)
            self.assertIsNotNone(problem)
            error = self.assertRaises(ValueError, apply_operation, {}, "foo", args)
            self.assertEqual(problem, str(error))

    def test_wrong_count(self) -> None:
        """A known operation with the wrong argument count is the same problem apply_operation raises."""
        for name, args in [("get", ()), ("get", ("a", "b")), ("put", ("a",)), ("slice", ())]:
            problem = operation_problem(name, args)
            self.assertIsNotNone(problem)
            error = self.assertRaises(ValueError, apply_operation, {}, name, args)
            self.assertEqual(problem, str(error))

    @given(
        st.sampled_from(sorted(OPERATIONS)) | st.text(max_size=8),
        st.lists(st.text(max_size=4), max_size=3).map(tuple),
    )
    def test_agrees_with_apply(self, name: str, args: tuple[str, ...]) -> None:
        """No problem exactly when apply_operation does not raise."""
        try:
            apply_operation({}, name, args)
        except ValueError as e:
            self.assertEqual(operation_problem(name, args), str(e))
        else:
            self.assertIsNone(operation_problem(name, args))


_text = st.text(max_size=12)


class PropertyTests(SynchronousTestCase):
    """Properties that hold for arbitrary keys, values and slice texts."""

    @settings(deadline=None)
    @given(
        value=_text,
        bounds=st.one_of(_text, st.from_regex(r"\A[0-9]{1,2}:[0-9]{1,2}\Z")),
    )
    def test_slice_total(self, value: str, bounds: str) -> None:
        """slice never raises; on C{'fail'} nothing changes, on C{'OK'} it is a Python slice."""
        state = {"k": value}
        result = apply_operation(state, "slice", ("k", bounds))
        self.assertIn(result, ("OK", "fail"))
        if result == "fail":
            self.assertEqual(state, {"k": value})
        else:
            start, end = (int(bound) for bound in bounds.split(":"))
            self.assertTrue(0 <= start <= end <= len(value))
            self.assertEqual(state, {"k": value[start:end]})

    @settings(deadline=None)
    @given(value=_text, start=st.integers(0, 15), end=st.integers(0, 15))
    def test_slice_rule(self, value: str, start: int, end: int) -> None:
        """Well-formed bounds succeed exactly when C{0 <= i <= j <= len}."""
        state = {"k": value}
        result = apply_operation(state, "slice", ("k", f"{start}:{end}"))
        self.assertEqual(result == "OK", start <= end <= len(value))

    @settings(deadline=None)
    @given(state=st.dictionaries(_text, _text, max_size=4), key=_text, value=_text)
    def test_append_fails_only_for_missing(
        self, state: dict[str, str], key: str, value: str
    ) -> None:
        """append concatenates for a present key and otherwise fails without change."""
        before = dict(state)
        result = apply_operation(state, "append", (key, value))
        if key in before:
            self.assertEqual(result, "OK")
            self.assertEqual(state, {**before, key: before[key] + value})
        else:
            self.assertEqual(result, "fail")
            self.assertEqual(state, before)

    @settings(deadline=None)
    @given(state=st.dictionaries(_text, _text, max_size=4), key=_text, value=_text)
    def test_put_then_get(self, state: dict[str, str], key: str, value: str) -> None:
        """get right after put returns the value put."""
        self.assertEqual(apply_operation(state, "put", (key, value)), "OK")
        self.assertEqual(apply_operation(state, "get", (key,)), value)
