"""Reading a file a user names (or drops in a watched directory), bounded.

A FIFO blocks open() until a writer comes, a character device (/dev/zero) never ends,
and a directory raises on read: only regular files are read, opened non-blocking, and
never more than ``limit`` bytes. Every refusal is an :class:`InputFileError` naming the
file and the reason.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

# An SDP or one SAP datagram: a receiver inflates at most 64 KiB (sapd.wire), so a
# larger file could never be announced or heard.
MAX_SDP_FILE = 64 * 1024
MAX_CAPTURE_FILE = 512 * 1024 * 1024

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


class InputFileError(ValueError):
    """A file that is not read: not there, not a regular file, or too large. ``kind``
    is the counter's reason: missing, unreadable, not_regular, too_large."""

    def __init__(self, path: str, reason: str, kind: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.kind = kind


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_regular_file(path: str | Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; never blocks on a FIFO."""
    name = str(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputFileError(name, "no such file", "missing") from None
    except OSError as exc:
        why = f"cannot open it ({exc.strerror or exc})"
        raise InputFileError(name, why, "unreadable") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputFileError(name, f"is {_kind(mode)}, not a regular file",
                                 "not_regular")
        chunks: list[bytes] = []
        wanted = limit + 1
        while wanted > 0 and (chunk := os.read(fd, min(wanted, 1 << 20))):
            chunks.append(chunk)
            wanted -= len(chunk)
    except OSError as exc:
        why = f"cannot read it ({exc.strerror or exc})"
        raise InputFileError(name, why, "unreadable") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise InputFileError(name, f"larger than {limit} bytes", "too_large")
    return data


def read_input(path: str, limit: int) -> bytes:
    """``read_regular_file``, or standard input (bounded too) for ``-``."""
    if path != "-":
        return read_regular_file(path, limit)
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise InputFileError("<stdin>", f"larger than {limit} bytes", "too_large")
    return data
