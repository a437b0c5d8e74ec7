"""Plumbing shared by sapd and madcapd: paths, logging, systemd, control socket, config."""
