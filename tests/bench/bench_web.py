"""Web view figures with 100,000 sessions, by hand (prints them):

- the first page's server time (GET / over TCP on loopback, keep-alive), p50 and p99,
  and a search page's; GET /v1/sessions beside them;
- the browser's time to a rendered table (headless Chromium, from the navigation's start
  to the first frame after the table is parsed, and DOMContentLoaded; ten loads);
- 1,000 events/s for 30 s with the page open: its longest main-thread task (Long Tasks
  API), how many went over 200 ms, its JS heap and DOM size at the start and the end.

Run: .venv/bin/python -m tests.bench.bench_web   (in a network namespace of your own)
"""

from __future__ import annotations

import http.client
import tempfile
import threading
import time
from pathlib import Path

from tests.bench.bench_receive import FILL_RATE, GROUP, PORT, fill, flood
from tests.bench.common import percentile, report
from tests.browser.chrome import chrome
from tests.daemons import Daemon
from tests.packets import announce, sdp_text
from tests.support import free_tcp_port

SESSIONS = 100_000
EVENT_RATE = 1_000
EVENT_SECONDS = 30
RENDERED = """
document.addEventListener("DOMContentLoaded", () => requestAnimationFrame(() =>
  setTimeout(() => { window.__rendered = performance.now(); })));
"""
OBSERVE = """
window.__long = []; window.__events = 0;
new PerformanceObserver(list => list.getEntries().forEach(e => window.__long.push(e.duration)))
  .observe({type: "longtask", buffered: true});
const NativeEventSource = window.EventSource;
window.EventSource = function (url) {
  const source = new NativeEventSource(url);
  ["new", "changed", "deleted", "expired", "resync"].forEach(kind =>
    source.addEventListener(kind, () => { window.__events += 1; }));
  return source;
};
"""


def session_packet(i: int, version: int = 1) -> bytes:
    return announce(sdp_text(session=i, version=version, name=f"Stream {i} room {i % 97}",
                             group=f"239.255.{i >> 8 & 255}.{i & 255}"),
                    source=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")


def server_times(port: int, path: str, count: int = 300) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        times.append((time.perf_counter() - start) * 1000)
    conn.close()
    return times


def page_stats(driver: object) -> dict[str, float]:
    """Times from the navigation's start: the table parsed (DOMContentLoaded; it is in
    the HTML), and the first frame after it (rAF then a task: after its paint)."""
    return driver.execute_script(  # type: ignore[attr-defined, no-any-return]
        "const n = performance.getEntriesByType('navigation')[0];"
        "return {rendered: window.__rendered || -1, dcl: n.domContentLoadedEventEnd,"
        " rows: document.querySelectorAll('#sessions tbody tr').length};")


def main() -> None:
    print(f"{'figure':58} {'value':>14} {'unit':10} target")
    web = free_tcp_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(f"port = {PORT}\ngroups = ['{GROUP}']\n"
                          "[limits]\nsource_rate = 1000000.0\nsource_burst = 1000000.0\n"
                          "max_sessions = 200000\n")
        daemon = Daemon("sapd", Path(tmp) / "d", [
            "--interface", "lo", "--config", str(config), "--log-level", "warning",
            "--web", f"127.0.0.1:{web}"])
        daemon.start()
        try:
            fill(daemon, [session_packet(i) for i in range(SESSIONS)], FILL_RATE)
            sessions = daemon.stats()["sessions"]
            time.sleep(3)  # at rest, as an operator opens the page
            for label, path in (("first page GET /", "/"),
                                ("search page GET /?text=room+42", "/?text=room+42"),
                                ("GET /v1/sessions", "/v1/sessions")):
                times = server_times(web, path)
                report(f"{label} with {sessions:,} sessions, p50", percentile(times, 50), "ms")
                report(f"{label}, p99", percentile(times, 99), "ms",
                       "<= 50 ms" if path == "/" else "")
            with chrome(flags=("--enable-precise-memory-info",)) as driver:
                script_id = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                                   {"source": RENDERED})["identifier"]
                rendered, dcls = [], []
                for _ in range(10):
                    driver.get(f"http://127.0.0.1:{web}/")
                    time.sleep(0.2)
                    stats = page_stats(driver)
                    assert stats["rows"] == 100 and stats["rendered"] > 0, stats
                    rendered.append(stats["rendered"])
                    dcls.append(stats["dcl"])
                driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument",
                                       {"identifier": script_id})
                report("browser: table rendered (first frame after it), p50",
                       percentile(rendered, 50), "ms")
                report("browser: table rendered, worst of 10 loads", max(rendered), "ms",
                       "<= 500 ms")
                report("browser: DOMContentLoaded of /, worst of 10", max(dcls), "ms")
                driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                       {"source": OBSERVE})
                driver.get(f"http://127.0.0.1:{web}/")
                time.sleep(2)
                heap = "return [performance.memory.usedJSHeapSize / 1048576, " \
                       "document.getElementsByTagName('*').length];"
                heap_start, nodes_start = driver.execute_script(heap)
                count = EVENT_RATE * EVENT_SECONDS
                changes = [session_packet(i % 1000, version=2 + i // 1000)
                           for i in range(count)]
                sender = threading.Thread(target=flood, args=(count, EVENT_RATE, changes))
                samples = []
                sender.start()
                while sender.is_alive():
                    time.sleep(5)
                    samples.append(driver.execute_script(heap)[0])
                sender.join()
                time.sleep(2)
                longest = driver.execute_script("return window.__long")
                events = driver.execute_script("return window.__events")
                heap_end, nodes_end = driver.execute_script(heap)
                report(f"events the page received ({count:,} sent at {EVENT_RATE:,}/s)",
                       events, "events")
                report("longest main-thread task during the events (0: none >= 50 ms)",
                       max(longest, default=0.0), "ms", "<= 200 ms")
                report("main-thread tasks over 200 ms", sum(t > 200 for t in longest),
                       "tasks", "0")
                report("JS heap before the events", heap_start, "MB")
                report("JS heap after (largest 5 s sample)", max([*samples, heap_end]), "MB",
                       "bounded")
                report("JS heap after the events", heap_end, "MB")
                report("DOM elements before the events", nodes_start, "elements")
                report("DOM elements after the events", nodes_end, "elements", "bounded")
        finally:
            daemon.stop()


if __name__ == "__main__":
    main()
