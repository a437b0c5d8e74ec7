"""madcapctl: lease multicast addresses over MADCAP, and inspect madcapd.

Client commands talk MADCAP (UDP 2535) to --server, or discover servers by multicast
on the Local Scope server group (239.255.255.254). Leases obtained here are remembered
in a small lease file so that `renew` and `release` know their server.
Exit status: 0 success, 1 refused / no answer / daemon error, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from madcap.client import LeaseInfo, MadcapClient, MadcapError, Retransmit, ScopeInfo
from madcap.config import parse_listen
from madcap.leases import PAGE_LIMIT
from sapd.plumbing import paths
from sapd.plumbing.client import ClientError, UnixClient, format_table

EXIT_OK, EXIT_FAILED = 0, 1
_ANY_SCOPE = ipaddress.IPv4Address("0.0.0.0")  # a lease known only by its id


def _lease_file(args: argparse.Namespace) -> Path:
    if args.lease_file:
        return Path(args.lease_file)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "madcapctl" / "leases.json"


def _load_leases(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    path = _lease_file(args)
    try:
        data: dict[str, dict[str, Any]] = json.loads(path.read_text())
        return data
    except (FileNotFoundError, ValueError):
        return {}


def _save_leases(args: argparse.Namespace, leases: dict[str, dict[str, Any]]) -> None:
    path = _lease_file(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(leases, indent=2))
    tmp.replace(path)


def _find_lease(args: argparse.Namespace, text: str) -> LeaseInfo:
    matches = [v for k, v in _load_leases(args).items() if k.startswith(text.lower())]
    if len(matches) == 1:
        lease = LeaseInfo.from_json(matches[0])
    elif not matches and args.server:
        try:  # not ours: the server knows it by its id alone
            lease_id = bytes.fromhex(text)
        except ValueError:
            raise SystemExit(f"madcapctl: {text!r} is not a lease id") from None
        lease = LeaseInfo(lease_id, args.server, _ANY_SCOPE, [], 0.0, 0.0)
    elif not matches:
        raise SystemExit(f"madcapctl: no lease {text!r} in {_lease_file(args)}; "
                         "give --server to act on a lease obtained elsewhere")
    else:
        raise SystemExit(f"madcapctl: {text!r} matches {len(matches)} leases; give more of it")
    if args.server:
        lease.server = args.server
    return lease


def _client(args: argparse.Namespace) -> MadcapClient:
    retransmit = Retransmit(give_up=args.timeout, initial=min(4.0, args.timeout / 4))
    return MadcapClient(args.server, interface=args.interface, retransmit=retransmit)


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _remember(args: argparse.Namespace, lease: LeaseInfo) -> None:
    leases = _load_leases(args)
    leases[lease.lease_id.hex()] = lease.to_json()
    _save_leases(args, leases)


def _forget(args: argparse.Namespace, lease: LeaseInfo) -> None:
    leases = _load_leases(args)
    leases.pop(lease.lease_id.hex(), None)
    _save_leases(args, leases)


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds")


def _print_lease(lease: LeaseInfo, verb: str) -> None:
    print(f"{verb} {', '.join(lease.addresses)}")
    print(f"  lease:  {lease.lease_id.hex()}")
    print(f"  scope:  {lease.scope_id}   server: {lease.server[0]}:{lease.server[1]}")
    print(f"  valid:  {_when(lease.start)} .. {_when(lease.end)} "
          f"({max(0, round(lease.end - time.time()))} s left)")


async def _pick_scope(client: MadcapClient, wanted: str | None) -> ScopeInfo:
    scopes = await client.enumerate_scopes()
    if not scopes:
        raise MadcapError("the server offers no scopes")
    if wanted is None:
        return scopes[0]
    for scope in scopes:
        if wanted in (str(scope.scope_id), scope.name) or any(n.name == wanted
                                                               for n in scope.names):
            return scope
    raise MadcapError(f"no scope {wanted!r}; known: "
                      + ", ".join(f"{s.name} ({s.scope_id})" for s in scopes))


def _start_time(text: str | None) -> float | None:
    if text is None:
        return None
    if text.startswith("+"):
        return time.time() + float(text[1:])
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise SystemExit(f"madcapctl: --start {text!r}: use +SECONDS or an ISO time") from None


async def cmd_scopes(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        scopes = await client.enumerate_scopes(args.language)
    if args.json:
        _print_json([s.to_json() for s in scopes])
    else:
        rows = [[s.name, str(s.scope_id), str(s.last), str(s.ttl), f"{s.server[0]}"]
                for s in scopes]
        print(format_table(rows, ["NAME", "SCOPE ID", "LAST", "TTL", "SERVER"]))
    return EXIT_OK


async def _request(args: argparse.Namespace, client: MadcapClient) -> LeaseInfo:
    scope = await _pick_scope(client, args.scope)
    lease = await client.request(scope.scope_id, count=args.count, min_count=args.min_count,
                                 lease_time=args.lease, start_time=_start_time(args.start))
    _remember(args, lease)
    return lease


async def cmd_request(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        lease = await _request(args, client)
    if args.json:
        _print_json(lease.to_json())
    else:
        _print_lease(lease, "leased")
    return EXIT_OK


async def cmd_renew(args: argparse.Namespace) -> int:
    lease = _find_lease(args, args.lease_id)
    async with _client(args) as client:
        renewed = await client.renew(lease, args.lease)
    if lease.addresses:
        _remember(args, renewed)
    if args.json:
        _print_json(renewed.to_json())
    else:
        _print_lease(renewed, "renewed")
    return EXIT_OK


async def cmd_release(args: argparse.Namespace) -> int:
    lease = _find_lease(args, args.lease_id)
    async with _client(args) as client:
        await client.release(lease)
    _forget(args, lease)
    if args.json:
        _print_json({"released": lease.lease_id.hex(), "addresses": lease.addresses})
    else:
        print(f"released {', '.join(lease.addresses) or lease.lease_id.hex()}")
    return EXIT_OK


async def cmd_hold(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        lease = await _request(args, client)
        if args.json:
            _print_json(lease.to_json())
        else:
            _print_lease(lease, "holding")
            print("  renewing until interrupted (Ctrl-C releases)")
        sys.stdout.flush()

        def renewed(current: LeaseInfo) -> None:
            if not args.json:
                print(f"renewed until {_when(current.end)}")
                sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with client.keep(lease, args.lease, renewed):
            await stop.wait()
    _forget(args, lease)
    if not args.json:
        print(f"released {', '.join(lease.addresses)}")
    return EXIT_OK


def all_leases(client: UnixClient, include_held: bool, page_size: int) -> dict[str, Any]:
    """Every page of GET /v1/leases, as one answer. A lease that moves between pages
    while they are fetched is listed once (its first sighting)."""
    held = "&all=true" if include_held else ""
    leases: dict[str, dict[str, Any]] = {}
    offset, now = 0, None
    while True:
        page = client.get_json(f"/v1/leases?limit={page_size}&offset={offset}{held}")
        now = page["now"] if now is None else now
        for lease in page["leases"]:
            leases.setdefault(lease["lease_id"], lease)
        offset += len(page["leases"])
        if not page["leases"] or offset >= page.get("total", 0):
            return {"leases": list(leases.values()), "total": len(leases), "now": now}


def cmd_leases(args: argparse.Namespace) -> int:
    client = UnixClient(args.socket or paths.client_socket("madcapd"))
    if not 1 <= args.page_size <= PAGE_LIMIT:
        raise SystemExit(f"madcapctl: --page-size {args.page_size}: expected 1..{PAGE_LIMIT}")
    result = all_leases(client, args.all, args.page_size)
    if args.json:
        _print_json(result)
        return EXIT_OK
    now = result["now"]
    rows = [[le["lease_id"][:12], le["scope"], ",".join(le["addresses"]), le["state"],
             f"{max(0, round(le['end'] - now))}s" if le["state"] == "active" else
             f"held {max(0, round(le['hold_until'] - now))}s", le["client"]]
            for le in result["leases"]]
    print(format_table(rows, ["LEASE", "SCOPE", "ADDRESSES", "STATE", "LEFT", "CLIENT"]))
    scopes = client.get_json("/v1/scopes")["scopes"]
    for s in scopes:
        print(f"scope {s['name']}: {s['leased']} leased, {s['offered']} offered, "
              f"{s['held'] - s['leased'] - s['offered'] if s['held'] > s['leased'] else 0} "
              f"in guard time, {s['free']} free of {s['addresses']}")
    return EXIT_OK


def _server(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="madcapctl", description=__doc__.splitlines()[0])
    p.add_argument("--server", type=_server, metavar="ADDR[:PORT]",
                   help="MADCAP server (default: discover by multicast)")
    p.add_argument("--interface", help="interface for multicast discovery")
    p.add_argument("--socket", help="madcapd control socket (for 'leases')")
    p.add_argument("--lease-file", help="where leases from 'request' are remembered")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="give up after this many seconds (RFC: 60)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("scopes", help="list the scopes servers offer (GETINFO)")
    s.add_argument("--language", help="preferred language of scope names")
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=cmd_scopes)

    for name, func, text in (("request", cmd_request, "lease addresses"),
                             ("hold", cmd_hold, "lease, keep renewing until interrupted, "
                                                "then release")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--scope", help="scope name or id (default: the first offered)")
        s.add_argument("--count", type=int, default=1, help="addresses wanted")
        s.add_argument("--min-count", type=int, help="fewest addresses acceptable")
        s.add_argument("--lease", type=int, metavar="SECONDS", help="lease time")
        s.add_argument("--start", metavar="TIME", help="start later: +SECONDS or ISO time")
        s.add_argument("--json", action="store_true")
        s.set_defaults(run=func)

    for name, func, text in (("renew", cmd_renew, "renew a lease"),
                             ("release", cmd_release, "release a lease")):
        s = sub.add_parser(name, help=text)
        s.add_argument("lease_id", metavar="LEASE", help="lease id (a unique prefix will do)")
        if name == "renew":
            s.add_argument("--lease", type=int, metavar="SECONDS", help="new lease time")
        s.add_argument("--json", action="store_true")
        s.set_defaults(run=func)

    s = sub.add_parser("leases", help="operator view of madcapd's leases (control socket)")
    s.add_argument("--all", action="store_true", help="include leases in their guard time")
    s.add_argument("--page-size", type=int, default=PAGE_LIMIT, metavar="N",
                   help=f"leases fetched per request (1..{PAGE_LIMIT})")
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=cmd_leases)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if asyncio.iscoroutinefunction(args.run):
            result: int = asyncio.run(args.run(args))
        else:
            result = args.run(args)
    except (MadcapError, ClientError) as exc:
        print(f"madcapctl: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED
    except BrokenPipeError:  # `madcapctl leases | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error
        return EXIT_OK
    return result


if __name__ == "__main__":
    sys.exit(main())
