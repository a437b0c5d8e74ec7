"""`make run` (scripts/run): it says "running" only when both daemons answer their
health check, and otherwise which one failed and why (issue 13 item 16)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.support import ROOT, free_udp_port, wait_for

RUN = ROOT / "scripts" / "run"


def configs(tmp_path: Path, sapd_extra: str = "", madcapd_extra: str = "") -> dict[str, str]:
    sapd = tmp_path / "sapd.toml"
    sapd.write_text(f'state_dir = "{tmp_path}/sapd"\nsocket = "{tmp_path}/sapd.sock"\n'
                    f'interfaces = ["lo"]\nport = {free_udp_port()}\n' + sapd_extra)
    madcapd = tmp_path / "madcapd.toml"
    madcapd.write_text(f'state_dir = "{tmp_path}/madcapd"\nsocket = "{tmp_path}/madcapd.sock"\n'
                       f'listen = ["127.0.0.1:{free_udp_port()}"]\nsapd_poll = 0\n'
                       + madcapd_extra)
    return {**os.environ, "SAPD_CONFIG": str(sapd), "MADCAPD_CONFIG": str(madcapd),
            "RUN_TIMEOUT": "20"}


def test_make_run_said_running_when_both_daemons_failed(tmp_path: Path) -> None:
    env = configs(tmp_path, sapd_extra="refresh_flush_interval = 0\n",
                  madcapd_extra='[[scope]]\nname = "x"\nrange = "224.2.0.0/16"\n')
    result = subprocess.run([str(RUN)], env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "running" not in result.stdout
    assert "sapd failed to start (exit 2)" in out and "refresh_flush_interval" in out
    assert "madcapd failed to start (exit 2)" in out and "scope[0].pool" in out


def test_make_run_stops_the_other_daemon_when_one_fails(tmp_path: Path) -> None:
    env = configs(tmp_path, madcapd_extra="guard = -1\n")
    result = subprocess.run([str(RUN)], env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "madcapd failed to start (exit 2)" in out and "guard: must be" in out
    assert "sapd failed" not in out
    assert not (tmp_path / "sapd.sock").exists()  # sapd was started, then stopped


def test_make_run_prints_sockets_when_healthy_and_stops_both_on_ctrl_c(tmp_path: Path) -> None:
    env = configs(tmp_path)
    proc = subprocess.Popen([str(RUN)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        lines: list[str] = []

        def running() -> bool:
            lines.append(proc.stdout.readline())  # type: ignore[union-attr]
            return "running" in lines[-1] or proc.poll() is not None

        wait_for(running, 30, what="the running line")
        assert proc.poll() is None, "".join(lines)
        sockets = proc.stdout.readline() + proc.stdout.readline()
        assert f"sapd     {tmp_path}/sapd.sock" in sockets
        assert f"madcapd  {tmp_path}/madcapd.sock" in sockets
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert not (tmp_path / "sapd.sock").exists()
        assert not (tmp_path / "madcapd.sock").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
