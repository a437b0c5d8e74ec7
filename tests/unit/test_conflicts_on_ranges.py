"""A session on one group and another whose c= /count range starts there conflict, as
they did when ranges were expanded (conflicts compare c= first addresses and ports)."""

from __future__ import annotations

from typing import Any

import pytest

from sapd import sdp
from sapd.conflicts import Parsed, find_conflicts
from sapd.records import SessionRecord

SDP = ("v=0\r\no=- {n} 1 IN IP4 10.0.0.{n}\r\ns=s{n}\r\nc=IN IP4 {c}\r\nt=0 0\r\n"
       "m=audio 5004 RTP/AVP 96\r\n")


def _record(n: int, c: str, groups: tuple[str, ...]) -> SessionRecord:
    return SessionRecord(id=f"s{n}", source=f"10.0.0.{n}", identity=f"- {n}", version=1,
                         msg_hash=n, origin_address=f"10.0.0.{n}", name=f"s{n}", info=None,
                         sdp=SDP.format(n=n, c=c), scope="", sap_group="", first_seen=0.0,
                         last_seen=0.0, groups=groups)


def test_a_range_starting_on_anothers_group_conflicts() -> None:
    found = find_conflicts([_record(1, "239.1.1.1/32", ("239.1.1.1",)),
                            _record(2, "239.1.1.1/32/4", ("239.1.1.1-239.1.1.4",))])
    assert [(c.group, c.port, [r.id for r in c.sessions]) for c in found] == \
        [("239.1.1.1", 5004, ["s1", "s2"])]


def test_a_rescan_parsed_every_candidate_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scanner rescans every 10 s and after each change: 2,000 SDPs parsed each time
    held the interpreter lock ~100 ms (list p99). Only a changed content is parsed."""
    parsed: list[str] = []
    real = sdp.validate

    def counting(text: str) -> Any:
        parsed.append(text)
        return real(text)
    monkeypatch.setattr(sdp, "validate", counting)
    memo: Parsed = {}
    one, two = _record(1, "239.1.1.1/32", ("239.1.1.1",)), _record(2, "239.1.1.1/32",
                                                                   ("239.1.1.1",))
    assert len(find_conflicts([one, two], memo)) == 1 and len(parsed) == 2
    assert len(find_conflicts([one, two], memo)) == 1 and len(parsed) == 2
    moved = _record(2, "239.1.1.9/32", ("239.1.1.1",))  # a new version, elsewhere
    assert find_conflicts([one, moved], memo) == [] and len(parsed) == 3
