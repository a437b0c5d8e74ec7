"""Finding an IS-04 registry by DNS-SD (``[nmos] discover = true``): python-zeroconf
browses ``_nmos-register._tcp`` over mDNS; :func:`order_registries` (pure) keeps those
that speak plain HTTP, v1.3, without authorization, lowest ``pri`` first (AMWA
"Discovery - Registered Operation"; ties keep a stable order derived from the name, so
every restart picks the same one). At most MAX_CANDIDATES are kept."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from sapd.bridges.nmos_resources import bounded_number
from sapd.plumbing import logs

log = logs.get("sapd.nmos")

SERVICE = "_nmos-register._tcp.local."
MAX_CANDIDATES = 32
RESOLVE_TIMEOUT = 3.0
# Seconds from the first answer to a choice: the other registries' answers arrive
# within it, so the best pri is chosen, not the quickest to answer. Once chosen, a
# registry is kept until it fails (a better one appearing later changes nothing).
SETTLE = 2.0


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    host: str
    port: int
    txt: dict[str, str]


def rank(c: Candidate) -> tuple[int, str] | None:
    """Where a registry stands (lower is better), or None if sapd cannot use it:
    api_proto http, api_ver with v1.3, api_auth false; lowest pri (a number; missing
    or not a number: last), then by a hash of the name."""
    txt = {k.lower(): v.strip().lower() for k, v in c.txt.items()}
    if txt.get("api_proto", "http") != "http" or txt.get("api_auth", "false") != "false":
        return None
    if "v1.3" not in txt.get("api_ver", "v1.3").split(","):
        return None
    found = bounded_number(txt.get("pri", ""), 1 << 31, least=0)
    return (1 << 31 if found is None else found,
            hashlib.sha256(c.name.encode()).hexdigest())


def order_registries(candidates: list[Candidate]) -> list[str]:
    """Registry URLs, best first (see :func:`rank`), at most MAX_CANDIDATES."""
    usable = []
    for c in candidates:
        place = rank(c)
        if place is not None:
            host = f"[{c.host}]" if ":" in c.host else c.host
            usable.append((place, f"http://{host}:{c.port}"))
    return [url for _, url in sorted(usable)[:MAX_CANDIDATES]]


class RegistryBrowser:
    """The registries found so far (:meth:`registries`), kept current by :meth:`run`."""

    def __init__(self) -> None:
        self._found: dict[str, Candidate] = {}
        self._order: list[str] = []
        self._first_answer: float | None = None

    def registries(self) -> list[str]:
        if self._first_answer is None or time.monotonic() - self._first_answer < SETTLE:
            return []
        return self._order

    async def run(self) -> None:
        # imported here: only discovery needs zeroconf
        from zeroconf import ServiceStateChange  # noqa: PLC0415
        from zeroconf.asyncio import (  # noqa: PLC0415
            AsyncServiceBrowser,
            AsyncServiceInfo,
            AsyncZeroconf,
        )

        zc = AsyncZeroconf()
        pending: set[asyncio.Task[None]] = set()

        async def resolve(name: str) -> None:
            info = AsyncServiceInfo(SERVICE, name)
            if not await info.async_request(zc.zeroconf, RESOLVE_TIMEOUT * 1000):
                return
            addresses = info.parsed_addresses()
            if not addresses or info.port is None:
                return
            txt = {k.decode(errors="replace"): (v or b"").decode(errors="replace")
                   for k, v in (info.properties or {}).items()}
            self.found(Candidate(name, addresses[0], info.port, txt))

        def changed(zeroconf: Any, service_type: str, name: str,
                    state_change: Any) -> None:
            if state_change is ServiceStateChange.Removed:
                self._found.pop(name, None)
                self._update()
                return
            task = asyncio.ensure_future(resolve(name))
            pending.add(task)
            task.add_done_callback(pending.discard)

        browser = AsyncServiceBrowser(zc.zeroconf, SERVICE, handlers=[changed])
        try:
            await asyncio.Event().wait()
        finally:
            for task in pending:
                task.cancel()
            with contextlib.suppress(Exception):
                await browser.async_cancel()
            await zc.async_close()

    def found(self, candidate: Candidate) -> None:
        """A resolved announcement. Only usable ones are kept, and once MAX_CANDIDATES
        are, a better one takes the worst one's place: neither older registries (v1.2
        only, https) nor a flood of announcements crowd out the one to use."""
        place = rank(candidate)
        self._found.pop(candidate.name, None)
        if place is None:
            self._update()
            return
        if len(self._found) >= MAX_CANDIDATES:
            worst = max(self._found.values(), key=lambda c: rank(c) or (1 << 32, ""))
            if (rank(worst) or (1 << 32, "")) <= place:
                return
            del self._found[worst.name]
        self._found[candidate.name] = candidate
        self._update()

    def _update(self) -> None:
        if self._first_answer is None and self._found:
            self._first_answer = time.monotonic()
        order = order_registries(list(self._found.values()))
        if order != self._order:
            log.info("NMOS registries found", registries=order)
        self._order = order
