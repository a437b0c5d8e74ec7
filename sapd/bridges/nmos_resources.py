"""A directory session as AMWA NMOS IS-04 v1.3 resources (pure: SDP text in, dicts out).

sapd is a gateway: it did not originate the streams it hears, so per the IS-04 data
model (a new Source "at the input of essence ... from the edge") it owns one Source, Flow
and Sender per session that maps cleanly, under one Device per announcing host (the o=
address) and one Node per sapd. Ids are uuid5s of the o= identity (without the version),
so they survive restarts and SDP version changes. Resources carry no ``version`` here:
the registration machine stamps one (TAI) on each POST.

What maps: audio L8/L16/L20/L24 (``audio/Lnn``) and AM824 (``audio/AM824``, 32 bits);
ST 2110-20 video (``raw/90000`` with the fmtp parameters a Flow needs). What does not is
skipped with a reason: several streams in one SDP (a Sender carries one Flow), other
codecs, absurd channel counts or picture sizes, too many m= lines.
"""

from __future__ import annotations

import re
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

from sapd import sdp
from sapd.streaminfo import parse_refclk

# sapd's own namespace for uuid5 ids (a fixed random uuid4: never change it)
NAMESPACE = uuid.UUID("4f6b2d1e-5f0c-4a53-9a8e-1d8c6f0b7a21")
MAX_MEDIA = 16  # m= lines read per SDP; more is no AES67/ST 2110 sender we know
MAX_CHANNELS = 128  # an AM824/MADI stream carries 64; twice that is the bound
MAX_SAMPLE_RATE = 384_000
MAX_PICTURE = 16_384  # pixels a side (16K)
MAX_CLOCKS = 256  # distinct PTP grandmasters named on the Node; more get clock_name null
AUDIO_DEPTHS = {"L8": 8, "L16": 16, "L20": 20, "L24": 24, "AM824": 32}
INFERRED_ACTIVE = "urn:x-sapd:inferred-active"
ORIGIN_TAG = "urn:x-sapd:origin"
GROUP_TAG = "urn:x-sapd:group"
SESSION_TAG = "urn:x-sapd:session"
# o= version and CRC-32 of the SDP: the manifest changed, so the Sender's version must
SDP_TAG = "urn:x-sapd:sdp"
_CHANNEL_LABELS = re.compile(r"^\s*\d+\s+channels?\s*:\s*(.+)$", re.IGNORECASE)

Key = tuple[str, str]  # (resource type, id)
KINDS = ("node", "device", "source", "flow", "sender")  # registration order
PLURAL = {k: k + "s" for k in (*KINDS, "receiver")}


def node_id(seed: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "node:" + seed))


def _child_id(node: str, kind: str, name: str) -> str:
    return str(uuid.uuid5(uuid.UUID(node), f"{kind}:{name}"))


@dataclass(frozen=True, slots=True)
class Resource:
    kind: str
    id: str
    data: dict[str, Any]  # without "version"
    parents: tuple[Key, ...] = ()

    @property
    def key(self) -> Key:
        return (self.kind, self.id)


@dataclass(frozen=True, slots=True)
class PtpClock:
    gmid: str  # lower-case, dashed EUI-64
    domain: int | None = None


@dataclass(frozen=True, slots=True)
class Mapped:
    """A session's Device, Source, Flow and Sender, and the clock its Source names."""

    session_id: str
    device: Resource
    source: Resource
    flow: Resource
    sender: Resource
    clock: PtpClock | None

    @property
    def resources(self) -> tuple[Resource, ...]:
        return (self.device, self.source, self.flow, self.sender)


@dataclass(frozen=True, slots=True)
class Skipped:
    session_id: str
    reason: str  # a counter name
    detail: str


class Unmappable(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class ClockBook:
    """Node clock names (``clkN``) per PTP grandmaster: stable while sapd runs, at most
    MAX_CLOCKS of them, and listed on the Node only while a Source refers to it."""

    names: dict[PtpClock, str] = field(default_factory=dict)
    uses: dict[PtpClock, int] = field(default_factory=dict)

    def name(self, clock: PtpClock | None) -> str | None:
        if clock is None:
            return None
        found = self.names.get(clock)
        if found is None and len(self.names) < MAX_CLOCKS:
            found = self.names[clock] = f"clk{len(self.names)}"
        return found

    def use(self, clock: PtpClock | None, delta: int) -> None:
        if clock is None or clock not in self.names:
            return
        left = self.uses.get(clock, 0) + delta
        if left > 0:
            self.uses[clock] = left
        else:
            self.uses.pop(clock, None)

    def node_clocks(self) -> list[dict[str, Any]]:
        # locked: false, always: a proxy cannot know whether the sender follows its GM
        return [{"name": self.names[c], "ref_type": "ptp", "traceable": False,
                 "version": "IEEE1588-2008", "gmid": c.gmid, "locked": False}
                for c in sorted(self.uses, key=lambda c: int(self.names[c][3:]))]


@dataclass(frozen=True, slots=True)
class Origin:
    """What the mapping needs of a directory record besides its SDP."""

    session_id: str
    identity: str
    origin_address: str
    vias: tuple[str, ...] = ("sap",)  # how sapd hears it: "sap", "ravenna"
    sap_group: str = ""
    interfaces: tuple[str, ...] = ()  # where sapd heard it (heard_via), in order


@dataclass(frozen=True, slots=True)
class Context:
    node_id: str
    manifest_base: str  # ".../v1/sessions/" (the id and ".sdp" follow)
    interfaces: tuple[str, ...]  # the Node's interface names


def _gmid(text: str) -> str | None:
    parts = text.replace(":", "-").lower().split("-")
    if len(parts) != 8 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p)
                                  for p in parts):
        return None
    return "-".join(parts)


def _clock(attributes: list[sdp.Attribute]) -> PtpClock | None:
    for attribute in attributes:
        if attribute.name == "ts-refclk" and attribute.value:
            found = parse_refclk(attribute.value)
            if found["source"] == "ptp" and "grandmaster" in found:
                gmid = _gmid(found["grandmaster"])
                if gmid is not None:
                    return PtpClock(gmid, found.get("domain"))
            return None  # localmac, ntp, ptp traceable without a GM: no Node clock
    return None


def _streams(description: sdp.SessionDescription) -> list[list[sdp.Media]]:
    """The SDP's streams: the legs of an a=group:DUP count as one (ST 2022-7)."""
    legs: list[str] = []
    for attribute in description.attributes:
        if attribute.name == "group" and attribute.value and \
                attribute.value[:4].upper() == "DUP ":
            legs = attribute.value[4:].split()
            break
    grouped: list[sdp.Media] = []
    streams: list[list[sdp.Media]] = []
    for media in description.media:
        mid = next((a.value for a in media.attributes if a.name == "mid"), None)
        if legs and mid in legs:
            if not grouped:
                streams.append(grouped)
            grouped.append(media)
        else:
            streams.append([media])
    return streams


def _fmtp(media: sdp.Media, payload_type: int) -> dict[str, str]:
    prefix = f"{payload_type} "
    for attribute in media.attributes:
        if attribute.name == "fmtp" and attribute.value and \
                attribute.value.startswith(prefix):
            out: dict[str, str] = {}
            for item in attribute.value[len(prefix):].split(";"):
                name, _, value = item.strip().partition("=")
                if name:
                    out[name.strip().lower()] = value.strip()
            return out
    return {}


def bounded_number(text: str, most: int, least: int = 1) -> int | None:
    """ASCII digits worth least..most, else None. str.isdigit() also takes '\u00b2' and
    '\uff11', which int() refuses or reads, and int() refuses 4,301 digits: either
    would escape as a ValueError instead of a counted skip."""
    if not sdp.is_number(text) or len(text) > len(str(most)) + 8:
        return None
    value = int(text)
    return value if least <= value <= most else None


def _rate(text: str) -> dict[str, int] | None:
    numerator, _, denominator = text.partition("/")
    num = bounded_number(numerator, 1_000_000)
    den = bounded_number(denominator or "1", 1_000_000)
    if num is None or den is None:
        return None
    return {"numerator": num, "denominator": den}


def _channel_labels(count: int, *infos: str | None) -> list[dict[str, str]]:
    """Dante writes ``i=2 channels: Left, Right``; otherwise Ch1..ChN."""
    for info in infos:
        match = _CHANNEL_LABELS.match(info or "")
        if match:
            labels = [label.strip() for label in match.group(1).split(",")]
            if len(labels) == count and all(labels):
                return [{"label": label[:64]} for label in labels]
    return [{"label": f"Ch{n + 1}"} for n in range(count)]


def _audio(codec: sdp.Codec, media: sdp.Media,
           description: sdp.SessionDescription) -> tuple[dict[str, Any], dict[str, Any]]:
    encoding = codec.encoding.upper()
    depth = AUDIO_DEPTHS[encoding]
    channels_text = (codec.parameters or "1").strip()
    channels = bounded_number(channels_text, MAX_CHANNELS)
    if channels is None:
        raise Unmappable("channel_count", f"{channels_text[:20]!r} channels "
                         f"(1..{MAX_CHANNELS} are registered)")
    if not 0 < codec.clock_rate <= MAX_SAMPLE_RATE:
        raise Unmappable("sample_rate", f"{codec.clock_rate} Hz")
    source = {"format": "urn:x-nmos:format:audio",
              "channels": _channel_labels(channels, media.info, description.info)}
    flow = {"format": "urn:x-nmos:format:audio", "media_type": f"audio/{encoding}",
            "sample_rate": {"numerator": codec.clock_rate}, "bit_depth": depth}
    return source, flow


_SAMPLING = {  # fmtp sampling -> components as (name, width divisor, height divisor)
    "YCbCr-4:4:4": (("Y", 1, 1), ("Cb", 1, 1), ("Cr", 1, 1)),
    "YCbCr-4:2:2": (("Y", 1, 1), ("Cb", 2, 1), ("Cr", 2, 1)),
    "YCbCr-4:2:0": (("Y", 1, 1), ("Cb", 2, 2), ("Cr", 2, 2)),
    "RGB": (("R", 1, 1), ("G", 1, 1), ("B", 1, 1)),
}
_TRANSFER = {"SDR": "SDR", "PQ": "PQ", "HLG": "HLG"}


def _video(codec: sdp.Codec, media: sdp.Media) -> tuple[dict[str, Any], dict[str, Any]]:
    """ST 2110-20: width, height, sampling, depth, exactframerate and colorimetry."""
    fmtp = _fmtp(media, codec.payload_type)
    missing = [k for k in ("sampling", "width", "height", "depth", "exactframerate",
                           "colorimetry") if k not in fmtp]
    if missing:
        raise Unmappable("video_fmtp", "raw video without " + ", ".join(missing))
    sizes = (fmtp["width"], fmtp["height"], fmtp["depth"])
    width, height, depth = (bounded_number(s, MAX_PICTURE) for s in sizes)
    if width is None or height is None or depth is None:
        raise Unmappable("video_fmtp", f"width/height/depth {'/'.join(s[:8] for s in sizes)}")
    sampling = _SAMPLING.get(fmtp["sampling"])
    rate = _rate(fmtp["exactframerate"])
    if sampling is None or rate is None or not re.fullmatch(r"\S{1,32}",
                                                            fmtp["colorimetry"]):
        raise Unmappable("video_fmtp", f"sampling {fmtp['sampling'][:20]!r}, "
                         f"exactframerate {fmtp['exactframerate'][:20]!r}")
    interlace = "progressive"
    if "interlace" in fmtp:
        interlace = "interlaced_psf" if "segmented" in fmtp else "interlaced_tff"
    flow = {"format": "urn:x-nmos:format:video", "media_type": "video/raw",
            "frame_width": width, "frame_height": height, "interlace_mode": interlace,
            "colorspace": fmtp["colorimetry"],
            "transfer_characteristic": _TRANSFER.get(fmtp.get("tcs", "SDR"), "SDR"),
            "grain_rate": rate,
            "components": [{"name": name, "width": width // w, "height": height // h,
                            "bit_depth": depth} for name, w, h in sampling]}
    source = {"format": "urn:x-nmos:format:video", "grain_rate": rate}
    return source, flow


def _essence(media: sdp.Media,
             description: sdp.SessionDescription) -> tuple[dict[str, Any], dict[str, Any]]:
    if not media.codecs:
        raise Unmappable("unsupported_media", f"{media.kind} {media.protocol} without rtpmap")
    codec = next((c for c in media.codecs if str(c.payload_type) == media.formats[0]),
                 media.codecs[0])
    encoding = codec.encoding.upper()
    if media.kind == "audio" and encoding in AUDIO_DEPTHS:
        return _audio(codec, media, description)
    if media.kind == "video" and encoding == "RAW" and codec.clock_rate == 90000:
        return _video(codec, media)
    raise Unmappable("unsupported_media", f"{media.kind}/{codec.encoding[:32]}")


def device_label(name: str, address: str) -> str:
    """Dante names sessions ``device : stream``; the part before it names the device."""
    head, sep, _ = name.partition(" : ")
    return head.strip() if sep and head.strip() else address


def map_session(text: str, origin: Origin, context: Context, clocks: ClockBook) -> Mapped:
    """The session's resources, or :class:`Unmappable` naming why it is not registered.
    Assigns a clock name in ``clocks`` but does not count its use (the caller does, once
    the session is kept)."""
    if text.count("\nm=") + text.startswith("m=") > MAX_MEDIA:
        raise Unmappable("too_many_media", f"more than {MAX_MEDIA} m= lines")
    try:
        description = sdp.parse(text)
    except sdp.SdpError as exc:
        raise Unmappable("invalid_sdp", str(exc)[:200]) from None
    streams = _streams(description)
    if not streams:
        raise Unmappable("no_media", "no m= line")
    if len(streams) > 1:
        raise Unmappable("several_streams", f"{len(streams)} streams in one SDP (a Sender "
                         "carries one Flow)")
    legs = streams[0]
    first = legs[0]
    source_part, flow_part = _essence(first, description)
    node = context.node_id
    identity = origin.identity
    device_id = _child_id(node, "device", origin.origin_address)
    source_id = _child_id(node, "source", identity)
    flow_id = _child_id(node, "flow", identity)
    sender_id = _child_id(node, "sender", identity)
    clock = _clock([*first.attributes, *description.attributes])
    label = description.name[:256]
    tags = {ORIGIN_TAG: list(origin.vias), SESSION_TAG: [origin.session_id]}
    if origin.sap_group:
        tags[GROUP_TAG] = [origin.sap_group]
    core = {"description": (description.info or "")[:1024], "tags": tags}
    device = Resource("device", device_id, {
        "id": device_id, "label": device_label(description.name, origin.origin_address)[:256],
        "description": f"announcing host {origin.origin_address}", "tags": {},
        "type": "urn:x-nmos:device:generic", "node_id": node, "senders": [],
        "receivers": [], "controls": []}, parents=(("node", node),))
    source = Resource("source", source_id, {
        "id": source_id, "label": label, **core, "caps": {}, "device_id": device_id,
        "parents": [], "clock_name": clocks.name(clock), **source_part},
        parents=(("device", device_id),))
    flow = Resource("flow", flow_id, {
        "id": flow_id, "label": label, **core, "source_id": source_id,
        "device_id": device_id, "parents": [], **flow_part},
        parents=(("source", source_id),))
    multicast = any(c.multicast for c in (*first.connections, *description.connections))
    known = origin.interfaces or context.interfaces
    bindings = [known[min(i, len(known) - 1)] for i in range(len(legs))] if known else []
    sender = Resource("sender", sender_id, {
        "id": sender_id, "label": label, **core,
        "tags": {**tags, INFERRED_ACTIVE: ["true"],
                 SDP_TAG: [f"{description.version}/{zlib.crc32(text.encode()):08x}"]},
        "caps": {}, "flow_id": flow_id,
        "transport": "urn:x-nmos:transport:rtp." + ("mcast" if multicast else "ucast"),
        "device_id": device_id,
        "manifest_href": f"{context.manifest_base}{origin.session_id}.sdp",
        "interface_bindings": bindings,
        # inferred: a live announcement is the best evidence of "configured to transmit"
        "subscription": {"receiver_id": None, "active": True}},
        parents=(("flow", flow_id), ("device", device_id)))
    return Mapped(origin.session_id, device, source, flow, sender,
                  clock if clocks.name(clock) else None)


def node_resource(node: str, label: str, href: str, host: str, port: int,
                  interfaces: list[tuple[str, str]], clocks: list[dict[str, Any]],
                  hostname: str | None = None) -> Resource:
    """The Node: its API endpoint (the web listener), interfaces (name, MAC), clocks."""
    data: dict[str, Any] = {
        "id": node, "label": label, "description": "sapd: SAP/SDP sessions heard on the "
        "network, registered as Senders", "tags": {}, "href": href, "caps": {},
        "api": {"versions": ["v1.3"],
                "endpoints": [{"host": host, "port": port, "protocol": "http"}]},
        "services": [], "clocks": clocks,
        "interfaces": [{"name": name, "chassis_id": mac, "port_id": mac}
                       for name, mac in interfaces]}
    if hostname:
        data["hostname"] = hostname
    return Resource("node", node, data)
