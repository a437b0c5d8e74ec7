"""The units in systemd/ as systemd itself judges them: hardened and free of errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from madcap.config import load as load_madcapd
from sapd.config import load as load_sapd
from tests.support import BIN, ROOT, need_tool, run

UNITS = ROOT / "systemd"
SERVICES = ["sapd.service", "madcapd.service"]


@pytest.fixture
def installed_units(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at this environment's scripts instead of
    /opt/sapd/bin, as the README's install steps would leave them."""
    for unit in UNITS.glob("*.s*"):
        text = unit.read_text().replace("/opt/sapd/bin/", f"{BIN}/")
        (tmp_path / unit.name).write_text(text)
    return tmp_path


@pytest.mark.parametrize("service", SERVICES)
def test_exposure_is_at_most_2(installed_units: Path, service: str) -> None:
    analyze = need_tool("systemd-analyze")
    result = run(analyze, "security", "--offline=yes", str(installed_units / service))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    print(f"{service}: exposure {match.group(1)}")
    assert float(match.group(1)) <= 2.0, result.stdout


@pytest.mark.parametrize("service", SERVICES)
def test_verify_prints_nothing(installed_units: Path, service: str) -> None:
    analyze = need_tool("systemd-analyze")
    daemon = service.removesuffix(".service")
    if not (BIN / daemon).exists():
        pytest.fail(f"{BIN} has no {daemon} script; install the package")
    socket_unit = service.replace(".service", ".socket")
    result = run(analyze, "verify", str(installed_units / service),
                 str(installed_units / socket_unit))
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
        result.stdout + result.stderr


def test_example_configurations_load() -> None:
    assert load_sapd(str(UNITS / "sapd.toml"), {}).profile == "aes67"
    assert [s.name for s in load_madcapd(str(UNITS / "madcapd.toml"), {}).scopes()] == ["local"]


def test_sysusers_snippet_names_the_unit_users() -> None:
    text = (UNITS / "sysusers.d" / "sapd.conf").read_text()
    for service in SERVICES:
        unit = (UNITS / service).read_text()
        user = re.search(r"^User=(\S+)", unit, re.M)
        assert user and re.search(rf"^u {user.group(1)}\b", text, re.M), service


def test_hook_template_verifies_and_is_hardened(installed_units: Path) -> None:
    analyze = need_tool("systemd-analyze")
    instance = installed_units / "sapd-hook@example.service"
    instance.write_text((installed_units / "sapd-hook@.service").read_text())
    result = run(analyze, "verify", str(instance), str(installed_units / "sapd.socket"),
                 str(installed_units / "sapd.service"))
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
        result.stdout + result.stderr
    assert "watch --exec /etc/sapd/hooks/%i" in instance.read_text()
    security = run(analyze, "security", "--offline=yes", str(instance))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert match and float(match.group(1)) <= 2.0, security.stdout
