"""A registry that refuses: found by pointing sapd at registries that answer 4xx.

- A registry that refuses the Node (400, 403, 404 for a wrong URL, 409, 429, a 3xx
  redirect) was asked again at once, in a loop as fast as the network goes: thousands
  of POSTs a second against a registry that is already struggling or misconfigured,
  and health said nothing was wrong ("registering", not degraded).
- A child POST answered 404 (the registry lacks a parent) re-registered everything at
  once; a registry that keeps answering so was hammered the same way.
- A child POST answered 429 Too Many Requests (or 408) was taken as a refusal of that
  body and never sent again, while the machine said "registered".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sapd.bridges.nmos_registration import Registration
from sapd.bridges.nmos_resources import Resource
from tests.daemons import Daemon
from tests.support import free_tcp_port, wait_for
from tests.unit.test_nmos_registration import Model, drive, machine_with, session


def requests_at_one_instant(machine: Registration, model: Model, now: float,
                            cap: int = 500) -> int:
    """Requests the machine makes before it waits, each answered at once."""
    sent = 0
    while sent < cap:
        requests = machine.poll(now)
        if not requests:
            break
        for request in requests:
            sent += 1
            machine.response(request.id, model.answer(request), now)
    return sent


@pytest.mark.parametrize("status", [400, 403, 404, 409, 429, 307])
def test_registry_refusing_the_node_is_not_hammered(status: int) -> None:
    machine, model = machine_with(1), Model(status=status)
    assert requests_at_one_instant(machine, model, 100.0) <= 2
    assert machine.state == "backoff"  # health says degraded
    # the wait doubles while the refusals go on, as for a server error
    waits = []
    now = 100.0
    for _ in range(5):
        retry = machine.next_timer()
        assert retry is not None
        waits.append(retry - now)
        now = retry
        requests_at_one_instant(machine, model, now)
    assert waits == sorted(waits) and waits[-1] > waits[0]
    model.status = None  # the registry mends: everything lands
    drive(machine, model, now + 60)
    drive(machine, model, now + 60)
    assert machine.state == "registered" and len(model.held) == 5


def test_child_post_answered_404_again_and_again_is_not_hammered() -> None:
    machine, model = machine_with(1), Model()
    drive(machine, model, 100.0)
    original = model.answer

    def lacks_parents(request: Any) -> int:
        if request.body is not None and request.body["type"] != "node":
            model.log.append((request.method, request.path, 404))
            return 404
        return original(request)

    model.answer = lacks_parents  # type: ignore[method-assign]
    sender = session(0)[3]
    machine.put(Resource(sender.kind, sender.id, {**sender.data, "label": "x"},
                         sender.parents))
    assert requests_at_one_instant(machine, model, 100.0) <= 4
    assert machine.next_timer() is not None


@pytest.mark.parametrize("status", [429, 408])
def test_child_post_told_to_slow_down_is_sent_again_later(status: int) -> None:
    machine, model = machine_with(1), Model()
    drive(machine, model, 100.0)
    sender = session(0)[3]
    machine.put(Resource(sender.kind, sender.id, {**sender.data, "label": "x"},
                         sender.parents))
    model.status = status
    requests_at_one_instant(machine, model, 100.0)
    assert machine.state == "backoff"
    model.status = None
    for now in (102.0, 110.0, 200.0):
        drive(machine, model, now)
    assert model.held[sender.key]["label"] == "x"
    assert machine.state == "registered"


class Refusing(BaseHTTPRequestHandler):
    """Every request answered with the server's ``status``, counted."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        server: Any = self.server
        with server.lock:
            server.requests += 1
        body = b'{"code": %d, "error": "refused", "debug": null}' % server.status
        self.send_response(server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if 300 <= server.status < 400:
            self.send_header("Location", "http://192.0.2.1:1/elsewhere")
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_DELETE = do_GET = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_registry() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", free_tcp_port()), Refusing)
    server.requests, server.status, server.lock = 0, 400, threading.Lock()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [400, 404, 308])
def test_sapd_backs_off_from_a_registry_that_refuses_its_node(
        sapd_factory: Any, refusing_registry: Any, status: int) -> None:
    refusing_registry.status = status
    url = f"http://127.0.0.1:{refusing_registry.server_port}"
    daemon: Daemon = sapd_factory(config=(
        f'[web]\nlisten = "127.0.0.1:{free_tcp_port()}"\n'
        f'[nmos]\nregistry = "{url}"\n')).start()
    wait_for(lambda: refusing_registry.requests >= 1, 15, what="sapd's first POST")
    time.sleep(4.0)
    sent = refusing_registry.requests
    # 1 s, 2 s: three tries in four seconds, not thousands
    assert sent <= 6, f"{sent} requests in 4 s to a registry that refuses the node"
    health = daemon.get("/v1/health")
    assert health["status"] == "degraded" and health["nmos"] == "backoff", health


def test_child_post_answered_409_after_its_delete_is_not_hammered() -> None:
    """409 means DELETE, then register again; a registry that answers 409 to every POST
    of a sender made a POST/DELETE loop at network speed."""
    machine, model = machine_with(1), Model()
    drive(machine, model, 100.0)
    original = model.answer

    def conflicts(request: Any) -> int:
        if request.body is not None and request.body["type"] == "sender":
            model.log.append((request.method, request.path, 409))
            return 409
        return original(request)

    model.answer = conflicts  # type: ignore[method-assign]
    sender = session(0)[3]
    machine.put(Resource(sender.kind, sender.id, {**sender.data, "label": "x"},
                         sender.parents))
    assert requests_at_one_instant(machine, model, 100.0) <= 4
    assert machine.errors["conflict"] == 2
    model.answer = original  # type: ignore[method-assign]
    machine.put(Resource(sender.kind, sender.id, {**sender.data, "label": "y"},
                         sender.parents))
    drive(machine, model, 101.0)
    assert model.held[sender.key]["label"] == "y"  # a changed body is tried again


def test_heartbeats_that_always_404_do_not_resend_everything_every_five_seconds() -> None:
    """A registry whose heartbeat endpoint is broken (404 each time, while it answers
    the POSTs with 200: it still holds everything) was sent every resource again after
    each heartbeat: 50 sessions made 1,835 requests a minute, 1,000 sessions ~40,000."""
    machine, model = machine_with(50), Model()
    answer = model._answer

    def heartbeat_lost(request: Any) -> int:
        return 404 if request.purpose == "heartbeat" else answer(request)

    model._answer = heartbeat_lost  # type: ignore[method-assign]
    now = 100.0
    for _ in range(3000):  # five minutes, in 0.1 s steps
        requests_at_one_instant(machine, model, now, cap=10_000)
        now += 0.1
    full_registrations = machine.errors["heartbeat_404"]
    assert full_registrations <= 15, f"{full_registrations} in 5 min (every 5 s: 60)"
    assert machine.state == "backoff" or machine.next_timer() is not None
    model._answer = answer  # type: ignore[method-assign]
    for _ in range(400):  # mended: a heartbeat answered 200, and all is registered
        requests_at_one_instant(machine, model, now, cap=10_000)
        now += 0.1
    assert machine.state == "registered"


def test_refused_delete_is_counted_once() -> None:
    """A DELETE answered 403 was counted twice under http_403 (by the answer's handler
    and again by the back-off it starts): /metrics showed two failures for one."""
    machine, model = machine_with(1), Model()
    drive(machine, model, 100.0)
    machine.remove(session(0)[3].key)
    model.status = 403
    requests_at_one_instant(machine, model, 100.0)
    assert machine.errors["http_403"] == 1, dict(machine.errors)
