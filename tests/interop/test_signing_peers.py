"""Signed announcements cross-checked with real peers: openssl's CMS implementation
verifies what sapd signs and signs what sapd verifies; tshark dissects the packets."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from sapd import pcap, signing, wire
from tests import certs
from tests.daemons import Daemon, netns_send, wait_session
from tests.netns.harness import Network
from tests.packets import announce
from tests.support import ROOT, need_tool, run, script, wait_for

EXAMPLE = (ROOT / "examples" / "lab-tone.sdp").read_text()


def credentials(directory: Path) -> dict[str, Path]:
    """A CA and a signer it issued, as PEM files."""
    ca = certs.make("Example SAP CA", ca=True)
    leaf = certs.make("studio-a", issuer=ca)
    _, ca_pem = ca.write(directory, "ca")
    key, cert = leaf.write(directory, "studio-a")
    return {"ca": ca_pem, "key": key, "cert": cert}


def receiver_config(files: dict[str, Path], mode: str = "require") -> str:
    return (f'[trust]\ndefault = "{mode}"\nca_bundle = "{files["ca"]}"\n'
            f'certificates = ["{files["cert"]}"]\n')


def openssl_verifies(openssl: str, datagram: bytes, files: dict[str, Path],
                     workdir: Path) -> subprocess.CompletedProcess[str]:
    packet = wire.decode(datagram)
    assert packet.auth is not None
    signature, content = workdir / "signature.der", workdir / "content.bin"
    signature.write_bytes(packet.auth.signature)
    content.write_bytes(signing.signed_region(datagram))
    return run(openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", str(signature),
               "-content", str(content), "-CAfile", str(files["ca"]), "-certfile",
               str(files["cert"]), "-out", "/dev/null")


def test_openssl_verifies_what_sapd_signs_and_tshark_dissects_it(
        net: Network, daemons: Any, tmp_path: Path) -> None:
    openssl, tshark = need_tool("openssl"), need_tool("tshark")
    files = credentials(tmp_path)
    a, b = net.host("a"), net.host("b")
    _, ib = net.link(a, b, 52)
    capture = tmp_path / "signed.pcapng"
    proc = subprocess.Popen(["ip", "netns", "exec", b.name, tshark, "-q", "-i", ib, "-f",
                             "udp port 9875", "-w", str(capture)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(2.0)  # tshark needs a moment before it captures
        receiver: Daemon = daemons("sapd", b, config=receiver_config(files)).start()
        sender: Daemon = daemons("sapd", a, config=(
            f'[signing]\nkey = "{files["key"]}"\ncertificate = "{files["cert"]}"\n')).start()
        made = sender.client.send_json("POST", "/v1/announcements",
                                       {"sdp": EXAMPLE, "interval": 1})
        (heard,) = wait_session(receiver, lambda s: s["name"] == "Lab tone 1 kHz",
                                timeout=10)
        assert heard["verified"] is True and heard["signed_by"] == "CN=studio-a"
        assert heard["verification"] == "valid"
        (own,) = sender.sessions()
        assert own["verification"] == "signed_here" and own["signed_by"] == "CN=studio-a"
        shown = run(script("sapctl"), "--socket", str(receiver.socket), "show", heard["id"],
                    "--json", check=True).stdout
        assert '"signed_by": "CN=studio-a"' in shown and '"verified": true' in shown
        human = run(script("sapctl"), "--socket", str(receiver.socket), "show", heard["id"],
                    check=True).stdout
        assert "verified, signed by CN=studio-a" in human
        sender.client.request("DELETE", f"/v1/announcements/{made['id']}")
        wait_for(lambda: not receiver.sessions(), 10, what="signed deletion honoured")
        time.sleep(1.0)
    finally:
        proc.terminate()
        proc.wait(10)
    datagrams = [d.payload for d in pcap.udp_datagrams(capture.read_bytes(), port=9875)]
    kinds = {wire.decode(d).deletion for d in datagrams}
    assert kinds == {False, True}, "both announcements and deletions were captured"
    for datagram in datagrams:
        checked = openssl_verifies(openssl, datagram, files, tmp_path)
        assert checked.returncode == 0 and "Verification successful" in checked.stderr, \
            checked.stderr
    forged = datagrams[0].replace(b"s=Lab tone", b"s=Lab tune")
    assert openssl_verifies(openssl, forged, files, tmp_path).returncode != 0
    fields = run(tshark, "-r", str(capture), "-T", "fields", "-e", "sap.auth.flags.t",
                 "-e", "sap.auth.len", "-e", "sdp.session_name", "-e", "_ws.malformed",
                 "-e", "_ws.expert", check=True).stdout.splitlines()
    rows = [line.split("\t") for line in fields]
    assert rows and all(r[0] == "1" for r in rows), f"CMS auth type in every packet: {rows}"
    assert all(len(r) < 4 or not any(r[3:]) for r in rows), f"malformed or expert: {rows}"
    verbose = run(tshark, "-r", str(capture), "-V", check=True).stdout
    assert "Malformed" not in verbose and "Bogus" not in verbose


def test_sapd_accepts_what_openssl_signs_and_drops_the_unsigned(
        net: Network, daemons: Any, tmp_path: Path) -> None:
    openssl = need_tool("openssl")
    files = credentials(tmp_path)
    a, b = net.host("a"), net.host("b")
    ia, _ = net.link(a, b, 53)
    receiver: Daemon = daemons("sapd", b, config=receiver_config(files)).start()
    sdp = EXAMPLE.replace("\n", "\r\n").replace("Lab tone 1 kHz", "Signed by openssl")
    unsigned = announce(sdp, source=a.address())
    content, signature = tmp_path / "packet.bin", tmp_path / "openssl.der"
    content.write_bytes(unsigned)  # auth length 0, no auth data: the signed region
    run(openssl, "cms", "-sign", "-binary", "-nocerts", "-md",
        "sha256", "-outform", "DER", "-in", str(content), "-signer", str(files["cert"]),
        "-inkey", str(files["key"]), "-out", str(signature), check=True)
    auth = wire.AuthData(1, False, wire.AuthType.CMS, signature.read_bytes()).encode()
    signed = unsigned[:1] + bytes([len(auth) // 4]) + unsigned[2:8] + auth + unsigned[8:]
    packet_file = tmp_path / "signed.sap"
    packet_file.write_bytes(signed)
    plain_file = tmp_path / "plain.sap"
    plain_file.write_bytes(announce(sdp.replace("3917001234", "3917001235"),
                                    source=a.address()))
    netns_send(a.name, "239.255.255.255", [packet_file, plain_file], ia, repeat=3,
               interval=0.2)
    (heard,) = wait_session(receiver, lambda s: s["name"] == "Signed by openssl", timeout=10)
    assert heard["verified"] is True and heard["signed_by"] == "CN=studio-a"
    wait_for(lambda: receiver.stats()["drops"].get("unsigned", 0) >= 1, 5,
             what="the unsigned announcement counted")
    assert len(receiver.sessions()) == 1
    decoded = run(script("sapctl"), "decode", "--trust", str(files["ca"]), "--trust",
                  str(files["cert"]), str(packet_file))
    assert decoded.returncode == 0, decoded.stderr
    assert "valid, signer CN=studio-a" in decoded.stdout
    refused = run(script("sapctl"), "decode", "--trust", str(files["ca"]), str(plain_file))
    assert refused.returncode == 1 and "signature: unsigned" in refused.stderr


def test_prefer_ignores_a_forged_deletion_and_a_replay_from_the_wire(
        net: Network, daemons: Any, tmp_path: Path) -> None:
    files = credentials(tmp_path)
    a, b = net.host("a"), net.host("b")
    ia, _ = net.link(a, b, 54)
    receiver: Daemon = daemons("sapd", b, config=receiver_config(files, "prefer")).start()
    key = signing.SigningKey(files["key"].read_bytes(), files["cert"].read_bytes())
    v1 = EXAMPLE.replace("\n", "\r\n")
    v2 = v1.replace("3917001234 1", "3917001234 2").replace("1 kHz", "2 kHz")
    now = time.time()

    def send(name: str, datagram: bytes) -> None:
        path = tmp_path / name
        path.write_bytes(datagram)
        netns_send(a.name, "239.255.255.255", [path], ia)

    first = key.sign(announce(v1, source=a.address()), now)
    send("v1.sap", first)
    (heard,) = wait_session(receiver, lambda s: s["verified"], timeout=10)
    deletion = announce("o=lab 3917001234 1 IN IP4 10.200.0.1\r\n", source=a.address(),
                        deletion=True)
    send("forged-deletion.sap", deletion)  # unsigned, from the announcer's own address
    wait_for(lambda: receiver.stats()["drops"].get("unknown_deletion", 0) >= 1, 5,
             what="the forged deletion counted")
    assert [s["id"] for s in receiver.sessions()] == [heard["id"]]
    send("v2.sap", key.sign(announce(v2, source=a.address()), now + 1))
    wait_session(receiver, lambda s: s["name"] == "Lab tone 2 kHz", timeout=10)
    send("replay.sap", first)  # the captured version 1, signature and all
    wait_for(lambda: sum(receiver.stats()["drops"].get(k, 0)
                         for k in ("replayed", "old_version")) >= 1, 5,
             what="the replay counted")
    (now_listed,) = receiver.sessions()
    assert now_listed["name"] == "Lab tone 2 kHz" and now_listed["verified"] is True
