"""[signing] and [trust]: every mistake stops sapd with the key and the file named."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sapd.config import load as load_sapd
from sapd.plumbing.config import ConfigError
from tests import certs


def error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sapd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_sapd(str(path), {})
    return str(caught.value).removeprefix(f"{path}: ")


@pytest.fixture
def pems(tmp_path: Path) -> tuple[Path, Path]:
    return certs.make("studio-a").write(tmp_path, "studio-a")


def test_signing_key_and_certificate_load(tmp_path: Path, pems: tuple[Path, Path]) -> None:
    key, cert = pems
    path = tmp_path / "ok.toml"
    path.write_text(f'[signing]\nkey = "{key}"\ncertificate = "{cert}"\n'
                    f'[trust]\ndefault = "prefer"\npinned = ["{cert}"]\n'
                    '[[trust.policy]]\nmode = "require"\nrange = "239.69.0.0/16"\n'
                    f'[[trust.signer]]\ncertificate = "{cert}"\nranges = ["239.69.0.0/16"]\n')
    config = load_sapd(str(path), {})
    signing_key = config.signing.signing_key()
    assert signing_key is not None and signing_key.identity.subject == "CN=studio-a"
    policy = config.trust.trust_policy()
    assert policy is not None and policy.mode_for("", ["239.69.1.1"]) == "require"


@pytest.mark.parametrize(("text", "expected"), [
    ('[signing]\nkey = "{key}"\n', "signing.certificate: key and certificate go together"),
    ('[signing]\nkey = "/nonexistent.key"\ncertificate = "{cert}"\n',
     "signing.key: cannot read /nonexistent.key"),
    ('[signing]\nkey = "{cert}"\ncertificate = "{cert}"\n', "signing.key: not a PEM private key"),
    ('[signing]\nkey = "{key}"\ncertificate = "{key}"\n',
     "signing.key: not a PEM certificate"),
    ('[trust]\ndefault = "prefer"\n', "trust.pinned: a mode other than off needs trust anchors"),
    ('[trust]\ndefault = "maybe"\n', "trust.default: 'maybe' is not one of"),
    ('[trust]\npinned = ["{key}"]\n', "trust.pinned[0]: "),
    ('[[trust.policy]]\nmode = "prefer"\n', "trust.policy[0].scope: give either scope or range"),
    ('[[trust.signer]]\nsubject = "CN=x"\nranges = ["10.0.0.0/8"]\n',
     "trust.signer[0].ranges[0]: 10.0.0.0/8 is not multicast"),
    ('[trust]\nsigning_time_window = 1\n', "trust.signing_time_window: must be within"),
])
def test_a_signing_mistake_names_its_key(tmp_path: Path, pems: tuple[Path, Path], text: str,
                                         expected: str) -> None:
    key, cert = pems
    assert error(tmp_path, text.format(key=key, cert=cert)).startswith(expected)


def test_an_rsa_key_is_refused_with_the_reason(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = tmp_path / "rsa.key"
    key.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    _, cert = certs.make("x").write(tmp_path, "x")
    message = error(tmp_path, f'[signing]\nkey = "{key}"\ncertificate = "{cert}"\n')
    assert message.startswith("signing.key: a RSA key cannot sign") and "P-256" in message
