"""Signed-announcement figures: verified announcements/s through the engine under
``prefer`` (one core), signing cost, signature size.

Run: .venv/bin/python -m tests.bench.bench_signing
The engine figures divide by CPU time (time.process_time): the figure is per core, and
a shared machine's other load does not make it look slower than it is.
"""

from __future__ import annotations

import time

from sapd import signing, wire
from sapd.lifecycle import Engine, Limits
from sapd.trust import TrustPolicy
from tests import certs
from tests.bench.common import rate, report
from tests.packets import announce, sdp_text

SESSIONS = 2_000


def verified_rate(creds: certs.Credentials, kind: str) -> tuple[float, float]:
    """(new sessions/s, re-announcements/s): every packet is verified, none is
    refreshed by its bytes (each re-announcement is signed afresh, as sapd sends)."""
    key = signing.SigningKey(creds.key_pem, creds.cert_pem)
    now = float(int(time.time()))
    first = [key.sign(announce(sdp_text(session=n, name=f"S{n}",
                                        group=f"239.255.{n >> 8}.{n & 255}")), now)
             for n in range(SESSIONS)]
    again = [key.sign(announce(sdp_text(session=n, name=f"S{n}",
                                        group=f"239.255.{n >> 8}.{n & 255}")), now + 30)
             for n in range(SESSIONS)]
    policy = TrustPolicy(signing.Anchors([creds.certificate]), default="prefer")
    engine = Engine(trust=policy, limits=Limits(source_rate=1e9, source_burst=1e9))
    start = time.process_time()
    outcomes = [engine.receive_datagram(d, now + 1) for d in first]
    new_rate = SESSIONS / (time.process_time() - start)
    start = time.process_time()
    outcomes += [engine.receive_datagram(d, now + 31) for d in again]
    again_rate = SESSIONS / (time.process_time() - start)
    assert outcomes.count("new") == SESSIONS and outcomes.count("refresh") == SESSIONS, \
        (kind, sorted(set(outcomes)))
    return new_rate, again_rate


def main() -> None:
    print(f"{'figure':58} {'value':>14} {'unit':10} target")
    for kind in ("ec", "ed25519"):
        creds = certs.make("bench", kind=kind)
        new_rate, again_rate = verified_rate(creds, kind)
        report(f"verified new announcements, {kind}", new_rate, "per s", ">= 2,000/s")
        report(f"verified re-announcements, {kind}", again_rate, "per s", ">= 2,000/s")
        key = signing.SigningKey(creds.key_pem, creds.cert_pem)
        datagram = announce(sdp_text())
        report(f"signing one announcement, {kind}",
               rate(lambda key=key, d=datagram: key.sign(d, 1e9), rounds=3), "per s")
        size = len(wire.decode(key.sign(datagram, 1e9)).auth_raw)
        report(f"authentication data, {kind}", size, "bytes", f"<= {signing.MAX_AUTH_BYTES}")
    plain = Engine(limits=Limits(source_rate=1e9, source_burst=1e9))
    packets = [announce(sdp_text(session=n)) for n in range(SESSIONS)]
    start = time.process_time()
    for d in packets:
        plain.receive_datagram(d, 1.0)
    report("unsigned new announcements (for comparison)",
           SESSIONS / (time.process_time() - start), "per s")


if __name__ == "__main__":
    main()
