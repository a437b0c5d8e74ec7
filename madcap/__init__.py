"""madcap: a MADCAP (RFC 2730) multicast address allocator, server and client."""

__version__ = "0.1.0"
