"""sapd.plumbing.config: every rule of the loader, and that it is total."""

from __future__ import annotations

import dataclasses
import datetime
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from madcap.config import MadcapdConfig, parse_listen
from madcap.config import load as load_madcapd
from sapd.config import SapdConfig
from sapd.config import load as load_sapd
from sapd.plumbing.config import (
    MAX_FILE,
    MAX_ITEMS,
    MAX_TEXT,
    ConfigError,
    from_dict,
    host_port,
    http_url,
    interface_name,
    load_config,
    load_toml,
    parse_toml,
    setting,
    socket_path,
    split_host_port,
    toml_key,
)

ROOT = Path(__file__).resolve().parents[2]


def _no_z(word: str) -> None:
    if "z" in word:
        raise ValueError(f"{word!r} has a z")


@dataclass(frozen=True)
class Inner:
    count: int = setting(1, min=1, max=10)

    def validate(self) -> None:
        if self.count == 7:
            raise ConfigError("count", "seven is unlucky")


@dataclass(frozen=True)
class Sample:
    flag: bool = False
    number: int = setting(5, min=0, max=100)
    ratio: float = setting(0.5, min=0.0, max=1.0)
    poll: float = setting(10.0, min=1.0, max=60.0, off=0.0)
    name: str = "x"
    level: Literal["low", "high"] = "low"
    maybe: str | None = None
    words: list[str] = setting(factory=list, check=_no_z)
    inner: Inner = setting(factory=Inner)
    items: list[Inner] = setting(factory=list)

    def validate(self) -> None:
        if self.flag and self.maybe is None:
            raise ConfigError("maybe", "required when flag is true")


@dataclass(frozen=True)
class Required:
    name: str = setting()
    other: int = 0


def error(data: dict[str, Any], cls: type[Any] = Sample) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        from_dict(cls, data)
    return caught.value


def test_defaults_without_a_file() -> None:
    assert load_config(Sample, None, {}) == Sample()


@pytest.mark.parametrize(("data", "message"), [
    ({"flag": "false"}, "flag: expected true or false, got 'false'"),
    ({"flag": 0}, "flag: expected true or false, got 0"),
    ({"number": True}, "number: expected an integer, got True"),
    ({"number": 1.0}, "number: expected an integer, got 1.0"),
    ({"number": "5"}, "number: expected an integer, got '5'"),
    ({"ratio": "0.5"}, "ratio: expected a number, got '0.5'"),
    ({"ratio": float("nan")}, "ratio: nan is not a finite number"),
    ({"ratio": float("inf")}, "ratio: inf is not a finite number"),
    ({"ratio": 10**400}, "ratio: an integer (401 characters) is not a finite number"),
    ({"name": 3}, "name: expected a string, got 3"),
    ({"name": "a\x00b"}, "name: contains a NUL character"),
    ({"name": "a" * (MAX_TEXT + 1)}, f"name: longer than {MAX_TEXT} characters"),
    ({"name": datetime.date(2026, 1, 1)}, "name: expected a string, got datetime.date(2026, 1, 1)"),
    ({"level": "mid"}, "level: 'mid' is not one of low, high"),
    ({"level": ["low"]}, "level: ['low'] is not one of low, high"),
    ({"maybe": 1}, "maybe: expected a string, got 1"),
    ({"words": "a"}, "words: expected a list, got a string"),
    ({"words": ["a", 2]}, "words[1]: expected a string, got 2"),
    ({"words": ["a", "zed"]}, "words[1]: 'zed' has a z"),
    ({"words": ["a"] * (MAX_ITEMS + 1)}, f"words: more than {MAX_ITEMS} entries"),
    ({"inner": 3}, "inner: expected a table, got an integer"),
    ({"inner": {"count": 0}}, "inner.count: must be within 1..10, not 0"),
    ({"inner": {"count": 7}}, "inner.count: seven is unlucky"),
    ({"inner": {"cuont": 7}}, "inner.cuont: unknown key"),
    ({"items": [{}, {"count": 11}]}, "items[1].count: must be within 1..10, not 11"),
    ({"items": [{}, 5]}, "items[1]: expected a table, got an integer"),
    ({"items": [{"count": 7}]}, "items[0].count: seven is unlucky"),
    ({"number": 101}, "number: must be within 0..100, not 101"),
    ({"number": -1}, "number: must be within 0..100, not -1"),
    ({"poll": 0.5}, "poll: must be within 1..60 (or 0: off), not 0.5"),
    ({"flag": True}, "maybe: required when flag is true"),
    ({"nmae": "x", "lvel": "y"}, "nmae, lvel: unknown keys"),
    ({"name": "a", "name_": 1}, "name_: unknown key"),
])
def test_rule(data: dict[str, Any], message: str) -> None:
    assert str(error(data)) == message


def test_an_int_is_a_float_and_off_is_allowed_outside_the_bounds() -> None:
    config = from_dict(Sample, {"ratio": 1, "poll": 0})
    assert config.ratio == 1.0 and isinstance(config.ratio, float) and config.poll == 0.0


def test_hyphenated_keys_are_the_same_key_and_may_not_be_given_twice() -> None:
    assert from_dict(Sample, {"maybe": "a"}).maybe == from_dict(Sample, {"maybe": "a"}).maybe
    @dataclass(frozen=True)
    class Hyphen:
        log_level: str = "info"
    assert from_dict(Hyphen, {"log-level": "debug"}).log_level == "debug"
    assert str(error({"log-level": "a", "log_level": "b"}, Hyphen)) == \
        "log_level: given twice (as 'log-level')"


def test_required_key() -> None:
    assert str(error({"other": 1}, Required)) == "name: required"


def test_odd_keys_are_quoted_as_toml_writes_them() -> None:
    assert str(error({"a.b": 1, "é": 2})) == '"a.b", "\\u00e9": unknown keys'


def failure(call: Any, *args: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        call(*args)
    return caught.value


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    assert str(failure(load_toml, missing)) == f"{missing}: no such configuration file"
    assert "cannot read it" in str(failure(load_toml, tmp_path))
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"name = '\xff'\n")
    assert str(failure(load_toml, bad)) == f"{bad}: not UTF-8 (byte 8)"
    bad.write_text("name = \n")
    assert str(failure(load_toml, bad)).startswith(f"{bad}: Invalid value")
    bad.write_text("#" * (MAX_FILE + 1))
    assert str(failure(load_toml, bad)) == f"{bad}: larger than {MAX_FILE} bytes"
    assert "nested too deeply" in str(failure(parse_toml, b"a = " + b"[" * 100_000))


def test_key_errors_name_the_file_too(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[inner]\ncount = 0\n")
    caught = failure(load_config, Sample, path, {})
    assert str(caught) == f"{path}: inner.count: must be within 1..10, not 0"
    assert (caught.file, caught.key) == (str(path), "inner.count")


def test_overrides_replace_the_file_and_none_or_empty_means_not_given(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('name = "file"\nwords = ["a"]\n')
    config = load_config(Sample, path, {"name": "flag", "words": [], "maybe": None})
    assert (config.name, config.words, config.maybe) == ("flag", ["a"], None)
    from_flag = failure(load_config, Sample, path, {"number": 1000})
    assert str(from_flag) == "command line: number: must be within 0..100, not 1000"


@pytest.mark.parametrize(("text", "default", "expected"), [
    ("127.0.0.1:80", None, ("127.0.0.1", 80)),
    ("[::1]:8080", None, ("::1", 8080)),
    ("[::1]", 2535, ("::1", 2535)),
    (":9000", None, ("", 9000)),
    ("host", 5, ("host", 5)),
])
def test_split_host_port(text: str, default: int | None, expected: tuple[str, int]) -> None:
    assert split_host_port(text, default) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("127.0.0.1", "has no port"), ("::1:80", "as [ADDRESS]:PORT"), ("[::1:80", "[ADDRESS]:PORT"),
    ("h:0", "not within 1..65535"), ("h:70000", "not within"), ("h:\uff18\uff10", "not a number"),
    ("h:-1", "not a number"), (":80", "has no host"), ("bad_host!:80", "not an IP address"),
    ("localhost:80", "not an IP address"),
])
def test_host_port_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        host_port(text)


def test_host_port_accepts_addresses() -> None:
    assert host_port("[::]:80") == ("::", 80)
    assert host_port("0.0.0.0:80") == ("0.0.0.0", 80)


@pytest.mark.parametrize("url", ["ftp://x/", "http://", "x", "http://h:99999/",
                                 "https://h/?q=1", "http://h/#f"])
def test_http_url_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        http_url(url)


def test_parse_listen_keeps_its_forms() -> None:
    assert parse_listen("127.0.0.1") == ("127.0.0.1", 2535)
    assert parse_listen(":3000") == ("0.0.0.0", 3000)
    assert parse_listen("::1") == ("::1", 2535)
    assert parse_listen("[::1]:99") == ("::1", 99)
    with pytest.raises(ValueError):
        parse_listen("example.org:80")  # madcapd binds addresses, not names


def test_socket_path_and_interface_name() -> None:
    socket_path("/run/sapd/sapd.sock")
    with pytest.raises(ValueError, match=r"1\.\.107 bytes"):
        socket_path("/" + "é" * 60)
    interface_name("enp0s31f6")
    for bad in ("", "a" * 16, "a/b", "eth0:1", "a b"):
        with pytest.raises(ValueError):
            interface_name(bad)


# -- the tables both daemons share ------------------------------------------------------
@pytest.mark.parametrize("load", [load_sapd, load_madcapd])
@pytest.mark.parametrize(("text", "message"), [
    ('[store]\npassword_file = "/etc/hostname"\n',
     "store.password_file: only with backend = \"postgresql\""),
    ('[store]\ndsn = "postgresql://db/sapd"\n', "store.dsn: only with backend"),
    ('[store]\nbackend = "postgresql"\n', "store.dsn: required with backend"),
    ('[store]\nbackend = "postgresql"\ndsn = "db"\n', "store.dsn: expected postgresql://"),
    ('[store]\nbackend = "postgresql"\ndsn = "host=db"\npassword_file = "/nonexistent"\n',
     "store.password_file: cannot read /nonexistent"),
    ('[store]\nbackend = "mysql"\n', "store.backend: 'mysql' is not one of sqlite, postgresql"),
    ('[web]\nlisten = "8080"\n', "web.listen: '8080' has no port"),
    ('[web]\npublic_url = "https://sap.example/"\n', "web.public_url: needs listen"),
    ('[web]\nlisten = ":80"\npublic_url = "x"\n', "web.listen: ':80' has no host"),
    ('[web]\nlisten = "[::]:80"\npublic_url = "gopher://h/"\n', "web.public_url: "),
    ("[web]\nport = 80\n", "web.port: unknown key"),
])
def test_store_and_web_tables(tmp_path: Path, load: Any, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(str(path), {})
    assert message in str(caught.value)


@pytest.mark.parametrize("load", [load_sapd, load_madcapd])
def test_store_and_web_defaults_and_a_valid_web_table(tmp_path: Path, load: Any) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[store]\nbackend = "sqlite"\n'
                    '[web]\nlisten = "[::]:8080"\npublic_url = "https://sap.example:8443/dir"\n')
    config = load(str(path), {})
    assert (config.store.backend, config.store.dsn, config.store.password_file) == \
        ("sqlite", None, None)
    assert (config.web.listen, config.web.public_url) == \
        ("[::]:8080", "https://sap.example:8443/dir")
    assert load(None, {}).web.listen is None


def test_madcapd_quota_defaults_and_bounds(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[[scope]]\nname = "lab"\nrange = "239.255.0.0/16"\n')
    (entry,) = load_madcapd(str(path), {}).scope
    assert (entry.max_addresses_per_client, entry.max_offers_per_client) == (1024, 16)
    table = entry.as_table()
    assert table["max_addresses_per_client"] == 1024 and "pool" not in table
    path.write_text(path.read_text() + "max_offers_per_client = 0\n")
    with pytest.raises(ConfigError, match=r"scope\[0\]\.max_offers_per_client: must be"):
        load_madcapd(str(path), {})


def test_madcapd_lease_order_is_checked_with_the_key(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[[scope]]\nname = "lab"\nrange = "239.255.0.0/16"\nlease_min = 100\n'
                    "lease_default = 50\n")
    with pytest.raises(ConfigError, match=r"scope\[0\]: need lease_min <= lease_default"):
        load_madcapd(str(path), {})


def test_madcapd_scope_names_reach_the_pool(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[[scope]]\nname = "lab"\nrange = "239.255.0.0/16"\nnames = ['
                    '{language = "en", name = "Lab"}, {language = "de", name = "Labor"}]\n')
    (scope,) = load_madcapd(str(path), {}).scopes()
    assert [(n.language, n.name, n.default) for n in scope.names] == \
        [("en", "Lab", True), ("de", "Labor", False)]


def test_sapd_scope_reaches_the_table(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[[scope]]\nname = "studio"\nrange = "239.69.0.0/16"\nttl = 16\n')
    scope = load_sapd(str(path), {}).scope_table().for_address("239.69.1.1")
    assert (scope.name, str(scope.sap_group), scope.ttl) == ("studio", "239.69.255.255", 16)


def keys_of(cls: type[Any]) -> set[str]:
    """Every key name of a configuration class and the tables inside it."""
    found: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        found.add(f.name)
        hint = hints[f.name]
        inner = typing.get_args(hint)[0] if typing.get_origin(hint) is list else hint
        if dataclasses.is_dataclass(inner):
            found |= keys_of(typing.cast(type[Any], inner))
    return found


@pytest.mark.parametrize(("cls", "example", "load"), [
    (SapdConfig, "sapd.toml", load_sapd), (MadcapdConfig, "madcapd.toml", load_madcapd)])
def test_example_configuration_documents_every_key(cls: type[Any], example: str,
                                                   load: Any) -> None:
    text = (ROOT / "systemd" / example).read_text()
    documented = (set(re.findall(r"^#?\s*(\w+)\s*=", text, re.M))  # key = value
                  | set(re.findall(r"^#?\s*\[+(\w+)\]+", text, re.M))  # [table], [[table]]
                  | set(re.findall(r"[{,]\s*(\w+)\s*=", text)))  # inline tables
    assert keys_of(cls) - documented == set()
    load(str(ROOT / "systemd" / example), {})


# -- totality --------------------------------------------------------------------------
def key_names(cls: type[Any]) -> list[str]:
    return sorted(keys_of(cls))


TOML_SCALARS = st.one_of(
    st.booleans(), st.integers(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["239.1.2.3", "10.0.0.1", "ff05::2:7ffe", "239.69.0.0/16", "224.2.0.0/16",
                     "lo", "info", "sqlite", "postgresql", "127.0.0.1:80", "http://h/",
                     "/tmp", "nogroup", "aes67", "full", "239.255.0.0-239.255.0.9", ""]),
    st.dates(), st.datetimes())


def toml_values(keys: list[str]) -> st.SearchStrategy[Any]:
    names = st.sampled_from(keys) | st.text(min_size=1, max_size=8)
    return st.recursive(TOML_SCALARS, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(names, inner, max_size=5)), max_leaves=20)


def documents(cls: type[Any]) -> st.SearchStrategy[dict[str, Any]]:
    keys = key_names(cls)
    return st.dictionaries(st.sampled_from(keys) | st.text(min_size=1, max_size=8),
                           toml_values(keys), max_size=8)


def check_total(cls: type[Any], document: dict[str, Any]) -> None:
    try:
        from_dict(cls, document)
    except ConfigError as exc:
        assert any(exc.key.startswith(toml_key(key)) for key in document), (exc, document)
        assert exc.reason


@settings(max_examples=400, deadline=None)
@given(documents(SapdConfig))
def test_any_document_loads_as_sapd_config_or_names_a_key(document: dict[str, Any]) -> None:
    check_total(SapdConfig, document)


@settings(max_examples=400, deadline=None)
@given(documents(MadcapdConfig))
def test_any_document_loads_as_madcapd_config_or_names_a_key(document: dict[str, Any]) -> None:
    check_total(MadcapdConfig, document)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_parse_or_name_the_file(data: bytes) -> None:
    try:
        parse_toml(data, "f.toml")
    except ConfigError as exc:
        assert exc.file == "f.toml"


ADDRESSY = st.sampled_from([
    "239.69.0.0/16", "239.255.0.0/16", "239.255.0.0/24", "224.2.0.0/16", "10.0.0.0/8",
    "ff05::/16", "ff15::/96", "ff05::8000:0-ff05::ffff:ffff", "239.255.0.10-239.255.0.1",
    "239.255.0.1-239.255.0.200", "239.255.255.255", "ff05::2:7ffe", "239.255.0.0/33",
    "239.255.0.0-ff05::1", "255.255.255.255/32", "0.0.0.0/0", "::/0", "x", "", "1-2-3",
    "239.255.1.0-239.255.1.10", "239.69.255.255", "ff02::/16", "ff0e::/16",
]) | st.text(max_size=12)
SCOPE_VALUES = st.one_of(ADDRESSY, st.integers(-5, 70_000), st.booleans(),
                         st.floats(allow_nan=True), st.lists(ADDRESSY, max_size=3),
                         st.lists(st.dictionaries(st.sampled_from(["language", "name",
                                                                   "default"]),
                                                  st.text(max_size=3) | st.booleans(),
                                                  max_size=3), max_size=2))


def scope_tables(cls: type[Any]) -> st.SearchStrategy[dict[str, Any]]:
    hints = typing.get_type_hints(cls)
    (entry,) = typing.get_args(hints["scope"])
    names = [f.name for f in dataclasses.fields(entry) if f.name not in ("name", "range")]
    table = st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "local", "x" * 70]),
                                   "range": ADDRESSY},
                                  optional={n: SCOPE_VALUES for n in names})
    return st.fixed_dictionaries({"scope": st.lists(table, max_size=3)})


@settings(max_examples=500, deadline=None)
@given(scope_tables(SapdConfig))
def test_any_sapd_scope_table_loads_or_names_a_key(document: dict[str, Any]) -> None:
    check_total(SapdConfig, document)


@settings(max_examples=500, deadline=None)
@given(scope_tables(MadcapdConfig))
def test_any_madcapd_scope_table_loads_or_names_a_key(document: dict[str, Any]) -> None:
    check_total(MadcapdConfig, document)
