"""Debian's chromium, headless, driven by selenium through /usr/bin/chromedriver (named
explicitly: selenium's own driver manager would try to download one)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support import missing

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage")


def need_chromium() -> None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            missing(f"needs {path} (apt-get install {package})")
    try:
        import selenium  # noqa: F401, PLC0415  # only the page tests need it
    except ImportError:
        missing("needs selenium (pip install -e '.[test]')")


@contextlib.contextmanager
def chrome(downloads: Path | None = None, width: int = 1400, height: int = 900,
           flags: tuple[str, ...] = ()) -> Iterator[Any]:
    """A fresh headless chromium (its own profile directory), quit afterwards."""
    need_chromium()
    from selenium import webdriver  # noqa: PLC0415  # see need_chromium
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="sapd-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, *flags):
            options.add_argument(flag)
        options.add_argument(f"--window-size={width},{height}")
        options.add_argument(f"--user-data-dir={profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        if downloads is not None:
            options.add_experimental_option("prefs", {
                "download.default_directory": str(downloads),
                "download.prompt_for_download": False})
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER),
                                  options=options)
        try:
            if downloads is not None:
                driver.execute_cdp_cmd("Browser.setDownloadBehavior", {
                    "behavior": "allow", "downloadPath": str(downloads)})
            yield driver
        finally:
            driver.quit()


CLONE_NEWNET = 0x40000000


class NamespaceForwarder:
    """127.0.0.1:<port> here, forwarded to HOST:PORT inside network namespace ``netns``:
    the browser runs in the test's namespace, sapd in a namespace of its own. Each
    connection's upstream socket is made on a thread that has entered ``netns``
    (setns(2) moves only the calling thread)."""

    def __init__(self, netns: str, host: str, port: int) -> None:
        self.netns, self.target = netns, (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._libc = ctypes.CDLL(None, use_errno=True)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
        try:
            if self._libc.setns(fd, CLONE_NEWNET) != 0:
                client.close()
                return
        finally:
            os.close(fd)
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)

    def close(self) -> None:
        self.listener.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
