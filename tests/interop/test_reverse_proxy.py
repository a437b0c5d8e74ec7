"""The README's reverse-proxy recipe (examples/nginx-sapd.conf), run for real: nginx
with TLS and a password in front of sapd's web listener, live events passing through."""

from __future__ import annotations

import base64
import http.client
import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon, send_local_multicast, stop_daemons
from tests.packets import announce, sdp_text
from tests.support import ROOT, free_tcp_port, need_tool, run, wait_for

RECIPE = ROOT / "examples" / "nginx-sapd.conf"
USER, PASSWORD = "noc", "s3cret-pass"


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    nginx, openssl = need_tool("nginx"), need_tool("openssl")
    web, tls = free_tcp_port(), free_tcp_port()
    sapd = Daemon("sapd", tmp_path / "sapd", ["--interface", "lo", "--web", f"127.0.0.1:{web}"])
    sapd.start()
    cert, key = tmp_path / "sapd.crt", tmp_path / "sapd.key"
    run(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
        "-keyout", str(key), "-out", str(cert), check=True)
    hashed = run(openssl, "passwd", "-apr1", PASSWORD, check=True).stdout.strip()
    (tmp_path / "htpasswd").write_text(f"{USER}:{hashed}\n")
    server = (RECIPE.read_text()
              .replace("listen 443 ssl;", f"listen 127.0.0.1:{tls} ssl;")
              .replace("/etc/nginx/tls/sapd.crt", str(cert))
              .replace("/etc/nginx/tls/sapd.key", str(key))
              .replace("/etc/nginx/sapd.htpasswd", str(tmp_path / "htpasswd"))
              .replace("127.0.0.1:8375", f"127.0.0.1:{web}"))
    conf = tmp_path / "nginx.conf"
    # workers as the test's own user: pytest's directory is closed to www-data
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(f"{user}pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
                    "events {}\nhttp {\naccess_log off;\n"
                    f"client_body_temp_path {tmp_path}/body;\n"
                    f"proxy_temp_path {tmp_path}/proxy;\n{server}\n}}\n")
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
                            stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _status(tls, "/", auth=True) == 200, 10, what="nginx")
        yield tls, cert
    finally:
        proc.terminate()
        proc.wait(10)
        stop_daemons([sapd])


def _connection(port: int) -> http.client.HTTPSConnection:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the fixture's self-signed certificate
    return http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)


def _headers(auth: bool) -> dict[str, str]:
    if not auth:
        return {}
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _status(port: int, path: str, auth: bool, method: str = "GET") -> int:
    try:
        conn = _connection(port)
        conn.request(method, path, headers=_headers(auth))
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return 0


def test_tls_and_password_in_front_and_events_pass_through(
        proxied: tuple[int, Path]) -> None:
    port, _cert = proxied
    assert _status(port, "/", auth=False) == 401
    assert _status(port, "/v1/events", auth=False) == 401
    assert _status(port, "/v1/sessions", auth=True) == 200
    assert _status(port, "/v1/announcements", auth=True, method="POST") == 403
    conn = _connection(port)
    conn.request("GET", "/v1/events", headers=_headers(True))
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    assert b"sapd event stream" in response.readline()
    time.sleep(0.3)
    send_local_multicast(announce(sdp_text(name="through nginx")), "239.255.255.255")
    started = time.monotonic()
    data = b""
    while b"through nginx" not in data:
        data += response.readline()
    assert time.monotonic() - started < 1.0  # unbuffered: the event is not held back
    conn.close()
