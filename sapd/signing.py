"""Signed SAP announcements (RFC 2974 section 8.2): CMS detached SignedData, pure.

What is signed is the whole datagram with the authentication length set to zero and
the authentication data left out (:func:`signed_region`); compression comes first.
The signature travels as a ``ContentInfo`` of ``signedData`` with no content
(detached), one ``SignerInfo``, ``signingTime`` among the signed attributes and, as the
RFC advises, no certificates: receivers know the signer's certificate already
(:class:`Anchors`). ECDSA (P-256, P-384) and Ed25519 sign and verify; RSA PKCS#1 v1.5
verifies too (openssl's default), but its signatures are large.

Primitives from ``cryptography``; the CMS structure from ``asn1crypto`` (no DER written
by hand). Bytes and timestamps in, a :class:`Verdict` out: no clock, no files.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sapd import wire


class _OnFirstUse:
    """A module imported on first attribute use. cryptography and asn1crypto cost ~100 ms
    and ~15 MB at start-up, which a sapd without [signing] or [trust] never uses; the
    rest of this module and its Status values are cheap. (importlib's LazyLoader breaks
    on packages that import their own submodules, as cryptography's do.)"""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(importlib.import_module(self._name), attribute)
        setattr(self, attribute, value)  # found directly from now on
        return value


if TYPE_CHECKING:
    from asn1crypto import algos, cms
    from asn1crypto import x509 as asn1_x509
    from cryptography import exceptions, x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
else:
    algos, cms, asn1_x509 = (_OnFirstUse(f"asn1crypto.{m}") for m in ("algos", "cms", "x509"))
    exceptions = _OnFirstUse("cryptography.exceptions")
    x509 = _OnFirstUse("cryptography.x509")
    hashes, serialization = (_OnFirstUse(f"cryptography.hazmat.primitives.{m}")
                             for m in ("hashes", "serialization"))
    ec, ed25519, padding, rsa = (
        _OnFirstUse(f"cryptography.hazmat.primitives.asymmetric.{m}")
        for m in ("ec", "ed25519", "padding", "rsa"))

MAX_AUTH_BYTES = 255 * 4  # the auth length is 8 bits of 32-bit words
MAX_CERTIFICATES = 4  # in one packet: a signer and a few intermediates, no more
_HASHES = frozenset(("sha256", "sha384", "sha512"))


def _hash(name: str) -> hashes.HashAlgorithm:
    """One of _HASHES, as cryptography's algorithm."""
    algorithm: hashes.HashAlgorithm = getattr(hashes, name.upper())()
    return algorithm


class Status(enum.StrEnum):
    """A verification result; also the counter label of a drop under ``require``."""

    VALID = "valid"
    UNSIGNED = "unsigned"
    PGP_UNSUPPORTED = "pgp_unsupported"  # sdr's format: see README, Signed announcements
    UNKNOWN_AUTH_TYPE = "unknown_auth_type"
    MALFORMED_SIGNATURE = "malformed_signature"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    UNKNOWN_SIGNER = "unknown_signer"
    UNTRUSTED_CERTIFICATE = "untrusted_certificate"
    CERTIFICATE_EXPIRED = "certificate_expired"
    DIGEST_MISMATCH = "digest_mismatch"
    BAD_SIGNATURE = "bad_signature"


class SigningError(ValueError):
    """A key, certificate or packet that cannot be signed; the operator is at fault."""


@dataclass(frozen=True, slots=True)
class SignerIdentity:
    """Who signed: the certificate's subject (for people) and its key's fingerprint
    (SHA-256 of the SubjectPublicKeyInfo, what "the same key" means)."""

    subject: str
    key_id: str
    certificate: x509.Certificate


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    signer: SignerIdentity | None = None
    signing_time: float | None = None  # POSIX seconds, from the signed attributes
    detail: str = ""

    @property
    def valid(self) -> bool:
        return self.status is Status.VALID


def signed_region(datagram: bytes) -> bytes:
    """The bytes a SAP signature covers: the datagram with auth length 0 and the
    authentication data excluded (RFC 2974 section 8). The header is checked by the
    caller (wire.decode) first."""
    auth_len = datagram[1] * 4
    source_end = 4 + (16 if datagram[0] & 0x10 else 4)
    return (datagram[:1] + b"\0" + datagram[2:source_end]
            + datagram[source_end + auth_len:])


def key_id(certificate: x509.Certificate) -> str:
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def identity_of(certificate: x509.Certificate) -> SignerIdentity:
    return SignerIdentity(certificate.subject.rfc4514_string(), key_id(certificate),
                          certificate)


def _asn1_certificate(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))


def _utc(when: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).replace(microsecond=0)


# -- signing -------------------------------------------------------------------------
class SigningKey:
    """A private key and its certificate, ready to sign SAP datagrams."""

    def __init__(self, key_pem: bytes, certificate_pem: bytes, *,
                 include_certificate: bool = False) -> None:
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise SigningError(f"not a PEM private key without a passphrase ({exc})") from None
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem)
        except ValueError as exc:
            raise SigningError(f"not a PEM certificate ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            kind = type(key).__name__.removesuffix("PrivateKey") or "this"
            raise SigningError(f"a {kind} key cannot sign SAP announcements here: use "
                               "ECDSA P-256 (or Ed25519); RSA signatures take most of the "
                               "1,020-byte authentication field")
        if isinstance(key, ec.EllipticCurvePrivateKey) and \
                key.curve.name not in ("secp256r1", "secp384r1"):
            raise SigningError(f"curve {key.curve.name} is not supported: use P-256")
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if public != certificate.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
            raise SigningError("the certificate is not the key's (their public keys differ)")
        self._key = key
        self.identity = identity_of(certificate)
        self._asn1_cert = _asn1_certificate(certificate)
        self._include = include_certificate
        self._ed25519 = isinstance(key, ed25519.Ed25519PrivateKey)
        digest = "sha512" if self._ed25519 else (
            "sha384" if isinstance(key, ec.EllipticCurvePrivateKey)
            and key.curve.name == "secp384r1" else "sha256")
        self._digest = digest
        self._signature_algorithm = "ed25519" if self._ed25519 else f"{digest}_ecdsa"

    def signature(self, region: bytes, now: float) -> bytes:
        """The DER ContentInfo (detached SignedData) over ``region`` at time ``now``."""
        digest = hashlib.new(self._digest, region).digest()
        attributes = cms.CMSAttributes([
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            cms.CMSAttribute({"type": "signing_time",
                              "values": [cms.Time({"utc_time": _utc(now)})]}),
            cms.CMSAttribute({"type": "message_digest", "values": [digest]}),
        ])
        to_sign = attributes.dump()  # the DER SET OF, as RFC 5652 5.4 says to sign
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            signature = self._key.sign(to_sign)
        else:
            signature = self._key.sign(to_sign, ec.ECDSA(_hash(self._digest)))
        issuer_serial = cms.IssuerAndSerialNumber({
            "issuer": self._asn1_cert.issuer, "serial_number": self._asn1_cert.serial_number})
        signer_info = cms.SignerInfo({
            "version": "v1",
            "sid": cms.SignerIdentifier({"issuer_and_serial_number": issuer_serial}),
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": self._digest}),
            "signed_attrs": attributes,
            "signature_algorithm": algos.SignedDigestAlgorithm(
                {"algorithm": self._signature_algorithm}),
            "signature": signature,
        })
        signed_data = {
            "version": "v1",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": self._digest})],
            "encap_content_info": {"content_type": "data"},
            "signer_infos": [signer_info],
        }
        if self._include:
            signed_data["certificates"] = [self._asn1_cert]
        return bytes(cms.ContentInfo({"content_type": "signed_data",
                                      "content": cms.SignedData(signed_data)}).dump())

    def sign(self, datagram: bytes, now: float) -> bytes:
        """``datagram`` (unsigned, as wire.encode made it) with a CMS signature inserted.
        Raises SigningError when the signature does not fit the authentication field."""
        if datagram[1]:
            raise SigningError("the datagram already carries authentication data")
        auth = wire.AuthData(version=1, padded=False, auth_type=wire.AuthType.CMS,
                             signature=self.signature(datagram, now)).encode()
        if len(auth) > MAX_AUTH_BYTES:
            raise SigningError(f"the signature takes {len(auth)} bytes; the authentication "
                               f"field holds {MAX_AUTH_BYTES}")
        source_end = 4 + (16 if datagram[0] & 0x10 else 4)
        return (datagram[:1] + bytes([len(auth) // 4]) + datagram[2:source_end] + auth
                + datagram[source_end:])


# -- trust anchors -------------------------------------------------------------------
def load_certificates(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise SigningError(f"not PEM certificates ({exc})") from None


class Anchors:
    """Whom a signature may come from: ``pinned`` signer certificates, trusted as they
    are, and ``authorities`` (a CA bundle) that vouch for signer certificates found
    among ``known`` ones or in the packet (a chain of at most a few intermediates)."""

    def __init__(self, pinned: Iterable[x509.Certificate] = (),
                 authorities: Iterable[x509.Certificate] = (),
                 known: Iterable[x509.Certificate] = ()) -> None:
        self.pinned = {c.fingerprint(hashes.SHA256()): c for c in pinned}
        self.authorities = list(authorities)
        self._by_issuer_serial: dict[tuple[bytes, int], x509.Certificate] = {}
        self._by_key_identifier: dict[bytes, x509.Certificate] = {}
        self.known = [*self.pinned.values(), *known]
        self._pinned_ids = {id(c) for c in self.pinned.values()}
        # identities of the certificates held here, made once (a key hash per packet
        # is a tenth of a verification)
        self._identities = {id(c): identity_of(c) for c in self.known}
        for certificate in self.known:
            self._index(certificate)

    def identity(self, certificate: x509.Certificate) -> SignerIdentity:
        return self._identities.get(id(certificate)) or identity_of(certificate)

    def _index(self, certificate: x509.Certificate) -> None:
        self._by_issuer_serial[(certificate.issuer.public_bytes(),
                                certificate.serial_number)] = certificate
        ski = _subject_key_identifier(certificate)
        if ski is not None:
            self._by_key_identifier[ski] = certificate

    def find(self, sid: cms.SignerIdentifier,
             carried: list[x509.Certificate]) -> x509.Certificate | None:
        if sid.name == "issuer_and_serial_number":
            key = (sid.chosen["issuer"].dump(), sid.chosen["serial_number"].native)
            found = self._by_issuer_serial.get(key)
            if found is None:
                found = next((c for c in carried if (c.issuer.public_bytes(),
                                                     c.serial_number) == key), None)
            return found
        ski = bytes(sid.chosen.native)
        return self._by_key_identifier.get(ski) or next(
            (c for c in carried if _subject_key_identifier(c) == ski), None)

    def trusted(self, certificate: x509.Certificate, carried: list[x509.Certificate],
                at: datetime.datetime) -> Status:
        """VALID when the certificate is pinned, or reaches an authority through
        certificates that are all within their validity at ``at``."""
        chain = certificate
        for _depth in range(MAX_CERTIFICATES + 1):
            if not chain.not_valid_before_utc <= at <= chain.not_valid_after_utc:
                return Status.CERTIFICATE_EXPIRED
            if chain is certificate and id(chain) in self._pinned_ids:
                return Status.VALID
            for authority in self.authorities:
                if _issued_by(chain, authority):
                    if not authority.not_valid_before_utc <= at <= \
                            authority.not_valid_after_utc:
                        return Status.CERTIFICATE_EXPIRED
                    return Status.VALID
            parent = next((c for c in [*carried, *self.known]
                           if c is not chain and _issued_by(chain, c) and is_ca(c)), None)
            if parent is None:
                return Status.UNTRUSTED_CERTIFICATE
            chain = parent
        return Status.UNTRUSTED_CERTIFICATE


def _subject_key_identifier(certificate: x509.Certificate) -> bytes | None:
    try:
        return certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(
            x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, exceptions.InvalidSignature):
        return False
    return True


# -- verification --------------------------------------------------------------------
def verify(datagram: bytes, packet: wire.SapPacket, anchors: Anchors,
           now: float) -> Verdict:
    """Check the authentication data of a decoded datagram against ``anchors``."""
    auth = packet.auth
    if auth is None:
        return Verdict(Status.UNSIGNED)
    if auth.auth_type == wire.AuthType.PGP:
        return Verdict(Status.PGP_UNSUPPORTED, detail="PGP signatures are not verified")
    if auth.auth_type != wire.AuthType.CMS or auth.version != 1:
        return Verdict(Status.UNKNOWN_AUTH_TYPE,
                       detail=f"auth version {auth.version} type {auth.auth_type}")
    try:
        return _verify_cms(signed_region(datagram), auth.signature, anchors, now)
    except Exception as exc:
        # asn1crypto parses lazily, so hostile DER can fail anywhere inside it and
        # with any exception type: every one of them is the peer's malformed signature
        return Verdict(Status.MALFORMED_SIGNATURE, detail=f"{type(exc).__name__}: {exc}"[:200])


def _verify_cms(region: bytes, der: bytes, anchors: Anchors, now: float) -> Verdict:
    info = cms.ContentInfo.load(der, strict=True)
    if info["content_type"].native != "signed_data":
        return Verdict(Status.MALFORMED_SIGNATURE, detail="not a signedData ContentInfo")
    signed: cms.SignedData = info["content"]
    if signed["encap_content_info"]["content"].contents:
        return Verdict(Status.MALFORMED_SIGNATURE, detail="content is not detached")
    signer_infos = signed["signer_infos"]
    if len(signer_infos) != 1:
        return Verdict(Status.MALFORMED_SIGNATURE,
                       detail=f"{len(signer_infos)} signerInfos (expected one)")
    signer_info: cms.SignerInfo = signer_infos[0]
    carried: list[x509.Certificate] = []
    # (.native would convert every certificate; a datagram is checked ~2,000 times a s)
    for choice in signed["certificates"] if signed["certificates"].contents else []:
        if choice.name == "certificate" and len(carried) < MAX_CERTIFICATES:
            carried.append(x509.load_der_x509_certificate(choice.chosen.dump()))
    signed_attrs = signer_info["signed_attrs"]
    if not signed_attrs.contents:
        return Verdict(Status.MALFORMED_SIGNATURE, detail="no signed attributes")
    attributes = {a["type"].native: a["values"] for a in signed_attrs}
    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    if digest_name not in _HASHES:
        return Verdict(Status.UNSUPPORTED_ALGORITHM, detail=f"digest {digest_name}")
    if "message_digest" not in attributes or "content_type" not in attributes:
        return Verdict(Status.MALFORMED_SIGNATURE,
                       detail="contentType or messageDigest attribute missing")
    if attributes["content_type"][0].native != "data":
        return Verdict(Status.MALFORMED_SIGNATURE, detail="contentType is not data")
    signing_time = None
    if "signing_time" in attributes:
        signing_time = attributes["signing_time"][0].native.timestamp()
    if attributes["message_digest"][0].native != hashlib.new(digest_name, region).digest():
        return Verdict(Status.DIGEST_MISMATCH, signing_time=signing_time,
                       detail="messageDigest is not the digest of this packet")
    certificate = anchors.find(signer_info["sid"], carried)
    if certificate is None:
        return Verdict(Status.UNKNOWN_SIGNER, signing_time=signing_time,
                       detail=_describe_sid(signer_info["sid"]))
    identity = anchors.identity(certificate)
    signature = signer_info["signature"].native
    status = _check_signature(certificate, signer_info["signature_algorithm"], digest_name,
                              signature, _as_set(signed_attrs))
    if status is not Status.VALID:
        return Verdict(status, identity, signing_time)
    at = _utc(now)
    status = anchors.trusted(certificate, carried, at)
    return Verdict(status, identity, signing_time)


def _as_set(signed_attrs: cms.CMSAttributes) -> bytes:
    """The signed attributes as they were signed: the received contents under the
    universal SET OF tag, not the [0] they travel with (RFC 5652 section 5.4).
    (untag() would deep-copy the parsed attributes: a sixth of a verification.)"""
    return bytes(cms.CMSAttributes(contents=signed_attrs.contents).dump())


def _check_signature(certificate: x509.Certificate, algorithm: algos.SignedDigestAlgorithm,
                     digest_name: str, signature: bytes, data: bytes) -> Status:
    public = certificate.public_key()
    name = algorithm["algorithm"].native
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            if name != "ed25519":
                return Status.UNSUPPORTED_ALGORITHM
            public.verify(signature, data)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            # openssl names the algorithm ecdsa-with-SHA256; older ones id-ecPublicKey
            if algorithm.signature_algo != "ecdsa":
                return Status.UNSUPPORTED_ALGORITHM
            hash_name = digest_name if name == "ecdsa" else algorithm.hash_algo
            public.verify(signature, data, ec.ECDSA(_hash(hash_name)))
        elif isinstance(public, rsa.RSAPublicKey):
            if algorithm.signature_algo != "rsassa_pkcs1v15":
                return Status.UNSUPPORTED_ALGORITHM
            hash_name = digest_name if name == "rsassa_pkcs1v15" else algorithm.hash_algo
            public.verify(signature, data, padding.PKCS1v15(), _hash(hash_name))
        else:
            return Status.UNSUPPORTED_ALGORITHM
    except exceptions.InvalidSignature:
        return Status.BAD_SIGNATURE
    except KeyError:
        return Status.UNSUPPORTED_ALGORITHM
    return Status.VALID


def _describe_sid(sid: cms.SignerIdentifier) -> str:
    if sid.name == "issuer_and_serial_number":
        issuer = sid.chosen["issuer"].human_friendly
        return f"issuer {issuer}, serial {sid.chosen['serial_number'].native}"
    return f"subject key identifier {bytes(sid.chosen.native).hex()}"
