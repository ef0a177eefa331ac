# -*- test-case-name: tests.test_crypto -*-
"""Writing small files (keys, port files, case copies) so that no reader ever sees half of one."""

from __future__ import annotations

import os


def write_atomically(path: str, text: str, mode: int = 0o644) -> None:
    """
    Replace C{path} by a file holding C{text} (UTF-8) with permissions
    C{mode}: written to a temporary file, synced, then renamed over it.
    """
    temporary = f"{path}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        # The umask or an older file could have left other permissions.
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "w", encoding="utf-8") as output:
            descriptor = -1
            output.write(text)
            output.flush()
            os.fsync(output.fileno())
        os.replace(temporary, path)
    except BaseException:
        if descriptor != -1:
            os.close(descriptor)
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
