"""[web] listen and public_url, and --web HOST:PORT, for both daemons."""

from __future__ import annotations

from pathlib import Path

import pytest

from madcap.config import load as load_madcapd
from sapd.config import load as load_sapd
from sapd.daemon import build_parser, overrides_from
from sapd.plumbing.config import ConfigError
from sapd.plumbing.web import parse_host_port


def test_listener_is_off_unless_configured() -> None:
    assert load_sapd(None, {}).web.listen is None
    assert load_madcapd(None, {}).web.listen is None


def test_flag_sets_listen_and_keeps_the_file_public_url(tmp_path: Path) -> None:
    path = tmp_path / "sapd.toml"
    path.write_text('[web]\nlisten = "127.0.0.1:1"\npublic_url = "https://sapd.example"\n')
    args = build_parser().parse_args(["--web", "127.0.0.1:8375"])
    config = load_sapd(str(path), overrides_from(args))
    assert config.web.listen == "127.0.0.1:8375"
    assert config.web.public_url == "https://sapd.example"


@pytest.mark.parametrize(("text", "words"), [
    ("localhost:80", "not an IP address"), ("127.0.0.1", "HOST:PORT"),
    ("127.0.0.1:0", "port 0"), ("[::1]:99999", "port 99999")])
def test_bad_listen_names_the_key_and_the_problem(tmp_path: Path, text: str,
                                                  words: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'[web]\nlisten = "{text}"\n')
    with pytest.raises(ConfigError, match=r"web\.listen") as caught:
        load_madcapd(str(path), {})
    assert words in str(caught.value)


def test_public_url_must_be_http(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[web]\npublic_url = "sapd.example"\n')
    with pytest.raises(ConfigError, match=r"web\.public_url"):
        load_sapd(str(path), {})


def test_ipv6_listen() -> None:
    assert parse_host_port("[::1]:8375") == ("::1", 8375)
