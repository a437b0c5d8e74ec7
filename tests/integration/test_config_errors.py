"""Daemons that cannot start say why, naming the key or the file, and exit non-zero
(issue 13 item 15), before they open a socket."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.daemons import Daemon
from tests.support import free_udp_port, run, script, wait_for

DATABASES = {"sapd": "directory.sqlite3", "madcapd": "leases.sqlite3"}


@pytest.mark.parametrize("daemon", ["sapd", "madcapd"])
def test_corrupt_database_gave_a_traceback_without_its_file_name(tmp_path: Path,
                                                                 daemon: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    database = state / DATABASES[daemon]
    database.write_bytes(b"this is not an SQLite database, it is a text file\n" * 100)
    result = run(script(daemon), "--state-dir", str(state), "--socket",
                 str(tmp_path / "d.sock"), "--log-format", "console", timeout=30)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert str(database) in result.stderr and "not a usable database" in result.stderr
    assert not (tmp_path / "d.sock").exists()


@pytest.mark.parametrize(("daemon", "text", "key"), [
    ("sapd", '[[scope]]\nname = "a"\nrange = "239.69.0.0/16"\nrnage = 1\n', "scope[0].rnage"),
    ("sapd", 'log_level = "loud"\n', "log_level"),
    ("sapd", 'socket_group = "no-such-group"\n', "socket_group"),
    ("sapd", "refresh_flush_interval = 0\n", "refresh_flush_interval"),
    ("madcapd", '[[scope]]\nname = "a"\nrange = "239.255.0.0/16"\nenabled = "false"\n',
     "scope[0].enabled"),
    ("madcapd", '[store]\npassword_file = "/etc/passwd"\n', "store.password_file"),
])
def test_configuration_error_exits_2_naming_file_and_key(tmp_path: Path, daemon: str,
                                                         text: str, key: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = run(script(daemon), "--config", str(config), "--state-dir", str(tmp_path / "s"),
                 "--socket", str(tmp_path / "d.sock"))
    assert result.returncode == 2, result.stderr
    assert f"{daemon}: configuration: {config}: {key}: " in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "s").exists()  # nothing started, nothing made


@pytest.mark.parametrize("daemon", ["sapd", "madcapd"])
def test_reload_with_a_bad_file_keeps_the_running_configuration(tmp_path: Path,
                                                                 daemon: str) -> None:
    config = tmp_path / "c.toml"
    if daemon == "sapd":
        good = f"port = {free_udp_port()}\nprofile = 'rfc'\n"
        args = ["--interface", "lo"]
    else:
        good = f"listen = ['127.0.0.1:{free_udp_port()}']\nsapd_poll = 0\n"
        args = []
    config.write_text(good)
    process = Daemon(daemon, tmp_path / "d", [*args, "--config", str(config)]).start()
    try:
        before = process.get("/v1/stats")
        config.write_text(good + "[[scope]]\nname = 'a'\nrange = '239.69.0.0/16'\nttl = 'x'\n")
        process.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in process.logs(), 10, what="the reload error")
        (event,) = [e for e in process.log_events() if e.get("event", "").startswith(
            "reload failed")]
        assert "scope[0].ttl: expected an integer" in event["error"]
        assert process.get("/v1/health")["status"] == "ok"
        after = process.get("/v1/stats")
        assert before.get("profile") == after.get("profile")  # sapd: still "rfc"
    finally:
        assert process.stop() == 0
