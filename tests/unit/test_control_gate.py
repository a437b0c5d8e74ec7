"""The control socket's connection gate (sapd.plumbing.control.ConnectionGate), pure
logic: per-uid cap, root exempt, the total budget, release, and refusals logged once
per period, not once each. The real-socket test is tests/integration/test_control_limits.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from sapd.plumbing import control
from sapd.plumbing.control import ConnectionGate
from tests.support import ROOT


def test_a_uid_at_its_cap_is_refused_and_others_are_not() -> None:
    gate = ConnectionGate(per_uid=2, total=100)
    assert gate.admit(1000, 0.0) is None and gate.admit(1000, 0.0) is None
    refusal = gate.admit(1000, 0.0)
    assert refusal is not None and "uid 1000" in refusal
    assert "socket_connections_per_uid = 2" in refusal
    assert gate.admit(2000, 0.0) is None
    assert gate.refused == {"per_uid": 1}
    gate.release(1000)
    assert gate.admit(1000, 0.0) is None  # a closed connection frees its place


def test_root_is_exempt_from_both_caps() -> None:
    gate = ConnectionGate(per_uid=1, total=1)
    assert all(gate.admit(0, 0.0) is None for _ in range(10))
    assert gate.admit(1000, 0.0) is None
    assert gate.admit(2000, 0.0) is not None  # the total budget, root not counted
    assert gate.refused == {"total": 1}
    assert gate.stats()["connections"] == 11


def test_refusals_are_logged_once_per_period(monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[dict[str, object]] = []
    monkeypatch.setattr(control.log, "warning", lambda event, **kw: lines.append(kw))
    gate = ConnectionGate(per_uid=0, total=100)
    for second in range(25):
        gate.admit(1000, float(second) / 2)  # 25 refusals over 12 s
    assert gate.refused == {"per_uid": 25}
    assert len(lines) == 2 and lines[1]["refused_since_last_line"] == 20


def test_metrics_name_every_reason_even_at_zero() -> None:
    text = "\n".join(ConnectionGate(per_uid=1, total=1).metrics_lines("madcap"))
    assert 'madcap_control_refused_total{reason="per_uid"} 0' in text
    assert 'madcap_control_refused_total{reason="total"} 0' in text


@pytest.mark.parametrize("unit", ["sapd.service", "madcapd.service"])
def test_units_raise_the_open_file_limit(unit: str) -> None:
    lines = (Path(ROOT) / "systemd" / unit).read_text().splitlines()
    (limit,) = [ln for ln in lines if ln.startswith("LimitNOFILE=")]
    assert int(limit.split("=")[1]) >= 65536
