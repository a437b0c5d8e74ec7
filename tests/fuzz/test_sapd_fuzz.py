"""Whole-path fuzz of sapd's per-datagram path: fuzzed SAP datagrams through the engine's
datagram entry, its writes applied to a real SQLite directory as the daemon does.

Asserted: no untyped exception (none escapes, none is counted as internal_error), every
input counted exactly once under a named outcome, no input over the CPU budget, the caps
hold and memory stays bounded, and what is stored afterwards is valid and agrees with
the engine, also after a restart. `make soak` runs it with 1,000,000 inputs.
"""

from __future__ import annotations

import functools
import gc
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sapd import lifecycle, sdp, wire
from sapd.lifecycle import DROP_INTERNAL_ERROR, Engine, Limits, announcer_key, session_id
from sapd.plumbing import service
from sapd.store.sqlite import SqliteDirectory
from tests.fuzz import budget
from tests.fuzz.sap_datagrams import datagrams

LIMITS = Limits(max_sessions=5000, max_tracked_sources=40)
FLUSH_EVERY = 1000  # inputs between hand-overs to the store and timer runs
STEP = 0.002  # seconds of the engine's clock per input: expiry happens during the run
RSS_GROWTH_MB = 150  # bound on peak RSS growth over the run (5,000 sessions are ~10 MB)

# Every outcome the engine may name: its own labels and the codec's reasons.
NAMED_OUTCOMES = {value for name, value in vars(lifecycle).items()
                  if name.startswith(("ACCEPTED_", "DROP_")) and isinstance(value, str)}
NAMED_OUTCOMES |= {reason.value for reason in wire.Reason}
NAMED_OUTCOMES.discard(DROP_INTERNAL_ERROR)

# The datagram's IP sender, as the daemon passes it: mostly one of the fuzzed header
# sources (10.x.y.1), sometimes another host or lo's unspecified address.
SENDERS = ("10.0.0.1", "10.0.1.1", "10.0.2.1", "10.0.3.1", "2001:db8::1", "0.0.0.0")
ARRIVAL: list[tuple[int, int, bytes]] = []  # opaque to the engine: its reader reads it


def sender_of(index: int) -> str:
    return SENDERS[index % len(SENDERS)]


def _store(store: SqliteDirectory, engine: Engine) -> None:
    store.apply(engine.take_writes())


def _check_store_agrees(store: SqliteDirectory, engine: Engine) -> int:
    stored = {record.id: record for record in store.iter_all()}
    assert stored.keys() == {record.id for record in engine.records()}
    for record in stored.values():
        session = sdp.parse(record.sdp)  # what is stored is a valid SDP
        assert session.identity == record.identity and session.version == record.version
        assert record.id == session_id(announcer_key(record.source, record.header_source
                                                     or record.source),
                                       record.identity, record.auth_tag)
        assert record.heard_via == (("sap", "239.255.255.255", "eth0", record.source),)
    return len(stored)


class CollectorPauses:
    """The longest cyclic-collector pause (CPU seconds): it lands in whichever input
    allocates when it is due, so the printed figures tell it from the input's own cost."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.generation = -1  # of the longest pause
        self.armed = False  # only pauses inside an input count, not the settles between
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if not self.armed:
            return
        if phase == "start":
            self._started = time.thread_time()
        elif (spent := time.thread_time() - self._started) > self.longest:
            self.longest, self.generation = spent, info["generation"]


@pytest.fixture
def daemon_collector() -> Iterator[CollectorPauses]:
    """The cyclic collector as sapd runs it (tune_collector, settles that freeze what
    lives on): a per-input budget is about sapd's costs, not pytest's heap."""
    threshold = gc.get_threshold()
    service.tune_collector()
    pauses = CollectorPauses()
    gc.callbacks.append(pauses)
    yield pauses
    gc.callbacks.remove(pauses)
    gc.set_threshold(*threshold)
    gc.unfreeze()


def _retimed(data: bytes) -> float:
    """An input's own cost, on fresh engines (budget.retimed)."""
    return budget.retimed(lambda: functools.partial(Engine(limits=LIMITS).receive_datagram,
                                                    data, 1000.0))


def _stored_so_far(engine: Engine) -> int:
    return engine.counters.get("new", 0) + engine.counters.get("changed", 0)


def test_fuzzed_datagrams_through_the_engine(tmp_path: Path,
                                             daemon_collector: CollectorPauses) -> None:
    gc.collect()
    rss_before = budget.rss_mb()
    store = SqliteDirectory(tmp_path / "directory.sqlite3")
    engine = Engine(limits=LIMITS)
    engine.arrival_reader = lambda arrival: ("239.255.255.255", "eth0")
    settler = service.MemorySettler(0, every=2000)
    tally = budget.Tally()
    now = 1000.0
    untyped: list[str] = []
    for index, data in enumerate(datagrams(budget.INPUTS, seed=13)):
        now += STEP

        def feed(data: bytes = data, now: float = now, index: int = index) -> str:
            daemon_collector.armed = True
            try:
                return engine.receive_datagram(data, now, sender_of(index), ARRIVAL)
            except Exception as exc:  # the engine must not let any escape
                untyped.append(f"{type(exc).__name__}: {exc}"[:200])
                return "escaped"
            finally:
                daemon_collector.armed = False

        tally.run(data, feed, functools.partial(_retimed, data))
        if index % FLUSH_EVERY == 0:
            engine.handle_timer(now)
            _store(store, engine)
            settler.note(_stored_so_far(engine))
            assert len(engine) <= LIMITS.max_sessions
            assert len(engine._buckets) <= LIMITS.max_tracked_sources
            assert len(engine._seen) <= len(engine)
    engine.handle_timer(now)
    _store(store, engine)
    rss_after = budget.rss_mb()

    outcomes = tally.outcomes
    print(f"\n{tally.report('sapd engine datagram entry')}"
          f"\nsessions {len(engine)}, expired {engine.counters['expired']}, "
          f"RSS {rss_before:.0f} -> {rss_after:.0f} MB, "
          f"slowest input {len(tally.slowest)} bytes {tally.slowest[:40]!r}, "
          f"longest collector pause {daemon_collector.longest * 1000:.2f} ms "
          f"(generation {daemon_collector.generation}), {tally.over_budget_report()}")
    assert not untyped, untyped[:5]
    assert outcomes.get(DROP_INTERNAL_ERROR, 0) == 0, engine.last_internal_error
    assert set(outcomes) <= NAMED_OUTCOMES, set(outcomes) - NAMED_OUTCOMES
    # counted exactly once: the engine's counters are the tally's, input for input
    assert sum(outcomes.values()) == budget.INPUTS
    assert {k: v for k, v in engine.counters.items() if k != "expired" and v} == outcomes
    assert tally.slowest_seconds <= budget.BUDGET_SECONDS, (
        f"{tally.slowest_seconds * 1000:.2f} ms for {tally.slowest[:80]!r}")
    assert rss_after - rss_before <= RSS_GROWTH_MB
    # every path was reached, not only the header checks
    assert {"new", "changed", "refresh", "deleted", "invalid_sdp",
            "inflate_too_large", "session_cap"} <= set(outcomes)

    assert _check_store_agrees(store, engine) == len(engine)
    restarted = Engine(limits=LIMITS)
    restarted.load(store.iter_all(light=True))
    assert {r.id for r in restarted.records()} == {r.id for r in engine.records()}
    store.close()
