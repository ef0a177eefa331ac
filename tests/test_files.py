"""
Tests for L{twisted_bcr.files}: atomic writes that no planted symlink can
redirect, private files that are refused when anyone else could read or
swap them, and private directories.
"""

from __future__ import annotations

import io
import os
import stat
import sys

from twisted.python import usage
from twisted.trial.unittest import TestCase

from twisted_bcr import files
from twisted_bcr.admission import write_admission
from twisted_bcr.crypto import read_verify_key
from twisted_bcr.files import (
    UnsafeFileError,
    make_private_directory,
    open_private_append,
    read_private_file,
    write_atomically,
)
from twisted_bcr.net.daemon import load_or_create_key

#: A uid that owns nothing on a test machine.
STRANGER = 54321


def mode_of(path: str) -> int:
    """The permission bits of C{path} itself (not of a symlink's target)."""
    return stat.S_IMODE(os.lstat(path).st_mode)


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


class FilesTestCase(TestCase):
    """A fresh directory per test, and a umask that is restored afterwards."""

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def set_umask(self, umask: int) -> None:
        old = os.umask(umask)
        self.addCleanup(os.umask, old)

    def victim(self) -> str:
        """A file an attacker would like us to overwrite, outside our directory."""
        outside = os.path.abspath(self.mktemp())
        os.mkdir(outside)
        victim = os.path.join(outside, "victim")
        with open(victim, "w", encoding="utf-8") as f:
            f.write("precious\n")
        return victim

    def not_ours(self, path: str) -> None:
        """Make C{path} look owned by another user."""
        if os.geteuid() == 0:
            os.chown(path, STRANGER, -1, follow_symlinks=False)
        else:
            uid = os.geteuid()
            self.patch(os, "geteuid", lambda: uid + 1)


class WriteAtomicallyTests(FilesTestCase):
    """write_atomically replaces a file in one step and never follows a planted symlink."""

    def test_writes_text_and_mode(self) -> None:
        """The file holds the text with the requested mode, and no temporary is left."""
        path = self.path("port")
        write_atomically(path, "127.0.0.1:9000\n")
        self.assertEqual(read(path), "127.0.0.1:9000\n")
        self.assertEqual(mode_of(path), 0o644)
        write_atomically(path, "again ✨\n", 0o600)
        self.assertEqual(read(path), "again ✨\n")
        self.assertEqual(mode_of(path), 0o600)
        self.assertEqual(os.listdir(self.directory), ["port"])

    def test_mode_despite_umask(self) -> None:
        """Neither a strict nor an empty umask changes the mode asked for."""
        self.set_umask(0o077)
        write_atomically(self.path("public"), "x", 0o644)
        self.assertEqual(mode_of(self.path("public")), 0o644)
        self.set_umask(0)
        write_atomically(self.path("secret"), "x", 0o600)
        self.assertEqual(mode_of(self.path("secret")), 0o600)

    def test_symlink_at_old_predictable_name(self) -> None:
        """A symlink planted at C{path.<pid>.tmp} is not written through."""
        victim = self.victim()
        path = self.path("olympus.key")
        planted = f"{path}.{os.getpid()}.tmp"
        os.symlink(victim, planted)
        write_atomically(path, "secret seed\n", 0o600)
        self.assertEqual(read(victim), "precious\n")
        self.assertEqual(read(path), "secret seed\n")
        self.assertTrue(os.path.islink(planted))

    def test_symlinks_at_many_pids(self) -> None:
        """Symlinks at every name a pid-based scheme could pick change nothing."""
        victim = self.victim()
        path = self.path("k")
        for pid in range(os.getpid() - 50, os.getpid() + 50):
            os.symlink(victim, f"{path}.{pid}.tmp")
        write_atomically(path, "seed\n", 0o600)
        self.assertEqual(read(victim), "precious\n")
        self.assertEqual(read(path), "seed\n")

    def test_name_is_random(self) -> None:
        """Two writes use two different temporary names, neither derived from the pid."""
        names: list[str] = []
        real_open = os.open

        def spy(name: str, flags: int, mode: int = 0o777, **kw: object) -> int:
            names.append(name)
            return real_open(name, flags, mode)

        self.patch(os, "open", spy)
        path = self.path("f")
        write_atomically(path, "1")
        write_atomically(path, "2")
        temporaries = [n for n in names if n.endswith(".tmp")]
        self.assertEqual(len(temporaries), 2)
        self.assertNotEqual(temporaries[0], temporaries[1])
        for name in temporaries:
            self.assertEqual(os.path.dirname(name), self.directory)
            self.assertNotIn(str(os.getpid()), os.path.basename(name))

    def test_symlink_at_guessed_name(self) -> None:
        """
        Even a symlink at exactly the random name chosen (as if the attacker
        guessed it) is neither followed nor removed: the write fails.
        """
        self.patch(files, "token_hex", lambda n: "guessed")
        victim = self.victim()
        dangling = os.path.join(os.path.dirname(victim), "created-by-us")
        path = self.path("k")
        os.symlink(victim, f"{path}.guessed.tmp")
        self.assertRaises(FileExistsError, write_atomically, path, "seed\n", 0o600)
        self.assertEqual(read(victim), "precious\n")
        self.assertFalse(os.path.lexists(path))
        self.assertTrue(os.path.islink(f"{path}.guessed.tmp"))
        # A dangling link must not make us create its target either.
        os.unlink(f"{path}.guessed.tmp")
        os.symlink(dangling, f"{path}.guessed.tmp")
        self.assertRaises(FileExistsError, write_atomically, path, "seed\n", 0o600)
        self.assertFalse(os.path.lexists(dangling))

    def test_symlink_at_path_replaced_not_followed(self) -> None:
        """A symlink at the destination itself is replaced; its target is untouched."""
        victim = self.victim()
        path = self.path("k")
        os.symlink(victim, path)
        write_atomically(path, "seed\n", 0o600)
        self.assertFalse(os.path.islink(path))
        self.assertEqual(read(path), "seed\n")
        self.assertEqual(read(victim), "precious\n")

    def test_failure_leaves_old_file(self) -> None:
        """A write that fails leaves the old file and no temporary behind."""
        path = self.path("k")
        write_atomically(path, "old\n")
        self.assertRaises(UnicodeEncodeError, write_atomically, path, "\udc80")
        self.assertEqual(read(path), "old\n")
        self.assertEqual(os.listdir(self.directory), ["k"])


class ReadPrivateFileTests(FilesTestCase):
    """read_private_file reads only a regular file that is ours and private."""

    def private(self, name: str, text: str = "seed\n", mode: int = 0o600) -> str:
        path = self.path(name)
        write_atomically(path, text, mode)
        return path

    def assertRefused(self, path: str, problem: str) -> UnsafeFileError:
        error = self.assertRaises(UnsafeFileError, read_private_file, path)
        message = str(error)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith(f"{path}: "), message)
        self.assertIn(problem, message)
        self.assertEqual(error.path, path)
        return error

    def test_reads_private_file(self) -> None:
        """A 0600 or 0400 file of ours reads back."""
        self.assertEqual(read_private_file(self.private("a")), "seed\n")
        self.assertEqual(read_private_file(self.private("b", "✨", 0o400)), "✨")

    def test_is_value_error(self) -> None:
        """Callers that handle bad key files (ValueError) handle these too."""
        self.assertTrue(issubclass(UnsafeFileError, ValueError))

    def test_refuses_symlink(self) -> None:
        """A symlink is refused even when it points at a private file of ours."""
        target = self.private("real")
        link = self.path("link")
        os.symlink(target, link)
        self.assertRefused(link, "symbolic link")

    def test_refuses_loose_modes(self) -> None:
        """Any group or other permission bit is refused, naming the mode."""
        for mode in (0o640, 0o604, 0o644, 0o660, 0o601, 0o610):
            path = self.private(f"loose-{mode:o}", mode=mode)
            self.assertRefused(path, f"{mode:04o}")

    def test_refuses_directory(self) -> None:
        """A directory is not a private file."""
        path = self.path("dir")
        os.mkdir(path, 0o700)
        self.assertRefused(path, "not a regular file")

    def test_refuses_fifo_without_blocking(self) -> None:
        """A FIFO is refused at once rather than waiting for a writer."""
        path = self.path("fifo")
        os.mkfifo(path, 0o600)
        self.assertRefused(path, "not a regular file")

    def test_refuses_file_of_another_user(self) -> None:
        """A file someone else owns is refused, even with a private mode."""
        path = self.private("theirs")
        self.not_ours(path)
        self.assertRefused(path, "owned by uid")

    def test_missing_file(self) -> None:
        """A missing file is an ordinary FileNotFoundError."""
        self.assertRaises(FileNotFoundError, read_private_file, self.path("none"))


class OpenPrivateAppendTests(FilesTestCase):
    """open_private_append opens a 0600 file for appending, never through a symlink."""

    def test_creates_0600_despite_umask(self) -> None:
        """A new file is 0600 even with an empty umask."""
        self.set_umask(0)
        path = self.path("x.log")
        with open_private_append(path) as f:
            f.write("one\n")
        self.assertEqual(mode_of(path), 0o600)
        with open_private_append(path) as f:
            f.write("two ✨\n")
        self.assertEqual(read(path), "one\ntwo ✨\n")

    def test_refuses_symlink(self) -> None:
        """A symlink at the name is refused and its target untouched."""
        victim = self.victim()
        path = self.path("x.log")
        os.symlink(victim, path)
        error = self.assertRaises(UnsafeFileError, open_private_append, path)
        self.assertIn("symbolic link", str(error))
        self.assertEqual(read(victim), "precious\n")

    def test_refuses_dangling_symlink(self) -> None:
        """A dangling symlink does not make us create its target."""
        target = os.path.join(os.path.dirname(self.victim()), "new")
        path = self.path("x.log")
        os.symlink(target, path)
        self.assertRaises(UnsafeFileError, open_private_append, path)
        self.assertFalse(os.path.lexists(target))

    def test_tightens_our_loose_file(self) -> None:
        """A world-readable file of ours (an older run's) becomes 0600."""
        path = self.path("x.log")
        with open(path, "w", encoding="utf-8") as f:
            f.write("old\n")
        os.chmod(path, 0o644)
        with open_private_append(path) as f:
            f.write("new\n")
        self.assertEqual(mode_of(path), 0o600)
        self.assertEqual(read(path), "old\nnew\n")

    def test_refuses_file_of_another_user(self) -> None:
        """A file planted by another user is not appended to."""
        path = self.path("x.log")
        with open(path, "w", encoding="utf-8") as f:
            f.write("planted\n")
        os.chmod(path, 0o666)
        self.not_ours(path)
        error = self.assertRaises(UnsafeFileError, open_private_append, path)
        self.assertIn("owned by uid", str(error))
        self.assertEqual(read(path), "planted\n")

    def test_refuses_directory(self) -> None:
        """A directory at the name is refused with one line."""
        path = self.path("x.log")
        os.mkdir(path)
        self.assertRaises((UnsafeFileError, IsADirectoryError), open_private_append, path)


class MakePrivateDirectoryTests(FilesTestCase):
    """make_private_directory creates 0700 directories and leaves existing ones alone."""

    def test_creates_0700(self) -> None:
        """A new directory, nested or not, is 0700 even with an empty umask."""
        self.set_umask(0)
        path = self.path("runs/case-1")
        make_private_directory(path)
        self.assertEqual(mode_of(path), 0o700)

    def test_existing_left_alone(self) -> None:
        """An existing directory keeps its permissions (it may be shared on purpose)."""
        path = self.path("shared")
        os.mkdir(path)
        os.chmod(path, 0o755)
        make_private_directory(path)
        self.assertEqual(mode_of(path), 0o755)

    def test_symlink_to_directory_accepted(self) -> None:
        """A symlink the user points at a directory is used as that directory."""
        real = self.path("real")
        os.mkdir(real)
        link = self.path("link")
        os.symlink(real, link)
        make_private_directory(link)
        self.assertTrue(os.path.isdir(link))

    def test_file_refused(self) -> None:
        """A file in the way is an OSError, which the option parsers report."""
        path = self.path("file")
        with open(path, "w"):
            pass
        self.assertRaises(OSError, make_private_directory, path)

    def test_dangling_symlink_refused(self) -> None:
        """A dangling symlink is refused and its target not created."""
        target = os.path.join(os.path.dirname(self.victim()), "new-dir")
        link = self.path("link")
        os.symlink(target, link)
        self.assertRaises(OSError, make_private_directory, link)
        self.assertFalse(os.path.lexists(target))


CASE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "etc",
    "cases",
    "failure_free.txt",
)


class KeyFileTests(FilesTestCase):
    """Olympus's key file is created private and loaded only while it stays so."""

    def test_created_private(self) -> None:
        """First start creates a 0600 seed and a 0644 .pub, even with an empty umask."""
        self.set_umask(0)
        path = self.path("olympus.key")
        key = load_or_create_key(path)
        self.assertEqual(mode_of(path), 0o600)
        self.assertEqual(mode_of(path + ".pub"), 0o644)
        self.assertEqual(load_or_create_key(path).to_seed(), key.to_seed())
        self.assertEqual(read_verify_key(path + ".pub"), key.verify_key_bytes)

    def assertUsageError(self, path: str, problem: str) -> None:
        error = self.assertRaises(usage.UsageError, load_or_create_key, path)
        message = str(error)
        self.assertEqual(message, f"--key-file {path!r}: {problem}")
        self.assertNotIn("\n", message)

    def test_refuses_loose_key(self) -> None:
        """A seed readable by group or others is one UsageError line, not a key."""
        path = self.path("olympus.key")
        load_or_create_key(path)
        os.chmod(path, 0o644)
        error = self.assertRaises(usage.UsageError, load_or_create_key, path)
        self.assertIn("permissions 0644 are too open", str(error))
        self.assertTrue(str(error).startswith(f"--key-file {path!r}: permissions"))

    def test_refuses_symlink(self) -> None:
        """A symlink at the key's name is refused, not followed or replaced."""
        victim = self.victim()
        path = self.path("olympus.key")
        os.symlink(victim, path)
        self.assertUsageError(path, "is a symbolic link; refusing to follow it")
        self.assertEqual(read(victim), "precious\n")
        self.assertTrue(os.path.islink(path))

    def test_refuses_dangling_symlink(self) -> None:
        """A dangling symlink is refused too, rather than replaced by a new key."""
        target = os.path.join(os.path.dirname(self.victim()), "new.key")
        path = self.path("olympus.key")
        os.symlink(target, path)
        self.assertUsageError(path, "is a symbolic link; refusing to follow it")
        self.assertFalse(os.path.lexists(target))

    def test_refuses_key_of_another_user(self) -> None:
        """A key someone else owns (they could have chosen it) is refused."""
        path = self.path("olympus.key")
        load_or_create_key(path)
        self.not_ours(path)
        error = self.assertRaises(usage.UsageError, load_or_create_key, path)
        self.assertIn("owned by uid", str(error))

    def test_olympus_options_one_line(self) -> None:
        """twistd bcr-olympus with a loose key file ends with one line and status 1."""
        from twisted_bcr.olympus.tap import Options

        path = self.path("olympus.key")
        load_or_create_key(path)
        os.chmod(path, 0o640)
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        error = self.assertRaises(
            SystemExit,
            Options().parseOptions,
            ["--case", CASE, "--log-dir", self.directory, "--key-file", path],
        )
        self.assertEqual(error.code, 1)
        [line] = stderr.getvalue().splitlines()
        self.assertEqual(
            line,
            f"twistd bcr-olympus: --key-file {path!r}: permissions 0640 are too "
            "open: a private file must not be accessible by group or others "
            "(chmod 600 it)",
        )

    def test_olympus_log_dir_private(self) -> None:
        """The log directory the options create, and the key made in it, are private."""
        from twisted_bcr.olympus.tap import Options

        self.set_umask(0)
        log_dir = self.path("logs")
        admission = self.path("admitted")
        write_admission(admission, [], [])
        options = Options()
        options.parseOptions(["--case", CASE, "--log-dir", log_dir, "--admission", admission])
        self.assertEqual(mode_of(log_dir), 0o700)
        self.assertEqual(mode_of(os.path.join(log_dir, "olympus.key")), 0o600)
