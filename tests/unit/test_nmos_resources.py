"""Sessions as IS-04 resources: every body the mapping makes is valid against the shipped
v1.3 schemas; ids are stable uuid5s of the o= identity; what does not map is skipped with
a named reason, hostile SDPs included."""

from __future__ import annotations

from typing import Any

import pytest

from sapd.bridges.nmos_resources import (
    INFERRED_ACTIVE,
    ClockBook,
    Context,
    Mapped,
    Origin,
    PtpClock,
    Unmappable,
    map_session,
    node_id,
    node_resource,
)
from tests.nmos_registry import validator
from tests.packets import sdp_text

NODE = node_id("test-machine:/var/lib/sapd")
CONTEXT = Context(NODE, "http://192.0.2.1:8375/v1/sessions/", ("eth0", "eth1"))
PTP = "a=ts-refclk:ptp=IEEE1588-2008:39-A7-94-FF-FE-07-CB-D0:0\r\na=mediaclk:direct=0\r\n"
VIDEO = ("v=0\r\no=- 7 1 IN IP4 10.0.0.9\r\ns=cam 1\r\nc=IN IP4 239.100.0.1/32\r\nt=0 0\r\n"
         "m=video 5004 RTP/AVP 96\r\na=rtpmap:96 raw/90000\r\n"
         "a=fmtp:96 sampling=YCbCr-4:2:2; width=1920; height=1080; depth=10; "
         "exactframerate=30000/1001; colorimetry=BT709; TCS=SDR; interlace\r\n" + PTP)
DUP = ("v=0\r\no=- 8 1 IN IP4 10.0.0.9\r\ns=dev : out\r\nt=0 0\r\na=group:DUP p s\r\n"
       "m=audio 5004 RTP/AVP 97\r\nc=IN IP4 239.69.0.1/32\r\na=rtpmap:97 L24/48000/8\r\n"
       "a=mid:p\r\nm=audio 5004 RTP/AVP 97\r\nc=IN IP4 239.70.0.1/32\r\n"
       "a=rtpmap:97 L24/48000/8\r\na=mid:s\r\n")
VALIDATE = validator()


def mapped(text: str, clocks: ClockBook | None = None, sid: str = "s1",
           interfaces: tuple[str, ...] = ()) -> Mapped:
    origin_line = next(line for line in text.splitlines() if line.startswith("o="))
    parts = origin_line[2:].split()
    identity = " ".join([parts[0], parts[1], *parts[3:]])
    return map_session(text, Origin(sid, identity, parts[-1], interfaces=interfaces),
                       CONTEXT, clocks or ClockBook())


def valid(kind: str, data: dict[str, Any]) -> None:
    body = {"type": kind, "data": {**data, "version": "1:0"}}
    errors = [e.message for e in VALIDATE.iter_errors(body)]
    assert not errors, errors


def test_audio_session_maps_to_valid_device_source_flow_sender() -> None:
    found = mapped(sdp_text(extra=PTP))
    for resource in found.resources:
        valid(resource.kind, resource.data)
    assert found.flow.data["media_type"] == "audio/L24"
    assert found.flow.data["bit_depth"] == 24
    assert found.flow.data["sample_rate"] == {"numerator": 48000}
    assert len(found.source.data["channels"]) == 2
    sender = found.sender.data
    assert sender["subscription"] == {"receiver_id": None, "active": True}
    assert sender["tags"][INFERRED_ACTIVE] == ["true"]
    assert sender["manifest_href"] == "http://192.0.2.1:8375/v1/sessions/s1.sdp"
    assert sender["transport"] == "urn:x-nmos:transport:rtp.mcast"
    assert found.source.data["clock_name"] == "clk0"
    assert found.clock == PtpClock("39-a7-94-ff-fe-07-cb-d0", 0)


def test_ids_are_stable_across_versions_and_restarts() -> None:
    first = mapped(sdp_text(version=1))
    again = mapped(sdp_text(version=99, name="renamed"))
    assert [r.id for r in first.resources] == [r.id for r in again.resources]
    other = mapped(sdp_text(session=2))
    assert other.sender.id != first.sender.id and other.device.id == first.device.id


def test_am824_and_l16_map_with_their_bit_depths() -> None:
    for encoding, depth in (("AM824", 32), ("L16", 16), ("L20", 20)):
        text = sdp_text().replace("L24/48000/2", f"{encoding}/48000/2")
        found = mapped(text)
        valid("flow", found.flow.data)
        assert found.flow.data["media_type"] == f"audio/{encoding}"
        assert found.flow.data["bit_depth"] == depth


def test_st2110_20_video_maps_where_fmtp_allows() -> None:
    found = mapped(VIDEO)
    for resource in found.resources:
        valid(resource.kind, resource.data)
    flow = found.flow.data
    assert (flow["frame_width"], flow["frame_height"]) == (1920, 1080)
    assert flow["interlace_mode"] == "interlaced_tff"
    assert [c["width"] for c in flow["components"]] == [1920, 960, 960]
    assert flow["grain_rate"] == {"numerator": 30000, "denominator": 1001}
    with pytest.raises(Unmappable) as caught:
        mapped(VIDEO.replace("width=1920; ", ""))
    assert caught.value.reason == "video_fmtp"


def test_2022_7_legs_make_one_sender_with_one_binding_per_leg() -> None:
    found = mapped(DUP, interfaces=("eth0", "eth1"))
    valid("sender", found.sender.data)
    assert found.sender.data["interface_bindings"] == ["eth0", "eth1"]
    assert found.device.data["label"] == "dev"  # Dante's "device : stream"


@pytest.mark.parametrize(("change", "reason"), [
    (lambda t: t.replace("L24/48000/2", "L24/48000/100000"), "channel_count"),
    (lambda t: t.replace("L24/48000/2", "L24/48000/0"), "channel_count"),
    (lambda t: t.replace("L24/48000/2", "L24/9999999/2"), "sample_rate"),
    (lambda t: t.replace("L24/48000/2", "opus/48000/2"), "unsupported_media"),
    (lambda t: t + "m=video 5006 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
     "several_streams"),
    (lambda t: t + "m=audio 5008 RTP/AVP 96\r\n" * 999, "too_many_media"),
])
def test_unmappable_sessions_are_skipped_with_a_reason(change: Any, reason: str) -> None:
    with pytest.raises(Unmappable) as caught:
        mapped(change(sdp_text()))
    assert caught.value.reason == reason


def test_clock_book_names_each_grandmaster_once_and_lists_only_those_in_use() -> None:
    clocks = ClockBook()
    a = mapped(sdp_text(extra=PTP), clocks)
    clocks.use(a.clock, +1)
    b = mapped(sdp_text(session=2, extra=PTP.replace("39-A7", "00-11")), clocks)
    clocks.use(b.clock, +1)
    assert [c["name"] for c in clocks.node_clocks()] == ["clk0", "clk1"]
    clocks.use(a.clock, -1)
    assert [c["gmid"] for c in clocks.node_clocks()] == ["00-11-94-ff-fe-07-cb-d0"]
    node = node_resource(NODE, "sapd", "http://192.0.2.1:8375/", "192.0.2.1", 8375,
                         [("eth0", "02-00-00-00-00-01")], clocks.node_clocks())
    valid("node", node.data)


def test_sdp_change_that_keeps_every_field_changes_the_sender() -> None:
    """manifest_href stays the same URL; what it serves changed, so must the Sender
    (and with it its version)."""
    before = mapped(sdp_text(version=1, group="239.69.0.1"))
    after = mapped(sdp_text(version=2, group="239.69.0.2"))
    assert before.sender.data != after.sender.data
    assert before.flow.data == after.flow.data
