"""An AMWA NMOS IS-04 v1.3 registry test double, as a process of its own (so a test can
SIGKILL it and start it again: a restarted registry has forgotten everything).

It validates every POST body against the shipped schemas
(/work/shared/specs/nmos-is04-v1.3/schemas, copied under tests/vectors/nmos-is04-v1.3)
and enforces what "Behaviour - Registration" asks of a node: parents before children,
201 on create and 200 on update, versions that increase, children deleted before their
parents, and heartbeats: a node not heard from for 12 s is garbage-collected with all
that hangs from it. Every broken rule is kept in ``violations``; ``GET /test/state``
shows them with what it holds. ``--mode`` makes it hostile: ``slow`` answers after 30 s,
``garbage`` writes bytes that are not HTTP, ``huge`` answers 200 with a 2 GB body.

    python -m tests.nmos_registry --port 8235 [--mode normal|slow|garbage|huge]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

SCHEMAS = Path(__file__).resolve().parent / "vectors" / "nmos-is04-v1.3" / "schemas"
GC_AFTER = 12.0
BASE = "/x-nmos/registration/v1.3"
PARENTS = {"device": (("node_id", "node"),),
           "source": (("device_id", "device"),),
           "flow": (("device_id", "device"), ("source_id", "source")),
           "sender": (("device_id", "device"), ("flow_id", "flow")),
           "receiver": (("device_id", "device"),)}


def validator() -> Any:
    """A validator of registration bodies: registrationapi-resource-post-request.json."""
    return _validators()["envelope"]


def _validators() -> dict[str, Any]:
    import jsonschema  # noqa: PLC0415  # test extras only
    from referencing import Registry, Resource  # noqa: PLC0415
    from referencing.jsonschema import DRAFT4  # noqa: PLC0415

    base = "https://schemas.test/"
    resources = []
    for path in SCHEMAS.glob("*.json"):
        contents = json.loads(path.read_text())
        resources.append((base + path.name,
                          Resource.from_contents(contents, default_specification=DRAFT4)))
    registry: Registry[Any] = Registry().with_resources(resources)
    names = ("node", "device", "source", "flow", "sender", "receiver", "source_audio",
             "source_generic", "flow_audio_raw", "flow_video_raw")
    found = {kind: jsonschema.Draft4Validator({"$ref": f"{base}{kind}.json"}, registry=registry)
             for kind in names}
    found["envelope"] = jsonschema.Draft4Validator(
        {"$ref": base + "registrationapi-resource-post-request.json"}, registry=registry)
    return found


def _branch(kind: str, data: dict[str, Any]) -> str | None:
    """The one branch of source.json's oneOf (their format enums exclude each other) or
    flow.json's anyOf that a body's format and media_type point at."""
    fmt, media = data.get("format"), str(data.get("media_type", ""))
    if kind == "source":
        return {"urn:x-nmos:format:audio": "source_audio",
                "urn:x-nmos:format:video": "source_generic"}.get(str(fmt))
    if kind == "flow" and fmt == "urn:x-nmos:format:audio" and media.startswith("audio/"):
        return "flow_audio_raw"
    if kind == "flow" and media == "video/raw":
        return "flow_video_raw"
    return None


def body_errors(validators: dict[str, Any], body: Any) -> list[str]:
    """The envelope's oneOf, branch by branch: its type enums exclude each other, so
    validating ``data`` against the schema its ``type`` names is the same verdict at a
    sixth of the cost (a flow against every schema took 4.5 ms). Likewise a source or
    flow is first checked against the branch its format names: valid there is valid
    (oneOf: the other branches' format enums refuse it; anyOf: one is enough); only a
    body that fails it is judged by the whole schema."""
    if not isinstance(body, dict):
        return ["not an object"]
    kind = body.get("type")
    if kind not in validators or kind == "envelope" or not isinstance(body.get("data"), dict):
        return [e.message for e in validators["envelope"].iter_errors(body)][:1] or \
            ["no type or data"]
    branch = _branch(kind, body["data"])
    if branch is not None and validators[branch].is_valid(body["data"]):
        return []
    return [f"{e.message[:300]} at {list(e.path)}"
            for e in validators[kind].iter_errors(body["data"])][:1]


def _version(text: str) -> tuple[int, int]:
    seconds, _, nanoseconds = text.partition(":")
    return int(seconds), int(nanoseconds)


class Registry:
    def __init__(self) -> None:
        self.validators = _validators()
        self.held: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in PARENTS} | {
            "node": {}}
        self.violations: list[str] = []
        self.counts: dict[str, int] = {}
        self.last_heard: dict[str, float] = {}
        self.heartbeats: list[float] = []

    def count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def violation(self, text: str) -> None:
        if len(self.violations) < 1000:
            self.violations.append(text)

    def post(self, body: Any) -> tuple[int, dict[str, Any]]:
        errors = body_errors(self.validators, body)
        if errors:
            self.violation(f"schema: {errors[0]}")
            return 400, {"code": 400, "error": "schema", "debug": errors[0]}
        kind, data = body["type"], body["data"]
        for field, parent in PARENTS.get(kind, ()):
            if data.get(field) is not None and data[field] not in self.held[parent]:
                self.violation(f"{kind} {data['id']} before its {parent} {data[field]}")
                return 400, {"code": 400, "error": f"no {parent} {data[field]}", "debug": None}
        old = self.held[kind].get(data["id"])
        if old is not None and _version(data["version"]) <= _version(old["version"]):
            self.violation(f"{kind} {data['id']}: version {data['version']} does not "
                           f"follow {old['version']}")
            return 400, {"code": 400, "error": "version", "debug": None}
        self.held[kind][data["id"]] = data
        if kind == "node":
            self.last_heard[data["id"]] = time.monotonic()
        self.count(f"{kind}_{'200' if old else '201'}")
        return (200 if old is not None else 201), data

    def children(self, kind: str, rid: str) -> list[tuple[str, str]]:
        return [(k, cid) for k, fields in PARENTS.items() for cid, data in self.held[k].items()
                if any(f_kind == kind and data.get(f) == rid for f, f_kind in fields)]

    def delete(self, kind: str, rid: str, cascade: bool = False) -> int:
        if rid not in self.held.get(kind, {}):
            return 404
        below = self.children(kind, rid)
        if below and not cascade and kind != "node":
            self.violation(f"{kind} {rid} deleted before {len(below)} children")
        for child_kind, child in below:
            self.delete(child_kind, child, cascade=True)
        del self.held[kind][rid]
        self.last_heard.pop(rid, None)
        self.count(f"{kind}_deleted")
        return 204

    def collect_garbage(self) -> None:
        now = time.monotonic()
        for node, heard in list(self.last_heard.items()):
            if now - heard > GC_AFTER:
                self.count("garbage_collected")
                self.delete("node", node, cascade=True)

    def state(self) -> dict[str, Any]:
        return {"resources": self.held, "violations": self.violations,
                "counts": self.counts, "heartbeats": self.heartbeats[-100:]}


async def advertise(port: int, pri: int) -> Any:
    """Announce this registry over mDNS, as a real one does (DNS-SD _nmos-register._tcp)."""
    import socket  # noqa: PLC0415

    from zeroconf import ServiceInfo  # noqa: PLC0415
    from zeroconf.asyncio import AsyncZeroconf  # noqa: PLC0415

    zc = AsyncZeroconf()
    name = f"registry-{port}"
    info = ServiceInfo("_nmos-register._tcp.local.", f"{name}._nmos-register._tcp.local.",
                       addresses=[socket.inet_aton("127.0.0.1")], port=port,
                       properties={"api_proto": "http", "api_ver": "v1.2,v1.3",
                                   "api_auth": "false", "pri": str(pri)},
                       server=f"{name}.local.")
    await zc.async_register_service(info)
    return zc


async def serve_normal(port: int, pri: int | None = None) -> None:
    from aiohttp import web  # noqa: PLC0415

    registry = Registry()

    async def post_resource(request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except ValueError:
            registry.violation("a body that is not JSON")
            return web.json_response({"code": 400, "error": "json"}, status=400)
        status, data = registry.post(body)
        headers = {}
        if status in (200, 201):
            headers["Location"] = f"{BASE}/resource/{body['type']}s/{data['id']}"
        return web.json_response(data, status=status, headers=headers)

    async def delete_resource(request: web.Request) -> web.Response:
        plural, rid = request.match_info["kind"], request.match_info["id"]
        status = registry.delete(plural[:-1], rid)
        return web.Response(status=status)

    async def heartbeat(request: web.Request) -> web.Response:
        node = request.match_info["id"]
        if node not in registry.held["node"]:
            registry.count("heartbeat_404")
            return web.json_response({"code": 404, "error": "no such node"}, status=404)
        registry.last_heard[node] = time.monotonic()
        registry.heartbeats.append(time.time())
        registry.count("heartbeat")
        return web.json_response({"health": str(int(time.time()))})

    async def state(request: web.Request) -> web.Response:
        return web.json_response(registry.state())

    async def counts(request: web.Request) -> web.Response:
        # cheap to poll: the full state of 3,000 resources is ~2 MB of JSON
        return web.json_response({kind: len(held) for kind, held in registry.held.items()})

    async def gc() -> None:
        while True:
            await asyncio.sleep(0.5)
            registry.collect_garbage()

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post(f"{BASE}/resource", post_resource)
    app.router.add_delete(f"{BASE}/resource/{{kind}}/{{id}}", delete_resource)
    app.router.add_post(f"{BASE}/health/nodes/{{id}}", heartbeat)
    app.router.add_get("/test/state", state)
    app.router.add_get("/test/counts", counts)

    async def one(request: web.Request) -> web.Response:
        found = registry.held.get(request.match_info["kind"], {}).get(request.match_info["id"])
        return web.json_response(found, status=200 if found is not None else 404)
    app.router.add_get("/test/resource/{kind}/{id}", one)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    task = asyncio.create_task(gc())
    if pri is not None:
        await advertise(port, pri)
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        task.cancel()


async def serve_hostile(port: int, mode: str) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            if mode == "slow":
                await asyncio.sleep(30)
                writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
            elif mode == "garbage":
                writer.write(b"\x00\xffNOT HTTP AT ALL\r\n" * 64)
            else:  # huge: 2 GB promised, sent for as long as anyone reads
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 2147483648\r\n\r\n")
                chunk = b" " * 65536
                for _ in range(32768):
                    writer.write(chunk)
                    await writer.drain()
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", default="normal", choices=["normal", "slow", "garbage",
                                                             "huge"])
    parser.add_argument("--advertise", type=int, metavar="PRI",
                        help="announce it over mDNS with this pri")
    args = parser.parse_args()
    try:  # as sapd runs: a third less CPU per request than asyncio's own loop
        import uvloop  # noqa: PLC0415

        run: Any = uvloop.run
    except ImportError:
        run = asyncio.run
    if args.mode == "normal":
        run(serve_normal(args.port, args.advertise))
    else:
        run(serve_hostile(args.port, args.mode))


class RegistryProcess:
    """The double as a test drives it: start, SIGKILL, start again, look inside."""

    def __init__(self, port: int, mode: str = "normal", netns: str | None = None,
                 advertise: int | None = None) -> None:
        self.port = port
        self.mode = mode
        self.advertise = advertise
        self.netns = netns
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RegistryProcess:
        root = Path(__file__).resolve().parents[1]
        cmd = [sys.executable, "-m", "tests.nmos_registry", "--port", str(self.port),
               "--mode", self.mode]
        if self.advertise is not None:
            cmd += ["--advertise", str(self.advertise)]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=str(root))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == b"ready", f"registry double did not start: {line!r}"
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def state(self) -> dict[str, Any]:
        return self._get("/test/state")

    def counts(self) -> dict[str, int]:
        """Resources held, by type."""
        return self._get("/test/counts")

    def resource(self, kind: str, rid: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._get(f"/test/resource/{kind}/{rid}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return found

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as answer:
            return json.loads(answer.read())


if __name__ == "__main__":
    main()
