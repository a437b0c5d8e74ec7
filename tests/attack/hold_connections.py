"""Open COUNT connections to a Unix socket, send nothing (or half a request), hold them
until stdin closes. Run as another uid with setpriv to play a hostile local user."""

from __future__ import annotations

import socket
import sys


def main() -> None:
    path, count = sys.argv[1], int(sys.argv[2])
    held = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            sock.send(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")  # never finished
        except OSError:
            sock.close()
            break
        held.append(sock)
    print(len(held), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
