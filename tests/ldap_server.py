"""A real, throw-away OpenLDAP slapd for the LDAP publication tests.

Debian's slapd, started by the test in a temporary directory: its own slapd.conf with
core and the schemas sapd ships, an mdb database, the dds overlay (RFC 2589 dynamic
entries, checked every second so a short TTL shows), on a free port of 127.0.0.1 and
nothing of the system's slapd. Needs ``slapd`` and ``ldap-utils`` (CI fails without).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sapd.bridges.ldap_schema import schema_path
from tests.support import missing, need_tool, run, wait_for

SLAPD = "/usr/sbin/slapd"
SUFFIX = "dc=sapd,dc=test"
BASE = f"ou=sessions,{SUFFIX}"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "test-secret"
SERVICE_DN = f"cn=sapd,{SUFFIX}"  # what sapd binds as: not the rootdn, so limits apply
SERVICE_PASSWORD = "sapd-secret"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Slapd:
    def __init__(self, workdir: Path, dds: bool = True, tls: bool = False) -> None:
        if not os.path.exists(SLAPD):
            missing("needs slapd (apt-get install slapd)")
        self.ldapsearch = need_tool("ldapsearch")
        self.workdir = workdir
        self.dds = dds
        self.port = free_tcp_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.tls_port = free_tcp_port() if tls else None
        self.ldaps_url = f"ldaps://127.0.0.1:{self.tls_port}" if tls else None
        self.ca_file = workdir / "ca.pem"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "slapd.log"
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "db").mkdir(exist_ok=True)
        self.password_file = workdir / "password"
        self.password_file.write_text(SERVICE_PASSWORD + "\n")
        self.conf = workdir / "slapd.conf"
        tls_lines = self._make_certificates() if tls else ""
        overlay = ("overlay dds\ndds-interval 1s\ndds-min-ttl 1\ndds-default-ttl 600\n"
                   if dds else "")
        self.conf.write_text(
            "include /etc/ldap/schema/core.schema\n"
            f"include {schema_path('sapd')}\ninclude {schema_path('mstapi')}\n"
            + tls_lines +
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
            + ("moduleload dds\n" if dds else "") +
            f"pidfile {workdir}/slapd.pid\n"
            "sizelimit 500\n"  # the usual default: sapd must page
            "database mdb\nmaxsize 1073741824\n"
            f'suffix "{SUFFIX}"\nrootdn "{ROOT_DN}"\nrootpw {ROOT_PASSWORD}\n'
            f"directory {workdir}/db\n"
            "index objectClass eq\nindex sapdMedia,sapdSite,sapdSessionId eq\n"
            "index sapdName eq,sub\n"
            # a server's usual size limit, which sapd's listing must page through
            f'limits dn.exact="{SERVICE_DN}" size.soft=500 size.hard=500 '
            "size.prtotal=unlimited\n"
            "limits anonymous size.soft=500 size.hard=500 size.prtotal=unlimited\n"
            "access to attrs=userPassword by anonymous auth by * none\n"
            f'access to attrs=entryTtl by dn.exact="{SERVICE_DN}" manage by * read\n'
            f'access to dn.subtree="{BASE}" by dn.exact="{SERVICE_DN}" write by * read\n'
            "access to * by * read\n" + overlay)

    def _make_certificates(self) -> str:
        """A CA and a server certificate for 127.0.0.1 it signed (openssl, P-256)."""
        w = self.workdir
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        run("openssl", "req", "-x509", *ec, "-keyout", str(w / "ca.key"), "-out",
            str(self.ca_file), "-days", "2", "-subj", "/CN=sapd test CA", check=True)
        run("openssl", "req", *ec, "-keyout", str(w / "server.key"), "-out",
            str(w / "server.csr"), "-subj", "/CN=127.0.0.1", check=True)
        (w / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        run("openssl", "x509", "-req", "-in", str(w / "server.csr"), "-CA", str(self.ca_file),
            "-CAkey", str(w / "ca.key"), "-CAcreateserial", "-out", str(w / "server.pem"),
            "-days", "2", "-extfile", str(w / "san.ext"), check=True)
        return (f"TLSCACertificateFile {self.ca_file}\n"
                f"TLSCertificateFile {w / 'server.pem'}\n"
                f"TLSCertificateKeyFile {w / 'server.key'}\n")

    def start(self) -> Slapd:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it
        urls = f"{self.url}/" + (f" {self.ldaps_url}/" if self.ldaps_url else "")
        self.proc = subprocess.Popen([SLAPD, "-f", str(self.conf), "-h", urls, "-d", "0"],
                                     stdout=log, stderr=log)
        log.close()
        try:
            wait_for(self._answers, 10, what="slapd answering")
        except BaseException:
            self.stop()  # the fixture never reaches its teardown: leave no slapd behind
            raise
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"slapd exited {self.proc.returncode}:\n{self.logs()}")
        return self.search("(objectClass=*)", base="", scope="base",
                           check=False).returncode == 0

    def create_base(self) -> None:
        ldif = (f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n"
                f"dc: sapd\no: sapd test\n\ndn: {BASE}\nobjectClass: organizationalUnit\n"
                f"ou: sessions\n\ndn: {SERVICE_DN}\nobjectClass: person\ncn: sapd\n"
                f"sn: sapd\nuserPassword: {SERVICE_PASSWORD}\n")
        result = run("ldapadd", "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD,
                     input=ldif.encode())
        assert result.returncode == 0, result.stderr

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pause(self) -> None:
        """SIGSTOP: a server that accepts but never answers (a stalled disk, a hung box)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def search(self, filterstr: str, *attrs: str, base: str = BASE, scope: str = "one",
               check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ldapsearch -x`` as a user would type it (anonymous, LDIF out)."""
        result = run(self.ldapsearch, "-x", "-LLL", "-o", "ldif-wrap=no", "-E", "pr=1000/noprompt",
                     "-H", self.url,
                     "-b", base, "-s", scope, filterstr, *attrs)
        if check and result.returncode not in (0, 32):  # 32: no such object
            raise AssertionError(f"ldapsearch {filterstr} exited {result.returncode}: "
                                 f"{result.stderr}")
        return result

    def values(self, filterstr: str, attr: str) -> list[str]:
        """The values of ``attr`` over the entries ``filterstr`` finds, sorted."""
        out = self.search(filterstr, attr).stdout
        return sorted(line.split(": ", 1)[1] for line in out.splitlines()
                      if line.lower().startswith(attr.lower() + ": "))

    def count(self, filterstr: str = "(objectClass=sapdSessionInfo)") -> int:
        return sum(1 for line in self.search(filterstr, "1.1").stdout.splitlines()
                   if line.startswith("dn: "))


@pytest.fixture
def slapd(tmp_path: Path) -> Iterator[Slapd]:
    """A slapd of its own for a test, with the base made."""
    server = Slapd(tmp_path / "slapd").start()
    server.create_base()
    yield server
    server.stop()
