# -*- test-case-name: tests.test_config -*-
"""
Read test cases written in the course's configuration format (SPEC §10).

A case file says how many faults to tolerate, what each client sends and
which failures to inject into which replica.  L{parse_case} turns one into a
frozen L{Case} and rejects every mistake it can see up front (unknown
operations, triggers or failures, wrong argument counts, missing keys), so a
bad file stops an experiment at start-up with one line naming the file, the
line and the offending text, rather than half-way through a run.

The parser is pure: it does no logging.  Things worth a warning (a key given
twice, a failure for a replica that does not exist) are returned in
L{Case.warnings}, and unknown keys, which SPEC §10.2 says to ignore with only a
debug message, in L{Case.ignored_keys}; the caller logs them.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from typing import Final

import attrs

from twisted_bcr.dictionary import OPERATIONS, OperationCall
from twisted_bcr.workload import pseudorandom

#: Trigger name -> number of integer arguments (SPEC §11.1).  Those with two
#: take C{(c, m)}: a client and a message number; the others take C{(m)}.
TRIGGERS: Final[dict[str, int]] = {
    "client_request": 2,
    "forwarded_request": 2,
    "shuttle": 2,
    "result_shuttle": 2,
    "wedge_request": 1,
    "new_configuration": 1,
    "checkpoint": 1,
    "completed_checkpoint": 1,
    "get_running_state": 1,
    "catch_up": 1,
}

#: Failure name -> number of integer arguments (SPEC §11.2).
FAILURES: Final[dict[str, int]] = {
    "change_operation": 0,
    "change_result": 0,
    "drop_result_stmt": 0,
    "crash": 0,
    "truncate_history": 1,
    "sleep": 1,
    "drop": 0,
    "increment_slot": 0,
    "extra_op": 0,
    "invalid_order_sig": 0,
    "invalid_result_sig": 0,
    "drop_checkpt_stmts": 0,
}

#: The most a case may ask for (docs/DECISIONS.md "Case files"): beyond
#: these a run would exhaust the machine (memory for the workloads, 2 (2t+1)
#: processes) before it could say anything useful.
MAX_T: Final = 10
MAX_CLIENTS: Final = 256
#: Requests in all workloads together.
MAX_REQUESTS: Final = 1_000_000

DEFAULT_TIMEOUT_MS: Final = 3000
DEFAULT_CHECKPT_INTERVAL: Final = 100

# Names that were once valid.  Case files still contain them (the course's own
# example has omit_send()), so the error says why they are refused.
_WITHDRAWN: Final[dict[str, str]] = {
    "omit_send": "withdrawn by the course on 2017-09-12; use drop() at the receiver",
}

_INTEGER_KEYS: Final = (
    "t",
    "num_client",
    "client_timeout",
    "head_timeout",
    "nonhead_timeout",
    "checkpt_interval",
)
_STRING_KEYS: Final = (
    "test_case_name", "hosts", "client_hosts", "replica_hosts", "fault_plugins",
)

# name(arguments) with the arguments possibly empty.  Greedy up to the last
# ')' so that a value containing ')' stays inside the arguments.
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)", re.DOTALL)
# One trigger/failure pair; neither call may contain parentheses.
_PAIR = re.compile(
    r"([A-Za-z_][A-Za-z0-9_]*)\s*\(([^()]*)\)\s*,\s*"
    r"([A-Za-z_][A-Za-z0-9_]*)\s*\(([^()]*)\)"
)
_PSEUDORANDOM = re.compile(r"pseudorandom\s*\(\s*([0-9]+)\s*,\s*([0-9]+)\s*\)")
_INDEXED_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\[(.*)\]")
# Allow leading zeros but bound the significant digits: this keeps int() away
# from CPython's digit limit, and no sane count or time needs more.
_INTEGER = re.compile(r"0*([0-9]{1,18})")
_QUOTES: Final = "'\""


class CaseError(ValueError):
    """
    A case file (or a failure-scenario text) that cannot be used.

    C{str()} is always one line, C{"<where>: <problem>: <offending text>"},
    where C{<where>} is C{"<file>:<line>"}, or just C{"<file>"} for a problem
    with the whole file such as a missing required key (which then has no
    offending text).
    """

    def __init__(self, where: str, problem: str, text: str | None = None) -> None:
        super().__init__(where, problem, text)
        self.where = where
        self.problem = problem
        self.text = text

    def __str__(self) -> str:
        message = f"{self.where}: {self.problem}"
        if self.text is not None:
            message += f": {self.text}"
        # One line even when the offending text came over the network.
        return message.replace("\r", "\\r").replace("\n", "\\n")


@attrs.frozen
class FaultPair:
    """One C{trigger(args), failure(args)} pair of a C{failures[c,r]} value."""

    trigger: str
    trigger_args: tuple[int, ...]
    failure: str
    failure_args: tuple[int, ...]
    #: Canonical text, e.g. C{"client_request(2,1), crash()"}; SPEC §11
    #: requires logging an injected failure with exactly this pair.
    text: str

    @property
    def trigger_text(self) -> str:
        """The trigger alone, e.g. C{"shuttle(0,1)"}."""
        return _call_text(self.trigger, self.trigger_args)

    @property
    def failure_text(self) -> str:
        """The failure alone, e.g. C{"change_operation()"}."""
        return _call_text(self.failure, self.failure_args)

    def __str__(self) -> str:
        return self.text


@attrs.frozen(kw_only=True)
class Case:
    """
    One parsed test case.

    Holds dicts, so do not hash it (equality works).
    """

    #: The file it came from (or C{"<string>"}).
    path: str
    #: C{test_case_name}, or the file's base name without extension.
    name: str
    #: Faults tolerated; a configuration has C{2t+1} replicas.
    t: int
    num_client: int
    #: Client C{i}'s operations, with C{pseudorandom(seed, n)} expanded.
    workloads: tuple[tuple[OperationCall, ...], ...]
    #: Client C{i}'s workload value exactly as written (stripped).
    workload_texts: tuple[str, ...]
    client_timeout_ms: int = DEFAULT_TIMEOUT_MS
    head_timeout_ms: int = DEFAULT_TIMEOUT_MS
    nonhead_timeout_ms: int = DEFAULT_TIMEOUT_MS
    checkpt_interval: int = DEFAULT_CHECKPT_INTERVAL
    #: C{(configuration, chain position)} -> its pairs, every pair kept even
    #: when several share a trigger or a failure (SPEC §10.4).
    failures: dict[tuple[int, int], tuple[FaultPair, ...]] = attrs.field(factory=dict)
    #: C{(configuration, chain position)} -> the value as written, which is
    #: what Olympus hands to a replica to re-parse with L{parse_failures}.
    failure_texts: dict[tuple[int, int], str] = attrs.field(factory=dict)
    #: C{hosts}; empty means every process runs on the loopback interface.
    hosts: tuple[str, ...] = ()
    #: Index into L{hosts} for each client; empty if not given.
    client_hosts: tuple[int, ...] = ()
    #: Index into L{hosts} for each chain position; empty if not given.
    replica_hosts: tuple[int, ...] = ()
    #: Problems that do not stop the run, each one line with file and line.
    warnings: tuple[str, ...] = ()
    #: Keys this project does not use, in order of first appearance.
    ignored_keys: tuple[str, ...] = ()
    #: Directories of fault plugins the case needs (key C{fault_plugins},
    #: ';'-separated, relative to the case file), made absolute.
    fault_plugin_dirs: tuple[str, ...] = ()

    @property
    def step_timeout_s(self) -> float:
        """How long Olympus waits for one reconfiguration step (SPEC §9.4)."""
        return max(self.head_timeout_ms, self.nonhead_timeout_ms) / 1000

    @property
    def report_grace_s(self) -> float:
        """
        After a run's deadline, how long the driver still waits for
        Olympus's report: three steps, enough for replicas to drain (a
        failed run is retired at once, without quiescing).
        """
        return 3 * self.step_timeout_s

    @property
    def default_deadline_s(self) -> float:
        """A bound for a whole run of this case: generous, but finite."""
        requests = sum(len(w) for w in self.workloads)
        timeouts = max(self.client_timeout_ms, self.head_timeout_ms, self.nonhead_timeout_ms)
        return 60.0 + requests * 0.05 + 10 * timeouts / 1000

    @property
    def file_stem(self) -> str:
        """The case file's base name without extension; log files start with it (SPEC §13)."""
        return os.path.splitext(os.path.basename(self.path))[0]

    @property
    def num_replicas(self) -> int:
        """Replicas in every configuration: C{2t+1}."""
        return 2 * self.t + 1

    def failures_for(self, configuration: int, position: int) -> tuple[FaultPair, ...]:
        """The pairs for the replica at C{position} of C{configuration}, maybe none."""
        return self.failures.get((configuration, position), ())

    def failure_text_for(self, configuration: int, position: int) -> str:
        """The C{failures[c,r]} value as written, or C{''} if there is none."""
        return self.failure_texts.get((configuration, position), "")


def parse_case(
    path: str,
    *,
    triggers: Mapping[str, int] = TRIGGERS,
    failures: Mapping[str, int] = FAILURES,
) -> Case:
    """
    Read and parse a case file.

    @param path: The file's path; it also names the file in error messages.
    @param triggers: Trigger name -> argument count; defaults to L{TRIGGERS}.
    @param failures: Failure name -> argument count; defaults to L{FAILURES}.
    @raise CaseError: If the file cannot be read or is not a valid case.
    """
    try:
        # utf-8-sig: editors on Windows like to start files with a BOM.
        with open(path, encoding="utf-8-sig") as case_file:
            text = case_file.read()
    except OSError as e:
        raise CaseError(path, "cannot read case file", e.strerror or str(e)) from e
    except UnicodeDecodeError as e:
        raise CaseError(
            path,
            "not UTF-8 text",
            f"byte 0x{e.object[e.start]:02x} at offset {e.start}",
        ) from e
    return parse_case_text(text, path, triggers=triggers, failures=failures)


def parse_case_text(
    text: str,
    path: str = "<string>",
    *,
    triggers: Mapping[str, int] = TRIGGERS,
    failures: Mapping[str, int] = FAILURES,
) -> Case:
    """
    Parse the contents of a case file.

    @param text: The whole file.
    @param path: Names the file in error messages and gives the default
        test case name.
    @param triggers: Trigger name -> argument count; defaults to L{TRIGGERS}.
    @param failures: Failure name -> argument count; defaults to L{FAILURES}.
    @raise CaseError: If the text is not a valid case.
    """
    values, lines, warnings, ignored = _read_items(text, path)

    def where(key: str) -> str:
        """C{"<file>:<line>"} of the (last) definition of C{key}."""
        return f"{path}:{lines[key]}"

    def integer(
        key: str, default: int | None, minimum: int, maximum: int | None = None
    ) -> int:
        """Read integer C{key}, or C{default}; C{None} means required."""
        if key not in values:
            if default is None:
                raise CaseError(path, f"missing required key {key!r}")
            return default
        number = _parse_integer(values[key])
        if number is None or number < minimum:
            kind = "a positive" if minimum > 0 else "a non-negative"
            raise CaseError(where(key), f"{key} must be {kind} integer", values[key])
        if maximum is not None and number > maximum:
            raise CaseError(where(key), f"{key} may be at most {maximum}", values[key])
        return number

    t = integer("t", None, 0, MAX_T)
    num_client = integer("num_client", None, 0, MAX_CLIENTS)
    # SPEC §6.1: a client timeout of 0 must work (the client retransmits
    # after its 1 ms floor); the other timeouts and the interval may not be 0.
    client_timeout_ms = integer("client_timeout", DEFAULT_TIMEOUT_MS, 0)
    if client_timeout_ms == 0:
        warnings.append(
            f"{where('client_timeout')}: client_timeout = 0: clients retransmit after"
            " the shortest wait they allow (1 ms)"
        )
    head_timeout_ms = integer("head_timeout", DEFAULT_TIMEOUT_MS, 1)
    nonhead_timeout_ms = integer("nonhead_timeout", DEFAULT_TIMEOUT_MS, 1)
    checkpt_interval = integer("checkpt_interval", DEFAULT_CHECKPT_INTERVAL, 1)

    name = values.get("test_case_name") or os.path.splitext(os.path.basename(path))[0]

    workload_texts: dict[int, str] = {}
    workloads: dict[int, tuple[OperationCall, ...]] = {}
    failure_texts: dict[tuple[int, int], str] = {}
    failure_pairs: dict[tuple[int, int], tuple[FaultPair, ...]] = {}
    requests_left = MAX_REQUESTS
    for key, value in values.items():
        indexed = _INDEXED_KEY.fullmatch(key)
        if indexed is None:
            continue
        base, index_text = indexed.groups()
        if base == "workload":
            client = _parse_index(index_text, 1, key, where(key))[0]
            if client >= num_client:
                warnings.append(
                    f"{where(key)}: {key} ignored: there are only {num_client}"
                    f" client(s) (num_client = {num_client})"
                )
                continue
            workloads[client] = parse_workload(value, where(key), requests_left)
            requests_left -= len(workloads[client])
            workload_texts[client] = value
        elif base == "failures":
            configuration, position = _parse_index(index_text, 2, key, where(key))
            pairs = parse_failures(
                value, where(key), triggers=triggers, failures=failures
            )
            if position > 2 * t:
                warnings.append(
                    f"{where(key)}: {key} never fires: with t = {t} the chain"
                    f" positions are 0..{2 * t}"
                )
            if pairs:
                failure_pairs[configuration, position] = pairs
                failure_texts[configuration, position] = value

    for client in range(num_client):
        if client not in workloads:
            raise CaseError(path, f"missing required key 'workload[{client}]'")

    hosts = _split_list(values.get("hosts", ""))
    fault_plugin_dirs = _plugin_dirs(values, path)
    client_hosts = _host_indices(
        "client_hosts", values, lines, path, hosts, num_client, warnings
    )
    replica_hosts = _host_indices(
        "replica_hosts", values, lines, path, hosts, 2 * t + 1, warnings
    )

    return Case(
        path=path,
        name=name,
        t=t,
        num_client=num_client,
        workloads=tuple(workloads[client] for client in range(num_client)),
        workload_texts=tuple(workload_texts[client] for client in range(num_client)),
        client_timeout_ms=client_timeout_ms,
        head_timeout_ms=head_timeout_ms,
        nonhead_timeout_ms=nonhead_timeout_ms,
        checkpt_interval=checkpt_interval,
        failures=failure_pairs,
        failure_texts=failure_texts,
        hosts=hosts,
        client_hosts=client_hosts,
        replica_hosts=replica_hosts,
        warnings=tuple(warnings),
        ignored_keys=tuple(ignored),
        fault_plugin_dirs=fault_plugin_dirs,
    )


def parse_workload(
    text: str, where: str = "<workload>", most: int = MAX_REQUESTS
) -> tuple[OperationCall, ...]:
    """
    Parse a C{workload[i]} value (SPEC §10.3) into its operations.

    @param text: C{pseudorandom(seed, n)} or C{op(args); op(args); ...}.
    @param most: How many requests it may have (what the case has left of
        L{MAX_REQUESTS}).
    @param where: C{"<file>:<line>"} for error messages.
    @raise CaseError: For a malformed operation, an unknown operation name
        or a wrong argument count.
    """
    text = text.strip()
    generated = _PSEUDORANDOM.fullmatch(text)
    if generated is not None:
        count = int(generated.group(2))
        if count > most:
            raise CaseError(where, _too_many_requests(count, most), text)
        return tuple(pseudorandom(int(generated.group(1)), count))
    if text.startswith("pseudorandom"):
        raise CaseError(where, "expected pseudorandom(seed, n) with two integers", text)
    operations: list[OperationCall] = []
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue  # e.g. after a trailing ';'
        call = _CALL.fullmatch(item)
        if call is None:
            raise CaseError(where, "expected an operation such as put('k','v')", item)
        name, argument_text = call.groups()
        if name not in OPERATIONS:
            raise CaseError(
                where,
                _unknown_name_problem("operation", name, OPERATIONS),
                item,
            )
        arguments = _split_operation_arguments(argument_text)
        if len(arguments) != OPERATIONS[name]:
            raise CaseError(
                where,
                f"{name} takes {OPERATIONS[name]} argument(s), got {len(arguments)}",
                item,
            )
        operations.append((name, arguments))
    if len(operations) > most:
        raise CaseError(where, _too_many_requests(len(operations), most), text[:60])
    return tuple(operations)


def _too_many_requests(count: int, most: int) -> str:
    return (
        f"{count} requests is too many: a case may have {MAX_REQUESTS} in all"
        f" workloads, and {most} are left for this one"
    )


def parse_failures(
    text: str,
    where: str = "<failures>",
    *,
    triggers: Mapping[str, int] = TRIGGERS,
    failures: Mapping[str, int] = FAILURES,
) -> tuple[FaultPair, ...]:
    """
    Parse a C{failures[c,r]} value (SPEC §10.4) into its pairs.

    A replica daemon calls this on the failure text Olympus gives it, so it
    checks everything itself.

    @param text: C{trigger(args), failure(args); ...}; blanks optional, empty
        items ignored.  Order is kept, and so are repeated pairs.
    @param where: C{"<file>:<line>"} or other origin, for error messages.
    @param triggers: Trigger name -> argument count; defaults to L{TRIGGERS}.
    @param failures: Failure name -> argument count; defaults to L{FAILURES}.
    @raise CaseError: Naming the offending pair.
    """
    pairs: list[FaultPair] = []
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        pair = _PAIR.fullmatch(item)
        if pair is None:
            raise CaseError(where, "expected 'trigger(args), failure(args)'", item)
        trigger, trigger_argument_text, failure, failure_argument_text = pair.groups()
        trigger_args = _checked_call(
            "trigger", trigger, trigger_argument_text, triggers, where, item
        )
        failure_args = _checked_call(
            "failure", failure, failure_argument_text, failures, where, item
        )
        pairs.append(
            FaultPair(
                trigger=trigger,
                trigger_args=trigger_args,
                failure=failure,
                failure_args=failure_args,
                text=(
                    f"{_call_text(trigger, trigger_args)},"
                    f" {_call_text(failure, failure_args)}"
                ),
            )
        )
    return tuple(pairs)


def _read_items(
    text: str, path: str
) -> tuple[dict[str, str], dict[str, int], list[str], list[str]]:
    """
    Split a case file into C{name = value} items (SPEC §10.1).

    @return: Known key -> value (last one wins), known key -> line number,
        warnings, and the unknown keys in order of first appearance.
    """
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    warnings: list[str] = []
    ignored: list[str] = []
    # split("\n") rather than splitlines(): the latter also breaks at form
    # feeds and Unicode separators, which would shift line numbers.
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        raw_key, value = stripped.split("=", 1)
        key = _normalise_key(raw_key.strip())
        value = value.strip()
        if not _is_known_key(key):
            if key not in ignored:
                ignored.append(key)
            continue
        if key in values:
            warnings.append(
                f"{path}:{number}: duplicate key {key!r} (also at line"
                f" {lines[key]}); the last one wins: {stripped}"
            )
        values[key] = value
        lines[key] = number
    return values, lines, warnings, ignored


def _normalise_key(key: str) -> str:
    """Drop blanks inside C{[...]} so C{failures[0, 1]} is C{failures[0,1]}."""
    indexed = _INDEXED_KEY.fullmatch(key)
    if indexed is None:
        return key
    base, index_text = indexed.groups()
    return f"{base}[{''.join(index_text.split())}]"


def _is_known_key(key: str) -> bool:
    """Whether this project uses C{key} (as already normalised)."""
    if key in _INTEGER_KEYS or key in _STRING_KEYS:
        return True
    indexed = _INDEXED_KEY.fullmatch(key)
    return indexed is not None and indexed.group(1) in ("workload", "failures")


def _parse_index(index_text: str, count: int, key: str, where: str) -> tuple[int, ...]:
    """Read the C{count} comma-separated non-negative integers inside C{key}'s brackets."""
    parts = index_text.split(",")
    numbers = [_parse_integer(part) for part in parts]
    if len(parts) != count or None in numbers:
        shape = "workload[i]" if count == 1 else "failures[c,r]"
        raise CaseError(
            where, f"expected {shape} with non-negative integer indices", key
        )
    return tuple(number for number in numbers if number is not None)


def _parse_integer(text: str) -> int | None:
    """The value of a string of ASCII decimal digits, or C{None} if it is not one."""
    match = _INTEGER.fullmatch(text.strip())
    return None if match is None else int(match.group(1))


def _plugin_dirs(values: Mapping[str, str], path: str) -> tuple[str, ...]:
    base = os.path.dirname(os.path.abspath(path))
    return tuple(
        os.path.normpath(os.path.join(base, d))
        for d in _split_list(values.get("fault_plugins", ""))
    )


def case_plugin_dirs(path: str) -> tuple[str, ...]:
    """
    The fault plugin directories a case file names (key C{fault_plugins}),
    read before the case itself, whose failures may name their plugins.
    Unreadable files give none: parsing the case reports them.
    """
    try:
        with open(path, encoding="utf-8-sig") as case_file:
            text = case_file.read()
        values = _read_items(text, path)[0]
    except (OSError, UnicodeDecodeError, CaseError):
        return ()
    return _plugin_dirs(values, path)


def _split_list(text: str) -> tuple[str, ...]:
    """Split a C{;}-separated value, dropping blanks around items and empty items."""
    return tuple(item.strip() for item in text.split(";") if item.strip())


def _host_indices(
    key: str,
    values: dict[str, str],
    lines: dict[str, int],
    path: str,
    hosts: tuple[str, ...],
    expected_count: int,
    warnings: list[str],
) -> tuple[int, ...]:
    """
    Read C{client_hosts} or C{replica_hosts}: one index into C{hosts} per
    process.  Extra entries are ignored with a warning: course files keep
    the example's three-entry lists with one client or with t = 2.
    """
    if key not in values:
        return ()
    where = f"{path}:{lines[key]}"
    indices: list[int] = []
    for item in _split_list(values[key]):
        index = _parse_integer(item)
        if index is None or index >= len(hosts):
            raise CaseError(
                where,
                f"{key} entries must be indices into hosts (0..{len(hosts) - 1})"
                if hosts
                else f"{key} given but hosts is empty",
                item,
            )
        indices.append(index)
    who = "client" if key == "client_hosts" else "chain position (2t+1)"
    if len(indices) < expected_count:
        raise CaseError(
            where,
            f"{key} needs one entry per {who}: {expected_count}, got {len(indices)}",
            values[key],
        )
    if len(indices) > expected_count:
        whom = "clients" if key == "client_hosts" else "chain positions (2t+1)"
        warnings.append(
            f"{where}: {key} has {len(indices)} entries for {expected_count}"
            f" {whom}; the last {len(indices) - expected_count} are ignored"
        )
    return tuple(indices[:expected_count])


def _split_operation_arguments(argument_text: str) -> tuple[str, ...]:
    """
    Apply the tolerance rule of SPEC §10.3 to an operation's argument text.

    Split at commas, strip blanks around each piece, then strip one leading
    and one trailing quote.  Blanks inside the quotes survive
    (C{' wars'} stays C{" wars"}), and the course's typo
    C{'jedi,'luke skywalker'} still reads as C{jedi} and C{luke skywalker}.
    """
    if not argument_text.strip():
        return ()
    arguments: list[str] = []
    for piece in argument_text.split(","):
        piece = piece.strip()
        if piece and piece[0] in _QUOTES:
            piece = piece[1:]
        if piece and piece[-1] in _QUOTES:
            piece = piece[:-1]
        arguments.append(piece)
    return tuple(arguments)


def _checked_call(
    kind: str,
    name: str,
    argument_text: str,
    table: Mapping[str, int],
    where: str,
    item: str,
) -> tuple[int, ...]:
    """Validate one trigger or failure call of C{item} and return its arguments."""
    if name not in table:
        raise CaseError(where, _unknown_name_problem(kind, name, table), item)
    arguments: tuple[int, ...] = ()
    if argument_text.strip():
        numbers = [_parse_integer(piece) for piece in argument_text.split(",")]
        if None in numbers:
            raise CaseError(
                where,
                f"{kind} {name}() takes non-negative integer arguments",
                item,
            )
        arguments = tuple(number for number in numbers if number is not None)
    if len(arguments) != table[name]:
        raise CaseError(
            where,
            f"{kind} {name}() takes {table[name]} argument(s), got {len(arguments)}",
            item,
        )
    return arguments


def _unknown_name_problem(kind: str, name: str, table: Mapping[str, int]) -> str:
    """Describe an unknown name: why it is refused, a close match, the valid names."""
    notes: list[str] = []
    if name in _WITHDRAWN:
        notes.append(_WITHDRAWN[name])
    close = difflib.get_close_matches(name, list(table), n=1)
    if close:
        notes.append(f"did you mean {close[0]}")
    notes.append(f"valid: {', '.join(sorted(table))}")
    return f"unknown {kind} {name!r} ({'; '.join(notes)})"


def _call_text(name: str, arguments: tuple[int, ...]) -> str:
    """Canonical C{name(a,b)} text: no blanks inside the parentheses."""
    return f"{name}({','.join(str(argument) for argument in arguments)})"
