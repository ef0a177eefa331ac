"""
Tests for L{twisted_bcr.admission}: the operator's admission file, parsed
strictly and re-read when it changes.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from twisted_bcr.admission import (
    AdmissionError,
    AdmissionFile,
    AdmittedKeys,
    admission_text,
    parse_admission,
    write_admission,
)

A = bytes(range(32))
B = bytes(range(1, 33))


class ParseTests(SynchronousTestCase):
    """The format: replica KEY, client INDEX KEY, comments, blank lines."""

    def test_round_trip(self) -> None:
        """What admission_text writes parses back to the same identities."""
        text = admission_text([(A, "host-a")], [(0, B, "client-0")])
        self.assertEqual(parse_admission(text), AdmittedKeys(frozenset({A}), {0: B}))

    def test_comments_and_blank_lines(self) -> None:
        """# starts a comment anywhere; blank lines are ignored; a trailing comment is fine."""
        keys = parse_admission(f"# header\n\nreplica {A.hex()}  # host a\n   \n")
        self.assertTrue(keys.admits_replica(A))
        self.assertFalse(keys.admits_replica(B))
        self.assertIsNone(keys.client_key(0))

    def test_errors_name_the_line(self) -> None:
        """Every malformed line is refused with the file, the line number and the text."""
        cases = {
            "replica 1234": "64 hex digits",
            f"replica {'zz' * 32}": "not a hex key",
            f"client x {A.hex()}": "is not a number",
            f"client 0 {A.hex()}\nclient 0 {B.hex()}": "listed twice",
            "spare abc": "expected 'replica KEY' or 'client INDEX KEY'",
            "client 0": "expected",
        }
        for text, problem in cases.items():
            with self.subTest(text=text):
                error = self.assertRaises(AdmissionError, parse_admission, text, "admitted")
                self.assertIn("admitted:", str(error))
                self.assertIn(problem, str(error))
                self.assertNotIn("\n", str(error))


class FileTests(SynchronousTestCase):
    """L{AdmissionFile} follows the file without a restart."""

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.errors: list[str] = []
        write_admission(self.path, [(A, "a")], [])
        self.admission = AdmissionFile(self.path, self.errors.append)

    def test_reload_on_change(self) -> None:
        """Admitting and revoking take effect on the next question."""
        self.assertTrue(self.admission.admits_replica(A))
        write_admission(self.path, [(B, "b")], [(3, A, "")])
        self.assertFalse(self.admission.admits_replica(A))
        self.assertTrue(self.admission.admits_replica(B))
        self.assertEqual(self.admission.client_key(3), A)
        self.assertEqual(self.errors, [])

    def test_bad_version_keeps_the_last_good_one(self) -> None:
        """A broken edit is reported once and the last good list stays in force."""
        with open(self.path + ".new", "w", encoding="utf-8") as f:
            f.write("nonsense\n")
        os.replace(self.path + ".new", self.path)
        self.assertTrue(self.admission.admits_replica(A))
        self.assertTrue(self.admission.admits_replica(A))
        [error] = self.errors
        self.assertIn("expected", error)
        self.assertIn("previous admission list stays in force", error)

    def test_removed_file(self) -> None:
        """A file that disappears is reported once; the last list stays."""
        os.unlink(self.path)
        self.assertTrue(self.admission.admits_replica(A))
        self.assertTrue(self.admission.admits_replica(A))
        self.assertEqual(len(self.errors), 1)

    def test_unreadable_at_start(self) -> None:
        """A file that cannot be read at start is one AdmissionError."""
        error = self.assertRaises(AdmissionError, AdmissionFile, self.path + ".missing", print)
        self.assertIn("cannot read", str(error))
