"""A scripted RTSP server for the RAVENNA tests: plain asyncio, one mode per run.

    python tests/tools/rtsp_script_peer.py --mode announce --port 8600 --sdp FILE

Modes: ``literal_path`` answers only a DESCRIBE whose path keeps ':' as written;
``announce`` answers DESCRIBE with FILE's SDP and, on a line ``announce FILE2``
on stdin, sends every open connection an ANNOUNCE with FILE2's SDP (prints ``sent N``);
the hostile ones answer DESCRIBE with endless headers (``endless_headers``), a huge
Content-Length (``huge_length``), a valid answer one byte a second (``slowloris``) or a
body that is not SDP (``garbage_sdp``); ``close_each`` closes the connection after each
answer; ``flood_announce`` answers, then sends 3,000 ANNOUNCEs of rising versions as
fast as it can (a DESCRIBE then gets the latest). Prints ``ready`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path


def response(cseq: str, body: bytes = b"", extra: str = "") -> bytes:
    head = f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}"
    if body:
        head += f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def announcement(cseq: int, sdp: bytes) -> bytes:
    return (f"ANNOUNCE rtsp://peer/by-name/x RTSP/1.0\r\nCSeq: {cseq}\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
            ).encode() + sdp


def rising(sdp: bytes) -> bytes:
    """The same SDP with its o= version one higher."""
    lines = sdp.split(b"\r\n")
    for n, line in enumerate(lines):
        if line.startswith(b"o="):
            words = line.split(b" ")
            words[2] = str(int(words[2]) + 1).encode()
            lines[n] = b" ".join(words)
    return b"\r\n".join(lines)


class Peer:
    def __init__(self, mode: str, sdp: bytes) -> None:
        self.mode = mode
        self.sdp = sdp
        self.writers: list[asyncio.StreamWriter] = []
        self.announce_cseq = 100
        self.flooded = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method = lines[0].split(" ")[0]
                cseq = next((line.split(":", 1)[1].strip() for line in lines
                             if line.lower().startswith("cseq:")), "0")
                if method.startswith("RTSP/"):
                    continue  # the answer to our ANNOUNCE
                url = lines[0].split(" ")[1] if " " in lines[0] else ""
                if self.mode == "literal_path" and "%3A" in url:
                    # a server that mounted "Desk: Main" with its colon as written
                    writer.write(f"RTSP/1.0 404 Not Found\r\nCSeq: {cseq}\r\n\r\n".encode())
                    continue
                await self.answer(method, cseq, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.remove(writer)
            writer.close()

    async def answer(self, method: str, cseq: str, writer: asyncio.StreamWriter) -> None:
        mode = self.mode
        if method != "DESCRIBE" or mode in ("announce", "literal_path"):
            writer.write(response(cseq, self.sdp if method == "DESCRIBE" else b""))
        elif mode == "close_each":
            writer.write(response(cseq, self.sdp))
            await writer.drain()
            writer.close()
        elif mode == "flood_announce":
            writer.write(response(cseq, self.sdp))
            if not self.flooded:
                self.flooded = True
                for _ in range(60):
                    batch = []
                    for _ in range(50):
                        self.sdp = rising(self.sdp)
                        batch.append(announcement(self.announce_cseq, self.sdp))
                        self.announce_cseq += 1
                    writer.write(b"".join(batch))
                    await writer.drain()
        elif mode == "garbage_sdp":
            writer.write(response(cseq, b"this is not an SDP at all\r\n"))
        elif mode == "huge_length":
            writer.write(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp"
                         f"\r\nContent-Length: 1000000000\r\n\r\nv=0\r\n".encode())
        elif mode == "endless_headers":
            writer.write(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n".encode())
            for n in range(1_000_000):
                writer.write(f"X-Pad-{n}: {'a' * 60}\r\n".encode())
                await writer.drain()
        elif mode == "slowloris":
            for byte in response(cseq, self.sdp):
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(1.0)
        await writer.drain()

    def announce(self, sdp: bytes) -> int:
        self.sdp = sdp
        for writer in self.writers:
            self.announce_cseq += 1
            writer.write(announcement(self.announce_cseq, sdp))
        return len(self.writers)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sdp")
    args = parser.parse_args()
    peer = Peer(args.mode, Path(args.sdp).read_bytes() if args.sdp else b"v=0\r\n")
    server = await asyncio.start_server(peer.handle, "0.0.0.0", args.port)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        words = line.split()
        if len(words) == 2 and words[0] == "announce":
            print(f"sent {peer.announce(Path(words[1]).read_bytes())}", flush=True)
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
