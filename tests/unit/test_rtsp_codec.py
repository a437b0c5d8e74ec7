"""The RTSP/1.0 client codec: incremental parsing from any split of the bytes, the
requests we build, and every bound a hostile server runs into."""

from __future__ import annotations

import pytest

from sapd.bridges import rtsp

SDP = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=x\r\nt=0 0\r\n"
DESCRIBED = (b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nContent-Type: application/sdp; charset=utf-8\r\n"
             b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP)


def test_a_response_split_at_every_byte_parses_as_a_whole() -> None:
    parser = rtsp.RtspParser()
    messages = [m for byte in DESCRIBED for m in parser.feed(bytes([byte]))]
    (response,) = messages
    assert isinstance(response, rtsp.Response)
    assert (response.status, response.cseq, response.content_type, response.body) == (
        200, 3, "application/sdp", SDP)
    assert parser.buffered == 0


def test_two_messages_in_one_read_and_an_announce_from_the_server() -> None:
    announce = (b"ANNOUNCE rtsp://h/by-name/x RTSP/1.0\r\nCSeq: 9\r\n"
                b"Content-Type: application/sdp\r\nContent-Length: " + str(len(SDP)).encode()
                + b"\r\n\r\n" + SDP)
    first, second = rtsp.RtspParser().feed(DESCRIBED + b"\r\n" + announce)
    assert isinstance(first, rtsp.Response)
    assert isinstance(second, rtsp.Request)
    assert (second.method, second.url, second.cseq, second.body) == (
        "ANNOUNCE", "rtsp://h/by-name/x", 9, SDP)
    assert rtsp.build_reply(second.cseq) == b"RTSP/1.0 200 OK\r\nCSeq: 9\r\nServer: sapd\r\n\r\n"


def test_endless_headers_are_refused_at_the_header_bound_not_buffered() -> None:
    parser = rtsp.RtspParser(max_header_bytes=1024, max_header_lines=1000)
    parser.feed(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n")
    with pytest.raises(rtsp.RtspError) as caught:
        for n in range(1000):
            parser.feed(f"X-Pad-{n}: {'a' * 40}\r\n".encode())
    assert caught.value.reason == rtsp.HEADER_TOO_LARGE
    assert parser.buffered == 0
    with pytest.raises(rtsp.RtspError):  # the connection is done with
        parser.feed(b"\r\n")


def test_many_short_header_lines_are_refused_by_count() -> None:
    parser = rtsp.RtspParser(max_header_lines=8)
    with pytest.raises(rtsp.RtspError) as caught:
        parser.feed(b"RTSP/1.0 200 OK\r\n" + b"A: b\r\n" * 20)
    assert caught.value.reason == rtsp.TOO_MANY_HEADERS


def test_huge_content_length_is_refused_before_any_body_is_read() -> None:
    parser = rtsp.RtspParser(max_body_bytes=16384)
    with pytest.raises(rtsp.RtspError) as caught:
        parser.feed(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 1000000000\r\n\r\nv=0")
    assert caught.value.reason == rtsp.BODY_TOO_LARGE
    assert "1000000000" in str(caught.value)


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200 OK\r\n\r\n",  # not RTSP
    b"RTSP/1.0 200 OK\r\nno colon here\r\n\r\n",
    b"RTSP/1.0 200 OK\r\nContent-Length: -5\r\n\r\n",
    b"RTSP/1.0 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"RTSP/1.0 200 OK\r\nX: \xff\xfe\r\n\r\n",  # not UTF-8
    b"$\x00\x00\x10" + b"\x00" * 16,  # interleaved RTP without a SETUP
])
def test_what_is_not_rtsp_is_malformed_and_named(data: bytes) -> None:
    with pytest.raises(rtsp.RtspError) as caught:
        rtsp.RtspParser().feed(data)
    assert caught.value.reason == rtsp.MALFORMED


def test_describe_asks_for_sdp_on_the_percent_encoded_session_path() -> None:
    path = rtsp.session_path("Studio A: Mic/1")
    assert path == "/by-name/Studio%20A%3A%20Mic%2F1"
    # the second try keeps what a server may have mounted as written, but a space can
    # never be on a request line
    assert rtsp.session_path("Studio A: Mic/1", encoded=False) == "/by-name/Studio%20A:%20Mic/1"
    url = rtsp.url_for("fd00::1", 8554, path)
    assert url == "rtsp://[fd00::1]:8554/by-name/Studio%20A%3A%20Mic%2F1"
    assert rtsp.build_describe(url, 7) == (
        f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 7\r\nUser-Agent: sapd\r\n"
        "Accept: application/sdp\r\n\r\n").encode()


def test_a_request_line_or_header_that_would_inject_lines_is_our_bug() -> None:
    with pytest.raises(ValueError):
        rtsp.build_request("DESCRIBE", "rtsp://h/a b", 1)
    with pytest.raises(ValueError):
        rtsp.build_request("DESCRIBE", "rtsp://h/a", 1, {"X": "1\r\nEvil: 2"})
