"""Tests for L{twisted_bcr.config}, the case-file parser of SPEC §10."""

from __future__ import annotations

import glob
import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_bcr.config import (
    FAILURES,
    TRIGGERS,
    Case,
    CaseError,
    FaultPair,
    case_plugin_dirs,
    parse_case,
    parse_case_text,
    parse_failures,
    parse_workload,
)
from twisted_bcr.workload import pseudorandom

CASES_DIRECTORY = os.path.join(os.path.dirname(__file__), os.pardir, "etc", "cases")

MINIMAL = "t = 1\nnum_client = 1\nworkload[0] = get('k')\n"

# The example of SPEC §10.4.
SPEC_EXAMPLE = """\
# lines starting with '#' are comments
test_case_name = two_faults
t = 1
num_client = 2
client_timeout = 3000
head_timeout = 3000
nonhead_timeout = 3000
checkpt_interval = 10
workload[0] = pseudorandom(233,5)
workload[1] = put('movie','star'); append('movie',' wars'); get('movie')
failures[0,1] = shuttle(1,0), change_operation(); wedge_request(0), truncate_history(1)
failures[1,0] = client_request(0,2), crash()
"""


def case_file(name: str) -> str:
    """The path of one of the example case files in C{etc/cases}."""
    return os.path.join(CASES_DIRECTORY, name)


class CaseErrorTests(SynchronousTestCase):
    """The error type's one-line message format."""

    def test_with_text(self) -> None:
        """C{"<file>:<line>: <problem>: <offending text>"}."""
        error = CaseError("a.txt:3", "bad thing", "put(")
        self.assertEqual(str(error), "a.txt:3: bad thing: put(")
        self.assertEqual(
            (error.where, error.problem, error.text), ("a.txt:3", "bad thing", "put(")
        )

    def test_without_text(self) -> None:
        """A whole-file problem has no offending text."""
        self.assertEqual(
            str(CaseError("a.txt", "missing required key 't'")),
            "a.txt: missing required key 't'",
        )

    def test_one_line(self) -> None:
        """Line breaks in the offending text are escaped."""
        self.assertEqual(str(CaseError("x", "p", "a\nb\rc")), "x: p: a\\nb\\rc")

    def test_is_value_error(self) -> None:
        """Callers that catch ValueError also catch CaseError."""
        self.assertIsInstance(CaseError("x", "p"), ValueError)


class FaultPairTests(SynchronousTestCase):
    """The canonical texts of a trigger/failure pair."""

    def test_texts(self) -> None:
        """text, trigger_text and failure_text have no blanks inside parentheses."""
        (pair,) = parse_failures("client_request( 2 , 1 ) ,crash( )")
        self.assertEqual(
            pair,
            FaultPair(
                trigger="client_request",
                trigger_args=(2, 1),
                failure="crash",
                failure_args=(),
                text="client_request(2,1), crash()",
            ),
        )
        self.assertEqual(pair.trigger_text, "client_request(2,1)")
        self.assertEqual(pair.failure_text, "crash()")
        self.assertEqual(str(pair), "client_request(2,1), crash()")

    def test_one_argument_texts(self) -> None:
        """Single-argument triggers and failures render as C{name(n)}."""
        (pair,) = parse_failures("wedge_request(0), truncate_history(3)")
        self.assertEqual(pair.trigger_text, "wedge_request(0)")
        self.assertEqual(pair.failure_text, "truncate_history(3)")
        self.assertEqual(pair.text, "wedge_request(0), truncate_history(3)")


class ExampleFileTests(SynchronousTestCase):
    """Every case file shipped in C{etc/cases} parses to the expected values."""

    def test_all_parse(self) -> None:
        """Every C{etc/cases/*.txt} parses without warnings or ignored keys."""
        paths = sorted(glob.glob(os.path.join(CASES_DIRECTORY, "*.txt")))
        self.assertEqual(len(paths), 8)
        for path in paths:
            case = parse_case(path)
            self.assertEqual((case.warnings, case.ignored_keys), ((), ()), path)
            self.assertEqual(len(case.workloads), case.num_client, path)

    def test_names_are_the_files(self) -> None:
        """
        Each example reports under its own name, its file's (the course's
        copies all said C{test1}), so summaries and tables tell them apart.
        """
        for path in sorted(glob.glob(os.path.join(CASES_DIRECTORY, "*.txt"))):
            case = parse_case(path)
            self.assertEqual(case.name.replace(" ", "_"), case.file_stem, path)

    def test_failure_free(self) -> None:
        """failure_free: three clients, one pseudorandom, 9000 ms timeouts, checkpoint 10."""
        case = parse_case(case_file("failure_free.txt"))
        self.assertEqual((case.name, case.t, case.num_client), ("failure_free", 1, 3))
        self.assertEqual(
            (case.client_timeout_ms, case.head_timeout_ms, case.nonhead_timeout_ms),
            (9000, 9000, 9000),
        )
        self.assertEqual(case.checkpt_interval, 10)
        self.assertEqual(case.workloads[0], tuple(pseudorandom(233, 10)))
        self.assertEqual(
            case.workloads[1],
            (
                ("put", ("movie", "star")),
                ("append", ("movie", " wars")),
                ("get", ("movie",)),
            ),
        )
        self.assertEqual(
            case.workloads[2],
            (
                ("put", ("jedi", "luke skywalker")),
                ("slice", ("jedi", "0:4")),
                ("get", ("jedi",)),
            ),
        )
        self.assertEqual(case.workload_texts[0], "pseudorandom(233,10)")
        self.assertEqual(case.failures, {})
        self.assertEqual(
            (case.hosts, case.client_hosts, case.replica_hosts), ((), (), ())
        )

    def test_perform900(self) -> None:
        """perform900: t=2, three workloads of 300 and the default checkpoint interval."""
        case = parse_case(case_file("perform900.txt"))
        self.assertEqual((case.name, case.t, case.num_client), ("perform900", 2, 3))
        self.assertEqual(case.num_replicas, 5)
        self.assertEqual(case.checkpt_interval, 100)
        self.assertEqual(
            [len(workload) for workload in case.workloads], [300, 300, 300]
        )
        self.assertEqual(case.workloads[1], tuple(pseudorandom(191, 300)))

    def test_stress(self) -> None:
        """stress_10_clients: ten workloads of 100, checkpoint 50, name with blanks."""
        case = parse_case(case_file("stress_10_clients.txt"))
        self.assertEqual(case.name, "stress 10 clients")
        self.assertEqual((case.t, case.num_client, case.checkpt_interval), (2, 10, 50))
        self.assertEqual([len(workload) for workload in case.workloads], [100] * 10)
        self.assertEqual(case.client_timeout_ms, 10000)

    def test_checkpoint(self) -> None:
        """checkpoint: seven operations despite the trailing C{;}."""
        case = parse_case(case_file("checkpoint.txt"))
        self.assertEqual(len(case.workloads[0]), 7)
        self.assertEqual(case.workloads[0][5], ("append", ("jedi", " warm")))
        self.assertEqual((case.checkpt_interval, case.client_timeout_ms), (3, 10000))

    def test_shuttle_change_operation(self) -> None:
        """shuttle_change_operation: one pair for replica 3 of configuration 0."""
        case = parse_case(case_file("shuttle_change_operation.txt"))
        self.assertEqual(list(case.failures), [(0, 3)])
        (pair,) = case.failures_for(0, 3)
        self.assertEqual(pair.text, "shuttle(0,6), change_operation()")
        self.assertEqual(
            case.failure_text_for(0, 3), "shuttle(0,6), change_operation()"
        )
        self.assertEqual(case.checkpt_interval, 100)

    def test_completed_checkpoint(self) -> None:
        """completed_checkpoint_drop_checkpt_stmts: nine operations and one pair."""
        case = parse_case(case_file("completed_checkpoint_drop_checkpt_stmts.txt"))
        self.assertEqual(len(case.workloads[0]), 9)
        self.assertEqual(
            [pair.text for pair in case.failures_for(0, 1)],
            ["completed_checkpoint(0), drop_checkpt_stmts()"],
        )

    def test_catch_up_crash(self) -> None:
        """catch_up_crash: failures in two configurations, two pairs for replica 1 of c=1."""
        case = parse_case(case_file("catch_up_crash.txt"))
        self.assertEqual(sorted(case.failures), [(0, 1), (1, 1)])
        self.assertEqual(
            [pair.text for pair in case.failures_for(1, 1)],
            ["new_configuration(0), invalid_order_sig()", "catch_up(0), crash()"],
        )
        self.assertEqual(
            case.failure_text_for(1, 1),
            "new_configuration(0), invalid_order_sig(); catch_up(0), crash()",
        )


class KeyTests(SynchronousTestCase):
    """Keys, defaults and values (SPEC §10.2)."""

    def test_spec_example(self) -> None:
        """The SPEC §10.4 example parses to what the SPEC says it means."""
        case = parse_case_text(SPEC_EXAMPLE, "two.txt")
        self.assertEqual(case.name, "two_faults")
        self.assertEqual((case.t, case.num_client, case.checkpt_interval), (1, 2, 10))
        self.assertEqual(case.workloads[0], tuple(pseudorandom(233, 5)))
        self.assertEqual(len(case.workloads[1]), 3)
        self.assertEqual(
            [pair.text for pair in case.failures_for(0, 1)],
            [
                "shuttle(1,0), change_operation()",
                "wedge_request(0), truncate_history(1)",
            ],
        )
        self.assertEqual(
            case.failures_for(1, 0),
            (
                FaultPair(
                    "client_request",
                    (0, 2),
                    "crash",
                    (),
                    "client_request(0,2), crash()",
                ),
            ),
        )
        self.assertEqual(case.warnings, ())

    def test_defaults(self) -> None:
        """Omitted timeouts are 3000 ms, the checkpoint interval 100, hosts empty."""
        case = parse_case_text(MINIMAL)
        self.assertEqual(
            case,
            Case(
                path="<string>",
                name="<string>",
                t=1,
                num_client=1,
                workloads=((("get", ("k",)),),),
                workload_texts=("get('k')",),
            ),
        )
        self.assertEqual(
            (
                case.client_timeout_ms,
                case.head_timeout_ms,
                case.nonhead_timeout_ms,
                case.checkpt_interval,
            ),
            (3000, 3000, 3000, 100),
        )

    def test_name_from_path(self) -> None:
        """Without test_case_name the name is the file's base name without extension."""
        self.assertEqual(parse_case_text(MINIMAL, "/x/y/my_case.txt").name, "my_case")

    def test_empty_name_uses_path(self) -> None:
        """An empty test_case_name falls back to the file's base name."""
        case = parse_case_text("test_case_name =\n" + MINIMAL, "dir/c.txt")
        self.assertEqual(case.name, "c")

    def test_timeouts(self) -> None:
        """The three timeouts and the checkpoint interval are read in milliseconds."""
        case = parse_case_text(
            MINIMAL
            + "client_timeout = 10\nhead_timeout=20\nnonhead_timeout = 30\ncheckpt_interval = 4\n"
        )
        self.assertEqual(
            (
                case.client_timeout_ms,
                case.head_timeout_ms,
                case.nonhead_timeout_ms,
                case.checkpt_interval,
            ),
            (10, 20, 30, 4),
        )

    def test_zero_clients(self) -> None:
        """C{num_client = 0} needs no workload."""
        case = parse_case_text("t = 0\nnum_client = 0\n")
        self.assertEqual(
            (case.workloads, case.workload_texts, case.num_replicas), ((), (), 1)
        )

    def test_unknown_keys_ignored(self) -> None:
        """Unknown keys are listed in ignored_keys once each, and are not warnings."""
        case = parse_case_text(
            "olympus_timeout = 5\npseudorandom_workload[0] = x\n"
            + MINIMAL
            + "olympus_timeout = 6\nsecret = abc\n"
        )
        self.assertEqual(
            case.ignored_keys, ("olympus_timeout", "pseudorandom_workload[0]", "secret")
        )
        self.assertEqual(case.warnings, ())

    def test_duplicate_last_wins(self) -> None:
        """A key given twice takes the last value and produces a warning with both lines."""
        case = parse_case_text("t = 2\n" + MINIMAL, "d.txt")
        self.assertEqual(case.t, 1)
        (warning,) = case.warnings
        self.assertEqual(
            warning,
            "d.txt:2: duplicate key 't' (also at line 1); the last one wins: t = 1",
        )

    def test_duplicate_normalised_key(self) -> None:
        """C{failures[0, 1]} and C{failures[0,1]} are the same key."""
        case = parse_case_text(
            MINIMAL
            + "failures[0, 1] = shuttle(0,0), crash()\nfailures[0,1] = shuttle(0,1), drop()\n"
        )
        self.assertEqual(
            [pair.text for pair in case.failures_for(0, 1)], ["shuttle(0,1), drop()"]
        )
        self.assertEqual(len(case.warnings), 1)
        self.assertIn("duplicate key 'failures[0,1]'", case.warnings[0])

    def test_failure_beyond_chain(self) -> None:
        """C{failures[c,r]} with C{r > 2t} is kept, validated and warned about."""
        case = parse_case_text(
            MINIMAL + "failures[0,3] = shuttle(0,0), crash()\n", "w.txt"
        )
        self.assertEqual(len(case.failures_for(0, 3)), 1)
        self.assertEqual(
            case.warnings,
            (
                "w.txt:4: failures[0,3] never fires: with t = 1 the chain positions are 0..2",
            ),
        )
        self.assertRaises(
            CaseError,
            parse_case_text,
            MINIMAL + "failures[0,3] = shuttle(0,0), omit_send()\n",
        )

    def test_extra_workload(self) -> None:
        """A workload for a client beyond num_client is left out with a warning."""
        case = parse_case_text(MINIMAL + "workload[1] = get('a')\n", "e.txt")
        self.assertEqual(len(case.workloads), 1)
        self.assertEqual(
            case.warnings,
            (
                "e.txt:4: workload[1] ignored: there are only 1 client(s) (num_client = 1)",
            ),
        )

    def test_no_failures(self) -> None:
        """failures_for and failure_text_for give empty answers for a failure-free replica."""
        case = parse_case_text(MINIMAL + "failures[0,0] =\n")
        self.assertEqual(
            (case.failures_for(0, 0), case.failure_text_for(0, 0)), ((), "")
        )
        self.assertEqual(
            (case.failures_for(5, 1), case.failure_text_for(5, 1)), ((), "")
        )


class SyntaxTests(SynchronousTestCase):
    """Line syntax (SPEC §10.1)."""

    def test_comments_and_junk(self) -> None:
        """Comment lines, indented comments, blank lines and lines without C{=} are skipped."""
        case = parse_case_text(
            "# t = 5\n   # t = 6\n\nthis line has no equals sign\n  \t\n" + MINIMAL
        )
        self.assertEqual((case.t, case.ignored_keys, case.warnings), (1, (), ()))

    def test_split_at_first_equals(self) -> None:
        """The value runs from the first C{=} to the end of the line, blanks stripped."""
        case = parse_case_text("test_case_name =  a = b  \n" + MINIMAL)
        self.assertEqual(case.name, "a = b")

    def test_blanks_in_brackets(self) -> None:
        """Blanks inside C{[...]} are ignored."""
        case = parse_case_text(
            "t = 1\nnum_client = 1\nworkload[ 0 ] = get('k')\n"
            "failures[ 1 , 2 ] = checkpoint(0), crash()\n"
        )
        self.assertEqual(case.workloads, ((("get", ("k",)),),))
        self.assertEqual(
            [pair.text for pair in case.failures_for(1, 2)], ["checkpoint(0), crash()"]
        )

    def test_windows_line_endings(self) -> None:
        """CRLF line endings parse like LF ones."""
        self.assertEqual(
            parse_case_text(MINIMAL.replace("\n", "\r\n")), parse_case_text(MINIMAL)
        )

    def test_line_numbers(self) -> None:
        """Errors name the line of the offending key, counting from 1."""
        error = self.assertRaises(
            CaseError, parse_case_text, "# c\n\nt = 1\nnum_client = x\n", "n.txt"
        )
        self.assertEqual(
            str(error), "n.txt:4: num_client must be a non-negative integer: x"
        )


class IntegerTests(SynchronousTestCase):
    """Required keys and integer values."""

    def test_missing_t(self) -> None:
        """A missing t is a whole-file error."""
        error = self.assertRaises(
            CaseError, parse_case_text, "num_client = 0\n", "m.txt"
        )
        self.assertEqual(str(error), "m.txt: missing required key 't'")

    def test_missing_num_client(self) -> None:
        """A missing num_client is a whole-file error."""
        error = self.assertRaises(CaseError, parse_case_text, "t = 0\n", "m.txt")
        self.assertEqual(str(error), "m.txt: missing required key 'num_client'")

    def test_missing_workload(self) -> None:
        """Each client up to num_client needs a workload."""
        error = self.assertRaises(
            CaseError,
            parse_case_text,
            MINIMAL.replace("num_client = 1", "num_client = 2"),
            "m.txt",
        )
        self.assertEqual(str(error), "m.txt: missing required key 'workload[1]'")

    def test_not_integers(self) -> None:
        """Negative, fractional, signed and spelled-out numbers are refused for every integer key."""
        for key in [
            "t",
            "num_client",
            "client_timeout",
            "head_timeout",
            "nonhead_timeout",
            "checkpt_interval",
        ]:
            for bad in ["-1", "1.5", "+3", "three", "", "3 ms", "\u0663"]:
                error = self.assertRaises(
                    CaseError, parse_case_text, MINIMAL + f"{key} = {bad}\n", "i.txt"
                )
                self.assertTrue(
                    str(error).startswith(f"i.txt:4: {key} must be a "), str(error)
                )
                self.assertTrue(str(error).endswith(f"integer: {bad}"), str(error))

    def test_zero(self) -> None:
        """
        t and client_timeout may be 0 (SPEC §6.1: a client timeout of 0 must
        work; it is said in a warning), but the replicas' timeouts and the
        checkpoint interval must be positive.
        """
        self.assertEqual(parse_case_text(MINIMAL.replace("t = 1", "t = 0")).t, 0)
        case = parse_case_text(MINIMAL + "client_timeout = 0\n", "z.txt")
        self.assertEqual(case.client_timeout_ms, 0)
        self.assertEqual(
            case.warnings,
            ("z.txt:4: client_timeout = 0: clients retransmit after the shortest"
             " wait they allow (1 ms)",),
        )
        for key in [
            "head_timeout",
            "nonhead_timeout",
            "checkpt_interval",
        ]:
            error = self.assertRaises(
                CaseError, parse_case_text, MINIMAL + f"{key} = 0\n", "z.txt"
            )
            self.assertEqual(
                str(error), f"z.txt:4: {key} must be a positive integer: 0"
            )

    def test_huge_integer(self) -> None:
        """A number with thousands of digits is an error, not a crash in int()."""
        self.assertRaises(
            CaseError, parse_case_text, MINIMAL + "t = " + "9" * 5000 + "\n"
        )

    def test_bad_indices(self) -> None:
        """Malformed C{workload[...]} and C{failures[...]} indices are errors naming the key."""
        for line, key in [
            ("workload[x] = get('a')", "workload[x]"),
            ("workload[] = get('a')", "workload[]"),
            ("workload[0,1] = get('a')", "workload[0,1]"),
            ("workload[-1] = get('a')", "workload[-1]"),
            ("failures[0] = shuttle(0,0), crash()", "failures[0]"),
            ("failures[0,1,2] = shuttle(0,0), crash()", "failures[0,1,2]"),
            ("failures[a,b] = shuttle(0,0), crash()", "failures[a,b]"),
        ]:
            error = self.assertRaises(
                CaseError, parse_case_text, MINIMAL + line, "b.txt"
            )
            self.assertTrue(str(error).startswith("b.txt:4: expected "), str(error))
            self.assertTrue(str(error).endswith(f": {key}"), str(error))


class WorkloadTests(SynchronousTestCase):
    """Workload values (SPEC §10.3)."""

    def test_pseudorandom_with_blanks(self) -> None:
        """C{pseudorandom( seed , n )} with blanks expands like the compact form."""
        self.assertEqual(
            parse_workload("pseudorandom ( 233 , 10 )"), tuple(pseudorandom(233, 10))
        )

    def test_bad_pseudorandom(self) -> None:
        """A malformed pseudorandom value is an error, not an unknown operation."""
        for text in [
            "pseudorandom(233)",
            "pseudorandom(a,5)",
            "pseudorandom(1,-5)",
            "pseudorandom",
        ]:
            error = self.assertRaises(CaseError, parse_workload, text, "p.txt:9")
            self.assertEqual(
                str(error),
                f"p.txt:9: expected pseudorandom(seed, n) with two integers: {text}",
            )

    def test_operations(self) -> None:
        """All four operations with blanks around items and a trailing C{;}."""
        self.assertEqual(
            parse_workload(
                " put('a','b') ;get('a');  append( 'a' , 'c' ) ; slice('a','0:1');;"
            ),
            (
                ("put", ("a", "b")),
                ("get", ("a",)),
                ("append", ("a", "c")),
                ("slice", ("a", "0:1")),
            ),
        )

    def test_empty(self) -> None:
        """An empty workload (or only separators) has no operations."""
        self.assertEqual(parse_workload(""), ())
        self.assertEqual(parse_workload(" ; ;"), ())

    def test_inner_blanks_kept(self) -> None:
        """Blanks inside the quotes are kept exactly, blanks outside are dropped."""
        self.assertEqual(
            parse_workload("append('movie',' wars'); put( 'k' ,'  two  ' )"),
            (("append", ("movie", " wars")), ("put", ("k", "  two  "))),
        )

    def test_tolerance_rule(self) -> None:
        """The course's typos C{put('jedi,'luke skywalker')} and its variant read as jedi/luke skywalker."""
        expected = (("put", ("jedi", "luke skywalker")),)
        self.assertEqual(parse_workload("put('jedi,'luke skywalker')"), expected)
        self.assertEqual(parse_workload("put('jedi,'luke skywalker)"), expected)
        self.assertEqual(parse_workload("put(jedi, luke skywalker)"), expected)

    def test_double_quotes(self) -> None:
        """Double quotes are stripped like single ones."""
        self.assertEqual(parse_workload('get("k")'), (("get", ("k",)),))

    def test_empty_value(self) -> None:
        """C{put('k','')} stores the empty string."""
        self.assertEqual(parse_workload("put('k','')"), (("put", ("k", "")),))

    def test_unknown_operation(self) -> None:
        """An unknown name (a student's C{reconfig}) is refused, listing the valid names."""
        error = self.assertRaises(
            CaseError, parse_workload, "put('a','b'); reconfig('x')", "r.txt:7"
        )
        self.assertEqual(
            str(error),
            "r.txt:7: unknown operation 'reconfig' (valid: append, get, put, slice): reconfig('x')",
        )

    def test_misspelt_operation(self) -> None:
        """A near miss suggests the right name."""
        error = self.assertRaises(CaseError, parse_workload, "apend('a','b')")
        self.assertIn("did you mean append", str(error))

    def test_wrong_argument_counts(self) -> None:
        """Every operation with too many or too few arguments is refused."""
        for text in [
            "put('a')",
            "put('a','b','c')",
            "get()",
            "get('a','b')",
            "append('a')",
            "slice('a')",
            "slice()",
        ]:
            error = self.assertRaises(CaseError, parse_workload, text, "c.txt:1")
            self.assertIn("argument(s), got", str(error))
            self.assertTrue(str(error).endswith(": " + text))

    def test_not_an_operation(self) -> None:
        """Text that is not C{name(args)} is refused."""
        for text in ["put 'a','b'", "put('a','b'", "('a')", "9put('a','b')"]:
            error = self.assertRaises(CaseError, parse_workload, text, "o.txt:2")
            self.assertEqual(
                str(error),
                f"o.txt:2: expected an operation such as put('k','v'): {text}",
            )

    def test_error_from_case(self) -> None:
        """A workload error in a file names the file and line."""
        error = self.assertRaises(
            CaseError,
            parse_case_text,
            "t = 1\nnum_client = 1\nworkload[0] = reconfig()\n",
            "f.txt",
        )
        self.assertTrue(str(error).startswith("f.txt:3: unknown operation 'reconfig'"))

    @settings(deadline=None)
    @given(
        key=st.text(
            alphabet=st.characters(
                blacklist_characters="'\",;\r\n", blacklist_categories=("Cs",)
            ),
            min_size=1,
        ),
        value=st.text(
            alphabet=st.characters(
                blacklist_characters="'\",;\r\n", blacklist_categories=("Cs",)
            )
        ),
    )
    def test_quoted_round_trip(self, key: str, value: str) -> None:
        """Any key and value without quotes, commas, semicolons or line breaks survive quoting exactly."""
        self.assertEqual(
            parse_workload(f"put('{key}', '{value}')"), (("put", (key, value)),)
        )


class FailureTests(SynchronousTestCase):
    """Failure-scenario values (SPEC §10.4)."""

    def test_blanks_optional(self) -> None:
        """C{shuttle(0,2),change_operation()} equals C{shuttle(0, 2), change_operation()}."""
        self.assertEqual(
            parse_failures("shuttle(0,2),change_operation()"),
            parse_failures("  shuttle( 0, 2 ) ,  change_operation() ; "),
        )

    def test_empty(self) -> None:
        """An empty value or separators alone give no pairs."""
        self.assertEqual(parse_failures(""), ())
        self.assertEqual(parse_failures(" ; ; "), ())

    def test_all_pairs_kept(self) -> None:
        """Four pairs with the same failure (instructor test completed_checkpt_fail) are all kept in order."""
        pairs = parse_failures(
            "checkpoint(0), sleep(300); checkpoint(1), sleep(300); "
            "completed_checkpoint(0), sleep(300); completed_checkpoint(1), sleep(300);"
        )
        self.assertEqual(
            [pair.trigger_text for pair in pairs],
            [
                "checkpoint(0)",
                "checkpoint(1)",
                "completed_checkpoint(0)",
                "completed_checkpoint(1)",
            ],
        )
        self.assertEqual({pair.failure_args for pair in pairs}, {(300,)})

    def test_same_trigger_kept(self) -> None:
        """Several pairs with the same trigger are all kept, even identical ones."""
        pairs = parse_failures(
            "shuttle(0,0), extra_op(); shuttle(0,0), crash(); shuttle(0,0), crash()"
        )
        self.assertEqual(
            [pair.failure for pair in pairs], ["extra_op", "crash", "crash"]
        )

    def test_every_name(self) -> None:
        """Every trigger and every failure is accepted with its argument count."""
        for trigger, trigger_count in TRIGGERS.items():
            for failure, failure_count in FAILURES.items():
                trigger_args = tuple(range(3, 3 + trigger_count))
                failure_args = tuple(range(7, 7 + failure_count))
                text = (
                    f"{trigger}({', '.join(map(str, trigger_args))}),"
                    f"{failure}({', '.join(map(str, failure_args))})"
                )
                (pair,) = parse_failures(text)
                self.assertEqual(
                    (pair.trigger, pair.trigger_args, pair.failure, pair.failure_args),
                    (trigger, trigger_args, failure, failure_args),
                )

    def test_tables(self) -> None:
        """The name tables are those of SPEC §11.1 and §11.2."""
        self.assertEqual(
            TRIGGERS,
            {
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
            },
        )
        self.assertEqual(
            FAILURES,
            {
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
            },
        )

    def test_wrong_argument_counts(self) -> None:
        """Every trigger and failure given one argument too many or too few is refused."""
        for trigger, count in TRIGGERS.items():
            for wrong in {count - 1, count + 1} - {-1}:
                args = ",".join("0" * wrong)
                text = f"{trigger}({args}), crash()"
                error = self.assertRaises(CaseError, parse_failures, text, "a.txt:1")
                self.assertEqual(
                    str(error),
                    f"a.txt:1: trigger {trigger}() takes {count} argument(s), got {wrong}: {text}",
                )
        for failure, count in FAILURES.items():
            for wrong in {count - 1, count + 1} - {-1}:
                args = ",".join("5" * wrong)
                text = f"shuttle(0,0), {failure}({args})"
                error = self.assertRaises(CaseError, parse_failures, text, "a.txt:1")
                self.assertEqual(
                    str(error),
                    f"a.txt:1: failure {failure}() takes {count} argument(s), got {wrong}: {text}",
                )

    def test_non_integer_arguments(self) -> None:
        """C{sleep(time)} and negative or fractional numbers are refused, naming the pair."""
        for text in [
            "shuttle(0,0), sleep(time)",
            "shuttle(0,-1), crash()",
            "shuttle(0,1.5), crash()",
            "shuttle(0,), crash()",
            "shuttle(c,m), crash()",
        ]:
            error = self.assertRaises(CaseError, parse_failures, text, "n.txt:1")
            self.assertIn("takes non-negative integer arguments", str(error))
            self.assertTrue(str(error).endswith(": " + text))

    def test_omit_send(self) -> None:
        """The withdrawn C{omit_send()} is refused with the reason and the valid names."""
        error = self.assertRaises(
            CaseError, parse_failures, "client_request(0,0), omit_send()", "o.txt:3"
        )
        self.assertEqual(
            str(error),
            "o.txt:3: unknown failure 'omit_send' (withdrawn by the course on 2017-09-12;"
            " use drop() at the receiver; valid: change_operation, change_result, crash,"
            " drop, drop_checkpt_stmts, drop_result_stmt, extra_op, increment_slot,"
            " invalid_order_sig, invalid_result_sig, sleep, truncate_history):"
            " client_request(0,0), omit_send()",
        )

    def test_known_misspellings(self) -> None:
        """The misspellings listed in SPEC §10.4 are refused, suggesting the right name."""
        for text, suggestion in [
            ("shuttle(0,0), drop_checkpoint_stmts()", "drop_checkpt_stmts"),
            ("shuttle(0,0), drop_result_statement()", "drop_result_stmt"),
            ("shuttle(0,0), change_result_statement()", "change_result"),
        ]:
            error = self.assertRaises(CaseError, parse_failures, text, "s.txt:1")
            self.assertIn("unknown failure", str(error))
            self.assertIn(f"did you mean {suggestion}", str(error))
            self.assertIn("valid: change_operation, ", str(error))
            self.assertTrue(str(error).endswith(": " + text))
        self.assertRaises(CaseError, parse_failures, "get_running_state(), crash()")

    def test_unknown_trigger(self) -> None:
        """An unknown trigger is refused, listing the valid triggers."""
        error = self.assertRaises(
            CaseError, parse_failures, "request(0,0), crash()", "u.txt:1"
        )
        self.assertIn("unknown trigger 'request'", str(error))
        self.assertIn("valid: catch_up, checkpoint, client_request, ", str(error))

    def test_malformed_pairs(self) -> None:
        """Items that are not exactly one C{trigger(args), failure(args)} are refused."""
        for text in [
            "shuttle(0,0) crash()",
            "shuttle(0,0)",
            "shuttle(0,0), crash(), drop()",
            "shuttle 0 0, crash",
            "shuttle((0,0)), crash()",
        ]:
            error = self.assertRaises(CaseError, parse_failures, text, "m.txt:1")
            self.assertEqual(
                str(error), f"m.txt:1: expected 'trigger(args), failure(args)': {text}"
            )

    def test_error_from_case(self) -> None:
        """A failure error in a file names the file and line of the failures key."""
        error = self.assertRaises(
            CaseError,
            parse_case_text,
            MINIMAL + "\nfailures[0,0] = client_request(0,0), omit_send()\n",
            "f.txt",
        )
        self.assertTrue(str(error).startswith("f.txt:5: unknown failure 'omit_send'"))

    def test_custom_tables(self) -> None:
        """Names from plugins are accepted when passed in, and the defaults are untouched."""
        triggers = {**TRIGGERS, "heartbeat": 0}
        failures = {**FAILURES, "corrupt_state": 2}
        (pair,) = parse_failures(
            "heartbeat(), corrupt_state(1,2)", triggers=triggers, failures=failures
        )
        self.assertEqual(pair.text, "heartbeat(), corrupt_state(1,2)")
        self.assertRaises(CaseError, parse_failures, "heartbeat(), crash()")
        case = parse_case_text(
            MINIMAL + "failures[0,0] = heartbeat(), corrupt_state(1,2)\n",
            triggers=triggers,
            failures=failures,
        )
        self.assertEqual(case.failures_for(0, 0), (pair,))
        error = self.assertRaises(
            CaseError,
            parse_failures,
            "shuttle(0,0), crash()",
            triggers=triggers,
            failures={},
        )
        self.assertIn("unknown failure 'crash'", str(error))

    @settings(deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(sorted(TRIGGERS)),
                st.sampled_from(sorted(FAILURES)),
                st.lists(st.integers(0, 10**6), min_size=3, max_size=3),
            ),
            max_size=5,
        )
    )
    def test_canonical_round_trip(
        self, items: list[tuple[str, str, list[int]]]
    ) -> None:
        """Joining the canonical texts with C{;} parses back to the same pairs."""
        text = "; ".join(
            f"{trigger}({','.join(map(str, numbers[: TRIGGERS[trigger]]))}), "
            f"{failure}({','.join(map(str, numbers[: FAILURES[failure]]))})"
            for trigger, failure, numbers in items
        )
        pairs = parse_failures(text)
        self.assertEqual(len(pairs), len(items))
        self.assertEqual(parse_failures("; ".join(pair.text for pair in pairs)), pairs)
        self.assertEqual("; ".join(pair.text for pair in pairs), text)


class HostTests(SynchronousTestCase):
    """The optional C{hosts}, C{client_hosts} and C{replica_hosts} keys."""

    def test_hosts(self) -> None:
        """Hosts and indices are C{;}-separated, blanks and trailing C{;} ignored."""
        case = parse_case_text(
            MINIMAL
            + "hosts = 10.0.0.1 ; 10.0.0.2;\nclient_hosts = 1\nreplica_hosts = 0; 1 ;0;\n"
        )
        self.assertEqual(case.hosts, ("10.0.0.1", "10.0.0.2"))
        self.assertEqual(case.client_hosts, (1,))
        self.assertEqual(case.replica_hosts, (0, 1, 0))

    def test_hosts_alone(self) -> None:
        """hosts without the index keys leaves the index tuples empty."""
        case = parse_case_text(MINIMAL + "hosts = a;b\n")
        self.assertEqual(
            (case.hosts, case.client_hosts, case.replica_hosts), (("a", "b"), (), ())
        )

    def test_index_out_of_range(self) -> None:
        """An index past the end of hosts is an error naming it."""
        error = self.assertRaises(
            CaseError,
            parse_case_text,
            MINIMAL + "hosts = a;b\nreplica_hosts = 0;1;2\n",
            "h.txt",
        )
        self.assertEqual(
            str(error),
            "h.txt:5: replica_hosts entries must be indices into hosts (0..1): 2",
        )

    def test_index_not_integer(self) -> None:
        """A host name or negative number where an index belongs is an error."""
        for bad in ["a", "-1", "1.0"]:
            error = self.assertRaises(
                CaseError,
                parse_case_text,
                MINIMAL + f"hosts = a;b\nclient_hosts = {bad}\n",
                "h.txt",
            )
            self.assertEqual(
                str(error),
                f"h.txt:5: client_hosts entries must be indices into hosts (0..1): {bad}",
            )

    def test_indices_without_hosts(self) -> None:
        """Indices with no hosts key are an error."""
        error = self.assertRaises(
            CaseError, parse_case_text, MINIMAL + "client_hosts = 0\n", "h.txt"
        )
        self.assertEqual(
            str(error), "h.txt:4: client_hosts given but hosts is empty: 0"
        )

    def test_wrong_counts(self) -> None:
        """
        client_hosts needs one index per client and replica_hosts one per
        chain position; more entries than that (the course example's
        three-entry lists kept in files with one client or with t = 0) are
        ignored with a warning naming the line; fewer are an error.
        """
        case = parse_case_text(MINIMAL + "hosts = a;b\nclient_hosts = 0;1;1\n", "h.txt")
        self.assertEqual(case.client_hosts, (0,))
        self.assertEqual(
            case.warnings,
            ("h.txt:5: client_hosts has 3 entries for 1 clients; the last 2 are ignored",),
        )
        case = parse_case_text(MINIMAL + "hosts = a\nreplica_hosts = 0;0;0;0;0\n", "h.txt")
        self.assertEqual(case.replica_hosts, (0, 0, 0))
        self.assertEqual(
            case.warnings,
            ("h.txt:5: replica_hosts has 5 entries for 3 chain positions (2t+1);"
             " the last 2 are ignored",),
        )
        error = self.assertRaises(
            CaseError,
            parse_case_text,
            MINIMAL + "hosts = a\nreplica_hosts = 0;0\n",
            "h.txt",
        )
        self.assertEqual(
            str(error),
            "h.txt:5: replica_hosts needs one entry per chain position (2t+1): 3, got 2: 0;0",
        )


class FileTests(SynchronousTestCase):
    """Reading case files from disk."""

    def write(self, content: bytes) -> str:
        """Write C{content} to a fresh temporary file and return its path."""
        path = self.mktemp() + ".txt"
        with open(path, "wb") as case_file:
            case_file.write(content)
        return path

    def test_parse_file(self) -> None:
        """parse_case reads the file and uses its path and base name."""
        path = self.write(MINIMAL.encode("utf-8"))
        case = parse_case(path)
        self.assertEqual((case.path, case.name), (path, os.path.basename(path)[:-4]))
        self.assertEqual(case.workloads, ((("get", ("k",)),),))

    def test_byte_order_mark(self) -> None:
        """A UTF-8 byte order mark at the start is ignored."""
        path = self.write(b"\xef\xbb\xbf" + MINIMAL.encode("utf-8"))
        self.assertEqual(parse_case(path).t, 1)

    def test_missing_file(self) -> None:
        """An unreadable file is a one-line error naming it."""
        path = self.mktemp()
        error = self.assertRaises(CaseError, parse_case, path)
        self.assertEqual(
            str(error), f"{path}: cannot read case file: No such file or directory"
        )

    def test_directory(self) -> None:
        """A directory is not a case file."""
        error = self.assertRaises(CaseError, parse_case, CASES_DIRECTORY)
        self.assertTrue(
            str(error).startswith(f"{CASES_DIRECTORY}: cannot read case file: ")
        )
        self.assertNotIn("\n", str(error))

    def test_not_utf8(self) -> None:
        """A file that is not UTF-8 is a one-line error giving the bad byte."""
        path = self.write(b"t = 1\n\xff\n")
        error = self.assertRaises(CaseError, parse_case, path)
        self.assertEqual(str(error), f"{path}: not UTF-8 text: byte 0xff at offset 6")


class FaultPluginKeyTests(SynchronousTestCase):
    """The fault_plugins key names plugin directories relative to the case file."""

    def test_relative_to_case_file(self) -> None:
        """Directories are resolved against the case file's own directory."""
        case = parse_case_text(
            "t = 1\nnum_client = 1\nworkload[0] = get('a')\n"
            "fault_plugins = plugins; /opt/more\n",
            "/experiments/x/case.txt",
        )
        self.assertEqual(case.fault_plugin_dirs, ("/experiments/x/plugins", "/opt/more"))
        self.assertEqual(case.ignored_keys, ())

    def test_read_before_the_case(self) -> None:
        """case_plugin_dirs reads the key without parsing the rest, and gives nothing for an unreadable file."""
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "case.txt")
        with open(path, "w") as f:
            f.write("fault_plugins = mine\nfailures[0,1] = shuttle(0,0), my_failure()\n")
        self.assertEqual(case_plugin_dirs(path), (os.path.join(os.path.abspath(directory), "mine"),))
        self.assertEqual(case_plugin_dirs(os.path.join(directory, "missing.txt")), ())
