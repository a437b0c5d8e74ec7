"""madcapd decides leases on the wall clock (madcap/store/sqlite.py now(): time.time()),
not on elapsed time. MADCAP leases are durations (Lease Time, RFC 2730 section 2.1), so
when NTP or an operator steps the server's clock forward by more than a lease plus the
guard time, every lease expires at the next housekeeping tick, its guard time is already
over, and its addresses go to the next client while their holders still have most of
their lease to run: two senders on one group. (sapd's SteadyClock exists for exactly
this.) The step is played with libfaketime for madcapd alone, never on the host."""

from __future__ import annotations

import glob
import ipaddress
import socket
import time
from pathlib import Path

from madcap import wire
from madcap.wire import Message, MsgType
from tests.daemons import Daemon
from tests.support import free_udp_port, missing, need_root

SCOPE_ID = ipaddress.IPv4Address("239.255.0.0")
ONE_ADDRESS = ('[[scope]]\nname = "studio"\nrange = "239.255.0.0/16"\n'
               'pool = "239.255.10.1-239.255.10.1"\nlease_default = 3600\n')


def _exchange(port: int, msg: Message) -> Message | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(wire.encode(msg), ("127.0.0.1", port))
        try:
            return wire.decode(sock.recv(2048))
        except TimeoutError:
            return None


def test_a_clock_step_forward_does_not_give_a_leased_address_to_another_client(
        tmp_path: Path) -> None:
    need_root()
    preload = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    if not preload:
        missing("needs libfaketime (apt-get install faketime)")
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    config = tmp_path / "madcapd.toml"
    config.write_text(ONE_ADDRESS)
    port = free_udp_port()
    daemon = Daemon("madcapd", tmp_path / "m",
                    ["--listen", f"127.0.0.1:{port}", "--config", str(config),
                     "--sapd-socket", str(tmp_path / "none.sock")],
                    env={"LD_PRELOAD": preload[0], "FAKETIME_TIMESTAMP_FILE": str(offset),
                         "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    daemon.start()
    try:
        first = _exchange(port, Message(msgtype=MsgType.REQUEST, xid=1,
                                        lease_id=b"\0" * 16 + b"\1",
                                        scope=SCOPE_ID))
        assert first is not None and first.msgtype == MsgType.ACK, first
        offset.write_text("+2d\n")  # NTP corrects a clock two days slow
        time.sleep(2.5)  # two housekeeping ticks
        second = _exchange(port, Message(msgtype=MsgType.REQUEST, xid=2,
                                         lease_id=b"\0" * 16 + b"\2", scope=SCOPE_ID))
    finally:
        daemon.stop()
    warned = [e for e in daemon.log_events() if e.get("event", "").startswith("system clock")]
    assert warned and warned[0]["difference"] > 2 * 86_400 - 60, daemon.logs()
    assert second is None or second.msgtype != MsgType.ACK or \
        second.address_ranges != first.address_ranges, \
        f"{first.address_ranges} ACKed to two clients 3 s apart (lease time {first.lease_time} s)"
