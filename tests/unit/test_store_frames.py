"""The wire between the daemon and its store process: frames and batches."""

from __future__ import annotations

import marshal
import random

from sapd.records import SessionRecord, Writes
from sapd.store.frames import FRAME, FrameReader, decode_writes, encode_writes, frame


def session(n: int) -> SessionRecord:
    return SessionRecord(
        id=f"s{n}", source="10.0.0.1", identity=f"- {n} IN IP4 10.0.0.1", version=3,
        msg_hash=n, origin_address="10.0.0.1", name=f"Stüdio {n} \"A\"\n", info=None,
        sdp="v=0\r\n", scope="ipv4-local", sap_group="239.255.255.255", first_seen=0.1,
        last_seen=1e9 + 0.123456789, local=bool(n % 2), owner_uid=None if n % 2 else 1000,
        auth_tag="", acl={"users": [1000]}, blob={"k": {"nested": [1.5, None]}},
        options={}, period=30.0, expires=None, stale=True, groups=("239.1.1.1", "ff05::1"),
        media_types=("audio", "video"), attributes=(("keywds", "Dante"), ("recvonly", None)),
        content_crc=4_000_000_000)


def test_a_batch_survives_the_wire_exactly() -> None:
    writes = Writes({f"s{n}": session(n) for n in range(3)}, {"gone1", "gone2"},
                    {"s9": (12.5, None, 30.0, 77), "s8": (1.0, 2.0, None, 0)})
    data = encode_writes(writes)
    (size,) = FRAME.unpack_from(data)
    assert size == len(data) - FRAME.size
    back = decode_writes(data[FRAME.size:])
    assert back.upserts == writes.upserts
    assert back.deletes == writes.deletes
    assert back.refreshes == writes.refreshes
    assert list(back.upserts) == list(writes.upserts)  # order kept: rids follow it


def test_frames_come_out_whole_however_the_stream_is_cut() -> None:
    bodies = [(n, "x" * n, None) for n in (0, 1, 70_000, 5)]
    stream = b"".join(frame(body) for body in bodies)
    rng = random.Random(7)
    for _ in range(20):
        reader, got, at = FrameReader(), [], 0
        while at < len(stream):
            step = rng.choice([1, 2, 3, 4, 5, 100, 65_536])
            got += reader.feed(stream[at:at + step])
            at += step
        assert [marshal.loads(b) for b in got] == bodies
    reader = FrameReader()
    assert len(list(reader.feed(stream[:-1]))) == 3  # the last is not whole yet
    assert [marshal.loads(b) for b in reader.feed(stream[-1:])] == [bodies[-1]]
