"""The listen set follows the scope table (issue 13 item 6), also across a reload."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from tests.support import wait_for


def test_sighup_with_a_new_scope_group_did_not_say_it_needs_a_restart(
        sapd_factory: Any, tmp_path: Path) -> None:
    daemon = sapd_factory(config="profile = 'aes67'\n").start()
    (tmp_path / "a.toml").write_text(
        "profile = 'rfc'\n[[scope]]\nname = 'studio'\nrange = '239.77.0.0/16'\n"
        "sap_group = '239.77.255.254'\n")
    daemon.signal(signal.SIGHUP)

    def reloaded() -> list[dict[str, Any]]:
        return [json.loads(line) for line in daemon.logs().splitlines()
                if '"reloaded"' in line]

    wait_for(reloaded, 5, what="the reload logged")
    assert reloaded()[-1]["needs_restart"] == ["groups"], reloaded()
