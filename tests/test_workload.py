"""Tests for L{twisted_bcr.workload}, the pseudorandom workload of SPEC §12.1."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_bcr.dictionary import OPERATIONS, apply_operation
from twisted_bcr.workload import pseudorandom

# SPEC §12.1, which matches the seed project's 2017 logs.
SPEC_233_10 = [
    ("get", ("ice",)),
    ("put", ("hello", "hockey")),
    ("slice", ("ice", "0:4")),
    ("get", ("hello",)),
    ("slice", ("moon", "0:4")),
    ("put", ("hello", "walk")),
    ("append", ("country", "hockey")),
    ("put", ("moon", "walk")),
    ("append", ("hello", "India")),
    ("append", ("moon", "India")),
]
SPEC_233_10_RESULTS = [
    "",
    "OK",
    "fail",
    "hockey",
    "fail",
    "OK",
    "fail",
    "OK",
    "OK",
    "OK",
]


class PseudorandomTests(SynchronousTestCase):
    """The generator reproduces SPEC §12.1 and has the properties it promises."""

    def test_spec_example(self) -> None:
        """C{pseudorandom(233, 10)} is exactly the SPEC's list."""
        self.assertEqual(pseudorandom(233, 10), SPEC_233_10)

    def test_spec_example_results(self) -> None:
        """Replaying C{pseudorandom(233, 10)} on an empty dictionary gives the SPEC's results."""
        state: dict[str, str] = {}
        results = [
            apply_operation(state, name, args) for name, args in pseudorandom(233, 10)
        ]
        self.assertEqual(results, SPEC_233_10_RESULTS)

    def test_empty(self) -> None:
        """C{n = 0} gives no operations."""
        self.assertEqual(pseudorandom(5, 0), [])

    def test_reproducible(self) -> None:
        """The same seed gives the same list; another seed gives another list."""
        self.assertEqual(pseudorandom(190, 300), pseudorandom(190, 300))
        self.assertNotEqual(pseudorandom(190, 300), pseudorandom(191, 300))

    def test_private_generator(self) -> None:
        """The global generator neither affects the list nor is advanced by it."""
        self.addCleanup(random.setstate, random.getstate())
        random.seed(1)
        expected_next = random.random()
        random.seed(1)
        first = pseudorandom(233, 10)
        self.assertEqual(random.random(), expected_next)
        random.seed(99)
        self.assertEqual(pseudorandom(233, 10), first)

    @settings(deadline=None)
    @given(seed=st.integers(0, 2**32), n=st.integers(0, 200))
    def test_shape(self, seed: int, n: int) -> None:
        """C{n} valid operations, each type C{n/4} times (plus or minus one)."""
        operations = pseudorandom(seed, n)
        self.assertEqual(len(operations), n)
        for name, args in operations:
            self.assertEqual(len(args), OPERATIONS[name])
        counts = Counter(name for name, _ in operations)
        for name in OPERATIONS:
            self.assertLessEqual(abs(counts[name] - n / 4), 1)
        state: dict[str, str] = {}
        for name, args in operations:
            apply_operation(state, name, args)
