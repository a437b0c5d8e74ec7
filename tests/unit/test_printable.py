"""sapd.plumbing.client.printable: remote text cannot drive the operator's terminal."""

from __future__ import annotations

from sapd.plumbing.client import format_table, printable


def test_controls_csi_and_bidi_overrides_are_shown_as_escapes() -> None:
    assert printable("a\x1b[2Jb\x07\x9b1m\u202eevil\ttab") == \
        "a\\x1b[2Jb\\x07\\x9b1m\\u202eevil\\x09tab"
    assert printable("Ünïcode ok, 日本") == "Ünïcode ok, 日本"


def test_table_cells_are_escaped_and_aligned_by_what_is_shown() -> None:
    table = format_table([["\x1b", "x"]], ["A", "B"]).splitlines()
    assert table == ["A     B", "\\x1b  x"]
