# -*- test-case-name: tests.test_workload -*-
"""
The pseudorandom client workload of SPEC §12.1.

C{pseudorandom(seed, n)} in a case file stands for the list this module
generates.  The algorithm is the seed project's, so results stay comparable
with its 2017 logs; it draws only from a private C{random.Random(seed)}, so two
clients with the same seed get the same list and nothing else in the process
(or another module's use of the global generator) can shift it.
"""

from __future__ import annotations

import random
from typing import Final

from twisted_bcr.dictionary import OperationCall

_KEYS: Final = ("hello", "ice", "moon", "country")
_VALUES: Final = ("world", "hockey", "walk", "India")


def pseudorandom(seed: int, n: int) -> list[OperationCall]:
    """
    Generate the C{n} requests of C{pseudorandom(seed, n)}.

    Each of C{put}, C{append}, C{get} and C{slice(k, '0:4')} occurs about
    C{n/4} times, in an order given by a random permutation.

    @param seed: Seeds the private generator.
    @param n: How many operations to generate (non-negative).
    @return: C{(name, args)} pairs, ready for
        L{twisted_bcr.dictionary.apply_operation}.
    """
    rng = random.Random(seed)
    # The exact sequence of calls on rng (sample, then two randint per
    # element) is what reproduces the seed's logs; do not reorder them.
    permutation = rng.sample(list(range(n)), n)
    operations: list[OperationCall] = []
    for kind in permutation:
        key = _KEYS[rng.randint(0, 3)]
        value = _VALUES[rng.randint(0, 3)]
        selector = kind % 4
        if selector == 0:
            operations.append(("put", (key, value)))
        elif selector == 1:
            operations.append(("append", (key, value)))
        elif selector == 2:
            operations.append(("get", (key,)))
        else:
            operations.append(("slice", (key, "0:4")))
    return operations
