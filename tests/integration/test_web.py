"""The read-only TCP listener as a browser or curl sees it: pages, GET routes, SDP
downloads, playlists, conflicts, history, events that resume, and nothing that writes."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.attack.senders import send_from
from tests.daemons import Daemon, send_local_multicast, wait_session
from tests.packets import announce, delete, sdp_text
from tests.support import free_tcp_port, run, script, wait_for

PTP = "a=ts-refclk:ptp=IEEE1588-2008:39-A7-94-FF-FE-07-CB-D0:0\r\na=mediaclk:direct=0\r\n"
DUP = "a=group:DUP p s\r\n"


class Web:
    def __init__(self, daemon: Daemon, port: int) -> None:
        self.daemon = daemon
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, headers: dict[str, str] | None = None,
            method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.base + path, headers=headers or {},
                                         method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, path: str) -> Any:
        status, _headers, body = self.get(path)
        assert status == 200, body
        return json.loads(body)


@pytest.fixture
def web(sapd_factory: Any) -> Web:
    port = free_tcp_port()
    daemon = sapd_factory("--web", f"127.0.0.1:{port}").start()
    return Web(daemon, port)


def heard(web: Web, name: str, **kw: Any) -> dict[str, Any]:
    group = kw.pop("sap_group", "239.255.255.255")
    send_local_multicast(announce(sdp_text(name=name, **kw), source=kw.get("origin",
                                                                          "10.0.0.1")), group)
    (found,) = wait_session(web.daemon, lambda s: s["name"] == name)
    return found


def test_listener_is_read_only_and_sends_strict_headers(web: Web) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, body = web.get("/v1/announcements", method=method)
        assert status == 405 and "read-only" in json.loads(body)["error"]["message"]
        assert headers["Allow"] == "GET, HEAD"
    for path in ("/", "/v1/sessions", "/no/such/page", "/assets/directory.js", "/v1/events"):
        status, headers, _body = web.get(path, method="HEAD")
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert "Set-Cookie" not in headers and headers["X-Content-Type-Options"] == "nosniff"
    status, _h, _b = web.get("/v1/announcements")
    assert status == 200  # a GET route of the socket API is served


def test_page_escapes_names_from_the_network(web: Web) -> None:
    heard(web, "<script>alert(1)</script>", session=1)
    heard(web, '<img src=x onerror="alert(2)">', session=2)
    status, _headers, body = web.get("/")
    page = body.decode()
    assert status == 200
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page
    sid = web.daemon.sessions("?text=onerror")[0]["id"]
    status, _headers, body = web.get(f"/sessions/{sid}")
    assert status == 200 and "<img src=x" not in body.decode()


def test_sdp_download_on_tcp_and_unix_socket(web: Web) -> None:
    session = heard(web, "Stage / Box: 1", session=3)
    status, headers, body = web.get(f"/v1/sessions/{session['id']}.sdp")
    expected = web.daemon.get(f"/v1/sessions/{session['id']}")["sdp"]
    assert status == 200 and headers["Content-Type"].startswith("application/sdp")
    assert body.decode() == expected
    assert 'filename="Stage_Box_1.sdp"' in headers["Content-Disposition"]
    raw = web.daemon.client.request("GET", f"/v1/sessions/{session['id']}.sdp")
    assert raw.status == 200 and raw.body.decode() == expected
    status, _h, _b = web.get("/v1/sessions/ffffffffffffffff.sdp")
    assert status == 404


def test_clock_and_redundant_filters_and_fields(web: Web) -> None:
    heard(web, "ptp one", session=4, extra=PTP + DUP)
    heard(web, "plain", session=5)
    found = web.json("/v1/sessions?clock=39-a7-94-ff-fe-07-cb-d0")["sessions"]
    assert [s["name"] for s in found] == ["ptp one"]
    assert found[0]["clock"]["grandmaster"] == "39-A7-94-FF-FE-07-CB-D0"
    assert found[0]["redundant"] and found[0]["codecs"] == ["L24/48000/2"]
    assert [s["name"] for s in web.json("/v1/sessions?redundant=1")["sessions"]] == ["ptp one"]
    assert [s["name"] for s in web.json("/v1/sessions?redundant=0")["sessions"]] == ["plain"]
    status, _h, body = web.get("/?clock=39-A7&text=")  # empty fields of the form are ignored
    assert status == 200 and b"ptp one" in body and b">plain<" not in body


def test_conflicts_flagged_listed_and_counted(web: Web) -> None:
    # two senders are two IP sources (what rights and "who sent it" follow), not two
    # header sources from the same socket
    for sender, name, session, group in (("127.0.0.21", "first sender", 6, "239.255.7.7"),
                                         ("127.0.0.22", "second sender", 7, "239.255.7.7"),
                                         ("127.0.0.23", "elsewhere", 8, "239.255.7.8")):
        send_from(sender, announce(sdp_text(name=name, session=session, origin=sender,
                                            group=group), source=sender))
        wait_session(web.daemon, lambda s, name=name: s["name"] == name)

    def listed() -> Any:
        return web.json("/v1/conflicts")["conflicts"]
    wait_for(listed, 5, what="a conflict")
    (conflict,) = listed()
    assert (conflict["group"], conflict["port"]) == ("239.255.7.7", 5004)
    assert sorted(s["source"] for s in conflict["sessions"]) == ["127.0.0.21", "127.0.0.22"]
    flags = {s["name"]: s["conflict"] for s in web.json("/v1/sessions")["sessions"]}
    assert flags == {"first sender": True, "second sender": True, "elsewhere": False}
    _status, _h, metrics = web.get("/metrics")
    assert "sapd_conflicts 1" in metrics.decode()


def test_history_of_a_session_that_left(web: Web) -> None:
    session = heard(web, "v1", session=9)
    send_local_multicast(announce(sdp_text(session=9, version=2, name="v2")), "239.255.255.255")
    wait_session(web.daemon, lambda s: s["name"] == "v2")
    send_local_multicast(delete(session=9, version=2), "239.255.255.255")
    wait_for(lambda: web.daemon.sessions() == [], 5, what="deletion")
    history = web.json(f"/v1/sessions/{session['id']}/history")
    assert [h["event"] for h in history["history"]] == ["new", "changed", "deleted"]
    assert history["history"][-1]["reason"] == "deletion" and not history["present"]
    status, _h, body = web.get(f"/sessions/{session['id']}")
    assert status == 404 and b"history" in body


def test_playlist_of_the_current_filter(web: Web) -> None:
    one = heard(web, "Radio One", session=10)
    heard(web, "Other", session=11)
    status, headers, body = web.get("/v1/playlist.m3u?text=radio")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("audio/x-mpegurl")
    assert text.splitlines() == ["#EXTM3U", "#EXTINF:-1,Radio One",
                                 f"{web.base}/v1/sessions/{one['id']}.sdp"]


def sse_events(web: Web, count: int, last: str | None = None) -> list[dict[str, str]]:
    """Read ``count`` events (id, event, data) from /v1/events over TCP."""
    host, port = web.base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    extra = f"Last-Event-ID: {last}\r\n" if last else ""
    sock.sendall(f"GET /v1/events HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    data = b""
    events: list[dict[str, str]] = []
    while len(events) < count:
        data += sock.recv(65536)
        blocks = data.split(b"\n\n")
        events = []
        for block in blocks[:-1]:
            fields = dict(line.split(": ", 1) for line in block.decode().splitlines()
                          if ": " in line and not line.startswith(":"))
            if "event" in fields:
                events.append(fields)
    sock.close()
    return events[:count]


def test_events_carry_ids_and_resume_after_last_event_id(web: Web) -> None:
    for n in range(3):
        heard(web, f"e{n}", session=20 + n)
    stats = web.daemon.stats()
    run, seq = stats["event_run"], stats["event_seq"]
    replay = sse_events(web, 2, last=f"{run}-{seq - 2}")
    assert [json.loads(e["data"])["session"]["name"] for e in replay] == ["e1", "e2"]
    assert [e["id"] for e in replay] == [f"{run}-{seq - 1}", f"{run}-{seq}"]
    (resync,) = sse_events(web, 1, last=f"previousrun-{seq}")  # e.g. before a restart
    assert resync["event"] == "resync"
    stream = web.daemon.client.stream_lines(f"/v1/events?format=jsonl&last_event_id={run}-0")
    assert [json.loads(next(stream))["session"]["name"] for _ in range(3)] == ["e0", "e1", "e2"]


def test_non_loopback_listener_warns(sapd_factory: Any, tmp_path: Path) -> None:
    port = free_tcp_port()
    daemon = sapd_factory("--web", f"0.0.0.0:{port}", name="open").start()
    warnings = [e for e in daemon.log_events()
                if e.get("level") == "warning" and "non-loopback" in e.get("event", "")]
    assert warnings and warnings[0]["listen"] == f"http://0.0.0.0:{port}/"


def test_bad_web_listen_is_a_configuration_error(sapd_factory: Any) -> None:
    daemon = sapd_factory(config='[web]\nlisten = "localhost"\n', name="bad")
    with pytest.raises(AssertionError, match=r"web\.listen"):
        daemon.start(timeout=5)


def test_page_without_script_pages_through_the_directory(web: Web) -> None:
    for n in range(30):
        send_local_multicast(announce(sdp_text(session=100 + n, name=f"row {n:02d}")),
                             "239.255.255.255")
    wait_for(lambda: len(web.daemon.sessions()) == 30, 5, what="30 sessions")
    status, _h, body = web.get("/?limit=25")
    first = body.decode()
    assert status == 200 and first.count('<tr id="s-') == 25 and "1\u201325 of 30" in first
    assert 'rel="next" href="/?limit=25&amp;offset=25"' in first
    status, _h, body = web.get("/?limit=25&offset=25")
    second = body.decode()
    assert second.count('<tr id="s-') == 5 and "row 29" in second and "row 00" not in second
    assert 'rel="prev"' in second and 'rel="next"' not in second
    status, headers, body = web.get("/?limit=lots")
    assert status == 400 and headers["Content-Type"].startswith("text/html")
    assert "limit=&#x27;lots&#x27;" in body.decode()  # the API's check, said on a page


def test_sapctl_filters_and_shows_clock_and_redundancy(web: Web) -> None:
    heard(web, "redundant pair", session=30, extra=PTP + DUP)
    heard(web, "single", session=31)
    sock = str(web.daemon.socket)
    listed = json.loads(run(script("sapctl"), "--socket", sock, "list", "--redundant",
                            "--json", check=True).stdout)
    assert [s["name"] for s in listed["sessions"]] == ["redundant pair"]
    listed = json.loads(run(script("sapctl"), "--socket", sock, "list", "--clock",
                            "39-a7-94-ff-fe-07-cb-d0", "--json", check=True).stdout)
    (session,) = listed["sessions"]
    shown = run(script("sapctl"), "--socket", sock, "show", session["id"], check=True).stdout
    assert "clock:           39-A7-94-FF-FE-07-CB-D0" in shown
    assert "redundant:       True" in shown and "codecs:          L24/48000/2" in shown
