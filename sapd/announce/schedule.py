"""When to send local announcements: RFC 2974 section 3.1 as a sans-IO scheduler.

    interval = max(floor, 8 * announcements_in_group * average_size / bandwidth)
    next     = last_send + interval + offset,  offset uniform in [-interval/3, +interval/3]

The group's load counts everything heard there, not only our own announcements, and
the interval is recomputed at every timer ("reconsideration"): if the recomputed time
has already passed the announcement goes now, otherwise it waits until then.
A new announcement goes out at once (users expect to see it on the wire immediately;
the RFC's jitter exists to spread steady-state load, which the next sends do).
Deletions go out ``deletion_repeats`` times, ``deletion_spacing`` apart.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_BANDWIDTH = 4000.0  # bit/s per SAP group
DEFAULT_SIZE = 500  # bytes assumed for announcements whose size we never saw
# Bounds of a fixed interval asked for by a publisher: under 1 s floods the group (1e-9
# once hung sapd for good); over an hour, receivers using RFC 2974's expiry (10 periods
# or one hour) drop the session between two announcements.
MIN_INTERVAL = 1.0
MAX_INTERVAL = 3600.0


@dataclass(slots=True)
class _Job:
    key: str
    group: str
    size: int
    interval: float | None  # a fixed interval asked for by the publisher
    last_sent: float | None = None
    offset_fraction: float = 0.0  # this cycle's jitter, as a fraction of the interval
    due: float = 0.0
    deletions_left: int = 0


@dataclass
class Scheduler:
    floor: float
    bandwidth: float = DEFAULT_BANDWIDTH
    rng: random.Random = field(default_factory=random.Random)
    # (announcements, bytes) heard in a group, ours included; given by the caller
    group_load: Callable[[str], tuple[int, int]] = lambda group: (0, 0)
    deletion_repeats: int = 3
    deletion_spacing: float = 0.7
    _jobs: dict[str, _Job] = field(default_factory=dict)
    _heap: list[tuple[float, int, str]] = field(default_factory=list)
    _seq: int = 0

    def interval(self, group: str, own: _Job | None = None) -> float:
        count, total = self.group_load(group)
        if own is not None and count == 0:
            count, total = 1, own.size
        average = total / count if count else DEFAULT_SIZE
        return max(self.floor, 8 * count * average / self.bandwidth)

    def _push(self, job: _Job) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (job.due, self._seq, job.key))

    def add(self, key: str, group: str, size: int, now: float,
            interval: float | None = None) -> None:
        """Schedule a new (or replaced) announcement: its first send is due now."""
        if interval is not None and not MIN_INTERVAL <= interval <= MAX_INTERVAL:
            raise ValueError(f"fixed interval {interval!r} is outside "
                             f"{MIN_INTERVAL:g}..{MAX_INTERVAL:g} s")  # callers bound it
        job = _Job(key, group, size, interval, due=now)
        self._jobs[key] = job
        self._push(job)

    def remove(self, key: str) -> None:
        self._jobs.pop(key, None)

    def delete(self, key: str, now: float, repeats: int | None = None) -> None:
        """Switch an announcement to its deletion burst (``repeats`` packets)."""
        job = self._jobs.get(key)
        if job is None:
            return
        job.deletions_left = self.deletion_repeats if repeats is None else repeats
        job.due = now
        self._push(job)

    def _next_due(self, job: _Job) -> float:
        assert job.last_sent is not None
        cycle = job.interval if job.interval is not None else self.interval(job.group, job)
        return job.last_sent + cycle + job.offset_fraction * cycle

    def due(self, now: float) -> list[tuple[str, bool]]:
        """Keys to send now, each with True if it is a deletion. Reschedules them."""
        out: list[tuple[str, bool]] = []
        while self._heap and self._heap[0][0] <= now:
            when, _, key = heapq.heappop(self._heap)
            job = self._jobs.get(key)
            if job is None or job.due != when:
                continue  # removed or rescheduled meanwhile
            if job.deletions_left:
                out.append((key, True))
                job.deletions_left -= 1
                if job.deletions_left:
                    job.due = now + self.deletion_spacing
                    self._push(job)
                else:
                    del self._jobs[key]
                continue
            if job.last_sent is not None:
                # Reconsideration: the group may have grown since this was scheduled.
                recomputed = self._next_due(job)
                if recomputed > now + 1e-9:
                    job.due = recomputed
                    self._push(job)
                    continue
            out.append((key, False))
            job.last_sent = now
            job.offset_fraction = self.rng.uniform(-1 / 3, 1 / 3)
            job.due = self._next_due(job)
            self._push(job)
        return out

    def next_wakeup(self) -> float | None:
        while self._heap:
            when, _, key = self._heap[0]
            job = self._jobs.get(key)
            if job is not None and job.due == when:
                return when
            heapq.heappop(self._heap)
        return None

    def interval_in_force(self, key: str) -> float | None:
        """The interval a job is sent at now: its fixed one, else the group's."""
        job = self._jobs.get(key)
        if job is None:
            return None
        return job.interval if job.interval is not None else self.interval(job.group, job)

    def due_of(self, key: str) -> float | None:
        job = self._jobs.get(key)
        return job.due if job is not None else None

    def __len__(self) -> int:
        return len(self._jobs)
