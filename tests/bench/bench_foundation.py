"""Foundation figures: SDP validation rate, directory upserts/s, search p99 at 100k.

Run: .venv/bin/python -m tests.bench.bench_foundation
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import sdp_transform

from sapd import sdp, wire
from sapd.store.sqlite import SearchQuery, SessionRecord, SqliteDirectory
from tests.bench.common import percentile, rate, report

AES67 = (Path(__file__).parents[2] / "examples" / "aes67-dante.sdp").read_text()


def make_record(n: int) -> SessionRecord:
    return SessionRecord(
        id=f"{n:016x}", source=f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",
        identity=f"- {n} IN IP4 10.0.0.1", version=1, msg_hash=n & 0xFFFF or 1,
        origin_address=f"10.1.{n >> 8 & 255}.{n & 255}", name=f"Stream {n} studio {n % 97}",
        info="AES67 audio" if n % 2 else "ST 2110 video", sdp=AES67,
        scope=("ipv4-local", "ipv4-global", "ipv4-org-local")[n % 3],
        sap_group="239.255.255.255", first_seen=0.0, last_seen=float(n),
        groups=(f"239.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",),
        media_types=("audio",) if n % 2 else ("video",),
        attributes=(("keywds", "Dante"), ("ptime", "1")), expires=1e10 + n)


def main() -> None:
    print(f"{'figure':58} {'value':>14} {'unit':10} target")
    lines = len(AES67.splitlines())
    validate_rate = rate(lambda: sdp.validate(AES67))
    transform_rate = rate(lambda: sdp_transform.parse(AES67), rounds=3)
    report(f"sdp.validate, {lines}-line AES67 SDP", validate_rate, "per s", ">= 10,000/s")
    report("sdp_transform.parse, same SDP (reference)", transform_rate, "per s")
    report("ratio validate / sdp_transform", validate_rate / transform_rate, "x")
    packet = wire.encode(wire.SapPacket(7, wire.ipaddress.IPv4Address("10.0.0.1"),
                                        AES67.encode()))
    report("wire.decode of that announcement", rate(lambda: wire.decode(packet)), "per s")

    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteDirectory(Path(tmp) / "bench.sqlite3")
        total = 100_000
        start = time.perf_counter()
        batch = 1000
        for base in range(0, total, batch):
            store.upsert(make_record(n) for n in range(base, base + batch))
        elapsed = time.perf_counter() - start
        report(f"directory upserts ({total:,} in batches of {batch})", total / elapsed, "per s")
        start = time.perf_counter()
        for n in range(2000):
            store.upsert([make_record(n)])
        report("directory upserts, one transaction each", 2000 / (time.perf_counter() - start),
               "per s")
        rng = random.Random(1)
        queries = [
            SearchQuery,
            lambda: SearchQuery(text=f"studio {rng.randrange(97)}", limit=50),
            lambda: SearchQuery(group=f"239.0.{rng.randrange(256)}.{rng.randrange(256)}"),
            lambda: SearchQuery(media="video", limit=50, offset=rng.randrange(1000)),
            lambda: SearchQuery(scope="ipv4-global", attribute="keywds",
                                attribute_value="Dante", limit=50),
            lambda: SearchQuery(origin=f"10.1.{rng.randrange(256)}.{rng.randrange(256)}"),
            lambda: SearchQuery(text="AES67", media="audio", limit=100),
        ]
        timings = []
        for i in range(3500):
            query = queries[i % len(queries)]()
            t0 = time.perf_counter()
            store.search(query)
            timings.append((time.perf_counter() - t0) * 1000)
        report(f"search p50 over {store.count():,} sessions (mixed filters)",
               percentile(timings, 50), "ms")
        report(f"search p99 over {store.count():,} sessions (mixed filters)",
               percentile(timings, 99), "ms", "<= 5 ms")
        counts = []
        for i in range(700):
            query = queries[i % len(queries)]()
            t0 = time.perf_counter()
            store.count(query, cap=1_000)
            counts.append((time.perf_counter() - t0) * 1000)
        report("capped count p99 (same filters; the API adds it to a list)",
               percentile(counts, 99), "ms")
        store.close()


if __name__ == "__main__":
    main()
