"""Hostile bodies on sapd's control socket. Anyone in the socket's group may POST.

- An integer above 2^64 anywhere in a stored announcement (the free-form "blob", or
  "interval"), or a blob nested deeper than 254 levels, is stored, and from then on
  every GET /v1/sessions and /v1/announcements answers 500 (orjson encodes 64-bit
  integers and 255 levels only): one request hides every stream from every user, and
  it is on disk, so it survives a restart.
- JSON nested deeper than Python's recursion limit is a plain-text 500, not a 400.
- An SDP with a 21-digit version (RFC 8866: 1*DIGIT) is a plain-text 500 that leaves a
  phantom: 409 "already listed" on retry, yet no announcement and no session listed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sapd.plumbing.client import ClientError
from tests.daemons import Daemon
from tests.packets import sdp_text


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _post(daemon: Daemon, body: bytes) -> tuple[int, Any]:
    try:
        response = daemon.client.request("POST", "/v1/announcements", body=body,
                                         headers={"Content-Type": "application/json"})
        return response.status, response.json()
    except ClientError as exc:
        return exc.status, exc.body


def _listing_works(daemon: Daemon) -> list[str]:
    failures = []
    for path in ("/v1/sessions", "/v1/announcements"):
        try:
            daemon.get(path)
        except ClientError as exc:
            failures.append(f"{path}: HTTP {exc.status} {exc}")
    return failures


@pytest.mark.parametrize("extra", [{"blob": {"n": 10**30}}, {"interval": 10**26},
                                   {"blob": {"n": _nested(300)}}],
                         ids=["blob-huge-int", "interval-huge-int", "blob-300-deep"])
def test_one_unencodable_announcement_does_not_break_every_listing(
        sapd: Daemon, extra: dict[str, Any]) -> None:
    status, _ = _post(sapd, json.dumps({"sdp": sdp_text(name="big"), **extra}).encode())
    assert not _listing_works(sapd), f"POST gave {status}; {_listing_works(sapd)}"
    sapd.stop()
    sapd.start()
    assert not _listing_works(sapd), f"after a restart: {_listing_works(sapd)}"


def test_deeply_nested_json_is_a_json_400(sapd: Daemon) -> None:
    # 100,000 bytes: under the body cap, so it reaches the parser (RecursionError)
    status, body = _post(sapd, b"[" * 50_000 + b"]" * 50_000)
    assert status == 400 and isinstance(body, dict) and "error" in body, (status, body)
    # 200,000 bytes: over the cap, refused before parsing, as JSON too
    status, body = _post(sapd, b"[" * 100_000 + b"]" * 100_000)
    assert status == 413 and isinstance(body, dict) and "error" in body, (status, body)


def test_a_21_digit_version_is_announced_or_refused_cleanly(sapd: Daemon) -> None:
    body = json.dumps({"sdp": sdp_text(session=3, version=10**20, name="big")}).encode()
    first, answer = _post(sapd, body)
    assert first in (201, 400), (first, answer)
    again, answer = _post(sapd, body)
    listed = [s["name"] for s in sapd.sessions()]
    announced = [a["name"] for a in sapd.get("/v1/announcements")["announcements"]]
    if again == 409:  # the first one took: it must be there
        assert listed == ["big"] and announced == ["big"], (listed, announced)
