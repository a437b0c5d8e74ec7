"""The control socket (sapd.plumbing.control) on a real Unix socket: permissions, peer
credentials, the endpoint index, the JSON error envelope, and stale or busy paths."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sapd.plumbing.client import ClientError, UnixClient
from sapd.plumbing.control import (
    ControlServer,
    Endpoint,
    SocketInUse,
    bind_unix,
    control_app,
    http_error,
    json_response,
    peer,
)

NAME_KEY: web.AppKey[str] = web.AppKey("name")


async def whoami(request: web.Request) -> web.Response:
    p = peer(request)
    return json_response({"pid": p.pid, "uid": p.uid, "gid": p.gid, "groups": list(p.groups),
                          "daemon": request.app[NAME_KEY]})


async def refuse(request: web.Request) -> web.Response:
    raise http_error(409, "already announced", id="abc")


ENDPOINTS = [Endpoint("GET", "/v1/whoami", whoami, "who you are"),
             Endpoint("POST", "/v1/refuse", refuse, "always a conflict")]


def serve(path: Path, check: Callable[[UnixClient], Any]) -> Any:
    """Run a control server on ``path`` and call ``check`` (blocking) against it."""
    async def main() -> Any:
        server = ControlServer(control_app(NAME_KEY, "testd", ENDPOINTS), path)
        await server.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, check, UnixClient(path, timeout=5.0))
        finally:
            await server.stop()
    return asyncio.run(main())


def test_socket_is_group_writable_only_and_gone_after_stop(tmp_path: Path) -> None:
    path = tmp_path / "run" / "testd.sock"
    mode = serve(path, lambda client: stat.S_IMODE(path.stat().st_mode))
    assert mode == 0o660
    assert not path.exists()


def test_peer_credentials_are_the_callers(tmp_path: Path) -> None:
    me = serve(tmp_path / "t.sock", lambda client: client.get_json("/v1/whoami"))
    assert (me["pid"], me["uid"], me["gid"]) == (os.getpid(), os.getuid(), os.getgid())
    assert me["groups"][0] == os.getgid() and me["daemon"] == "testd"


def test_index_lists_every_endpoint_at_root_and_v1(tmp_path: Path) -> None:
    def both(client: UnixClient) -> tuple[Any, Any]:
        return client.get_json("/"), client.get_json("/v1")
    root, v1 = serve(tmp_path / "t.sock", both)
    assert root == v1
    assert [(e["method"], e["path"]) for e in root["endpoints"]] == [
        ("GET", "/v1/whoami"), ("POST", "/v1/refuse")]


def test_errors_are_one_json_envelope(tmp_path: Path) -> None:
    def errors(client: UnixClient) -> list[ClientError]:
        found = []
        for method, route in (("POST", "/v1/refuse"), ("GET", "/v1/nothing-here")):
            with pytest.raises(ClientError) as info:
                client.request(method, route)
            found.append(info.value)
        return found
    conflict, missing = serve(tmp_path / "t.sock", errors)
    assert conflict.status == 409
    assert conflict.body == {"error": {"status": 409, "message": "already announced",
                                       "id": "abc"}}
    assert missing.status == 404 and missing.body["error"]["status"] == 404


def test_stale_socket_of_a_crashed_run_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "t.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody answers
    assert serve(path, lambda client: client.get_json("/v1/whoami"))["daemon"] == "testd"


def test_live_socket_and_plain_file_are_left_alone(tmp_path: Path) -> None:
    live_path = tmp_path / "live.sock"
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(live_path))
    live.listen(1)
    try:
        with pytest.raises(SocketInUse, match="in use by a running daemon"):
            bind_unix(live_path)
    finally:
        live.close()
    plain = tmp_path / "plain.sock"
    plain.write_text("not a socket")
    with pytest.raises(SocketInUse, match="is not a socket"):
        bind_unix(plain)
    assert plain.read_text() == "not a socket"


def test_unknown_socket_group_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="group 'no-such-group-sapd' does not exist"):
        bind_unix(tmp_path / "t.sock", group="no-such-group-sapd")
