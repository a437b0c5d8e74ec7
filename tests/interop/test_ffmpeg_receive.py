"""FFmpeg's SAP muxer announces in one namespace; sapd in another lists it."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from tests.daemons import elapsed_until, wait_session
from tests.netns.harness import Network
from tests.support import need_tool


def test_ffmpeg_announcement_and_deletion(net: Network, daemons: Any) -> None:
    ffmpeg = need_tool("ffmpeg")
    a, b = net.host("a"), net.host("b")
    net.link(a, b, 10)
    sapd = daemons("sapd", b).start()
    started = time.monotonic()
    proc = subprocess.Popen(
        ["ip", "netns", "exec", a.name, ffmpeg, "-hide_banner", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000", "-t", "4",
         "-c:a", "pcm_s16be", "-ac", "1", "-f", "sap", "sap://239.69.1.10:5004?ttl=16"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        (session,) = wait_session(sapd, lambda s: s["groups"] == ["239.69.1.10"], timeout=3)
        assert time.monotonic() - started < 3.0
        assert session["name"] == "No Name" and session["media"] == ["audio"]
        detail = sapd.get(f"/v1/sessions/{session['id']}")
        (conn,) = detail["description"]["connections"]
        assert (conn["address"], conn["ttl"]) == ("239.69.1.10", 16)
        assert detail["description"]["media"][0]["codecs"][0]["encoding"] == "L16"
        proc.wait(20)
        ended = time.monotonic()
        gone = elapsed_until(lambda: sapd.sessions() == [], 2)
        assert time.monotonic() - ended < 1.0, f"deletion took {gone:.2f}s"
        assert sapd.stats()["packets"]["deleted"] == 1
    finally:
        proc.kill()
        proc.wait()
