"""The container's mirror is the one this host's apt uses, in either sources format."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system.container import apt_mirror


def _apt(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_deb822_stanza_for_the_suite_not_security_or_others(tmp_path: Path) -> None:
    apt = _apt(tmp_path, {"sources.list.d/debian.sources": (
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"),
        "sources.list.d/other.sources": (
        "Types: deb\nURIs: https://other.example/apt\nSuites: cloud-bookworm\n")})
    assert apt_mirror("bookworm", apt) == "http://mirror.example/debian"


def test_one_line_format_with_options(tmp_path: Path) -> None:
    apt = _apt(tmp_path, {"sources.list": (
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n")})
    assert apt_mirror("bookworm", apt) == "http://mirror.example/debian"


def test_no_source_for_the_suite_says_so(tmp_path: Path) -> None:
    apt = _apt(tmp_path, {"sources.list": "deb http://mirror.example/debian trixie main\n"})
    with pytest.raises((pytest.skip.Exception, pytest.fail.Exception),
                       match="no apt source for Debian bookworm"):
        apt_mirror("bookworm", apt)
