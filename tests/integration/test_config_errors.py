"""Daemons that cannot start say why, naming the key or the file, and exit non-zero
(issue 13 item 15), before they open a socket."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import run, script

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
