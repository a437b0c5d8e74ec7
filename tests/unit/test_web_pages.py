"""The pages as text: whatever came from the network or the query string is escaped,
wherever it lands (content, attribute, link); the SDP file name is safe."""

from __future__ import annotations

from typing import Any

from sapd import sdp
from sapd.api import sdp_filename
from sapd.history import Step
from sapd.lifecycle import record_from_session
from sapd.records import SessionRecord
from sapd.scopes import ScopeTable
from sapd.web import pages

EVIL = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def evil_record() -> SessionRecord:
    text = (f"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns={EVIL}\r\ni={EVIL}\r\nt=0 0\r\n"
            f"a=tool:{EVIL}\r\nm=audio 5004 RTP/AVP 96\r\nc=IN IP4 239.1.1.1/32\r\n"
            f"a=rtpmap:96 L24/48000/2\r\na=mid:{EVIL}\r\n")
    record = record_from_session(sdp.parse(text), ScopeTable(), sid="abc", source="10.0.0.1",
                                 msg_hash=1, now=10.0, first_seen=10.0)
    # site: another sapd of a shared directory names it, so it is escaped like the rest
    return record.with_changes(local=True, owner_uid=1000, acl={"users": [EVIL]},
                               blob={EVIL: EVIL}, site=EVIL)


def info(record: SessionRecord) -> dict[str, Any]:
    return {**record.to_json(), "codecs": [EVIL], "heard_via": [
        {"via": "sap", "group": EVIL, "interface": EVIL, "source": "10.0.0.1"}],
        "conflict": True, "redundant": False, "clock": None}


def assert_clean(html: str) -> None:
    for raw in ("<script>alert", "<img src=x"):
        assert raw not in html, raw


def test_directory_escapes_rows_and_the_query_it_reflects() -> None:
    record = evil_record()
    result = {"sessions": [info(record)], "total": 1, "total_exact": True, "limit": 100,
              "offset": 0}
    params = {"text": EVIL, "group": EVIL, "site": EVIL, "limit": "100"}
    html = pages.directory(result, params, [EVIL], now=20.0)
    assert_clean(html)
    assert "<th>Site</th>" in html and html.count("&lt;script&gt;alert(1)") >= 4
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'value="&quot;&gt;&lt;script&gt;' in html  # the search box keeps the text
    assert 'class="badge conflict"' in html


def test_session_page_escapes_every_field_the_sdp_and_the_blob() -> None:
    record = evil_record()
    html = pages.session(record, info(record), sdp.parse(record.sdp), [EVIL],
                         [Step(10.0, "new", 1)], now=20.0)
    assert_clean(html)
    assert 'data-newline="crlf"' in html and "Owner uid" in html


def test_not_found_escapes_the_id_it_was_given() -> None:
    assert_clean(pages.not_found(EVIL))


def test_sdp_file_name_keeps_only_safe_characters() -> None:
    record = evil_record()
    assert sdp_filename(record) == "script_alert_1_script_img_src_x_onerror_alert_2.sdp"
    assert sdp_filename(record.with_changes(name="../../etc/passwd")) == "etc_passwd.sdp"
    assert sdp_filename(record.with_changes(name="///")) == "abc.sdp"  # the id
    assert sdp_filename(record.with_changes(name="Bühne 1"), ascii_only=False) == "Bühne_1.sdp"


def test_session_page_says_who_signed_and_whether_it_was_verified() -> None:
    """It said 'yes (not verified)' for every signed session, verified or not."""
    base = evil_record()

    def signature_row(record: SessionRecord) -> str:
        html = pages.session(record, info(record), sdp.parse(record.sdp), [], [], now=20.0)
        assert_clean(html)
        start = html.index("<dt>Signature</dt><dd>")
        return html[start:html.index("</dd>", start)]

    verified = base.with_changes(auth_tag="cms", verification="valid", signed_by=EVIL,
                                 signer_key="ab" * 32)
    assert "verified, signed by &quot;&gt;&lt;script&gt;" in signature_row(verified)
    forged = base.with_changes(auth_tag="cms~unverified", verification="unknown_signer")
    assert "not verified (unknown_signer)" in signature_row(forged)
    unchecked = base.with_changes(auth_tag="cms")
    assert "not checked" in signature_row(unchecked)
    assert "unsigned" in signature_row(base)


def test_directory_row_marks_only_verified_sessions_signed() -> None:
    base = evil_record()
    verified = base.with_changes(auth_tag="cms", verification="valid", signed_by="CN=a")
    assert '<span class="badge">signed</span>' in pages.row(info(verified), 20.0)
    claimed = base.with_changes(auth_tag="cms", verification="bad_signature")
    assert '<span class="badge">signed</span>' not in pages.row(info(claimed), 20.0)
