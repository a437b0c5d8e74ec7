"""Keys and certificates made for a test (real ones: cryptography generates them)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

Key = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass
class Credentials:
    key: Key
    certificate: x509.Certificate

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        key, cert = directory / f"{name}.key", directory / f"{name}.pem"
        key.write_bytes(self.key_pem)
        cert.write_bytes(self.cert_pem)
        return key, cert


def make(common_name: str, *, kind: str = "ec", issuer: Credentials | None = None,
         ca: bool = False, days: float = 30, start_days: float = -1) -> Credentials:
    key: Key = ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" \
        else ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    signer_key = issuer.key if issuer else key
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(issuer.certificate.subject if issuer else name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now + datetime.timedelta(days=start_days))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    algorithm = None if isinstance(signer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return Credentials(key, builder.sign(signer_key, algorithm))
