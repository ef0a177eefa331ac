# -*- test-case-name: tests.test_cli -*-
"""
The example cases shipped in the package (C{etc/cases/} of the source tree,
C{twisted_bcr/cases/} once installed), so that C{bcr run} works from any
directory and from the wheel.

A case argument names a file when one exists at that path; otherwise it may
name a packaged case by its file name, with or without C{.txt}
(C{bcr run perform900}).
"""

from __future__ import annotations

import os
from importlib.resources import files

from attrs import frozen

from twisted_bcr.config import Case, CaseError, parse_case

__all__ = ["Example", "cases_directory", "examples", "resolve_case"]


def cases_directory() -> str:
    """Where the packaged cases are (a real directory: the package is never zipped)."""
    return str(files("twisted_bcr").joinpath("cases"))


@frozen
class Example:
    """One packaged case, as C{bcr cases} lists it."""

    name: str
    path: str
    summary: str


def resolve_case(argument: str) -> str:
    """The path of the case C{argument} names: a file, else a packaged case."""
    if os.path.exists(argument) or os.sep in argument:
        return argument
    stem = argument[:-4] if argument.endswith(".txt") else argument
    packaged = os.path.join(cases_directory(), f"{stem}.txt")
    return packaged if os.path.isfile(packaged) else argument


def examples() -> list[Example]:
    """Every packaged case, by name, with a one-line summary of what it runs."""
    found = []
    directory = cases_directory()
    for entry in sorted(os.listdir(directory)):
        if not entry.endswith(".txt"):
            continue
        path = os.path.join(directory, entry)
        try:
            summary = _summary(parse_case(path))
        except CaseError as e:
            summary = f"unreadable: {e}"
        found.append(Example(entry[:-4], path, summary))
    return found


def _summary(case: Case) -> str:
    requests = sum(len(w) for w in case.workloads)
    pairs = sum(len(p) for p in case.failures.values())
    failures = f"{pairs} failure pair(s)" if pairs else "no failures"
    return (
        f"t={case.t}, {case.num_client} client(s), {requests} request(s), {failures}"
    )
