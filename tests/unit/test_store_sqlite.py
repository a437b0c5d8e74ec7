"""The SQLite directory on a real file: persistence, every filter, pagination, expiry."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sapd import streaminfo
from sapd.store import sqlite as sqlite_backend
from sapd.store.sqlite import (
    SCHEMA_VERSION,
    SchemaError,
    SearchQuery,
    SessionRecord,
    SqliteDirectory,
)


def record(n: int, **changes: object) -> SessionRecord:
    base = SessionRecord(
        id=f"s{n:05d}", source=f"10.0.{n // 256}.{n % 256}", identity=f"- {n} IN IP4 10.0.0.1",
        version=1, msg_hash=n + 1, origin_address="10.0.0.1", name=f"Session {n:05d}",
        info="studio feed" if n % 2 else None, sdp="v=0\n", scope="ipv4-local",
        sap_group="239.255.255.255", first_seen=1000.0, last_seen=1000.0 + n,
        groups=(f"239.255.{n // 256}.{n % 256}",),
        media_types=("audio",) if n % 3 else ("video", "audio"),
        attributes=(("keywds", "Dante"),) if n % 5 == 0 else (("tool", "vlc"),),
        expires=2000.0 + n)
    return base.with_changes(**changes)


@pytest.fixture
def store(tmp_path: Path) -> SqliteDirectory:
    return SqliteDirectory(tmp_path / "directory.sqlite3")


def test_round_trip_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite3"
    store = SqliteDirectory(path)
    original = record(7, local=True, owner_uid=1000, acl={"uids": [1001]}, blob={"room": "A"},
                      options={"interval": 30}, period=30.0, auth_tag="pgp")
    store.upsert([original])
    store.close()
    again = SqliteDirectory(path)
    got = again.get("s00007")
    assert got is not None and got.content_crc != 0
    assert got == original.with_changes(content_crc=got.content_crc)
    assert again.count() == 1


def test_upsert_replaces_and_reindexes(store: SqliteDirectory) -> None:
    store.upsert([record(1)])
    store.upsert([record(1, name="Renamed", version=2, groups=("239.255.9.9",))])
    got = store.get("s00001")
    assert got is not None and got.name == "Renamed" and got.version == 2
    assert store.search(SearchQuery(group="239.255.0.1")) == []
    assert [r.id for r in store.search(SearchQuery(group="239.255.9.9"))] == ["s00001"]
    assert [r.id for r in store.search(SearchQuery(text="renamed"))] == ["s00001"]
    assert store.search(SearchQuery(text="Session 00001")) == []


def test_a_new_version_rewrites_exactly_the_child_rows_that_changed(
        store: SqliteDirectory) -> None:
    """An upsert leaves a replaced session's group, attribute and text rows alone where
    they are the same: whatever changed or stayed, every filter finds what the record
    says, no more, and no child row is left twice."""
    store.upsert([record(1, attributes=(("ptime", "1"), ("recvonly", None)))])
    steps = [
        {"version": 2},  # nothing but the version
        {"version": 3, "name": "Renamed"},  # the text
        {"version": 4, "info": "now with info"},
        {"version": 5, "attributes": (("recvonly", None), ("ptime", "1"))},  # reordered
        {"version": 6, "attributes": (("ptime", "4"),)},
        {"version": 7, "groups": ("239.255.9.9", "239.255.9.10-239.255.9.12")},
        {"version": 8, "attributes": (("ptime", "4"), ("ptime", "4"))},  # a repeat
    ]
    current: dict[str, object] = {"attributes": (("ptime", "1"), ("recvonly", None))}
    for step in steps:
        current.update(step)
        store.upsert([record(1, **current)])
        got = store.get("s00001")
        assert got is not None and got.version == step["version"]
        assert sorted(got.attributes, key=str) == sorted(current["attributes"], key=str)
        name = str(current.get("name", "Session 00001"))
        assert [r.id for r in store.search(SearchQuery(text=name))] == ["s00001"]
        if "info" in current:
            assert [r.id for r in store.search(SearchQuery(text="with info"))] == ["s00001"]
        for n, v in current["attributes"]:  # type: ignore[attr-defined]
            assert [r.id for r in store.search(SearchQuery(attribute=n, attribute_value=v))
                    ] == ["s00001"]
        for group in record(1, **current).groups:
            first = group.partition("-")[0]
            assert [r.id for r in store.search(SearchQuery(group=first))] == ["s00001"]
    assert store.search(SearchQuery(text="Session 00001")) == []
    assert store.search(SearchQuery(attribute="recvonly")) == []
    assert store.search(SearchQuery(group="239.255.0.1")) == []
    counts = {table: store._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
              for table in ("session_groups", "session_attrs", "session_text")}
    # two entries and the range's first address; two attribute rows; one text row
    assert counts == {"session_groups": 3, "session_attrs": 2, "session_text": 1}


def test_every_filter(store: SqliteDirectory) -> None:
    store.upsert(record(n, local=(n == 4), stale=(n == 5),
                        origin_address="10.9.9.9" if n == 6 else "10.0.0.1",
                        scope="ipv4-global" if n == 8 else "ipv4-local") for n in range(10))

    def ids(**kw: object) -> list[str]:
        return [r.id for r in store.search(SearchQuery(**kw))]  # type: ignore[arg-type]

    assert ids(text="studio") == [f"s{n:05d}" for n in range(10) if n % 2]
    assert ids(text="00003") == ["s00003"]
    assert ids(text="3") == ["s00003"]  # short text falls back to LIKE
    assert ids(media="video") == ["s00000", "s00003", "s00006", "s00009"]
    assert ids(group="239.255.0.7") == ["s00007"]
    assert ids(origin="10.9.9.9") == ["s00006"]
    assert ids(source="10.0.0.2") == ["s00002"]
    assert ids(scope="ipv4-global") == ["s00008"]
    assert ids(attribute="keywds") == ["s00000", "s00005"]
    assert ids(attribute="keywds", attribute_value="Dante", text="00005") == ["s00005"]
    assert ids(attribute="keywds", attribute_value="nope") == []
    assert ids(local=True) == ["s00004"]
    assert ids(stale=True) == ["s00005"]
    assert len(ids(local=False)) == 9
    assert store.count(SearchQuery(media="audio")) == 10


def test_pagination_is_stable_and_complete(store: SqliteDirectory) -> None:
    store.upsert(record(n) for n in range(250))
    seen: list[str] = []
    for offset in range(0, 300, 100):
        seen += [r.id for r in store.search(SearchQuery(limit=100, offset=offset))]
    assert seen == [f"s{n:05d}" for n in range(250)]


def test_expire_removes_and_returns_only_due(store: SqliteDirectory) -> None:
    store.upsert(record(n) for n in range(10))
    store.upsert([record(20, expires=None)])
    gone = store.expire(2004.5)
    assert sorted(r.id for r in gone) == ["s00000", "s00001", "s00002", "s00003", "s00004"]
    assert store.count() == 6 and store.get("s00020") is not None
    assert store.search(SearchQuery(group="239.255.0.1")) == []


def test_refresh_batches_last_seen_and_clears_stale(store: SqliteDirectory) -> None:
    store.upsert([record(1, stale=True), record(2, stale=True)])
    store.refresh([("s00001", 5000.0, 9000.0, 30.0, 77)])
    one, two = store.get("s00001"), store.get("s00002")
    assert one is not None
    assert (one.last_seen, one.expires, one.period, one.stale) == (5000.0, 9000.0, 30.0, False)
    assert two is not None and two.stale


def test_mark_remote_stale_spares_local(store: SqliteDirectory) -> None:
    store.upsert([record(1), record(2, local=True)])
    assert store.mark_remote_stale() == 1
    assert store.count(SearchQuery(stale=True)) == 1


def test_delete(store: SqliteDirectory) -> None:
    store.upsert([record(1), record(2)])
    assert store.delete(["s00001", "nope"]) == 1
    assert store.get("s00001") is None and store.count() == 1


def test_transaction_rolls_back_on_error(store: SqliteDirectory) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.upsert([record(1)])
        raise RuntimeError("boom")
    assert store.count() == 0


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    sqlite3.connect(path).execute("PRAGMA user_version=99")
    with pytest.raises(SchemaError, match="newer"):
        SqliteDirectory(path)


def test_version_1_file_is_migrated_and_keeps_its_sessions(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    _old_file(path, 1, {"a": 1, "b": 2})
    migrated = SqliteDirectory(path)
    assert migrated.count() == 2 and migrated.get("a") is not None
    tables = {row[0] for row in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type='table'")}
    assert "session_media" not in tables
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


@pytest.mark.parametrize("text", ["room 42", "Room 4", "room", "eam 5 r", "m 9", "zzz",
                                  "Stream 599 room 17", "ro", "5 room 1", "été 3"])
def test_text_search_agrees_with_a_plain_substring_scan(
        store: SqliteDirectory, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Every plan (rare trigrams, a bounded walk of a common text, the one-pass memo
    serving the count) returns what a substring scan would, page after page. The limits
    are shrunk so 600 sessions exercise the paths that 100,000 would."""
    for name, value in (("TRIGRAM_PROBE", 20), ("WALK_WINDOW", 50), ("COUNT_WINDOW", 100),
                        ("MATCH_MEMO", 60)):
        monkeypatch.setattr(sqlite_backend, name, value)
    records = [record(n, name=f"Stream {n} room {n % 97}", info="été 3" if n == 7 else None)
               for n in range(600)]
    store.upsert(records)
    needle = text.lower()
    expected = sorted((r for r in records if needle in f"{r.name}\n{r.info or ''}".lower()),
                      key=lambda r: (r.name.lower(), r.id))
    for limit, offset in ((10, 0), (10, 10), (25, 40), (100, 0)):
        query = SearchQuery(text=text, limit=limit, offset=offset)
        got = [r.id for r in store.search(query)]
        assert got == [r.id for r in expected[offset:offset + limit]], (limit, offset)
        assert min(store.count(query, cap=30), 31) == min(len(expected), 31)
        assert store.count(query) == len(expected)


def test_remembered_text_matches_follow_every_write(store: SqliteDirectory) -> None:
    store.upsert(record(n, name=f"Feed {n}", stale=True) for n in range(5))
    query = SearchQuery(text="feed", limit=2)
    assert len(store.search(query)) == 2 and store.count(query, cap=100) == 5
    store.delete(["s00001"])
    assert store.count(query, cap=100) == 4
    store.upsert([record(2, name="Renamed")])
    assert [r.id for r in store.search(query)] == ["s00000", "s00003"]
    assert store.count(query, cap=100) == 3
    stale = SearchQuery(text="feed", stale=True)
    assert len(store.search(stale)) == 3
    store.refresh([("s00000", 5000.0, None, None, 1)])
    assert [r.id for r in store.search(stale)] == ["s00003", "s00004"]
    assert store.count(stale, cap=100) == 2


def test_awkward_text_and_numbers_round_trip(store: SqliteDirectory) -> None:
    odd = record(3, name='Ünïcode "quoted"\\ and\ttab', info="line\nbreak — ½", sdp="v=0\r\n",
                 owner_uid=2**31 + 5, period=0.1, expires=None, groups=(),
                 attributes=(("x-flag", None), ("x-json", '{"a": [1, 2]}')))
    store.upsert([odd])
    got = store.get("s00003")
    assert got is not None
    assert got == odd.with_changes(content_crc=got.content_crc)


def test_a_batch_is_a_few_statements_not_one_per_session(store: SqliteDirectory) -> None:
    """A statement per row costs the store about twice the CPU of a few statements of
    many rows each (see SqliteDirectory.upsert)."""
    statements: list[str] = []

    def statements_for(batch: list[SessionRecord]) -> int:
        statements.clear()
        # Statements SQLite runs inside one of ours (FTS5's, shown with "--") stay in C.
        store._db.set_trace_callback(
            lambda sql: None if sql.startswith("--") else statements.append(sql))
        with store.transaction():
            store.upsert(batch)
            store.refresh((r.id, 5000.0, 6000.0, 30.0, 9) for r in batch)
        store._db.set_trace_callback(None)
        return len(statements)

    assert statements_for([record(n) for n in range(1000)]) <= 50  # one per row: 5,000
    assert statements_for([record(n, version=2) for n in range(1000)]) <= 70
    assert store.count() == 1000
    got = store.search(SearchQuery(limit=1000))
    assert {(r.version, r.last_seen, r.expires, r.period, r.msg_hash) for r in got} == {
        (2, 5000.0, 6000.0, 30.0, 9)}
    assert [r.id for r in store.search(SearchQuery(group="239.255.3.231"))] == ["s00999"]


def test_a_light_page_is_the_full_page_without_sdp_and_attributes(
        store: SqliteDirectory) -> None:
    store.upsert(record(n, heard_via=(("sap", "239.255.255.255", "eth0", f"10.0.0.{n % 3}"),))
                 for n in range(30))
    for query in (SearchQuery(limit=10, offset=5), SearchQuery(text="session 0001"),
                  SearchQuery(media="video")):
        full = store.search(query)
        assert full and all(r.sdp and r.attributes and r.heard_via for r in full)
        assert store.search(query, light=True) == [
            r.with_changes(sdp="", attributes=()) for r in full]


def test_heard_via_was_parsed_and_held_once_per_session(store: SqliteDirectory) -> None:
    """Its JSON cost a third of the start-up load at 100,000 sessions, and its tuples
    ~110 bytes a session: each distinct text is parsed once and its value shared."""
    store.upsert(record(n, heard_via=(("sap", "239.255.255.255", "eth0", f"10.0.0.{n % 3}"),))
                 for n in range(30))
    loaded = list(store.iter_all(light=True))
    assert len({id(r.heard_via) for r in loaded}) == 3


def test_remembered_text_matches_follow_writes_made_through_another_connection(
        tmp_path: Path) -> None:
    """The daemon reads through one connection while its store writer commits through
    another: what a reader remembered must not outlive the writer's changes."""
    writer = SqliteDirectory(tmp_path / "directory.sqlite3")
    reader = SqliteDirectory(tmp_path / "directory.sqlite3")
    writer.upsert(record(n, name=f"Feed {n}") for n in range(3))
    query = SearchQuery(text="feed")
    assert [r.id for r in reader.search(query)] == ["s00000", "s00001", "s00002"]
    assert reader.count(query, cap=100) == 3
    writer.upsert([record(3, name="Feed 3")])
    writer.delete(["s00000"])
    assert [r.id for r in reader.search(query)] == ["s00001", "s00002", "s00003"]
    assert reader.count(query, cap=100) == 3


VLC_VERSION = 17201912864673439255  # VLC 3.0 writes 64-bit NTP values, above 2**63


def test_vlc_20_digit_version_does_not_fail_the_batch(store: SqliteDirectory) -> None:
    from sapd.records import Writes  # noqa: PLC0415
    batch = [record(1), record(2, version=VLC_VERSION), record(3, version=10**40 + 7)]
    store.apply(Writes(upserts={r.id: r for r in batch}))
    got = {r.id: r.version for r in store.iter_all()}
    assert got == {"s00001": 1, "s00002": VLC_VERSION, "s00003": 10**40 + 7}
    assert all(type(v) is int for v in got.values())  # numbers, exact, not text or float


def _old_file(path: Path, schema: int, versions: dict[str, int]) -> None:
    """A directory file as an older sapd wrote it (schema 3 and before: INTEGER versions,
    ids derived from the header source), with sessions of these ids and versions."""
    db = sqlite3.connect(path)
    for step in range(1, schema + 1):
        db.executescript(f"BEGIN;{sqlite_backend._MIGRATIONS[step]}"
                         f"PRAGMA user_version={step};COMMIT;")
    for rid, (sid, version) in enumerate(versions.items(), 1):
        db.execute("INSERT INTO sessions (rid, id, source, identity, version, msg_hash, "
                   "origin_address, name, sdp, scope, sap_group, first_seen, last_seen) "
                   "VALUES (?, ?, '10.0.0.1', ?, ?, 7, '10.0.0.1', ?, 'v=0\r\n', '', '', "
                   "1.0, 2.0)", (rid, sid, f"- {rid} IN IP4 10.0.0.1", version, sid))
    db.commit()
    db.close()


def test_version_8_file_gets_each_listing_from_its_attribute_rows(tmp_path: Path) -> None:
    """Schema 9 stores what a list page shows of the attributes; a file of schema 8
    gets it from its attribute rows, in the order they were written."""
    path = tmp_path / "v8.sqlite3"
    _old_file(path, 8, {"a": 1, "b": 2})
    attributes = [("rtpmap", "98 L24/96000/2"), ("ts-refclk", "ptp=IEEE1588-2008:traceable"),
                  ("rtpmap", "96 L16/48000/2"), ("group", "DUP x y")]
    db = sqlite3.connect(path)
    db.executemany("INSERT INTO session_attrs VALUES (1, ?, ?)", attributes)
    db.commit()
    db.close()
    migrated = SqliteDirectory(path)
    got = {r.id: r for r in migrated.search(SearchQuery(), light=True)}
    assert got["a"].listing == streaminfo.summary(attributes)
    assert got["a"].listing is not None and got["a"].listing["codecs"] == [
        "L24/96000/2", "L16/48000/2"]
    assert got["b"].listing == streaminfo.summary(())


def test_version_3_file_is_migrated_to_exact_versions_and_header_sources(
        tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite3"
    _old_file(path, 3, {"a": 5, "b": 2**63 - 1})
    migrated = SqliteDirectory(path)
    got = {r.id: r for r in migrated.iter_all()}
    assert {sid: r.version for sid, r in got.items()} == {"a": 5, "b": 2**63 - 1}
    # keyed on the header source, which is also the sender as far as anyone knows
    assert {r.to_json()["header_source"] for r in got.values()} == {"10.0.0.1"}
    migrated.upsert([got["a"].with_changes(version=VLC_VERSION)])
    assert migrated.get("a") is not None and migrated.get("a").version == VLC_VERSION  # type: ignore[union-attr]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_version_3_file_gets_signature_columns_then_exact_versions(tmp_path: Path) -> None:
    """3 -> 4 (signing: verification, signed_by, signer_key) -> 5 (decimal versions,
    header_source, heard_via): one chain, both steps applied in order."""
    path = tmp_path / "v3.sqlite3"
    _old_file(path, 3, {"a": 5})
    migrated = SqliteDirectory(path)
    (got,) = migrated.iter_all()
    assert (got.verification, got.signed_by, got.signer_key) == ("", "", "")
    columns = {row[1]: row[2] for row in sqlite3.connect(path).execute(
        "PRAGMA table_info(sessions)")}
    assert {"verification", "signed_by", "signer_key", "header_source",
            "heard_via"} <= set(columns)
    assert columns["version"] == "TEXT"


def test_version_4_file_keeps_its_signers_when_migrated_to_5(tmp_path: Path) -> None:
    """A directory main's signing branch wrote (schema 4) keeps what was verified, and by
    whom, when its versions become decimal text."""
    path = tmp_path / "v4.sqlite3"
    _old_file(path, 4, {"a": 2**63 - 1})
    db = sqlite3.connect(path)
    db.execute("UPDATE sessions SET verification='verified', signed_by='CN=studio', "
               "signer_key='ab' || 'cd'")
    db.commit()
    db.close()
    migrated = SqliteDirectory(path)
    (got,) = migrated.iter_all()
    assert (got.verification, got.signed_by, got.signer_key) == (
        "verified", "CN=studio", "abcd")
    assert got.version == 2**63 - 1 and got.to_json()["header_source"] == "10.0.0.1"
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_version_6_heard_via_entries_become_sap_paths_in_7(tmp_path: Path) -> None:
    """Before RAVENNA every heard_via entry was SAP's (group, interface, source); schema 7
    names the path, so a row can be heard both ways."""
    path = tmp_path / "v6.sqlite3"
    _old_file(path, 6, {"a": 1, "b": 2})
    db = sqlite3.connect(path)
    db.execute("""UPDATE sessions SET heard_via='[["239.255.255.255", "eth0", "10.0.0.1"]]'
                  WHERE id='a'""")
    db.commit()
    db.close()
    got = {r.id: r for r in SqliteDirectory(path).iter_all()}
    assert got["a"].heard_via == (("sap", "239.255.255.255", "eth0", "10.0.0.1"),)
    assert got["b"].heard_via == ()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_search_follows_every_write_of_any_connection(tmp_path: Path) -> None:
    """A write on another connection (the store process's) of any kind shows in the
    reader's next search at once."""
    path = tmp_path / "directory.sqlite3"
    writer, reader = SqliteDirectory(path), SqliteDirectory(path)
    writer.upsert([record(1), record(2)])
    query = SearchQuery()
    assert [r.id for r in reader.search(query, light=True)] == ["s00001", "s00002"]
    assert reader.search(query, light=True) == reader.search(query, light=True)
    writer.refresh([("s00001", 99.0, 500.0, 30.0, 7)])
    assert reader.search(query, light=True)[0].last_seen == 99.0
    writer.upsert([record(1, name="Renamed")])
    assert [r.name for r in reader.search(query)] == ["Renamed", "Session 00002"]
    writer.delete(["s00002"])
    assert [r.id for r in reader.search(query, light=True)] == ["s00001"]
    writer.mark_remote_stale()
    reader.generation = writer.generation  # as the daemon's reader is told
    assert reader.search(query, light=True)[0].stale
