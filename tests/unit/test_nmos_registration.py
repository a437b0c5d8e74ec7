"""The IS-04 registration machine against a registry model in plain Python (pure: no
sockets, no clock): order, deletion in reverse, heartbeats, 404 re-registration, the
stale node, back-off, refused bodies, and versions that only grow."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sapd.bridges.nmos_registration import Registration, Request, VersionClock
from sapd.bridges.nmos_resources import (
    ClockBook,
    Context,
    Origin,
    Resource,
    map_session,
    node_resource,
)
from tests.packets import sdp_text

NODE = "0b8e3c1a-3f2d-5c4e-8a9b-1c2d3e4f5a6b"
PARENT_FIELD = {"device": "node_id", "source": "device_id", "flow": "source_id",
                "sender": "flow_id"}
PARENT_KIND = {"device": "node", "source": "device", "flow": "source", "sender": "flow"}


@dataclass
class Model:
    """What a registry holds and the rules it enforces; ``status`` overrides answers."""

    held: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    log: list[tuple[str, str, int]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    status: int | None = None

    def answer(self, request: Request) -> int:
        status = self.status or self._answer(request)
        self.log.append((request.method, request.path, status))
        return status

    def _answer(self, request: Request) -> int:
        if request.purpose == "heartbeat":
            return 200 if ("node", request.path.rsplit("/", 1)[1]) in self.held else 404
        if request.method == "DELETE":
            _, plural, rid = request.path.rsplit("/", 2)
            key = (plural[:-1], rid)
            if key not in self.held:
                return 404
            children = [k for k, v in self.held.items()
                        if k[0] in PARENT_FIELD and v[PARENT_FIELD[k[0]]] == rid]
            if children and key[0] != "node":
                self.violations.append(f"deleted {key} before its children {children}")
            if key[0] == "node":
                self.held = {}
            del_key = self.held.pop(key, None)
            assert del_key is not None or key[0] == "node"
            return 204
        assert request.body is not None
        kind, data = request.body["type"], request.body["data"]
        key = (kind, data["id"])
        if kind in PARENT_FIELD and (PARENT_KIND[kind], data[PARENT_FIELD[kind]]) \
                not in self.held:
            self.violations.append(f"{key} before its parent")
            return 400
        old = self.held.get(key)
        if old is not None and _version(data["version"]) <= _version(old["version"]):
            self.violations.append(f"{key}: version {data['version']} not after "
                                   f"{old['version']}")
            return 400
        self.held[key] = data
        return 200 if old is not None else 201


def _version(text: str) -> tuple[int, int]:
    seconds, nanoseconds = text.split(":")
    return int(seconds), int(nanoseconds)


def drive(machine: Registration, model: Model, now: float, rounds: int = 10_000) -> None:
    """Answer every request at once, until the machine has nothing more to send."""
    for _ in range(rounds):
        requests = machine.poll(now)
        if not requests:
            return
        for request in requests:
            machine.response(request.id, model.answer(request), now)
    raise AssertionError("the machine never settled")


def node() -> Resource:
    return node_resource(NODE, "sapd test", "http://127.0.0.1:8375/", "127.0.0.1", 8375,
                         [("lo", "00-00-00-00-00-00")], [])


def session(n: int, version: int = 1, origin: str = "10.0.0.1") -> tuple[Resource, ...]:
    text = sdp_text(session=n, version=version, name=f"S{n}", origin=origin)
    mapped = map_session(text, Origin(f"sid{n}", f"- {n} IN IP4 {origin}", origin),
                         Context(NODE, "http://127.0.0.1:8375/v1/sessions/", ("lo",)),
                         ClockBook())
    return mapped.resources


def machine_with(sessions: int) -> Registration:
    machine = Registration(("node", NODE))
    machine.put(node())
    for n in range(sessions):
        for resource in session(n):
            machine.put(resource)
    return machine


def test_registration_goes_node_device_source_flow_sender_and_deletes_in_reverse() -> None:
    machine, model = machine_with(3), Model()
    first = machine.poll(100.0)
    assert [r.body["type"] for r in first if r.body] == ["node"]  # the node alone first
    for request in first:
        machine.response(request.id, model.answer(request), 100.0)
    drive(machine, model, 100.0)
    assert not model.violations
    kinds = [k for k, _ in model.held]
    assert kinds.count("sender") == 3 and kinds.count("device") == 1
    assert machine.state == "registered"
    for resource in session(1):
        machine.remove(resource.key)
    drive(machine, model, 101.0)
    deletes = [path.split("/")[2] for method, path, _ in model.log if method == "DELETE"]
    assert deletes == ["senders", "flows", "sources"]  # the device still has sessions
    assert not model.violations and len(model.held) == 1 + 1 + 2 * 3


def test_last_session_of_a_host_takes_its_device_along() -> None:
    machine, model = machine_with(1), Model()
    drive(machine, model, 100.0)
    for resource in session(0):
        machine.remove(resource.key)
    drive(machine, model, 101.0)
    assert list(model.held) == [("node", NODE)] and not model.violations


def test_heartbeat_every_five_seconds_and_a_404_registers_everything_again() -> None:
    machine, model = machine_with(2), Model()
    drive(machine, model, 100.0)
    assert machine.next_timer() == 105.0
    assert machine.poll(104.9) == []
    (beat,) = machine.poll(105.0)
    assert beat.path == f"/health/nodes/{NODE}"
    machine.response(beat.id, model.answer(beat), 105.0)
    assert machine.next_timer() == 110.0
    model.held.clear()  # the registry restarted, or garbage-collected us
    (beat,) = machine.poll(110.0)
    machine.response(beat.id, model.answer(beat), 110.0)
    assert machine.errors["heartbeat_404"] == 1
    drive(machine, model, 110.0)
    assert len(model.held) == 1 + 1 + 3 * 2 and not model.violations


def test_first_node_post_answered_200_deletes_the_stale_node_and_registers_anew() -> None:
    machine, model = machine_with(1), Model()
    model.held[("node", NODE)] = {**node().data, "version": "1:0"}  # from a previous run
    (post,) = machine.poll(100.0)
    machine.response(post.id, model.answer(post), 100.0)
    assert model.log[-1][2] == 200
    (delete,) = machine.poll(100.0)
    assert (delete.method, delete.path) == ("DELETE", f"/resource/nodes/{NODE}")
    machine.response(delete.id, model.answer(delete), 100.0)
    drive(machine, model, 100.0)
    node_posts = [s for m, p, s in model.log if m == "POST" and p == "/resource"][:2]
    assert node_posts == [200, 201] and machine.counts["stale_nodes"] == 1
    assert len(model.held) == 5


def test_server_errors_back_off_exponentially_then_heartbeat_first() -> None:
    machine, model = machine_with(1), Model()
    drive(machine, model, 100.0)
    model.status = 503
    now = 105.0
    gaps = []
    for _ in range(6):
        (beat,) = machine.poll(now)
        machine.response(beat.id, model.answer(beat), now)
        retry = machine.next_timer()
        assert retry is not None
        gaps.append(retry - now)
        assert machine.poll(retry - 0.001) == []
        now = retry
    assert gaps == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    model.status = None
    (probe,) = machine.poll(now)
    assert probe.purpose == "heartbeat"  # are we still known? before anything else
    machine.response(probe.id, model.answer(probe), now)
    assert machine.state == "registered" and machine.errors["http_503"] == 6


def test_timeout_drops_in_flight_and_the_work_is_done_after_the_back_off() -> None:
    machine, model = machine_with(5), Model()
    (post,) = machine.poll(100.0)
    machine.response(post.id, model.answer(post), 100.0)
    batch = machine.poll(100.0)
    machine.failed(batch[0].id, "timeout", 100.0)
    for late in batch[1:]:  # answers from before the failure count for nothing
        machine.response(late.id, 201, 100.5)
    assert machine.poll(100.9) == []
    drive(machine, model, 101.0)
    assert len(model.held) == 1 + 1 + 3 * 5 and not model.violations


def test_a_changed_session_bumps_its_sender_version() -> None:
    machine, model = machine_with(1), Model()
    drive(machine, model, 100.0)
    sender = session(0)[3]
    before = model.held[sender.key]["version"]
    changed = Resource(sender.kind, sender.id, {**sender.data, "label": "renamed"},
                       sender.parents)
    machine.put(changed)
    drive(machine, model, 100.0)  # the same instant: the version still grows
    after = model.held[sender.key]["version"]
    assert _version(after) > _version(before) and model.held[sender.key]["label"] == "renamed"
    assert not model.violations


def test_refused_body_is_not_resent_until_it_changes() -> None:
    machine, model = machine_with(1), Model()
    drive(machine, model, 100.0)
    sender = session(0)[3]
    machine.put(Resource(sender.kind, sender.id, {**sender.data, "label": "x"},
                         sender.parents))
    model.status = 400
    drive(machine, model, 100.0)
    model.status = None
    posts = len(model.log)
    drive(machine, model, 100.0)
    assert len(model.log) == posts and machine.errors["rejected"] == 1
    machine.put(Resource(sender.kind, sender.id, {**sender.data, "label": "y"},
                         sender.parents))
    drive(machine, model, 100.0)
    assert model.held[sender.key]["label"] == "y"


def test_conflict_deletes_then_registers_again() -> None:
    machine, model = machine_with(1), Model()
    drive(machine, model, 100.0)
    sender = session(0)[3]
    machine.put(Resource(sender.kind, sender.id, {**sender.data, "label": "x"},
                         sender.parents))
    (post,) = machine.poll(100.0)
    machine.response(post.id, 409, 100.0)
    (delete,) = machine.poll(100.0)
    assert delete.method == "DELETE" and delete.key == sender.key
    machine.response(delete.id, model.answer(delete), 100.0)
    drive(machine, model, 100.0)
    assert model.held[sender.key]["label"] == "x"


def test_versions_strictly_increase_even_when_the_clock_stands_still_or_steps_back() -> None:
    clock = VersionClock()
    stamps = [clock.next(t) for t in (100.0, 100.0, 99.0, 100.0, 100.5)]
    assert [_version(s) for s in stamps] == sorted({_version(s) for s in stamps})
    assert stamps[0] == "137:0"  # TAI = UTC + 37 s


def test_window_bounds_requests_in_flight() -> None:
    machine = machine_with(100)
    (post,) = machine.poll(100.0)
    machine.response(post.id, 201, 100.0)
    (device,) = machine.poll(100.0)
    machine.response(device.id, 201, 100.0)
    assert len(machine.poll(100.0)) == machine.window
    assert machine.poll(100.0) == []


def test_moving_to_the_next_registry_keeps_the_wait_doubling() -> None:
    machine, model = machine_with(1), Model(status=503)
    waits = []
    now = 100.0
    for _ in range(4):
        (post,) = machine.poll(now)
        machine.response(post.id, model.answer(post), now)
        retry = machine.next_timer()
        assert retry is not None
        waits.append(retry - now)
        now = retry
        machine.reset(fresh=True, keep_backoff=True)  # the edge moves to the next one
    assert waits == [1.0, 2.0, 4.0, 8.0]


def test_churn_leaves_no_state_behind() -> None:
    machine, model = machine_with(0), Model()
    drive(machine, model, 100.0)
    for round_ in range(20):
        for n in range(50):
            for resource in session(round_ * 50 + n):
                machine.put(resource)
        drive(machine, model, 100.0 + round_)
        for n in range(50):
            for resource in session(round_ * 50 + n):
                machine.remove(resource.key)
        drive(machine, model, 100.5 + round_)
    assert list(machine.desired) == [("node", NODE)] == list(machine.registered)
    assert list(machine.versions) == [("node", NODE)] and machine.pending == 0
    assert not machine._children.get(("node", NODE)) and not machine._waiting
