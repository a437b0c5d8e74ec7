"""sapctl decode/validate as a user runs them: real process, exit codes, stderr."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import ROOT, run, script

VECTORS = ROOT / "tests" / "vectors"


def test_decode_ffmpeg_packet() -> None:
    result = run(script("sapctl"), "decode", str(VECTORS / "ffmpeg-announce.sap"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "SAP v1 announcement from 10.201.0.1 hash 0x7f37" in out
    assert "payload type: application/sdp" in out
    assert "session: No Name" in out and "group: 239.69.1.10 ttl 16" in out


def test_decode_pcap_json() -> None:
    result = run(script("sapctl"), "decode", "--pcap", "--json",
                 str(VECTORS / "ffmpeg-sap.pcapng"))
    assert result.returncode == 0, result.stderr
    frames = json.loads(result.stdout)
    assert [f["kind"] for f in frames] == ["announcement", "deletion"]
    assert frames[0]["session"]["groups"] == ["239.69.1.10"]


def test_decode_malformed_exits_1_with_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sap"
    bad.write_bytes(b"\x40\x00\x00\x01\x0a\x00\x00\x01v=0\n")
    result = run(script("sapctl"), "decode", str(bad))
    assert result.returncode == 1 and "bad_version" in result.stderr


def test_validate_missing_s_names_line(tmp_path: Path) -> None:
    f = tmp_path / "no-s.sdp"
    f.write_text("v=0\no=- 1 1 IN IP4 10.0.0.1\nc=IN IP4 239.1.1.1/4\nt=0 0\n")
    result = run(script("sapctl"), "validate", str(f))
    assert result.returncode == 1
    assert "line 3: expected s= as line 3" in result.stderr


def test_validate_ok_and_json() -> None:
    result = run(script("sapctl"), "validate", "--json", str(ROOT / "examples" / "aes67-dante.sdp"))
    assert result.returncode == 0
    assert json.loads(result.stdout)["session"]["name"] == "AVIO-USB-0a1b2c : 2"


def test_usage_error_exits_2() -> None:
    assert run(script("sapctl"), "decode").returncode == 2
    assert run(script("sapctl"), "frobnicate").returncode == 2


def test_missing_file_exits_1() -> None:
    result = run(script("sapctl"), "validate", "/nonexistent.sdp")
    assert result.returncode == 1 and "no such file" in result.stderr
