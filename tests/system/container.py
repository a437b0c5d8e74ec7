"""A Debian 12 container booted with systemd as PID 1, for testing the units as installed.

The root file system is built once by debootstrap and cached under CACHE, keyed by the
package list; each boot gets a copy-on-write overlay of it, so the cached tree stays
clean. The container has a network namespace of its own (``--private-network``): nothing
a daemon inside sends reaches the host's interfaces.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import ROOT, children, missing, need_tool, wait_for

CACHE = Path("/var/cache/sapd-tests")
SUITE = "bookworm"
# What the README's steps and the checks use inside: python3-venv for /opt/sapd,
# sqlite3 for the backup steps, iproute2 and procps for looking around.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "iproute2",
            "procps", "sqlite3")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def apt_mirror(suite: str = SUITE, apt: Path = Path("/etc/apt")) -> str:
    """The URI this host's apt already uses for ``suite`` (not -updates or -security)."""
    sources = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":  # deb822: stanzas of "Key: value" separated by blanks
            for stanza in text.split("\n\n"):
                fields = {key.strip(): value.split() for key, value in
                          (line.split(":", 1) for line in stanza.splitlines()
                           if ":" in line and not line.startswith(("#", " ", "\t")))}
                if "deb" in fields.get("Types", []) and suite in fields.get("Suites", []):
                    return fields["URIs"][0]
        else:  # one-line: deb [options] URI suite components
            for line in text.splitlines():
                words = line.split("#", 1)[0].split()
                if words[:1] != ["deb"]:
                    continue
                words = words[1:]
                if words and words[0].startswith("["):  # [arch=amd64 signed-by=...]
                    while words and not words.pop(0).endswith("]"):
                        pass
                if len(words) >= 2 and words[1] == suite:
                    return words[0]
    missing(f"no apt source for Debian {suite} in {apt}/sources.list*")
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder at a time per cache entry (another test run may be building it)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build_into_place(name: str, build: Callable[[Path], None]) -> Path:
    """CACHE/name, built by ``build(tmp)`` into a temporary directory beside it and renamed
    into place, so a killed build leaves no half-built entry, only a .build-* directory
    the next build removes."""
    final = CACHE / name
    if final.is_dir():
        return final
    with _locked(name):
        if final.is_dir():
            return final
        for stale in CACHE.glob(f".build-{name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=CACHE))
        try:
            build(tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def cached_rootfs() -> Path:
    """The minimal Debian root file system with PACKAGES, built on first use."""
    key = hashlib.sha256(f"{SUITE} minbase {' '.join(sorted(PACKAGES))}".encode()).hexdigest()

    def build(tmp: Path) -> None:
        debootstrap = need_tool("debootstrap")
        started = time.monotonic()
        result = subprocess.run(
            [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
             str(tmp), apt_mirror()], capture_output=True, text=True, timeout=900, check=False)
        if result.returncode != 0:
            raise AssertionError(f"debootstrap failed ({result.returncode}; it needs the "
                                 f"mirror, so not from a namespace without network):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        print(f"debootstrap took {time.monotonic() - started:.0f} s")

    return _build_into_place(f"rootfs-{SUITE}-{key[:16]}", build)


def checkout_files(root: Path = ROOT) -> list[str]:
    """The checkout as git sees it: tracked and new files, nothing ignored (.venv,
    caches, wheelhouse)."""
    result = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, check=False)
    if result.returncode != 0:
        missing(f"needs a git checkout: {result.stderr.decode(errors='replace').strip()}")
    return [name for name in result.stdout.decode().split("\0")
            if name and (root / name).is_file()]


def copy_files(source: Path, names: list[str], target: Path) -> None:
    for name in names:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target / name)


def build_wheelhouse(checkout: Path, target: Path) -> None:
    """What `make wheelhouse` does, for a checkout that has no such target (an older
    release): its wheel, its dependencies and setuptools."""
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "-w",
                             str(target), str(checkout), "setuptools>=77"],
                            capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise AssertionError(f"pip wheel {checkout} failed:\n{result.stderr[-3000:]}")


def cached_release(commit: str) -> Path:
    """A released checkout (from git archive) with its wheelhouse beside it:
    CACHE/release-COMMIT/{checkout,wheelhouse}."""
    def build(tmp: Path) -> None:
        checkout = tmp / "checkout"
        checkout.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit],
                                 capture_output=True, check=False)
        if archive.returncode != 0:
            missing(f"git archive {commit}: {archive.stderr.decode(errors='replace')}")
        subprocess.run(["tar", "-x", "-C", str(checkout)], input=archive.stdout, check=True)
        build_wheelhouse(checkout, tmp / "wheelhouse")

    return _build_into_place(f"release-{commit}", build)


@dataclass
class Container:
    """One booted container. ``sh`` runs a bash script inside as root (or as ``user``)."""

    rootfs: Path
    workdir: Path
    name: str = "sapd-test"
    nspawn: subprocess.Popen[bytes] | None = None
    pid: int = 0
    console: Path = field(init=False)

    def __post_init__(self) -> None:
        self.upper = self.workdir / "upper"
        self.merged = self.workdir / "merged"
        self.console = self.workdir / "console.log"
        for path in (self.upper, self.workdir / "work", self.merged):
            path.mkdir(parents=True, exist_ok=True)

    def put(self, source: Path, names: list[str], inside: str) -> None:
        """Copy files in: into the overlay's upper layer before boot, else through the
        container's own root."""
        base = Path(f"/proc/{self.pid}/root") if self.pid else self.upper
        copy_files(source, names, base / inside.lstrip("/"))

    def put_tree(self, source: Path, inside: str) -> None:
        self.put(source, [str(p.relative_to(source)) for p in source.rglob("*")
                          if p.is_file()], inside)

    def boot(self, timeout: float = 60) -> None:
        need_tool("systemd-nspawn")
        need_tool("unshare")
        need_tool("setpriv")
        # The overlay is mounted in a mount namespace of nspawn's own, so it goes away with
        # the container however the test ends.
        overlay = (f"lowerdir={self.rootfs},upperdir={self.upper},"
                   f"workdir={self.workdir / 'work'}")
        script = (f"mount -t overlay overlay -o {shlex.quote(overlay)} "
                  f"{shlex.quote(str(self.merged))} && exec systemd-nspawn -q "
                  f"-D {shlex.quote(str(self.merged))} --machine={self.name} "
                  "--register=no --keep-unit --private-network -b")
        with open(self.console, "wb") as console:
            # --pdeathsig: a clean halt if the test process is killed, so no container
            # outlives its test run.
            self.nspawn = subprocess.Popen(["setpriv", "--pdeathsig", "TERM", "unshare",
                                            "--mount", "--propagation", "private",
                                            "sh", "-c", script], stdin=subprocess.DEVNULL,
                                           stdout=console, stderr=subprocess.STDOUT)
        nspawn = self.nspawn

        def init() -> int:
            if nspawn.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited {nspawn.returncode}:\n"
                                     f"{self.console.read_text(errors='replace')}")
            for child in children(nspawn.pid):
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                        return child
            return 0
        pid = wait_for(init, timeout, interval=0.1, what="the container's PID 1")
        assert isinstance(pid, int)
        self.pid = pid

        def booted() -> str:
            # Until systemd listens on its private socket, systemctl prints nothing.
            state = self.sh("systemctl is-system-running --wait", check=False,
                            timeout=timeout).stdout.strip()
            return "" if state in ("", "initializing", "starting") else state
        state = str(wait_for(booted, timeout, interval=0.2,
                             what="the container's systemd to finish booting"))
        if state not in ("running", "degraded"):
            raise AssertionError(f"the container's systemd is {state!r}:\n"
                                 + self.sh("systemctl --failed --no-pager || true").stdout)

    def sh(self, script: str, *, user: str | None = None, env: dict[str, str] | None = None,
           check: bool = True, timeout: float = 120, cwd: str | None = None
           ) -> subprocess.CompletedProcess[str]:
        assert self.pid, "not booted"
        cwd = cwd or ("/root" if user is None else "/")
        environment = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
        command = ["nsenter", "-t", str(self.pid), "-a", "env", "-i", f"--chdir={cwd}",
                   *(f"{k}={v}" for k, v in environment.items())]
        if user is not None:
            command += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
        command += ["bash", "-e", "-o", "pipefail", "-c", script]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"exit {result.returncode} from (as {user or 'root'}):\n"
                                 f"{script}\n--- stdout\n{result.stdout[-4000:]}\n"
                                 f"--- stderr\n{result.stderr[-4000:]}")
        return result

    def stop(self) -> None:
        if self.nspawn is not None and self.nspawn.poll() is None:
            self.nspawn.terminate()  # SIGTERM: nspawn asks the container's systemd to halt
            try:
                self.nspawn.wait(60)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()
                self.nspawn.wait(10)
        self.pid = 0
        shutil.rmtree(self.workdir, ignore_errors=True)
