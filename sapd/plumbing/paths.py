"""Default locations of control sockets and state, following systemd's conventions.

Daemon socket: $RUNTIME_DIRECTORY/<name>.sock when systemd made a directory of that
name, else /run/<name>/<name>.sock for root, else $XDG_RUNTIME_DIR/<name>/<name>.sock,
else /tmp/<name>-<uid>/<name>.sock. Clients prefer the system service's socket when it
exists, so `sapctl` finds a daemon run by systemd as well as one run by the same user.
State: $STATE_DIRECTORY (same rule), else /var/lib/<name> for root, else
$XDG_STATE_HOME/<name>, else ~/.local/state/<name>.
"""

from __future__ import annotations

import os
from pathlib import Path


def _systemd_dir(variable: str, name: str) -> Path | None:
    # madcapd's unit sets RUNTIME_DIRECTORY=/run/madcapd; it must not be taken as sapd's.
    for entry in os.environ.get(variable, "").split(":"):
        if entry and Path(entry).name == name:
            return Path(entry)
    return None


def runtime_dir(name: str) -> Path:
    given = _systemd_dir("RUNTIME_DIRECTORY", name)
    if given is not None:
        return given
    if os.geteuid() == 0:
        return Path("/run") / name
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / name
    return Path("/tmp") / f"{name}-{os.geteuid()}"


def default_socket(name: str) -> Path:
    return runtime_dir(name) / f"{name}.sock"


def client_socket(name: str) -> Path:
    """Where a client looks: the system service's socket if there is one, else ours."""
    system = Path("/run") / name / f"{name}.sock"
    return system if system.exists() else default_socket(name)


def default_state_dir(name: str) -> Path:
    given = _systemd_dir("STATE_DIRECTORY", name)
    if given is not None:
        return given
    if os.geteuid() == 0:
        return Path("/var/lib") / name
    if os.environ.get("XDG_STATE_HOME"):
        return Path(os.environ["XDG_STATE_HOME"]) / name
    return Path.home() / ".local" / "state" / name
