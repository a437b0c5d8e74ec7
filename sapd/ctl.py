"""sapctl's online commands: talk to a running sapd over its control socket."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from typing import Any

from sapd.announce import commands as announce_commands
from sapd.plumbing import paths
from sapd.plumbing.client import ClientError, UnixClient, format_table, printable

EXIT_OK, EXIT_REJECTED = 0, 1


def _client(args: argparse.Namespace) -> UnixClient:
    return UnixClient(args.socket or paths.client_socket("sapd"))


def _ago(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    seconds = max(0, int(time.time() - stamp))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _state(session: dict[str, Any]) -> str:
    return "local" if session["local"] else ("stale" if session["stale"] else "live")


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def cmd_list(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (
        ("text", args.text), ("media", args.media), ("group", args.group),
        ("origin", args.origin), ("source", args.source), ("scope", args.scope),
        ("attribute", args.attribute), ("value", args.value), ("clock", args.clock),
        ("site", args.site), ("limit", args.limit), ("offset", args.offset)) if v is not None}
    if args.redundant:
        params["redundant"] = "1"
    if args.local:
        params["local"] = "true"
    if args.remote:
        params["local"] = "false"
    if args.stale:
        params["stale"] = "true"
    result = _client(args).get_json("/v1/sessions?" + urllib.parse.urlencode(params))
    if args.json:
        _print_json(result)
        return EXIT_OK
    rows = [[s["id"], s["name"][:40], ",".join(s["groups"])[:40], ",".join(s["media"]),
             s["source"], s["scope"], (s.get("site") or "-")[:24], _ago(s["last_seen"]),
             _state(s)]
            for s in result["sessions"]]
    print(format_table(rows, ["ID", "NAME", "GROUPS", "MEDIA", "SOURCE", "SCOPE", "SITE",
                              "SEEN", "STATE"]))
    shown = len(result["sessions"])
    if result["total"] > shown:
        more = "" if result.get("total_exact", True) else "+"
        print(f"({shown} of {result['total']}{more}; use --limit/--offset)")
    return EXIT_OK


def _signature(s: dict[str, Any]) -> str:
    """verified by whom, or why not (the verdict is what sapd's trust policy saw)."""
    if s.get("verified"):
        return f"verified, signed by {s.get('signed_by')}"
    present = (s.get("auth") or {}).get("present")
    return str(s.get("verification") or ("not_checked" if present else "unsigned"))


def cmd_show(args: argparse.Namespace) -> int:
    client = _client(args)
    path = f"/v1/sessions/{urllib.parse.quote(args.id)}"
    if args.sdp:
        text = client.request("GET", path, headers={"Accept": "application/sdp"}).body.decode()
        # Exact when saved or piped; on a terminal, remote text must not drive it.
        sys.stdout.write(_printable_sdp(text) if sys.stdout.isatty() else text)
        return EXIT_OK
    result = client.get_json(path)
    if args.json:
        _print_json(result)
        return EXIT_OK
    s = result["session"]
    for key in ("id", "site", "name", "info", "identity", "version", "source", "header_source",
                "origin_address", "scope", "sap_group", "groups", "media", "codecs",
                "redundant", "conflict", "owner_uid", "period", "expires"):
        value = s.get(key)
        if isinstance(value, list):
            value = ", ".join(value)
        print(f"{key + ':':16} {printable(str(value)) if value is not None else '-'}")
    clock = s.get("clock")
    if clock:
        print(f"{'clock:':16} {printable(str(clock.get('grandmaster') or clock['value']))}")
    for via in s.get("heard_via", []):
        where = via.get("url") if via.get("via") == "ravenna" else (
            f"{via.get('group')} on {via.get('interface')}")
        print(f"{'heard via:':16} {printable(str(via.get('via')))} {printable(str(where))} "
              f"from {printable(str(via.get('source')))}")
    print(f"{'state:':16} {_state(s)}, last seen {_ago(s['last_seen'])} ago")
    print(f"{'signature:':16} {_signature(s)}")
    print()
    sys.stdout.write(_printable_sdp(result["sdp"]))
    return EXIT_OK


def _printable_sdp(text: str) -> str:
    """SDP lines for a terminal: one per line, any control inside a line escaped."""
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(printable(line) for line in lines)


def _watch_exec(args: argparse.Namespace) -> int:
    from sapd import hooks  # noqa: PLC0415  # start-up time: only watch --exec needs it

    client = _client(args)

    def open_stream(last: str | None) -> Any:
        path = "/v1/events?format=jsonl"
        if last:
            path += "&last_event_id=" + urllib.parse.quote(last)
        return client.stream_lines(path)
    if args.rate <= 0 or args.timeout <= 0:
        print("sapctl: --rate and --timeout must be positive", file=sys.stderr)
        return 2
    try:
        hooks.watch_exec(open_stream, hooks.HookRunner(args.exec, args.rate, args.timeout))
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    if args.exec:
        return _watch_exec(args)
    try:
        for line in _client(args).stream_lines("/v1/events?format=jsonl"):
            if not line.strip():
                continue
            if args.json:
                sys.stdout.write(line.decode())
            else:
                event = json.loads(line)
                if event["event"] == "resync":
                    print("-------- resync: events were missed; sapctl list shows the "
                          "directory now")
                    continue
                s = event["session"]
                stamp = time.strftime("%H:%M:%S", time.localtime(event["time"]))
                print(f"{stamp} {event['event']:8} {event['id']}  {printable(s['name'])}  "
                      f"{printable(','.join(s['groups']))}  from {printable(s['source'])}")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def cmd_sites(args: argparse.Namespace) -> int:
    result = _client(args).get_json("/v1/sites")
    if args.json:
        _print_json(result)
        return EXIT_OK
    rows = [[s["site"], str(s["sessions"]), f"{s['heartbeat_age']:.1f}s",
             "silent" if s["silent"] else "live"] for s in result["sites"]]
    print(format_table(rows, ["SITE", "SESSIONS", "HEARTBEAT", "STATE"]))
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    result = _client(args).get_json("/v1/stats")
    if args.json:
        _print_json(result)
        return EXIT_OK
    print(f"sessions: {result['sessions']}  "
          + "  ".join(f"{k}={v}" for k, v in sorted(result["sessions_by_scope"].items())))
    print("packets:  " + "  ".join(f"{k}={v}" for k, v in result["packets"].items()))
    print("drops:    " + ("  ".join(f"{k}={v}" for k, v in result["drops"].items()) or "none"))
    print(f"expired:  {result['expired']}   profile: {result['profile']}   "
          f"uptime: {result['uptime']:.0f}s")
    store = result.get("store", {})
    failures = "  ".join(f"{k}={v}" for k, v in store.get("failures", {}).items())
    print(f"store:    backlog {result['store_backlog']}   "
          f"restarts {result.get('store_restarts', 0)}   failures: {failures or 'none'}")
    if store.get("problem"):
        print(f"  degraded: the store refuses writes ({store['problem']}); "
              f"{store.get('pending', 0)} batches held until it takes them")
    print(f"interfaces: {', '.join(result['interfaces']) or 'none'}   "
          f"memberships: {len(result['memberships'])}")
    for key, why in result["failed_joins"].items():
        print(f"  join failed {key}: {why}")
    control = result.get("control") or {}
    if control:
        refused = "  ".join(f"{k}={v}" for k, v in control["refused"].items()) or "none"
        print(f"control:  {control['connections']} connections (at most "
              f"{control['max_per_uid']} per uid)   refused: {refused}")
    ldap = result.get("ldap", {"state": "off"})
    if ldap["state"] != "off":
        resyncs = "  ".join(f"{k}={v}" for k, v in ldap["resyncs"].items()) or "none"
        print(f"ldap:     {ldap['state']}   entries {ldap['entries']}   queue {ldap['queue']}"
              f"   resyncs {resyncs}" + (f"   last error: {ldap['last_error']}"
                                         if ldap.get("last_error") else ""))
    nmos = result.get("nmos", {"state": "off"})
    if nmos["state"] != "off":
        registered = "  ".join(f"{k}={v}" for k, v in nmos["registered"].items())
        skipped = "  ".join(f"{k}={v}" for k, v in nmos["skipped"].items()) or "none"
        errors = "  ".join(f"{k}={v}" for k, v in nmos["errors"].items()) or "none"
        print(f"nmos:     {nmos['state']}   registry {nmos['registry'] or 'none found'}   "
              f"pending {nmos['pending']}\n  registered: {registered}\n"
              f"  skipped: {skipped}   errors: {errors}"
              + (f"   last error: {nmos['last_error']}" if nmos.get("last_error") else ""))
    return EXIT_OK


def _with_errors(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            result: int = func(args)
        except ClientError as exc:
            print(f"sapctl: {exc}", file=sys.stderr)
            if exc.body and isinstance(exc.body, dict):
                for detail in exc.body.get("error", {}).get("errors", []):
                    print(f"  {detail}", file=sys.stderr)
            return EXIT_REJECTED
        return result
    return run


def add_commands(sub: Any) -> None:
    p = sub.add_parser("list", help="list sessions in the directory")
    for name in ("text", "media", "group", "origin", "source", "scope", "attribute", "value"):
        p.add_argument(f"--{name}", help=f"filter by {name}")
    p.add_argument("--clock", help="a=ts-refclk containing this (a PTP grandmaster id)")
    p.add_argument("--site", help="only sessions of this sapd site (a shared directory)")
    p.add_argument("--redundant", action="store_true",
                   help="only sessions with ST 2022-7 legs (a=group:DUP)")
    p.add_argument("--local", action="store_true", help="only sessions announced here")
    p.add_argument("--remote", action="store_true", help="only sessions heard from others")
    p.add_argument("--stale", action="store_true", help="only sessions not heard since restart")
    p.add_argument("--limit", type=int)
    p.add_argument("--offset", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_with_errors(cmd_list))

    p = sub.add_parser("show", help="show one session")
    p.add_argument("id")
    p.add_argument("--sdp", action="store_true", help="print only the raw SDP")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_with_errors(cmd_show))

    p = sub.add_parser("watch", help="print sessions as they arrive, change and leave")
    p.add_argument("--json", action="store_true", help="one JSON event per line")
    p.add_argument("--exec", metavar="CMD",
                   help="run CMD (through sh -c) for each event, one at a time: the event "
                        "as JSON on stdin, SAPD_EVENT, SAPD_SESSION_ID, SAPD_SESSION_NAME, "
                        "... in the environment")
    p.add_argument("--rate", type=float, default=10.0,
                   help="with --exec: at most this many commands a second (default 10)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="with --exec: kill a command after this many seconds (default 60)")
    p.set_defaults(func=_with_errors(cmd_watch))

    p = sub.add_parser("sites", help="the sapd sites writing a shared directory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_with_errors(cmd_sites))

    p = sub.add_parser("stats", help="counters and memberships")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_with_errors(cmd_stats))

    announce_commands.add_commands(sub, _with_errors, _client, _print_json)
