"""Default socket and state locations under systemd, root and plain users."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sapd.plumbing import paths


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable in ("RUNTIME_DIRECTORY", "STATE_DIRECTORY", "XDG_RUNTIME_DIR",
                     "XDG_STATE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_systemd_directories_are_used_for_their_own_service(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("RUNTIME_DIRECTORY", "/run/madcapd")
    clean_env.setenv("STATE_DIRECTORY", "/var/lib/madcapd")
    assert paths.default_socket("madcapd") == Path("/run/madcapd/madcapd.sock")
    assert paths.default_state_dir("madcapd") == Path("/var/lib/madcapd")
    # madcapd looking for sapd's socket must not look in its own runtime directory
    assert paths.default_socket("sapd").parent.name != "madcapd"


def test_plain_user_falls_back_to_xdg(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        clean_env.setattr(os, "geteuid", lambda: 1000)
    clean_env.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    clean_env.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert paths.default_socket("sapd") == tmp_path / "run" / "sapd" / "sapd.sock"
    assert paths.default_state_dir("sapd") == tmp_path / "state" / "sapd"


def test_root_uses_system_locations(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setattr(os, "geteuid", lambda: 0)
    clean_env.setenv("XDG_RUNTIME_DIR", "/run/user/0")
    assert paths.default_socket("sapd") == Path("/run/sapd/sapd.sock")
    assert paths.default_state_dir("sapd") == Path("/var/lib/sapd")


def test_client_prefers_an_existing_system_socket(clean_env: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    clean_env.setattr(os, "geteuid", lambda: 1000)
    clean_env.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    name = "sapd-test-no-such-service"
    assert paths.client_socket(name) == tmp_path / name / f"{name}.sock"
