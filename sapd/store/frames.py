"""The private wire between the daemon and its store process.

Frames of a 4-byte length and a marshal'd body over a socket pair. A batch is
``(deletes, upserts, refreshes)`` of plain values (a record as its fields in order, see
:data:`sapd.records.record_values`); an acknowledgement is ``(batches, error, reason,
passing)`` (see :mod:`sapd.store.failures`). A new record column travels without a
change here.
"""

from __future__ import annotations

import marshal
import struct
from collections.abc import Iterator
from typing import Any

from sapd.records import SessionRecord, Writes, record_values

FRAME = struct.Struct("!I")


def frame(body: tuple[Any, ...]) -> bytes:
    data = marshal.dumps(body)
    return FRAME.pack(len(data)) + data


def encode_writes(writes: Writes) -> bytes:
    """A batch as one frame: ~4 us a new session, on the daemon's core."""
    return frame((writes.deletes, [record_values(r) for r in writes.upserts.values()],
                  writes.refreshes))


def decode_writes(body: bytes) -> Writes:
    deletes, upserts, refreshes = marshal.loads(body)
    return Writes({values[0]: SessionRecord(*values) for values in upserts}, deletes,
                  refreshes)


class FrameReader:
    """Whole frames out of a stream socket's bytes, however they were split."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._buffer += data
        start = 0
        while len(self._buffer) - start >= FRAME.size:
            (size,) = FRAME.unpack_from(self._buffer, start)
            end = start + FRAME.size + size
            if end > len(self._buffer):
                break
            yield bytes(self._buffer[start + FRAME.size:end])
            start = end
        del self._buffer[:start]
