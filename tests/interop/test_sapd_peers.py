"""Real peers judge what sapd sends: tshark's SAP dissector, FFmpeg's SAP demuxer."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from tests.daemons import Daemon
from tests.netns.harness import Network, sh
from tests.support import ROOT, need_tool

EXAMPLE = (ROOT / "examples" / "lab-tone.sdp").read_text()


def test_tshark_decodes_every_packet_without_errors(net: Network, daemons: Any,
                                                    tmp_path: Path) -> None:
    tshark = need_tool("tshark")
    a, b = net.host("a"), net.host("b")
    _, ib = net.link(a, b, 50)
    capture = tmp_path / "sap.pcapng"
    proc = subprocess.Popen(["ip", "netns", "exec", b.name, tshark, "-q", "-i", ib, "-f",
                             "udp port 9875", "-w", str(capture)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(2.0)  # tshark needs a moment before it captures
        sapd: Daemon = daemons("sapd", a).start()
        made = sapd.client.send_json("POST", "/v1/announcements",
                                     {"sdp": EXAMPLE, "interval": 1})
        time.sleep(2.5)
        sapd.client.send_json("PUT", f"/v1/announcements/{made['id']}",
                              {"sdp": EXAMPLE.replace("1 kHz", "2 kHz")})
        time.sleep(1.0)
        sapd.client.request("DELETE", f"/v1/announcements/{made['id']}")
        time.sleep(2.5)
    finally:
        proc.terminate()
        proc.wait(10)
    fields = subprocess.run(
        [tshark, "-r", str(capture), "-T", "fields", "-e", "sap.flags.t", "-e",
         "sdp.session_name", "-e", "_ws.malformed", "-e", "_ws.expert"],
        capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(fields) >= 4, fields
    rows = [line.split("\t") for line in fields]
    assert all(len(r) < 3 or not any(r[2:]) for r in rows), f"malformed or expert: {rows}"
    names = {r[1] for r in rows if len(r) > 1 and r[1]}
    assert {"Lab tone 1 kHz", "Lab tone 2 kHz"} <= names
    kinds = [r[0] for r in rows]
    assert any(k in ("1", "True") for k in kinds)  # deletions were sent and decoded
    verbose = subprocess.run([tshark, "-r", str(capture), "-V"], capture_output=True,
                             text=True, check=True).stdout
    assert "Malformed" not in verbose and "Expert Info" not in verbose


def test_ffmpeg_demuxer_opens_a_session_only_sapd_announced(net: Network, daemons: Any) -> None:
    ffmpeg = need_tool("ffmpeg")
    a, b = net.host("a"), net.host("b")
    net.link(a, b, 51)
    # The media itself: FFmpeg sends RTP from a; its SDP is what sapd announces.
    sdp_text = sh(a.name, ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                  "sine=frequency=1000:sample_rate=48000", "-t", "0.1", "-c:a", "pcm_s16be",
                  "-ac", "1", "-f", "rtp", "-sdp_file", "/dev/stdout",
                  "rtp://239.255.10.1:5004?ttl=16")
    assert sdp_text.returncode == 0, sdp_text.stderr
    description = sdp_text.stdout[sdp_text.stdout.index("v=0"):]
    description = description.replace("o=- 0 0 IN IP4 127.0.0.1",
                                      f"o=- 4242 1 IN IP4 {a.address()}")
    rtp = subprocess.Popen(["ip", "netns", "exec", a.name, ffmpeg, "-hide_banner", "-loglevel",
                            "error", "-re", "-f", "lavfi", "-i",
                            "sine=frequency=1000:sample_rate=48000", "-t", "30", "-c:a",
                            "pcm_s16be", "-ac", "1", "-f", "rtp",
                            "rtp://239.255.10.1:5004?ttl=16"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sapd: Daemon = daemons("sapd", a).start()
        sapd.client.send_json("POST", "/v1/announcements",
                              {"sdp": description, "interval": 1, "sap_group": "224.2.127.254"})
        opened = sh(b.name, "timeout", "20", ffmpeg, "-hide_banner", "-i",
                    "sap://224.2.127.254", "-t", "1", "-f", "null", "-")
        assert opened.returncode == 0, opened.stderr[-2000:]
        assert "pcm_s16be" in opened.stderr and "48000 Hz" in opened.stderr
    finally:
        rtp.kill()
        rtp.wait()
