"""The pages in a real headless Chromium: live rows, search, SDP download and copy,
escaping, and madcapd's leases. Rows are found by their session id (tr#s-<id>)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.chrome import NamespaceForwarder, chrome
from tests.daemons import Daemon, netns_send, send_local_multicast, stop_daemons, wait_session
from tests.netns.harness import Network
from tests.packets import announce, delete, sdp_text
from tests.support import free_tcp_port, free_udp_port, run, script, wait_for

PTP = "a=ts-refclk:ptp=IEEE1588-2008:39-A7-94-FF-FE-07-CB-D0:0\r\n"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with chrome(downloads) as driver:
        driver.downloads = downloads
        yield driver


@pytest.fixture
def web_sapd(tmp_path: Path) -> Iterator[Daemon]:
    port = free_tcp_port()
    daemon = Daemon("sapd", tmp_path / "sapd", ["--interface", "lo",
                                                "--web", f"127.0.0.1:{port}"])
    daemon.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    daemon.start()
    yield daemon
    stop_daemons([daemon])


def rows(driver: Any) -> dict[str, str]:
    """id -> name of every row the table shows now."""
    found = driver.execute_script(
        "return Array.from(document.querySelectorAll('#sessions tbody tr'))"
        ".map(tr => [tr.dataset.id, tr.cells[0].querySelector('a').textContent]);")
    return dict(found)


def live(driver: Any) -> None:
    """Wait until the page's event stream is open."""
    wait_for(lambda: driver.execute_script(
        "const l = document.getElementById('live'); return l && l.className === 'on';"),
        5, what="the page's event stream")


def hear(name: str, session: int, extra: str = "", origin: str = "10.0.0.1") -> None:
    send_local_multicast(announce(sdp_text(session=session, name=name, extra=extra,
                                           origin=origin), source=origin), "239.255.255.255")


def test_session_from_another_namespace_appears_live_and_deletion_removes_it(
        net: Network, daemons: Any, browser: Any, tmp_path: Path) -> None:
    a, b = net.host("a"), net.host("b")
    ia, _ = net.link(a, b, 41)
    port = free_tcp_port()
    sapd = daemons("sapd", b, "--web", f"127.0.0.1:{port}").start()
    forward = NamespaceForwarder(b.name, "127.0.0.1", port)
    try:
        browser.get(f"http://127.0.0.1:{forward.port}/")
        live(browser)
        assert rows(browser) == {}
        packet = tmp_path / "announce"
        packet.write_bytes(announce(sdp_text(name="From host a", group="239.255.41.1"),
                                    source=a.address()))
        netns_send(a.name, "239.255.255.255", [packet], ia)
        sent = time.monotonic()
        wait_for(lambda: "From host a" in rows(browser).values(), 1.0,
                 interval=0.01, what="the row, without reload")
        appeared = time.monotonic() - sent
        (session,) = sapd.sessions()
        assert browser.execute_script("return performance.navigation.type") == 0  # no reload
        gone = tmp_path / "delete"
        gone.write_bytes(delete(source=a.address()))
        netns_send(a.name, "239.255.255.255", [gone], ia)
        wait_for(lambda: session["id"] not in rows(browser), 2.0, interval=0.01,
                 what="the row to leave")
        print(f"row appeared {appeared * 1000:.0f} ms after the announcement was sent")
    finally:
        forward.close()


def test_search_filters_through_the_form(web_sapd: Daemon, browser: Any) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415  # see chrome.need_chromium
    from selenium.webdriver.support.ui import Select  # noqa: PLC0415

    hear("Studio A mic", 1, PTP)
    hear("Studio B mic", 2)
    hear("Foyer", 3)
    wait_for(lambda: len(web_sapd.sessions()) == 3, 5, what="3 sessions")
    browser.get(web_sapd.url + "/")  # type: ignore[attr-defined]
    assert sorted(rows(browser).values()) == ["Foyer", "Studio A mic", "Studio B mic"]
    browser.find_element(By.NAME, "text").send_keys("studio")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    wait_for(lambda: sorted(rows(browser).values()) == ["Studio A mic", "Studio B mic"], 5,
             what="text filter")
    assert "text=studio" in browser.current_url
    browser.find_element(By.NAME, "clock").send_keys("39-a7-94")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    wait_for(lambda: list(rows(browser).values()) == ["Studio A mic"], 5, what="clock filter")
    browser.find_element(By.NAME, "clock").clear()
    Select(browser.find_element(By.NAME, "limit")).select_by_value("25")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    wait_for(lambda: len(rows(browser)) == 2, 5, what="filter without clock")
    live(browser)
    hear("Studio C mic", 4)  # a live row must respect the filter
    hear("Kitchen", 5)
    wait_for(lambda: "Studio C mic" in rows(browser).values(), 2, what="matching live row")
    time.sleep(0.5)
    assert "Kitchen" not in rows(browser).values()


def test_sdp_download_equals_the_sdp_and_copy_copies_it(web_sapd: Daemon,
                                                        browser: Any) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415  # see chrome.need_chromium

    hear("Copy me: 1/2", 6, PTP)
    (session,) = wait_session(web_sapd, lambda s: s["name"] == "Copy me: 1/2")
    expected = web_sapd.get(f"/v1/sessions/{session['id']}")["sdp"]
    url = web_sapd.url  # type: ignore[attr-defined]
    browser.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    browser.get(f"{url}/sessions/{session['id']}")
    browser.find_element(By.ID, "download").click()
    target = browser.downloads / "Copy_me_1_2.sdp"
    wait_for(target.exists, 5, what="the downloaded file")
    assert target.read_bytes() == expected.encode()
    browser.find_element(By.ID, "copy").click()
    wait_for(lambda: browser.find_element(By.ID, "copied").text, 3, what="copy status")
    assert browser.find_element(By.ID, "copied").text == "Copied (clipboard)"
    assert read_clipboard(browser) == expected


def read_clipboard(driver: Any) -> str:
    text: str = driver.execute_async_script(
        "const done = arguments[0]; navigator.clipboard.readText().then(done, "
        "e => done('error: ' + e));")
    return text


def test_copy_falls_back_without_the_clipboard_api(web_sapd: Daemon, browser: Any) -> None:
    """As on plain http beyond loopback, where navigator.clipboard is undefined."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415  # see chrome.need_chromium

    hear("Fallback", 7)
    (session,) = wait_session(web_sapd, lambda s: s["name"] == "Fallback")
    expected = web_sapd.get(f"/v1/sessions/{session['id']}")["sdp"]
    url = web_sapd.url  # type: ignore[attr-defined]
    browser.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    script_id = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {
        "source": "Object.defineProperty(Navigator.prototype, 'clipboard', "
                  "{get: () => undefined, configurable: true});"})["identifier"]
    browser.get(f"{url}/sessions/{session['id']}")
    assert browser.execute_script("return navigator.clipboard === undefined")
    browser.find_element(By.ID, "copy").click()
    wait_for(lambda: browser.find_element(By.ID, "copied").text == "Copied", 3,
             what="fallback copy")
    browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument",
                            {"identifier": script_id})
    browser.get(f"{url}/sessions/{session['id']}")
    assert read_clipboard(browser) == expected


def test_names_from_the_network_never_run(web_sapd: Daemon, browser: Any) -> None:
    evil = ["<script>window.__pwned = 1</script>",
            '<img src=x onerror="window.__pwned = 2">',
            '"><svg onload="window.__pwned = 3">']
    hear(evil[0], 8)
    wait_for(lambda: len(web_sapd.sessions()) == 1, 5, what="first")
    browser.get(web_sapd.url + "/")  # type: ignore[attr-defined]
    live(browser)
    hear(evil[1], 9)  # this one arrives live, through the script's rendering
    hear(evil[2], 10)
    wait_for(lambda: len(rows(browser)) == 3, 3, what="live rows")
    assert sorted(rows(browser).values()) == sorted(evil)  # shown as text
    assert browser.execute_script("return window.__pwned") is None
    assert browser.execute_script("return document.querySelectorAll("
                                  "'#sessions img, #sessions svg, #sessions script').length") == 0
    for session in web_sapd.sessions():
        browser.get(f"{web_sapd.url}/sessions/{session['id']}")  # type: ignore[attr-defined]
        assert browser.execute_script("return window.__pwned") is None
        assert browser.execute_script("return document.querySelectorAll("
                                      "'main img, main svg').length") == 0
    logs = [json.dumps(entry) for entry in browser.get_log("browser")]
    assert not [line for line in logs if "Content Security Policy" in line
                and "inline" in line], logs  # nothing even tried to run inline


def test_madcapd_page_shows_a_lease_made_with_madcapctl(tmp_path: Path, browser: Any) -> None:
    port, web_port = free_udp_port(), free_tcp_port()
    madcapd = Daemon("madcapd", tmp_path / "m", [
        "--listen", f"127.0.0.1:{port}", "--web", f"127.0.0.1:{web_port}",
        "--sapd-socket", str(tmp_path / "none.sock")])
    madcapd.start()
    try:
        result = run(script("madcapctl"), "--server", f"127.0.0.1:{port}", "request", "--json",
                     check=True)
        lease = json.loads(result.stdout)
        browser.get(f"http://127.0.0.1:{web_port}/")
        lease_id = lease["lease_id"]
        text = browser.execute_script(
            f"const r = document.getElementById('lease-{lease_id}'); "
            "return r ? r.textContent : null;")
        assert text is not None and lease["addresses"][0] in text
        scope = browser.execute_script(
            "return Array.from(document.querySelectorAll('#scopes tbody td'))"
            ".map(td => td.textContent);")
        assert scope[4] == "1"  # leased
    finally:
        assert madcapd.stop() == 0


def test_page_is_useful_with_scripts_off(web_sapd: Daemon) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415  # see chrome.need_chromium

    hear("Studio A mic", 11)
    hear("Foyer", 12)
    wait_for(lambda: len(web_sapd.sessions()) == 2, 5, what="2 sessions")
    with chrome(flags=("--blink-settings=scriptEnabled=false",)) as driver:
        driver.get(web_sapd.url + "/")  # type: ignore[attr-defined]
        assert sorted(rows(driver).values()) == ["Foyer", "Studio A mic"]
        assert not driver.find_element(By.ID, "live").is_displayed()  # nothing pretends
        driver.find_element(By.NAME, "text").send_keys("studio")
        driver.find_element(By.CSS_SELECTOR, "form.filters button").click()
        wait_for(lambda: list(rows(driver).values()) == ["Studio A mic"], 5, what="filter")
        driver.find_element(By.LINK_TEXT, "Studio A mic").click()
        wait_for(lambda: "/sessions/" in driver.current_url, 5, what="session page")
        assert "s=Studio A mic" in driver.find_element(By.ID, "sdp").text
        assert not driver.find_element(By.ID, "copy").is_displayed()  # needs the script
        assert driver.find_element(By.ID, "download").is_displayed()
