"""Screenshots of the pages for the README: sapd's directory and one session, and
madcapd's scopes and leases, with sample sessions and leases, in headless Chromium.

    scripts/screenshots            (as root: runs in a network namespace of its own)

Writes docs/web-directory.png, docs/web-session.png and docs/web-madcapd.png.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.browser.chrome import chrome
from tests.daemons import Daemon, send_local_multicast
from tests.packets import announce
from tests.support import ROOT, free_tcp_port, free_udp_port, run, script, wait_for

DOCS = ROOT / "docs"
AES67 = ("v=0\r\no=- {sid} 1 IN IP4 {src}\r\ns={name}\r\ni={info}\r\nt=0 0\r\n"
         "a=group:DUP primary secondary\r\n"
         "a=ts-refclk:ptp=IEEE1588-2008:00-1D-C1-FF-FE-12-34-56:0\r\na=mediaclk:direct=0\r\n"
         "m=audio 5004 RTP/AVP 98\r\nc=IN IP4 239.69.{n}.1/32\r\na=rtpmap:98 L24/48000/{ch}\r\n"
         "a=ptime:1\r\na=mid:primary\r\na=source-filter: incl IN IP4 239.69.{n}.1 {src}\r\n"
         "m=audio 5004 RTP/AVP 98\r\nc=IN IP4 239.70.{n}.1/32\r\na=rtpmap:98 L24/48000/{ch}\r\n"
         "a=ptime:1\r\na=mid:secondary\r\n")
TS = ("v=0\r\no=- {sid} 1 IN IP4 {src}\r\ns={name}\r\nt=0 0\r\n"
      "m=video 1234 RTP/AVP 33\r\nc=IN IP4 239.255.{n}.10/32\r\n")
SESSIONS = [
    (AES67, "Stage box 1 (Dante)", "Main stage inputs 1-8", "10.1.0.11", 8),
    (AES67, "Stage box 2 (Dante)", "Main stage inputs 9-16", "10.1.0.12", 8),
    (AES67, "Commentary booth", "Two voices, stereo", "10.1.0.21", 2),
    (TS, "Campus TV 1", "", "10.2.0.5", 0),
    (TS, "Campus TV 2", "", "10.2.0.6", 0),
    (AES67, "Studio A program", "Program bus, stereo", "10.1.0.31", 2),
]


def populate() -> None:
    for i, (template, name, info, source, channels) in enumerate(SESSIONS, start=1):
        text = template.format(sid=1000 + i, src=source, name=name, info=info, n=i, ch=channels)
        send_local_multicast(announce(text, source=source), "239.255.255.255")
    # a second sender on Campus TV 1's group and port: a conflict both rows show
    clash = TS.format(sid=2000, src="10.2.0.99", name="Rogue encoder", n=4)
    send_local_multicast(announce(clash, source="10.2.0.99"), "239.255.255.255")


def inside(workdir: Path) -> int:
    web, mweb, mport = free_tcp_port(), free_tcp_port(), free_udp_port()
    sapd = Daemon("sapd", workdir / "sapd", ["--interface", "lo", "--web", f"127.0.0.1:{web}"])
    madcapd = Daemon("madcapd", workdir / "madcapd", [
        "--listen", f"127.0.0.1:{mport}", "--web", f"127.0.0.1:{mweb}",
        "--sapd-socket", str(sapd.socket)])
    sapd.start()
    madcapd.start()
    try:
        populate()
        wait_for(lambda: len(sapd.sessions()) == len(SESSIONS) + 1, 5, what="sessions")
        for _ in range(3):
            run(script("madcapctl"), "--server", f"127.0.0.1:{mport}", "request", check=True)
        DOCS.mkdir(exist_ok=True)
        with chrome(width=1400, height=620) as driver:
            driver.get(f"http://127.0.0.1:{web}/")
            time.sleep(1.0)  # the live indicator
            driver.save_screenshot(str(DOCS / "web-directory.png"))
            first = next(s for s in sapd.sessions() if s["name"].startswith("Stage box 1"))
            driver.set_window_size(1400, 1100)
            driver.get(f"http://127.0.0.1:{web}/sessions/{first['id']}")
            time.sleep(0.5)
            driver.save_screenshot(str(DOCS / "web-session.png"))
            driver.set_window_size(1400, 520)
            driver.get(f"http://127.0.0.1:{mweb}/")
            time.sleep(0.5)
            driver.save_screenshot(str(DOCS / "web-madcapd.png"))
    finally:
        madcapd.stop()
        sapd.stop()
    for name in ("web-directory.png", "web-session.png", "web-madcapd.png"):
        print(DOCS / name)
    return 0


def main() -> int:
    if "--inside" in sys.argv:
        return inside(Path(sys.argv[-1]))
    netns = f"sapd-shots-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"],
                       check=True)
        with tempfile.TemporaryDirectory(prefix="sapd-shots-") as workdir:
            return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-m",
                                   "tests.tools.screenshots", "--inside", workdir],
                                  cwd=ROOT, check=False).returncode
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


if __name__ == "__main__":
    sys.exit(main())
