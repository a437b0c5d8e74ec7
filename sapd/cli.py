"""sapctl: query and drive sapd, and decode or validate SAP/SDP offline.

Exit status: 0 success, 1 rejected input or failed request (reason on stderr),
2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from sapd import ctl
from sapd.plumbing.files import (
    MAX_CAPTURE_FILE,
    MAX_SDP_FILE,
    InputFileError,
    read_input,
    read_regular_file,
)

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


# The offline commands import the codecs when they run: they cost ~30 ms of start-up
# that `sapctl announce` and `list` should not pay.


def cmd_decode(args: argparse.Namespace) -> int:
    from sapd import describe, pcap, signing  # noqa: PLC0415  # start-up time, see above

    anchors = None
    if args.trust:
        found = []
        for path in args.trust:
            try:
                found += signing.load_certificates(read_regular_file(path, MAX_SDP_FILE))
            except signing.SigningError as exc:
                print(f"sapctl: {path}: {exc}", file=sys.stderr)
                return EXIT_REJECTED
        # a CA certificate vouches for others; any other certificate is pinned
        cas = [c for c in found if signing.is_ca(c)]
        anchors = signing.Anchors(pinned=[c for c in found if not signing.is_ca(c)],
                                  authorities=cas, known=found)

    if args.pcap:
        results: list[dict[str, Any]] = []
        failed = 0
        try:
            datagrams = list(pcap.udp_datagrams(
                read_input(args.file, MAX_CAPTURE_FILE), port=args.port))
        except pcap.CaptureError as exc:
            print(f"sapctl: {args.file}: {exc}", file=sys.stderr)
            return EXIT_REJECTED
        for dgram in datagrams:
            desc, problems = describe.describe_packet(dgram.payload, anchors)
            desc = {"frame": dgram.index, "time": dgram.timestamp,
                    "from": f"{dgram.source}:{dgram.source_port}",
                    "to": f"{dgram.destination}:{dgram.destination_port}", **desc}
            results.append(desc)
            if problems:
                failed += 1
                for problem in problems:
                    print(f"sapctl: frame {dgram.index}: {problem}", file=sys.stderr)
            if not args.json:
                print(f"frame {dgram.index} {desc['from']} -> {desc['to']}")
                print(describe.format_packet(desc))
        if args.json:
            _print_json(results)
        if not datagrams:
            print(f"sapctl: {args.file}: no UDP datagrams on port {args.port}", file=sys.stderr)
            return EXIT_REJECTED
        return EXIT_REJECTED if failed else EXIT_OK
    desc, problems = describe.describe_packet(read_input(args.file, MAX_SDP_FILE), anchors)
    if args.json:
        _print_json(desc)
    else:
        print(describe.format_packet(desc))
    for problem in problems:
        print(f"sapctl: {args.file}: {problem}", file=sys.stderr)
    return EXIT_REJECTED if problems else EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from sapd import sdp  # noqa: PLC0415  # start-up time, see above

    session, errors, warnings = sdp.validate(read_input(args.file, MAX_SDP_FILE))
    if args.json:
        _print_json({"valid": session is not None,
                     "errors": [{"line": e.line, "message": e.message} for e in errors],
                     "warnings": [{"line": w.line, "message": w.message} for w in warnings],
                     "session": session.to_json() if session else None})
    elif session is not None:
        print(f"valid: {session.name!r} ({session.identity}, version {session.version})")
    for warning in warnings:
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    for error in errors:
        print(f"{args.file}: {error}", file=sys.stderr)
    return EXIT_OK if session is not None else EXIT_REJECTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sapctl", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", help="sapd control socket (default: /run/sapd/sapd.sock "
                        "if it exists, else the per-user one; see README)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("decode", help="decode a raw SAP datagram, or every one in a capture")
    p.add_argument("file", help="file with one datagram (- for stdin), or a capture with --pcap")
    p.add_argument("--pcap", action="store_true", help="FILE is a pcap/pcapng capture")
    p.add_argument("--port", type=int, default=9875,
                   help="with --pcap, UDP port to pick (default 9875)")
    p.add_argument("--trust", action="append", metavar="PEM",
                   help="verify signatures against these certificates (signers, or CAs "
                   "with the signers'); a signature that fails is a rejection (exit 1)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("validate", help="validate an SDP file (RFC 8866)")
    p.add_argument("file", help="SDP file, or - for stdin")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_validate)

    ctl.add_commands(sub)  # the online commands live beside the HTTP client
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except InputFileError as exc:
        print(f"sapctl: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except FileNotFoundError as exc:
        print(f"sapctl: {exc.filename}: no such file", file=sys.stderr)
        return EXIT_REJECTED
    except BrokenPipeError:  # `sapctl list | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error
        return EXIT_OK
    return result


if __name__ == "__main__":
    sys.exit(main())
