"""sapd: a multicast session directory (SAP, RFC 2974; SDP, RFC 8866)."""

__version__ = "0.1.0"
