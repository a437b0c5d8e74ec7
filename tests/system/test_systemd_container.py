"""Both services under a real systemd (PID 1) in a booted Debian 12 container.

Installed, upgraded, backed up, restored and uninstalled by the README's own steps (read
from README.md, so a step that does not work fails here), then checked the way an
operator sees them: notify readiness and status, reload, socket activation, watchdog,
restart after SIGKILL with the state back, hardening exposure, socket group access and
JSON logs. Only the installed wheel, the units and the CLIs are used; nothing of sapd is
imported. The container has its own network namespace, so nothing reaches the host's
interfaces.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, missing, need_tool, wait_for
from tests.system.container import (
    Container,
    cached_release,
    cached_rootfs,
    checkout_files,
)
from tests.system.readme import code_block_after

pytestmark = [pytest.mark.root, pytest.mark.system, pytest.mark.timeout(900)]

SECTION = "Running as a service"
RELEASE = "b3fd9de"  # the last landed release: its state must survive the upgrade
SERVICES = ("sapd", "madcapd")
CHECKOUT = "/root/sapd"
MEMBER, STRANGER = "alice", "bob"  # in the socket groups (the README's $SUDO_USER); not
SDP = "examples/lab-tone.sdp"


def _readme_step(lead: str, readme: Path = ROOT / "README.md") -> str:
    return code_block_after(readme.read_text(), SECTION, lead)


def _offline_install(readme: Path = ROOT / "README.md") -> str:
    """The README's install steps with its offline preamble: pip uses the wheelhouse."""
    return _readme_step("Offline") + _readme_step("Install on", readme)


def _need_container_tools() -> None:
    if os.geteuid() != 0:
        missing("needs root (debootstrap, systemd-nspawn)")
    for tool in ("debootstrap", "systemd-nspawn", "unshare", "nsenter", "git", "make"):
        need_tool(tool)


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    _need_container_tools()
    result = subprocess.run(["make", "-C", str(ROOT), "wheelhouse"], capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, (
        f"make wheelhouse failed; it needs the package index, so run tests/system in the "
        f"host's network namespace (the container has one of its own):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return ROOT / "wheelhouse"


def _boot(workdir: Path, wheelhouse: Path) -> Container:
    """A fresh container with this checkout and its wheelhouse at CHECKOUT and two users
    who are not root."""
    container = Container(cached_rootfs(), workdir)
    container.put(ROOT, checkout_files(), CHECKOUT)
    container.put_tree(wheelhouse, f"{CHECKOUT}/wheelhouse")
    try:
        container.boot()
        container.sh(f"useradd -m {MEMBER} && useradd -m {STRANGER}")
    except BaseException:
        container.stop()
        raise
    return container


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path
              ) -> Iterator[Container]:
    """Booted, and installed by the README's steps as written."""
    started = time.monotonic()
    container = _boot(tmp_path_factory.mktemp("container"), wheelhouse)
    print(f"booted in {time.monotonic() - started:.1f} s")
    try:
        container.sh(_offline_install(), cwd=CHECKOUT, env={"SUDO_USER": MEMBER})
        yield container
    finally:
        container.stop()


def _show(container: Container, unit: str, *props: str) -> dict[str, str]:
    out = container.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _active_pid(container: Container, unit: str) -> int:
    """The unit's main PID once it is active (running and READY=1 sent), else 0."""
    shown = _show(container, unit, "ActiveState", "SubState", "MainPID")
    running = shown["ActiveState"] == "active" and shown["SubState"] == "running"
    return int(shown["MainPID"]) if running else 0


def _wait_restarted(container: Container, unit: str, old_pid: int, since: float,
                    timeout: float) -> float:
    """Seconds from ``since`` (a monotonic time) until ``unit`` is active again with a main
    PID other than ``old_pid``; ``timeout`` also counts from ``since``."""
    wait_for(lambda: _active_pid(container, unit) not in (0, old_pid),
             timeout - (time.monotonic() - since), interval=0.2,
             what=f"{unit} active again with a new main PID")
    return time.monotonic() - since


def _seconds(value: str) -> float:
    """systemd's time spans as `systemctl show` prints them: 30s, 2s, 1min 30s, 500ms."""
    units = {"min": 60.0, "ms": 0.001, "us": 1e-6, "s": 1.0, "h": 3600.0}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(min|ms|us|s|h)", value):
        total += float(number) * units[unit]
    return total


def _journal(container: Container, unit: str) -> list[str]:
    """What the daemon itself wrote (without systemd's lines about the unit)."""
    out = container.sh(f"journalctl _SYSTEMD_UNIT={unit}.service -o cat --no-pager").stdout
    return out.splitlines()


def _announce_and_lease(container: Container, sapctl: str = "sapctl",
                        madcapctl: str = "madcapctl") -> tuple[str, str]:
    """A local announcement and a MADCAP lease: state both daemons must keep."""
    announced = json.loads(container.sh(f"{sapctl} announce {SDP} --json",
                                        cwd=CHECKOUT).stdout)
    lease = json.loads(container.sh(f"{madcapctl} --server 127.0.0.1 request --json").stdout)
    return str(announced["id"]), str(lease["lease_id"])


def _assert_state(container: Container, session_id: str, lease_id: str,
                  sapctl: str = "sapctl", madcapctl: str = "madcapctl") -> None:
    sessions = container.sh(f"{sapctl} list --local --json").stdout
    assert session_id in sessions, f"session {session_id} lost:\n{sessions}"
    leases = container.sh(f"{madcapctl} leases --json").stdout
    assert lease_id in leases, f"lease {lease_id} lost:\n{leases}"


def test_both_units_active_after_ready_with_a_status_line(installed: Container) -> None:
    for service in SERVICES:
        shown = _show(installed, f"{service}.service", "Type", "ActiveState", "SubState",
                      "StatusText", "NotifyAccess")
        # Type=notify: systemd keeps the unit "activating" until READY=1 arrives.
        assert shown["Type"] == "notify", shown
        assert (shown["ActiveState"], shown["SubState"]) == ("active", "running"), \
            installed.sh(f"systemctl status {service} --no-pager -l || true").stdout
        assert shown["StatusText"].strip(), f"{service}: no STATUS= line: {shown}"
        print(f"{service}: STATUS={shown['StatusText']}")
        assert _show(installed, f"{service}.socket", "ActiveState")["ActiveState"] == "active"


@pytest.mark.parametrize("service", SERVICES)
def test_security_exposure_at_most_1_5(installed: Container, service: str) -> None:
    out = installed.sh(f"systemd-analyze security {service}.service --no-pager").stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert match, out
    print(f"{service}: exposure {match.group(1)} under a running systemd")
    assert float(match.group(1)) <= 1.5, out


@pytest.mark.parametrize("service", SERVICES)
def test_running_daemons_have_the_raised_open_file_limit(installed: Container,
                                                         service: str) -> None:
    """Issue 13 item 9: 1,024 open files let held control connections lock clients out."""
    def open_files(pid: str) -> tuple[int, int]:
        limits = installed.sh(f"cat /proc/{pid}/limits").stdout
        (line,) = [ln for ln in limits.splitlines() if ln.startswith("Max open files")]
        return int(line.split()[3]), int(line.split()[4])

    pid = installed.sh(f"systemctl show -p MainPID --value {service}").stdout.strip()
    # LimitNOFILE=65536, or as much as the container's own ceiling (PID 1's hard limit)
    # allows; systemd's default soft limit is 1,024.
    wanted = min(65536, open_files("1")[1])
    assert wanted > 1024
    assert open_files(pid) == (wanted, wanted)


def test_reload_applies_a_changed_setting(installed: Container) -> None:
    pid = _active_pid(installed, "sapd.service")
    assert json.loads(installed.sh("sapctl stats --json").stdout)["profile"] == "aes67"
    installed.sh("""sed -i 's/^#profile = "aes67"/profile = "rfc"/' /etc/sapd/sapd.toml
                    grep -q '^profile = "rfc"' /etc/sapd/sapd.toml
                    systemctl reload sapd""")
    wait_for(lambda: json.loads(installed.sh("sapctl stats --json").stdout)["profile"] == "rfc",
             10, interval=0.2, what="sapd's profile to be rfc after systemctl reload")
    assert _active_pid(installed, "sapd.service") == pid, "reload restarted sapd"

    pid = _active_pid(installed, "madcapd.service")
    installed.sh("systemctl reload madcapd")

    def reloaded() -> bool:
        events = [json.loads(line) for line in _journal(installed, "madcapd")]
        return any(e.get("event") == "reloaded" for e in events)
    wait_for(reloaded, 10, interval=0.2, what="madcapd to log that it reloaded")
    assert _active_pid(installed, "madcapd.service") == pid, "reload restarted madcapd"


def test_clients_that_connect_before_the_services_are_up_are_served(
        installed: Container) -> None:
    installed.sh("systemctl stop sapd.service madcapd.service")
    for service in SERVICES:
        assert _show(installed, f"{service}.service", "ActiveState")["ActiveState"] \
            == "inactive"
        assert _show(installed, f"{service}.socket", "ActiveState")["ActiveState"] == "active"
    # The connection itself starts the service (socket activation); the client waits.
    installed.sh("sapctl list && madcapctl leases", user=MEMBER, timeout=60)
    for service in SERVICES:
        assert _active_pid(installed, f"{service}.service"), f"{service} not started"


def test_socket_group_member_is_served_and_others_refused(installed: Container) -> None:
    installed.sh("sapctl list && madcapctl leases", user=MEMBER)
    for command in ("sapctl list", "madcapctl leases"):
        refused = installed.sh(command, user=STRANGER, check=False)
        assert refused.returncode == 1, (command, refused.stdout, refused.stderr)
        assert "permission denied" in refused.stderr, refused.stderr


def test_watchdog_restarts_a_stopped_daemon_within_watchdogsec(installed: Container) -> None:
    units = [f"{service}.service" for service in SERVICES]
    limits = {unit: _show(installed, unit, "WatchdogUSec", "RestartUSec") for unit in units}
    pids = {unit: _active_pid(installed, unit) for unit in units}
    assert all(pids.values()), pids
    installed.sh("kill -STOP " + " ".join(str(pid) for pid in pids.values()))
    stopped = time.monotonic()
    for unit in units:
        watchdog = _seconds(limits[unit]["WatchdogUSec"])
        assert 0 < watchdog <= 60, limits[unit]
        # systemd notices within WatchdogSec, aborts the daemon, restarts it RestartSec later
        budget = watchdog + _seconds(limits[unit]["RestartUSec"]) + 10
        took = _wait_restarted(installed, unit, pids[unit], stopped, budget)
        print(f"{unit}: restarted {took:.1f} s after SIGSTOP (WatchdogSec {watchdog:.0f} s)")
        assert took >= watchdog - 1, f"{unit} restarted before its watchdog could fire"
        said = installed.sh(f"journalctl -u {unit} -o cat --no-pager").stdout
        assert "Watchdog timeout" in said, said[-2000:]


def test_killed_daemons_restart_with_their_state(installed: Container) -> None:
    session_id, lease_id = _announce_and_lease(installed)
    units = [f"{service}.service" for service in SERVICES]
    pids = {unit: _active_pid(installed, unit) for unit in units}
    installed.sh("kill -KILL " + " ".join(str(pid) for pid in pids.values()))
    killed = time.monotonic()
    for unit in units:
        took = _wait_restarted(installed, unit, pids[unit], killed, 30)
        print(f"{unit}: active again {took:.1f} s after SIGKILL")
    _assert_state(installed, session_id, lease_id)


def test_journal_holds_one_json_object_per_line(installed: Container) -> None:
    for service in SERVICES:
        lines = _journal(installed, service)
        assert lines, f"{service} logged nothing"
        for line in lines:
            try:
                assert isinstance(json.loads(line), dict), line
            except ValueError:
                pytest.fail(f"{service}: not a JSON object: {line!r}")


def test_uninstall_leaves_no_unit_user_or_file_behind(installed: Container) -> None:
    installed.sh(_readme_step("Uninstall:"), cwd=CHECKOUT)
    for service in SERVICES:
        for unit in (f"{service}.service", f"{service}.socket"):
            assert _show(installed, unit, "LoadState")["LoadState"] == "not-found", unit
        for database in ("passwd", "group"):
            found = installed.sh(f"getent {database} {service}", check=False)
            assert found.returncode == 2, f"{database} still has {service}: {found.stdout}"
    # By name, and by owner: a file of a deleted user has no owner any more. Home
    # directories are their users' own (madcapctl remembers its leases there).
    left = installed.sh(
        "for fs in / /run /tmp /var/tmp; do find $fs -xdev \\( -path /proc -o -path "
        "/root -o -path /home \\) -prune -o \\( -name '*sapd*' -o -name '*madcap*' "
        "-o -nouser -o -nogroup \\) -print; done; find /root /home -xdev \\( -nouser "
        "-o -nogroup \\) -print").stdout
    assert not left.strip(), f"left behind:\n{left}"


def test_upgrade_from_the_last_release_keeps_state_and_backup_restores_it(
        tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> None:
    release = cached_release(RELEASE)
    container = _boot(tmp_path_factory.mktemp("upgrade"), wheelhouse)
    old = f"/root/sapd-{RELEASE}"
    try:
        container.put_tree(release / "checkout", old)
        container.put_tree(release / "wheelhouse", f"{old}/wheelhouse")
        # The release as its own README installed it, with state written by it.
        container.sh(_readme_step("Offline") + code_block_after(
            (release / "checkout" / "README.md").read_text(), SECTION, "Install on"),
            cwd=old, env={"SUDO_USER": MEMBER})
        tools = {"sapctl": "/opt/sapd/bin/sapctl", "madcapctl": "/opt/sapd/bin/madcapctl"}
        session_id, lease_id = _announce_and_lease(container, **tools)
        before = {s: _active_pid(container, f"{s}.service") for s in SERVICES}

        container.sh(_readme_step("Offline") + _readme_step("**Upgrade.**"), cwd=CHECKOUT)
        installed_from = container.sh(
            "cat /opt/sapd/lib/python3*/site-packages/sapd-*.dist-info/direct_url.json").stdout
        assert f"file://{CHECKOUT}" in installed_from and RELEASE not in installed_from, \
            installed_from
        for service in SERVICES:
            pid = _active_pid(container, f"{service}.service")
            assert pid and pid != before[service], f"{service} was not restarted"
        _assert_state(container, session_id, lease_id)

        # Back up while running; lose the state; restore; it is back.
        container.sh(_readme_step("**Backup and restore.**"))
        container.sh(f"sapctl withdraw {session_id} && madcapctl release {lease_id}")
        assert session_id not in container.sh("sapctl list --local --json").stdout
        assert lease_id not in container.sh("madcapctl leases --json").stdout
        container.sh(_readme_step("To restore"))
        wait_for(lambda: all(_active_pid(container, f"{s}.service") for s in SERVICES), 20,
                 interval=0.5, what="both services active after the restore")
        _assert_state(container, session_id, lease_id)
    finally:
        container.stop()
