"""A RAVENNA-like RTSP server for the tests: GStreamer's gst-rtsp-server serving one
multicast L24 session at /by-name/<name> (percent-encoded: GStreamer matches the mount
path as requested, and a request line cannot carry a space).

Runs under Debian's /usr/bin/python3 (the gi bindings are not in the virtualenv):

    /usr/bin/python3 tests/tools/gst_rtsp_peer.py --port 8554 --name "Studio A"

Prints "ready" once it listens. Each line on stdin "channels N" replaces the session's
media with an N-channel one, so the next DESCRIBE answers a different SDP (GStreamer
sends no ANNOUNCE). GStreamer writes a fresh random o= session id into every SDP.
"""

from __future__ import annotations

import argparse
import sys
import threading
from urllib.parse import quote

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def factory(channels: int, first: str, last: str) -> GstRtspServer.RTSPMediaFactory:
    made = GstRtspServer.RTSPMediaFactory()
    made.set_launch(f"( audiotestsrc is-live=true ! audioconvert ! "
                    f"audio/x-raw,channels={channels},rate=48000 ! "
                    f"rtpL24pay name=pay0 pt=98 )")
    made.set_shared(True)
    made.set_protocols(GstRtsp.RTSPLowerTrans.UDP_MCAST)
    pool = GstRtspServer.RTSPAddressPool()
    pool.add_range(first, last, 5004, 5100, 16)
    made.set_address_pool(pool)
    return made


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--name", required=True)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--group", default="239.69.1.1")
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    path = "/by-name/" + quote(args.name, safe="")
    mounts.add_factory(path, factory(args.channels, args.group, args.group))
    server.attach(None)
    loop = GLib.MainLoop()

    def replace(channels: int) -> bool:
        mounts.remove_factory(path)
        mounts.add_factory(path, factory(channels, args.group, args.group))
        print(f"channels {channels}", flush=True)
        return False

    def commands() -> None:
        for line in sys.stdin:
            words = line.split()
            if len(words) == 2 and words[0] == "channels":
                GLib.idle_add(replace, int(words[1]))
        GLib.idle_add(loop.quit)

    threading.Thread(target=commands, daemon=True).start()
    print("ready", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
