"""Keeps the conflict list current without costing the event loop anything.

Finding conflicts reads every session on a shared group and parses their SDP: tens of
milliseconds at 100,000 sessions, too long for a request (GET /v1/sessions answers in
about a millisecond). So a task scans on a thread of its own, with a reader of its own,
whenever the directory's content changed (or, since staleness moves without a content
change, after MAX_AGE), and requests read the last result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sapd.conflicts import CANDIDATES, Conflict, Parsed, conflicting_ids, find_conflicts
from sapd.plumbing import logs
from sapd.records import DirectoryBackend

log = logs.get("sapd.conflicts")

INTERVAL = 1.0  # seconds between checks of the directory's content version
MAX_AGE = 10.0  # seconds a result stands while the content does not change


class ConflictScanner:
    def __init__(self, open_reader: Callable[[], DirectoryBackend]) -> None:
        self._open_reader = open_reader
        self._reader: DirectoryBackend | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sapd-conflicts")
        self.conflicts: list[Conflict] = []
        self.ids: set[str] = set()
        self.scans = 0
        self._version: int | None = None
        self._scanned_at = float("-inf")
        self._parsed: Parsed = {}  # destinations by content, used on the scanner's thread

    def _scan(self) -> tuple[int, list[Conflict]] | None:
        """On the scanner's thread: None when nothing changed since the last scan."""
        if self._reader is None:
            self._reader = self._open_reader()
        version = self._reader.content_version()
        if version == self._version and time.monotonic() - self._scanned_at < MAX_AGE:
            return None
        return version, find_conflicts(self._reader.shared_group_sessions(CANDIDATES),
                                       self._parsed)

    async def scan(self) -> None:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, self._scan)
        if result is not None:
            self._version, self.conflicts = result
            self.ids = conflicting_ids(self.conflicts)
            self._scanned_at = time.monotonic()
            self.scans += 1

    async def run(self) -> None:
        while True:
            try:
                await self.scan()
            except Exception as exc:  # a failed scan keeps the last result; say why
                log.warning("conflict scan failed", error=str(exc))
            await asyncio.sleep(INTERVAL)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._reader is not None:
            self._reader.close()
            self._reader = None
