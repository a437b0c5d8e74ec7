"""Default locations of control sockets and state, following systemd's conventions.

Socket: $RUNTIME_DIRECTORY/<name>.sock (systemd), else $XDG_RUNTIME_DIR/<name>/<name>.sock,
else /run/<name>/<name>.sock for root, else /tmp/<name>-<uid>/<name>.sock.
State: $STATE_DIRECTORY, else $XDG_STATE_HOME/<name>, else /var/lib/<name> for root,
else ~/.local/state/<name>.
"""

from __future__ import annotations

import os
from pathlib import Path


def runtime_dir(name: str) -> Path:
    if os.environ.get("RUNTIME_DIRECTORY"):
        return Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / name
    if os.geteuid() == 0:
        return Path("/run") / name
    return Path("/tmp") / f"{name}-{os.geteuid()}"


def default_socket(name: str) -> Path:
    return runtime_dir(name) / f"{name}.sock"


def default_state_dir(name: str) -> Path:
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if os.environ.get("XDG_STATE_HOME"):
        return Path(os.environ["XDG_STATE_HOME"]) / name
    if os.geteuid() == 0:
        return Path("/var/lib") / name
    return Path.home() / ".local" / "state" / name
