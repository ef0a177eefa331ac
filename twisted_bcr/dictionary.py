# -*- test-case-name: tests.test_dictionary -*-
"""
The replicated object of SPEC §3: a dictionary from strings to strings.

Every replica runs L{apply_operation} for every slot it executes, and clients
and the test driver run it to replay workloads when they validate results, so
it is deliberately small, pure (apart from mutating the state it is given) and
free of I/O.
"""

from __future__ import annotations

import re
from typing import Final

#: An operation together with its arguments, e.g. C{("put", ("movie", "star"))}.
OperationCall = tuple[str, tuple[str, ...]]

#: Operation name -> number of arguments it takes.
OPERATIONS: Final[dict[str, int]] = {"put": 2, "get": 1, "append": 2, "slice": 2}

#: The result of a successful C{put}, C{append} or C{slice}.
OK: Final = "OK"

#: The result of an C{append} or C{slice} that changed nothing.  Lower case on
#: purpose: the course says C{'fail'}; the seed's C{'FAIL'} is not copied.
FAIL: Final = "fail"

# Two non-negative decimal integers around exactly one colon.  Only ASCII
# digits count ("٣".isdecimal() is true, but that is not what the course
# means), and leading zeros are skipped so that a bound with more than 18
# significant digits simply fails to match: no string is that long, and this
# keeps int() away from CPython's limit on digits in int-from-str.
_SLICE_BOUNDS = re.compile(r"0*([0-9]{1,18}):0*([0-9]{1,18})")


def operation_problem(name: str, args: tuple[str, ...]) -> str | None:
    """
    Why L{apply_operation} would refuse C{name(args)}, or None if it would
    not.  The head asks before it gives a request a slot, so a faulty
    client cannot make it burn one on an operation nobody can execute.
    """
    expected = OPERATIONS.get(name)
    if expected is None:
        return str(_unknown(name))
    if len(args) != expected:
        return str(_wrong_count(name, args))
    return None


def apply_operation(state: dict[str, str], name: str, args: tuple[str, ...]) -> str:
    """
    Execute one operation on C{state} and return its result.

    @param state: The dictionary; changed in place by C{put}, and by
        C{append} and C{slice} when they succeed.  On C{'fail'} it is
        untouched.
    @param name: C{put}, C{get}, C{append} or C{slice}.
    @param args: The operation's string arguments (see L{OPERATIONS}).
    @return: C{'OK'}, the value read by C{get} (C{''} for a missing key) or
        C{'fail'}.
    @raise ValueError: For an unknown operation or a wrong argument count.
        Configurations are validated when they are parsed, so this only
        happens with a malformed request from a faulty peer.
    """
    # Plain if/elif on the name: cheaper than a dispatch table of functions
    # for four cases, and this runs on every request on every replica.
    if name == "get":
        if len(args) != 1:
            raise _wrong_count(name, args)
        return state.get(args[0], "")
    if len(args) != 2:
        if name in OPERATIONS:
            raise _wrong_count(name, args)
        raise _unknown(name)
    key, value = args
    if name == "put":
        state[key] = value
        return OK
    if name == "append":
        current = state.get(key)
        if current is None:
            return FAIL
        state[key] = current + value
        return OK
    if name == "slice":
        current = state.get(key)
        if current is None:
            return FAIL
        bounds = _SLICE_BOUNDS.fullmatch(value)
        if bounds is None:
            return FAIL
        start, end = int(bounds.group(1)), int(bounds.group(2))
        if not start <= end <= len(current):
            return FAIL
        state[key] = current[start:end]
        return OK
    raise _unknown(name)


def _unknown(name: str) -> ValueError:
    """Build the error for an operation name outside L{OPERATIONS}."""
    return ValueError(
        f"unknown operation {name!r} (valid: {', '.join(sorted(OPERATIONS))})"
    )


def _wrong_count(name: str, args: tuple[str, ...]) -> ValueError:
    """Build the error for a known operation given the wrong number of arguments."""
    return ValueError(
        f"operation {name!r} takes {OPERATIONS[name]} argument(s), got {len(args)}"
    )
