# -*- test-case-name: tests.test_files -*-
"""
Files that must not be read half-written, redirected or read by others: keys,
port files, case copies, log files and the directories they go in.

Log directories and key files often live in shared places (C{/tmp}, a
group-writable project directory), where another user can plant a symlink
at a name we are about to open, or a file of their own where we expect ours.
So nothing here follows a symlink at the name it opens, files we create are
created exclusively or private from the first byte, and private files are
checked the way ssh checks private keys: a regular file, ours, and no access
for group or others.
"""

from __future__ import annotations

import os
import stat
from secrets import token_hex
from typing import IO

__all__ = [
    "UnsafeFileError",
    "make_private_directory",
    "open_private_append",
    "read_private_file",
    "write_atomically",
]


class UnsafeFileError(ValueError):
    """
    A file that is not safe to use as a private file: C{str()} is one line,
    C{"<path>: <problem>"}.

    A L{ValueError}, so that callers that already turn unreadable or invalid
    key files into one-line errors handle this too.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def write_atomically(path: str, text: str | bytes, mode: int = 0o644) -> None:
    """
    Replace C{path} by a file holding C{text} (UTF-8, or bytes as they are)
    with permissions C{mode}: written to a temporary file, synced, then
    renamed over it.

    The temporary file has a random name next to C{path} and is created
    exclusively without following symlinks, so a name planted in the
    directory beforehand makes the write fail instead of redirecting it.  A
    symlink at C{path} itself is replaced, never written through.

    @raise FileExistsError: something already has the temporary name (which
        only someone trying to redirect the write would arrange).
    """
    path = os.fspath(path)
    temporary = f"{path}.{token_hex(8)}.tmp"
    descriptor = os.open(
        temporary,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        mode,
    )
    try:
        # The umask has been applied to the mode, and may have removed bits
        # we were asked for (a 0644 .pub under umask 077).
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as output:
            descriptor = -1
            output.write(text.encode("utf-8") if isinstance(text, str) else text)
            output.flush()
            os.fsync(output.fileno())
        os.replace(temporary, path)
    except BaseException:
        if descriptor != -1:
            os.close(descriptor)
        # Only the file we created: we got here after O_EXCL succeeded.
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _sync_directory(os.path.dirname(os.path.abspath(path)))


def _sync_directory(directory: str) -> None:
    """
    Make a rename in C{directory} durable.  Best effort: the file is in
    place whatever happens here, and some file systems refuse to sync a
    directory.
    """
    try:
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _check_private(path: str, status: os.stat_result) -> None:
    """Raise L{UnsafeFileError} unless C{status} is of a private regular file of ours."""
    if not stat.S_ISREG(status.st_mode):
        raise UnsafeFileError(path, "not a regular file")
    uid = os.geteuid()
    if status.st_uid != uid:
        raise UnsafeFileError(
            path, f"owned by uid {status.st_uid}, not by this process's uid {uid}"
        )
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o077:
        raise UnsafeFileError(
            path,
            f"permissions {mode:04o} are too open: a private file must not be "
            "accessible by group or others (chmod 600 it)",
        )


def _open_no_follow(path: str, flags: int, mode: int = 0o600) -> int:
    """C{os.open} with O_NOFOLLOW, a symlink at C{path} reported as L{UnsafeFileError}."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError:
        # ELOOP also means too many links along the directories; say
        # "symbolic link" only when the last component really is one.
        if os.path.islink(path):
            raise UnsafeFileError(path, "is a symbolic link; refusing to follow it") from None
        raise


def read_private_file(path: str) -> str:
    """
    The UTF-8 text of C{path}, a secret such as a private key.

    @raise UnsafeFileError: C{path} is a symlink, not a regular file, not
        owned by this process's (effective) uid, or accessible by group or
        others: any of those could let someone else read the secret or
        substitute their own.
    @raise OSError: C{path} cannot be opened or read (e.g. it is missing).
    """
    path = os.fspath(path)
    # O_NONBLOCK: a FIFO planted at the name is refused at once instead of
    # blocking until someone writes to it; regular files ignore the flag.
    descriptor = _open_no_follow(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        _check_private(path, os.fstat(descriptor))
        with os.fdopen(descriptor, "r", encoding="utf-8") as source:
            descriptor = -1
            return source.read()
    finally:
        if descriptor != -1:
            os.close(descriptor)


def open_private_append(path: str) -> IO[str]:
    """
    C{path} opened for appending UTF-8 text, created with mode 0600 if it
    does not exist.

    An existing file of ours with looser permissions (left by an older run)
    is tightened to 0600; anything else that is not a private regular file
    of ours is refused, so a file another user planted at the name never
    receives what we write.

    @raise UnsafeFileError: C{path} is a symlink, not a regular file, or
        owned by someone else.
    """
    path = os.fspath(path)
    # O_NONBLOCK for the same FIFO reason as in read_private_file.
    descriptor = _open_no_follow(
        path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o600
    )
    try:
        status = os.fstat(descriptor)
        if stat.S_ISREG(status.st_mode) and status.st_uid == os.geteuid():
            if stat.S_IMODE(status.st_mode) & 0o077:
                os.fchmod(descriptor, 0o600)
        else:
            _check_private(path, status)
        return os.fdopen(descriptor, "a", encoding="utf-8")
    except BaseException:
        os.close(descriptor)
        raise


def make_private_directory(path: str) -> None:
    """
    Make sure directory C{path} exists, creating it (and any missing
    parents) if need be.

    A directory this creates is 0700 (its parents get the usual
    permissions: C{runs/} is often shared, the run inside it is not).
    An existing directory, or a symlink to one, is used as it is: the user
    named it, it may be shared on purpose (C{.}, a project directory), and
    changing its permissions would surprise them.  Its contents do not rely
    on it: L{write_atomically}, L{open_private_append} and
    L{read_private_file} never follow a planted symlink and refuse files
    that others own.

    @raise OSError: C{path} exists and is not a directory (a dangling
        symlink included), or cannot be created.
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        os.makedirs(parent, exist_ok=True)
    try:
        # The umask can only take bits away from 0700, and those are the
        # owner's own: nothing to fix afterwards (and a chmod by name could
        # be redirected by a symlink swapped in after the mkdir).
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
