"""Every value from the control socket is bounded (issue 13 item 4): a type and a bound for
each field of a request body, JSON 400s naming the field, and a bad value stored by an
older sapd neither hangs nor breaks the new one at start-up."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sapd.lifecycle import record_from_session
from sapd.plumbing.client import ClientError, Response
from sapd.scopes import ScopeTable
from sapd.sdp import validate
from sapd.store import SQLITE_FILE
from sapd.store.sqlite import SqliteDirectory
from tests.daemons import Daemon
from tests.support import ROOT

EXAMPLE = (ROOT / "examples" / "lab-tone.sdp").read_text()


@pytest.fixture(scope="module")
def sapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the refusals: each test leaves no announcement behind."""
    daemon = Daemon("sapd", tmp_path_factory.mktemp("bounds"), ["--interface", "lo"])
    daemon.start()
    yield daemon
    daemon.stop()


def raw_post(daemon: Daemon, body: bytes, path: str = "/v1/announcements",
             method: str = "POST") -> Response | ClientError:
    try:
        return daemon.client.request(method, path, body, {"Content-Type": "application/json"})
    except ClientError as exc:
        return exc


def refusal(daemon: Daemon, body: bytes) -> dict[str, Any]:
    """The JSON error of a request that must be refused with 400."""
    answer = raw_post(daemon, body)
    assert isinstance(answer, ClientError), f"accepted: {answer}"
    assert answer.status == 400, (answer.status, str(answer))
    assert isinstance(answer.body, dict), f"not a JSON error: {answer}"
    error: dict[str, Any] = answer.body["error"]
    return error


def body(**fields: Any) -> bytes:
    return json.dumps({"sdp": EXAMPLE, **fields}).encode()


def still_answers(daemon: Daemon) -> None:
    started = time.monotonic()
    assert daemon.get("/v1/health")["status"] == "ok"
    assert time.monotonic() - started < 1.0
    assert daemon.get("/v1/announcements")["announcements"] == []


def test_interval_1e_minus_9_is_refused_instead_of_hanging_sapd(sapd: Daemon) -> None:
    error = refusal(sapd, body(interval=1e-9))
    assert error["field"] == "interval" and "1..3600" in error["message"]
    still_answers(sapd)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nan_and_infinity_interval_are_refused_naming_the_field(sapd: Daemon,
                                                                 literal: str) -> None:
    text = json.dumps({"sdp": EXAMPLE, "interval": 0}).replace('"interval": 0',
                                                                f'"interval": {literal}')
    error = refusal(sapd, text.encode())
    assert error["field"] == "interval", error
    still_answers(sapd)


@pytest.mark.parametrize("acl, field", [
    ({"uids": "1000"}, "acl.uids"),
    ({"uids": [True]}, "acl.uids[0]"),
    ({"uids": [-1]}, "acl.uids[0]"),
    ({"gids": [2 ** 40]}, "acl.gids[0]"),
    ({"users": [1000]}, "acl.users"),
    ([1000], "acl"),
])
def test_malformed_acl_is_a_json_400_naming_the_field(sapd: Daemon, acl: Any,
                                                      field: str) -> None:
    error = refusal(sapd, body(acl=acl))
    assert error["field"] == field, error
    still_answers(sapd)


@pytest.mark.parametrize("fields, field", [
    ({"ttl": 0}, "ttl"), ({"ttl": 256}, "ttl"), ({"ttl": "5"}, "ttl"), ({"ttl": True}, "ttl"),
    ({"ttl": 5.5}, "ttl"),
    ({"interval": "5"}, "interval"), ({"interval": True}, "interval"),
    ({"interval": 0.5}, "interval"), ({"interval": 86_400 * 365}, "interval"),
    ({"interfaces": "lo"}, "interfaces"), ({"interfaces": ["nosuch0"]}, "interfaces"),
    ({"interfaces": ["lo/x"]}, "interfaces[0]"),
    ({"compress": "yes"}, "compress"),
    ({"scope": 5}, "scope"), ({"scope": "x" * 5000}, "scope"),
    ({"sap_group": "10.0.0.1"}, "sap_group"), ({"sap_group": "bogus"}, "sap_group"),
    ({"blob": {"k": "x" * 20_000}}, "blob"), ({"blob": "text"}, "blob"),
    ({"blob": {"k": float("nan")}}, "blob"),
    ({"colour": "red"}, "colour"),
    ({"sdp": 5}, "sdp"),
    ({"sdp": EXAMPLE + "a=x:" + "y" * 20_000 + "\r\n"}, "sdp"),
])
def test_every_field_has_a_type_and_a_bound(sapd: Daemon, fields: dict[str, Any],
                                            field: str) -> None:
    error = refusal(sapd, json.dumps({"sdp": EXAMPLE, **fields}).encode())
    assert error["field"] == field, error
    still_answers(sapd)


def test_deeply_nested_blob_is_a_json_400_not_a_500(sapd: Daemon) -> None:
    nested = '{"sdp": ' + json.dumps(EXAMPLE) + ', "blob": ' + '{"a": ' * 5000 + "1" \
        + "}" * 5001
    error = refusal(sapd, nested.encode())
    assert "nest" in error["message"], error
    still_answers(sapd)


def test_a_body_over_the_cap_is_a_json_413(sapd: Daemon) -> None:
    answer = raw_post(sapd, json.dumps({"sdp": "x" * 300_000}).encode())
    assert isinstance(answer, ClientError) and answer.status == 413
    assert isinstance(answer.body, dict) and answer.body["error"]["status"] == 413
    assert str(6 * 16 * 1024 + 4 * 8 * 1024) in answer.body["error"]["message"]  # the cap
    still_answers(sapd)


def test_limit_above_the_documented_maximum_is_refused(sapd: Daemon) -> None:
    with pytest.raises(ClientError) as info:
        sapd.client.request("GET", "/v1/sessions?limit=1001")
    assert info.value.status == 400 and "1..1000" in str(info.value)
    assert sapd.get("/v1/sessions?limit=1000")["limit"] == 1000


def test_valid_bounds_are_accepted(sapd_factory: Any) -> None:
    sapd = sapd_factory(name="valid").start()
    long_sdp = EXAMPLE + "".join(f"a=x-note:{i:04d} {'n' * 80}\n" for i in range(90))
    assert 8_000 < len(long_sdp) < 16 * 1024  # longer than any configuration string
    made = sapd.client.send_json("POST", "/v1/announcements", {
        "sdp": long_sdp, "interval": 1, "ttl": 1, "interfaces": ["lo"], "compress": True,
        "sap_group": "239.255.255.255", "acl": {"uids": [65534], "gids": []},
        "blob": {"room": "A", "n": [1, 2.5, None]}, "scope": None})
    announcement = sapd.get(f"/v1/announcements/{made['id']}")
    assert announcement["targets"][0]["interval"] == 1
    assert announcement["acl"] == {"uids": [65534], "gids": []}


def stored_local(state: Path, options: dict[str, Any], acl: Any = None,
                 sap_group: str | None = None) -> None:
    """A local announcement as an older sapd stored it, bad values and all."""
    state.mkdir(parents=True, exist_ok=True)
    session, errors, _ = validate(EXAMPLE.replace("\n", "\r\n"))
    assert session is not None, errors
    record = record_from_session(session, ScopeTable(), sid="00112233445566aa",
                                 source="127.0.0.1", msg_hash=0x1234, now=time.time(),
                                 first_seen=time.time(), local=True, owner_uid=1000,
                                 acl=acl or {}, options=options)
    if sap_group is not None:
        record = record.with_changes(sap_group=sap_group)
    store = SqliteDirectory(state / SQLITE_FILE)
    store.upsert([record])
    store.close()


def test_a_stored_interval_of_1e_minus_9_is_clamped_at_start_not_hung(
        sapd_factory: Any) -> None:
    daemon = sapd_factory(name="old")
    stored_local(daemon.state, {"interval": 1e-9, "ttl": 1000}, acl={"uids": "1000"})
    daemon.start(timeout=10)
    started = time.monotonic()
    (announcement,) = daemon.get("/v1/announcements")["announcements"]
    assert time.monotonic() - started < 1.0
    assert announcement["targets"][0]["interval"] == 1.0
    assert announcement["targets"][0]["ttl"] <= 255
    assert announcement["acl"] == {}
    time.sleep(1.5)
    assert announcement["packets_sent"] <= 3
    assert daemon.get("/v1/announcements/00112233445566aa")["packets_sent"] <= 3
    session = daemon.get("/v1/sessions/00112233445566aa")["session"]
    assert session["options"]["interval"] == 1.0 and session["acl"] == {}  # written back
    fixed = [e for e in daemon.log_events() if e.get("event") == "stored option out of bounds"]
    assert {e["option"] for e in fixed} == {"interval", "ttl", "acl"}, daemon.logs()


def test_a_stored_sap_group_that_is_not_the_real_target_is_corrected_at_start(
        sapd_factory: Any) -> None:
    daemon = sapd_factory(name="group")
    stored_local(daemon.state, {"sap_group": "224.2.127.254"}, sap_group="239.255.255.255")
    daemon.start()
    (announcement,) = daemon.get("/v1/announcements")["announcements"]
    assert announcement["targets"][0]["sap_group"] == "224.2.127.254"
    session = daemon.get("/v1/sessions/00112233445566aa")["session"]
    assert session["sap_group"] == "224.2.127.254"
