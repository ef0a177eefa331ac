# -*- test-case-name: tests.test_admission -*-
"""
Which identities Olympus admits: the operator's admission file, in the
spirit of OpenSSH's C{authorized_keys}.

One identity per line; C{#} starts a comment; blank lines are ignored::

    # replicas: any process holding one of these identity keys may register
    # as a spare
    replica 3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29 host-a
    # clients: the one key that may act as client <index>
    client 0 d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a

Keys are the 64 hex digits of an Ed25519 public key (the C{.pub} file next
to a process's C{--identity-key}); anything after the key is a comment.
L{AdmissionFile} re-reads the file whenever it has changed, so admitting or
revoking a key needs no restart (docs/SECURITY.md says what revoking does
to a replica that is already serving).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping

from attrs import field, frozen
from zope.interface import implementer

from twisted_bcr.files import write_atomically
from twisted_bcr.interfaces import IAdmission

__all__ = [
    "AdmissionError",
    "AdmissionFile",
    "AdmittedKeys",
    "admission_text",
    "parse_admission",
    "parse_admission_file",
    "write_admission",
]

#: More identities than this in one file is refused: every one costs memory.
MAX_IDENTITIES = 100_000

_KEY_HEX_DIGITS = 64

#: The stamp of a file that could not be looked at.
_MISSING = (-1, -1, -1)


class AdmissionError(ValueError):
    """An admission file that cannot be read or parsed (one line: where and why)."""


@implementer(IAdmission)
@frozen
class AdmittedKeys:
    """The identities one version of an admission file admits."""

    replicas: frozenset[bytes] = frozenset()
    clients: Mapping[int, bytes] = field(factory=dict)

    def admits_replica(self, identity_key: bytes) -> bool:
        return identity_key in self.replicas

    def client_key(self, index: int) -> bytes | None:
        return self.clients.get(index)


def _key(text: str, where: str) -> bytes:
    if len(text) != _KEY_HEX_DIGITS:
        raise AdmissionError(f"{where}: a key is {_KEY_HEX_DIGITS} hex digits: {text[:80]!r}")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise AdmissionError(f"{where}: not a hex key: {text[:80]!r}") from None


def parse_admission(text: str, source: str = "<admission>") -> AdmittedKeys:
    """
    The identities C{text} admits.

    @raise AdmissionError: naming C{source}, the line and the problem.
    """
    replicas: set[bytes] = set()
    clients: dict[int, bytes] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{source}:{number}"
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        kind = words[0]
        if kind == "replica" and len(words) >= 2:
            replicas.add(_key(words[1], where))
        elif kind == "client" and len(words) >= 3:
            if not words[1].isdigit():
                raise AdmissionError(f"{where}: client index {words[1][:20]!r} is not a number")
            index = int(words[1])
            if index in clients:
                raise AdmissionError(f"{where}: client {index} is listed twice")
            clients[index] = _key(words[2], where)
        else:
            raise AdmissionError(
                f"{where}: expected 'replica KEY' or 'client INDEX KEY', got {line.strip()[:80]!r}"
            )
        if len(replicas) + len(clients) > MAX_IDENTITIES:
            raise AdmissionError(f"{source}: more than {MAX_IDENTITIES} identities")
    return AdmittedKeys(frozenset(replicas), clients)


def parse_admission_file(path: str) -> AdmittedKeys:
    """
    The identities the file at C{path} admits.

    @raise AdmissionError: it cannot be read or parsed.
    """
    try:
        with open(path, encoding="utf-8") as admission:
            text = admission.read()
    except (OSError, UnicodeDecodeError) as e:
        raise AdmissionError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    return parse_admission(text, path)


def admission_text(
    replicas: Iterable[tuple[bytes, str]], clients: Iterable[tuple[int, bytes, str]]
) -> str:
    """An admission file admitting C{(key, comment)} replicas and C{(index, key, comment)} clients."""
    lines = ["# twisted_bcr admission file (docs/SECURITY.md)"]
    lines += [f"replica {key.hex()} {comment}".rstrip() for key, comment in replicas]
    lines += [f"client {index} {key.hex()} {comment}".rstrip() for index, key, comment in clients]
    return "\n".join(lines) + "\n"


@implementer(IAdmission)
class AdmissionFile:
    """
    The identities an admission file admits now: the file is read again
    whenever its modification time, size or inode changed since the last
    look.  A version that does not parse is not used: the last good one
    stays in force and C{on_error} is told why, once per bad version.
    """

    def __init__(self, path: str, on_error: Callable[[str], None]) -> None:
        """
        @raise AdmissionError: the file cannot be read or parsed at all.
        """
        self.path = path
        self._on_error = on_error
        self._stamp: tuple[int, int, int] | None = None
        self._failed_stamp: tuple[int, int, int] | None = None
        self._keys = self._read()

    def _current_stamp(self) -> tuple[int, int, int]:
        status = os.stat(self.path)
        return (status.st_mtime_ns, status.st_size, status.st_ino)

    def _read(self) -> AdmittedKeys:
        try:
            stamp = self._current_stamp()
        except OSError as e:
            raise AdmissionError(f"{self.path}: cannot read: {e.strerror}") from None
        keys = parse_admission_file(self.path)
        self._stamp = stamp
        return keys

    def current(self) -> AdmittedKeys:
        """The admitted identities, re-read if the file changed."""
        try:
            stamp = self._current_stamp()
        except OSError:
            stamp = _MISSING
        if stamp in (self._stamp, self._failed_stamp):
            return self._keys
        try:
            self._keys = self._read()
        except AdmissionError as e:
            self._failed_stamp = stamp
            self._on_error(f"{e}; the previous admission list stays in force")
        return self._keys

    def admits_replica(self, identity_key: bytes) -> bool:
        return self.current().admits_replica(identity_key)

    def client_key(self, index: int) -> bytes | None:
        return self.current().client_key(index)


def write_admission(
    path: str,
    replicas: Iterable[tuple[bytes, str]],
    clients: Iterable[tuple[int, bytes, str]],
) -> None:
    """Write an admission file atomically (mode 0644: it holds public keys only)."""
    write_atomically(path, admission_text(replicas, clients))
