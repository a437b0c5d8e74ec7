"""The administrative-scope table both daemons read: where multicast scopes lie.

RFC 2365 (administratively scoped IPv4 multicast), RFC 4291 / RFC 7346 (IPv6 multicast
scope nibbles) and RFC 5771 (IPv4 blocks that are not for allocation). sapd derives a
session's SAP group and TTL from it (sapd/scopes.py); madcapd refuses pools that overlap
a forbidden block or a scope's relative addresses (madcap/pool.py). Pure data.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AdminScope:
    name: str
    network: ipaddress.IPv4Network
    ttl: int  # the largest TTL traffic in this scope should carry

    @property
    def highest(self) -> ipaddress.IPv4Address:
        """RFC 2974: a scope's SAP announcements go to its highest address."""
        return self.network.broadcast_address


# RFC 2365 section 6 (and 224.0.0.0/24, link-local, RFC 5771), narrowest first.
IPV4_LINK_LOCAL = AdminScope("ipv4-link-local", ipaddress.IPv4Network("224.0.0.0/24"), 1)
IPV4_LOCAL = AdminScope("ipv4-local", ipaddress.IPv4Network("239.255.0.0/16"), 255)
IPV4_ORG_LOCAL = AdminScope("ipv4-org-local", ipaddress.IPv4Network("239.192.0.0/14"), 255)
# The rest of the administratively scoped block, where AES67 streams usually live
# (239.69.0.0/16). Its highest address is where Dante and AES67 devices listen for SAP.
IPV4_ADMIN = AdminScope("ipv4-admin", ipaddress.IPv4Network("239.0.0.0/8"), 255)
IPV4_ADMIN_SCOPES = (IPV4_LINK_LOCAL, IPV4_LOCAL, IPV4_ORG_LOCAL, IPV4_ADMIN)
IPV4_MULTICAST = ipaddress.IPv4Network("224.0.0.0/4")

RELATIVE_BLOCK = 256  # RFC 2365: the top 256 addresses of each scope are for relative use

# RFC 5771 blocks a pool may never overlap (and the SAP/SDP block, and SSM).
FORBIDDEN_V4 = tuple(ipaddress.IPv4Network(n) for n in (
    "224.0.0.0/24",  # local network control
    "224.0.1.0/24",  # internetwork control
    "224.0.2.0/23", "224.0.4.0/22", "224.0.8.0/21", "224.0.16.0/20", "224.0.32.0/19",
    "224.0.64.0/18", "224.0.128.0/17",  # AD-HOC I (224.0.2.0-224.0.255.255)
    "224.1.0.0/16",  # reserved
    "224.2.0.0/16",  # SDP/SAP
    "224.3.0.0/16", "224.4.0.0/16",  # AD-HOC II
    "224.5.0.0/16", "224.6.0.0/15", "224.8.0.0/13", "224.16.0.0/12", "224.32.0.0/11",
    "224.64.0.0/10", "224.128.0.0/9",  # reserved 224.5-224.255
    "225.0.0.0/8", "226.0.0.0/7", "228.0.0.0/6",  # reserved 225-231
    "232.0.0.0/8",  # SSM: no allocation needed
    "233.252.0.0/14",  # AD-HOC III (incl. MCAST-TEST-NET)
    "234.0.0.0/7", "236.0.0.0/7", "238.0.0.0/8",  # reserved 234-238
))

# IPv6 multicast scope nibble (ffXY::, Y) -> name.
IPV6_SCOPE_NAMES = {1: "ipv6-interface-local", 2: "ipv6-link-local", 3: "ipv6-realm-local",
                    4: "ipv6-admin-local", 5: "ipv6-site-local", 8: "ipv6-org-local",
                    0xE: "ipv6-global"}
IPV6_LINK_SCOPE_MAX = 2  # nibbles up to this one never leave the link: hop limit 1
