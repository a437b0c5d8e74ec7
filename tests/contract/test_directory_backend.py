"""What every DirectoryBackend must do, whichever database holds the directory.

In the manner of Kea's generic lease-manager tests: one suite, parametrized over the
backends. A new backend (PostgreSQL, say) is a module under sapd/store/, a name in
sapd.store.BACKENDS, and one entry in BACKENDS below that says how to give it an empty
home; everything here must then pass unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sapd import streaminfo
from sapd.records import Applied, DirectoryBackend, SearchQuery, SessionRecord, Writes
from sapd.store import open_directory

SITE = "contract"  # the site every record here is heard at


@dataclass(frozen=True)
class StoreSection:
    backend: str
    dsn: str | None = None


@dataclass(frozen=True)
class Config:
    """The part of a daemon's configuration the factory reads."""

    store: StoreSection
    site: str = SITE


def _postgresql(request: pytest.FixtureRequest) -> StoreSection:
    database = request.getfixturevalue("postgres_database")
    return StoreSection("postgresql", database.dsn)


# backend name -> how to prepare an empty place for it (SQLite: the test's directory; a
# server backend: a fresh database on the server the suite starts)
BACKENDS: dict[str, Callable[[pytest.FixtureRequest], StoreSection]] = {
    "sqlite": lambda request: StoreSection("sqlite"),
    "postgresql": _postgresql,
}


@dataclass
class Home:
    """Where one backend keeps one directory: open it, and open it again."""

    section: StoreSection
    place: Path

    def open(self) -> DirectoryBackend:
        return open_directory(Config(self.section), self.place)


@pytest.fixture(params=sorted(BACKENDS))
def home(request: pytest.FixtureRequest, tmp_path: Path) -> Home:
    return Home(BACKENDS[request.param](request), tmp_path)


@pytest.fixture
def store(home: Home) -> Iterator[DirectoryBackend]:
    backend = home.open()
    yield backend
    backend.close()


def record(n: int, **changes: object) -> SessionRecord:
    base = SessionRecord(
        id=f"s{n:04d}", source=f"10.0.0.{n % 200 + 1}", identity=f"- {n} IN IP4 10.0.0.1",
        version=1, msg_hash=n + 1, origin_address=f"10.1.0.{n % 3 + 1}",
        name=f"Stream {n:04d}", info="Studio feed" if n % 2 else None,
        sdp=f"v=0\r\ns=Stream {n:04d}\r\n", scope="ipv4-local" if n % 4 else "ipv4-admin",
        sap_group="239.255.255.255", first_seen=1000.0, last_seen=1000.0 + n,
        groups=(f"239.255.1.{n % 250}",),
        media_types=("audio",) if n % 3 else ("video", "audio"),
        attributes=(("keywds", "Dante"),) if n % 5 == 0 else (("tool", "vlc"),),
        expires=5000.0 + n, site=SITE)
    return base.with_changes(**changes)


def ids(records: list[SessionRecord]) -> list[str]:
    return [r.id for r in records]


def same(got: SessionRecord | None, want: SessionRecord) -> bool:
    """Equal but for content_crc, which a backend may compute when it stores."""
    return got is not None and got.with_changes(content_crc=0) == want.with_changes(
        content_crc=0)


def test_upsert_then_get_gives_back_every_field(store: DirectoryBackend) -> None:
    original = record(7, local=True, owner_uid=1000, acl={"uids": [1001]},
                      blob={"room": "A"}, options={"interval": 30}, period=30.0,
                      auth_tag="pgp")
    store.upsert([original])
    assert same(store.get("s0007"), original)
    assert store.get("s9999") is None


def test_upsert_replaces_a_record_and_what_finds_it(store: DirectoryBackend) -> None:
    store.upsert([record(1)])
    store.upsert([record(1, name="Renamed", version=2, groups=("239.255.9.9",))])
    got = store.get("s0001")
    assert got is not None and (got.name, got.version) == ("Renamed", 2)
    assert store.search(SearchQuery(group="239.255.1.1")) == []
    assert ids(store.search(SearchQuery(group="239.255.9.9"))) == ["s0001"]
    assert ids(store.search(SearchQuery(text="renamed"))) == ["s0001"]
    assert store.count() == 1


def test_refresh_moves_liveness_only(store: DirectoryBackend) -> None:
    store.upsert([record(1)])
    store.refresh([("s0001", 1500.0, 6000.0, 30.0, 77), ("s9999", 1.0, None, None, 1)])
    got = store.get("s0001")
    assert got is not None
    assert (got.last_seen, got.expires, got.period, got.msg_hash) == (1500.0, 6000.0, 30.0, 77)
    assert same(got, record(1, last_seen=1500.0, expires=6000.0, period=30.0, msg_hash=77))
    assert store.count() == 1  # refreshing an unknown id creates nothing


def test_delete_counts_what_it_removed(store: DirectoryBackend) -> None:
    store.upsert([record(n) for n in range(5)])
    assert store.delete(["s0001", "s0003", "s9999"]) == 2
    assert sorted(r.id for r in store.iter_all()) == ["s0000", "s0002", "s0004"]
    assert store.delete([]) == 0


def test_apply_is_one_batch_in_order_and_names_what_it_refused(
        store: DirectoryBackend) -> None:
    store.upsert([record(1), record(2)])
    writes = Writes(upserts={"s0003": record(3)}, deletes={"s0001"},
                    refreshes={"s0002": (1800.0, 6100.0, 30.0, 9)})
    applied = store.apply(writes)
    assert isinstance(applied, Applied)
    touched = {"s0001", "s0002", "s0003"}
    assert applied.refused <= touched  # a backend may refuse part, and says which
    if "s0001" not in applied.refused:
        assert store.get("s0001") is None
    if "s0003" not in applied.refused:
        assert same(store.get("s0003"), record(3))
    if "s0002" not in applied.refused:
        got = store.get("s0002")
        assert got is not None and got.last_seen == 1800.0


def test_group_search_finds_an_address_inside_a_sessions_range(
        store: DirectoryBackend) -> None:
    # a c= /count is stored as one FIRST-LAST entry (sapd.plumbing.groupranges)
    store.upsert([record(1, groups=("239.10.0.0-239.10.3.231",)),
                  record(2, groups=("ff15::8000:0-ff15::8000:fffe",)), record(3)])
    for inside, sid in (("239.10.0.0", "s0001"), ("239.10.2.9", "s0001"),
                        ("239.10.3.231", "s0001"), ("ff15::8000:1234", "s0002")):
        assert ids(store.search(SearchQuery(group=inside))) == [sid], inside
    for outside in ("239.10.3.232", "239.9.255.255", "ff15::7fff:ffff"):
        assert store.search(SearchQuery(group=outside)) == [], outside
    assert ids(store.search(SearchQuery(group="239.255.1.3"))) == ["s0003"]


def test_search_filters(store: DirectoryBackend) -> None:
    records = [record(n) for n in range(40)]
    store.upsert(records)

    def matching(query: SearchQuery, keep: Callable[[SessionRecord], bool]) -> None:
        want = sorted((r for r in records if keep(r)), key=lambda r: (r.name.lower(), r.id))
        assert ids(store.search(query)) == ids(want), query
        assert store.count(query) == len(want), query

    matching(SearchQuery(text="studio FEED"), lambda r: r.info == "Studio feed")
    matching(SearchQuery(text="stream 001"), lambda r: "stream 001" in r.name.lower())
    matching(SearchQuery(media="video"), lambda r: "video" in r.media_types)
    matching(SearchQuery(group="239.255.1.7"), lambda r: "239.255.1.7" in r.groups)
    matching(SearchQuery(origin="10.1.0.2"), lambda r: r.origin_address == "10.1.0.2")
    matching(SearchQuery(source="10.0.0.5"), lambda r: r.source == "10.0.0.5")
    matching(SearchQuery(scope="ipv4-admin"), lambda r: r.scope == "ipv4-admin")
    matching(SearchQuery(attribute="keywds"), lambda r: r.attributes[0][0] == "keywds")
    matching(SearchQuery(attribute="tool", attribute_value="vlc"),
             lambda r: r.attributes == (("tool", "vlc"),))
    matching(SearchQuery(local=False), lambda r: not r.local)
    matching(SearchQuery(local=True), lambda r: r.local)
    matching(SearchQuery(media="video", scope="ipv4-admin"),
             lambda r: "video" in r.media_types and r.scope == "ipv4-admin")
    assert store.count(SearchQuery(), cap=10) >= 10


def test_search_pages_in_name_order_without_gaps_or_repeats(store: DirectoryBackend) -> None:
    store.upsert([record(n, name=f"{'ab'[n % 2]}{'AB'[n % 3 % 2]} {n:03d}")
                  for n in range(55)])
    pages = [store.search(SearchQuery(limit=10, offset=offset)) for offset in range(0, 60, 10)]
    seen = [r for page in pages for r in page]
    assert [len(p) for p in pages] == [10, 10, 10, 10, 10, 5]
    assert len({r.id for r in seen}) == 55
    assert [(r.name.lower(), r.id) for r in seen] == sorted((r.name.lower(), r.id)
                                                            for r in seen)


def test_light_reads_leave_out_the_sdp_only(store: DirectoryBackend) -> None:
    store.upsert([record(1)])
    (light,) = store.search(SearchQuery(), light=True)
    assert light.sdp == "" and light.name == "Stream 0001"
    (full,) = list(store.iter_all())
    assert full.sdp == record(1).sdp
    assert [r.sdp for r in store.iter_all(light=True)] == [""]


STREAM_ATTRIBUTES = (("rtpmap", "97 L24/48000/2"),
                     ("ts-refclk", "ptp=IEEE1588-2008:39-A7-94-FF-FE-07-CB-D0:0"),
                     ("rtpmap", "96 L16/48000/2"), ("group", "DUP a b"), ("mid", "a"))


def test_a_light_search_gives_the_listing_its_attributes_make(store: DirectoryBackend) -> None:
    """What a list page shows of the attributes (codecs in SDP order, clock, legs) comes
    with a light search, whose records hold no attributes; the start-up load needs it
    not."""
    store.upsert([record(1, attributes=STREAM_ATTRIBUTES), record(2, attributes=())])
    first, second = store.search(SearchQuery(), light=True)
    assert first.attributes == () and first.listing == streaminfo.summary(STREAM_ATTRIBUTES)
    assert first.listing is not None and first.listing["codecs"] == ["L24/48000/2",
                                                                     "L16/48000/2"]
    assert second.listing == streaminfo.summary(())
    full = store.get("s0001")
    assert full is not None and full.listing == first.listing
    assert [r.listing for r in store.iter_all(light=True)] == [None, None]


def test_iter_all_yields_every_record_once(store: DirectoryBackend) -> None:
    store.upsert([record(n) for n in range(120)])
    assert sorted(r.id for r in store.iter_all()) == [f"s{n:04d}" for n in range(120)]


def test_reopening_keeps_everything(home: Home) -> None:
    first = home.open()
    originals = [record(n, local=n == 3, owner_uid=1000 if n == 3 else None)
                 for n in range(10)]
    first.upsert(originals)
    first.refresh([("s0004", 1900.0, 6400.0, 20.0, 5)])
    first.delete(["s0005"])
    first.close()
    again = home.open()
    try:
        assert again.count() == 9
        assert same(again.get("s0003"), originals[3])
        got = again.get("s0004")
        assert got is not None and got.last_seen == 1900.0
        assert again.get("s0005") is None
        assert ids(again.search(SearchQuery(text="stream 0007"))) == ["s0007"]
    finally:
        again.close()


def test_content_version_rises_when_search_results_can_change(store: DirectoryBackend) -> None:
    start = store.content_version()
    store.upsert([record(1), record(2)])
    after_upsert = store.content_version()
    assert after_upsert > start
    store.delete(["s0001"])
    assert store.content_version() > after_upsert


def test_expire_removes_and_returns_what_is_due(store: DirectoryBackend) -> None:
    store.upsert([record(1, expires=100.0), record(2, expires=300.0), record(3, expires=None)])
    assert ids(store.expire(200.0)) == ["s0001"]
    assert sorted(r.id for r in store.iter_all()) == ["s0002", "s0003"]


def test_restart_marks_remote_sessions_stale_until_heard(store: DirectoryBackend) -> None:
    store.upsert([record(1), record(2, local=True)])
    assert store.mark_remote_stale() == 1
    assert ids(store.search(SearchQuery(stale=True))) == ["s0001"]
    store.refresh([("s0001", 2000.0, 7000.0, None, 2)])
    assert store.search(SearchQuery(stale=True)) == []
