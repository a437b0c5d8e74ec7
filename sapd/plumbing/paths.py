"""Default locations of control sockets and state, following systemd's conventions."""

from __future__ import annotations

import os
from pathlib import Path


def runtime_dir(name: str) -> Path:
    if os.environ.get("RUNTIME_DIRECTORY"):
        return Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / name
    return Path("/run") / name


def default_socket(name: str) -> Path:
    """$RUNTIME_DIRECTORY/<name>.sock, else $XDG_RUNTIME_DIR/<name>/<name>.sock,
    else /run/<name>/<name>.sock."""
    return runtime_dir(name) / f"{name}.sock"


def default_state_dir(name: str) -> Path:
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if os.environ.get("XDG_STATE_HOME"):
        return Path(os.environ["XDG_STATE_HOME"]) / name
    return Path("/var/lib") / name
