# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PKCS#7 / CMS SignedData as scripts/sign-file makes it, and the reader the audit needs.

Private to skm.modsign. Pure DER work, no crypto library: the host side of
controller mode uses it without ``cryptography``.

sign-file (OpenSSL CMS with CMS_NOCERTS | CMS_BINARY | CMS_DETACHED |
CMS_NOSMIMECAP | CMS_NOATTR) writes::

    ContentInfo ::= SEQUENCE { contentType signedData, [0] EXPLICIT SignedData }
    SignedData  ::= SEQUENCE {
        version           1 (3 when the signer is named by SKID),
        digestAlgorithms  SET { AlgorithmIdentifier (no parameters) },
        encapContentInfo  SEQUENCE { id-data }            -- detached: no content
        signerInfos       SET { SignerInfo } }            -- no certificates, no CRLs
    SignerInfo  ::= SEQUENCE {
        version             1 (issuer+serial) or 3 ([0] SKID),
        sid                 IssuerAndSerialNumber | [0] IMPLICIT SubjectKeyIdentifier,
        digestAlgorithm     AlgorithmIdentifier (no parameters),
        signatureAlgorithm  rsaEncryption + NULL, or ecdsa-with-SHAxxx (no parameters),
        signature           OCTET STRING }                -- no signed attributes

The kernel's pkcs7 parser rejects signed attributes on module signatures
and wants detached data.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import functools
import hashlib
from typing import Dict, List, NamedTuple, Optional, Tuple

from ansible_collections.skm.modsign.plugins.module_utils import _der as der
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_DATA = "1.2.840.113549.1.7.1"
OID_RSA = "1.2.840.113549.1.1.1"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_SKID = "2.5.29.14"
# Key algorithms the kernel does not verify module signatures with, and why.
REFUSED_KEY_ALGORITHMS = {
    "1.2.840.113549.1.1.10": "RSA-PSS keys cannot sign kernel modules (the kernel verifies RSA PKCS#1 v1.5 only)",
    "1.3.101.112": "Ed25519 keys cannot sign kernel modules (the kernel verifies RSA and ECDSA)",
    "1.3.101.113": "Ed448 keys cannot sign kernel modules (the kernel verifies RSA and ECDSA)",
}


class HashAlgorithm(NamedTuple):
    name: str          # as sign-file and CONFIG_MODULE_SIG_HASH spell it
    oid: str
    hashlib_name: str
    ecdsa_oid: str     # ecdsa-with-<hash>
    size: int          # digest bytes


HASHES = {
    h.name: h
    for h in (
        HashAlgorithm("sha256", "2.16.840.1.101.3.4.2.1", "sha256", "1.2.840.10045.4.3.2", 32),
        HashAlgorithm("sha384", "2.16.840.1.101.3.4.2.2", "sha384", "1.2.840.10045.4.3.3", 48),
        HashAlgorithm("sha512", "2.16.840.1.101.3.4.2.3", "sha512", "1.2.840.10045.4.3.4", 64),
        HashAlgorithm("sha3-256", "2.16.840.1.101.3.4.2.8", "sha3_256", "2.16.840.1.101.3.4.3.10", 32),
        HashAlgorithm("sha3-384", "2.16.840.1.101.3.4.2.9", "sha3_384", "2.16.840.1.101.3.4.3.11", 48),
        HashAlgorithm("sha3-512", "2.16.840.1.101.3.4.2.10", "sha3_512", "2.16.840.1.101.3.4.3.12", 64),
    )
}  # type: Dict[str, HashAlgorithm]
# Hashes we read but never sign with: kernel 6.1 still loads modules signed with them (CONFIG_MODULE_SIG_SHA1,
# _SHA224 until 6.2-6.4 removed them), so a module may carry one; it is reported and can be re-signed.
WEAK_HASHES = {
    h.name: h
    for h in (
        HashAlgorithm("sha1", "1.3.14.3.2.26", "sha1", "1.2.840.10045.4.1", 20),
        HashAlgorithm("sha224", "2.16.840.1.101.3.4.2.4", "sha224", "1.2.840.10045.4.3.1", 28),
    )
}  # type: Dict[str, HashAlgorithm]
_READABLE = dict(HASHES, **WEAK_HASHES)
_HASH_BY_OID = dict((h.oid, h) for h in _READABLE.values())
_HASH_BY_ECDSA_OID = dict((h.ecdsa_oid, h) for h in _READABLE.values())
# RSA signature algorithm OIDs the kernel also accepts (sha256WithRSAEncryption, ...).
_RSA_WITH_HASH = {
    "1.2.840.113549.1.1.5": "sha1",
    "1.2.840.113549.1.1.14": "sha224",
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
}


def hash_algorithm(name):
    # type: (str) -> HashAlgorithm
    try:
        return HASHES[name.lower().replace("_", "-")]
    except KeyError:
        raise ModSignError("unsupported hash %r; the kernel verifies %s" % (name, ", ".join(sorted(HASHES))))


def readable_hash(name):
    # type: (str) -> HashAlgorithm
    """``hash_algorithm``, or one of the WEAK_HASHES a signature may carry (for reading and verifying only)."""
    weak = WEAK_HASHES.get(name.lower().replace("_", "-"))
    return weak if weak is not None else hash_algorithm(name)


def digest(data, hash_name):
    # type: (bytes, str) -> bytes
    return hashlib.new(readable_hash(hash_name).hashlib_name, data).digest()


class SignerId(NamedTuple):
    """How a signature names its signer: issuer+serial (raw DER) or SKID."""

    issuer: Optional[bytes]   # the issuer Name, DER, exactly as in the certificate
    serial: Optional[int]
    skid: Optional[bytes]

    def describe(self):
        # type: () -> str
        if self.skid is not None:
            return "skid %s" % self.skid.hex()
        return "issuer %s serial %s" % (name_to_text(self.issuer or b""), format_serial(self.serial or 0))


class CertificateId(NamedTuple):
    """The parts of an X.509 certificate a module signature can refer to."""

    issuer: bytes
    serial: int
    skid: Optional[bytes]
    subject: bytes
    public_key_algorithm: str   # OID of the SubjectPublicKeyInfo algorithm
    der: bytes

    def matches(self, signer):
        # type: (SignerId) -> bool
        if signer.skid is not None:
            return self.skid == signer.skid
        return self.issuer == signer.issuer and self.serial == signer.serial

    @property
    def fingerprint(self):
        # type: () -> str
        return hashlib.sha256(self.der).hexdigest()


class SignerInfo(NamedTuple):
    signer: SignerId
    hash_name: str
    key_algorithm: str          # "rsa" or "ecdsa"
    signature: bytes
    has_signed_attributes: bool


def format_serial(serial):
    # type: (int) -> str
    """Serial as modinfo prints sig_key: colon-separated upper-case hex bytes.

    A negative serial (DER allows it, RFC 5280 does not) prints its magnitude, as kmod's
    BN_bn2bin does, instead of failing.
    """
    serial = abs(serial)
    raw = serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")
    return ":".join("%02X" % b for b in raw)


_NAME_ATTRS = {
    "2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
    "2.5.4.11": "OU", "1.2.840.113549.1.9.1": "emailAddress",
}


def name_to_text(name_der):
    # type: (bytes) -> str
    """A readable one-line form of a DER Name (for reports, not for matching)."""
    try:
        parts = []
        for rdn in der.children(der.read_one(name_der, der.SEQUENCE).value):
            for atv in der.children(rdn.value):
                attr_oid, value = der.children(atv.value)[:2]
                key = der.decode_oid(attr_oid.value)
                parts.append("%s=%s" % (_NAME_ATTRS.get(key, key), value.value.decode("utf-8", "replace")))
        return ", ".join(parts)
    except (ValueError, IndexError):
        return name_der.hex()


def _algorithm_identifier(oid, null_parameters=False):
    # type: (str, bool) -> bytes
    return der.sequence(der.oid(oid), der.encode(der.NULL, b"") if null_parameters else b"")


def certificate_id(cert_der, path=None):
    # type: (bytes, Optional[str]) -> CertificateId
    """Read issuer, serial, SKID, subject and key algorithm from a DER certificate."""
    try:
        cert = der.read_one(cert_der, der.SEQUENCE)
        tbs = der.expect(der.children(cert.value)[0], der.SEQUENCE, "tbsCertificate")
        fields = der.children(tbs.value)
        if fields and fields[0].tag == der.context(0):
            fields = fields[1:]  # explicit version
        serial = der.decode_integer(der.expect(fields[0], der.INTEGER, "serialNumber").value)
        issuer = der.expect(fields[2], der.SEQUENCE, "issuer").raw
        subject = der.expect(fields[4], der.SEQUENCE, "subject").raw
        spki = der.expect(fields[5], der.SEQUENCE, "subjectPublicKeyInfo")
        spki_alg = der.children(der.children(spki.value)[0].value)[0]
        key_algorithm = der.decode_oid(der.expect(spki_alg, der.OID, "algorithm").value)
        skid = None
        for field in fields[6:]:
            if field.tag != der.context(3):
                continue
            for ext in der.children(der.read_one(field.value, der.SEQUENCE).value):
                parts = der.children(ext.value)
                if der.decode_oid(parts[0].value) == OID_SKID:
                    skid = der.read_one(parts[-1].value, der.OCTET_STRING).value
    except (ValueError, IndexError) as exc:
        raise ModSignError("not a valid X.509 certificate (%s)" % exc, path)
    return CertificateId(issuer, serial, skid, subject, key_algorithm, bytes(cert_der))


def refusal(key_algorithm):
    # type: (str) -> str
    return REFUSED_KEY_ALGORITHMS.get(
        key_algorithm, "key algorithm %s cannot sign kernel modules (the kernel verifies RSA and ECDSA)" % key_algorithm)


def check_signing_certificate(cert, path=None):
    # type: (CertificateId, Optional[str]) -> None
    """Refuse up front a certificate whose key type the kernel cannot verify."""
    if cert.public_key_algorithm not in (OID_RSA, OID_EC_PUBLIC_KEY):
        raise ModSignError(refusal(cert.public_key_algorithm), path)


@functools.lru_cache(maxsize=32)
def _fixed_parts(cert, hash_name, use_skid):
    # type: (CertificateId, str, bool) -> Tuple[bytes, bytes, bytes]
    """What every signature by ``cert`` with ``hash_name`` shares: (version, digestAlgorithm, SignerInfo head)."""
    alg = hash_algorithm(hash_name)
    if use_skid:
        if cert.skid is None:
            raise ModSignError("certificate has no subjectKeyIdentifier; cannot name the signer by SKID")
        version = der.integer(3)
        sid = der.encode(der.context(0, constructed=False), cert.skid)
    else:
        version = der.integer(1)
        sid = der.sequence(cert.issuer, der.integer(cert.serial))
    if cert.public_key_algorithm == OID_RSA:
        signature_algorithm = _algorithm_identifier(OID_RSA, null_parameters=True)
    elif cert.public_key_algorithm == OID_EC_PUBLIC_KEY:
        signature_algorithm = _algorithm_identifier(alg.ecdsa_oid)
    else:
        raise ModSignError(refusal(cert.public_key_algorithm))
    digest_algorithm = _algorithm_identifier(alg.oid)
    return version, digest_algorithm, version + sid + digest_algorithm + signature_algorithm


_ENCAP_DATA = der.sequence(der.oid(OID_DATA))   # detached: the content type only
_SIGNED_DATA_OID = der.oid(OID_SIGNED_DATA)


def build_signed_data(cert, hash_name, signature, use_skid=False):
    # type: (CertificateId, str, bytes, bool) -> bytes
    """The PKCS#7 DER that sign-file writes for ``signature`` made by ``cert``'s key."""
    version, digest_algorithm, signer_head = _fixed_parts(cert, hash_name, use_skid)
    signer_info = der.encode(der.SEQUENCE, signer_head + der.octet_string(signature))
    signed_data = der.sequence(version, der.set_of(digest_algorithm), _ENCAP_DATA, der.set_of(signer_info))
    return der.sequence(_SIGNED_DATA_OID, der.encode(der.context(0), signed_data))


@functools.lru_cache(maxsize=256)
def _template(cert, hash_name, use_skid, total):
    # type: (CertificateId, str, bool, int) -> Optional[Tuple[bytes, int]]
    """(everything before the signature, signature length) of a ``total``-byte blob by ``cert``, or None."""
    def overhead(length):
        # type: (int) -> int
        return len(build_signed_data(cert, hash_name, b"\0" * length, use_skid)) - length
    # The headers grow with the signature, so its length lies between these two bounds.
    for length in range(max(1, total - overhead(total)), total - overhead(1) + 1):
        built = build_signed_data(cert, hash_name, b"\0" * length, use_skid)
        if len(built) == total:
            return built[:-length], length
    return None


def own_signature(pkcs7, cert, hash_name, use_skid=False):
    # type: (bytes, CertificateId, str, bool) -> Optional[bytes]
    """The raw signature when ``pkcs7`` is byte for byte what ``build_signed_data`` makes for
    ``cert``, ``hash_name`` and ``use_skid`` around some signature, else None.

    A cheap test (a comparison, no DER parsing) for the common case of an
    idempotent rerun; anything else goes through ``parse_signed_data``.
    """
    template = _template(cert, hash_name, use_skid, len(pkcs7))
    if template is None or not pkcs7.startswith(template[0]):
        return None
    return pkcs7[-template[1]:]


def _signer_id(sid_item):
    # type: (der.TLV) -> SignerId
    if sid_item.tag == der.SEQUENCE:
        issuer, serial = der.children(sid_item.value)[:2]
        return SignerId(der.expect(issuer, der.SEQUENCE, "issuer").raw,
                        der.decode_integer(der.expect(serial, der.INTEGER, "serial").value), None)
    if sid_item.tag == der.context(0, constructed=False):
        return SignerId(None, None, sid_item.value)
    raise ValueError("unknown signer identifier tag 0x%02x" % sid_item.tag)


def _parse_signer_info(item):
    # type: (der.TLV) -> SignerInfo
    parts = der.children(der.expect(item, der.SEQUENCE, "SignerInfo").value)
    signer = _signer_id(parts[1])
    digest_oid = der.decode_oid(der.children(parts[2].value)[0].value)
    rest = parts[3:]
    signed_attributes = bool(rest) and rest[0].tag == der.context(0)
    if signed_attributes:
        rest = rest[1:]
    sig_oid = der.decode_oid(der.children(rest[0].value)[0].value)
    signature = der.expect(rest[1], der.OCTET_STRING, "signature").value
    if digest_oid not in _HASH_BY_OID:
        raise ValueError("unsupported digest algorithm %s" % digest_oid)
    hash_name = _HASH_BY_OID[digest_oid].name
    if sig_oid == OID_RSA or sig_oid in _RSA_WITH_HASH:
        key_algorithm = "rsa"
    elif sig_oid in _HASH_BY_ECDSA_OID:
        key_algorithm = "ecdsa"
    elif sig_oid in REFUSED_KEY_ALGORITHMS:
        raise ValueError("signature algorithm %s: %s" % (sig_oid, REFUSED_KEY_ALGORITHMS[sig_oid]))
    else:
        raise ValueError("unsupported signature algorithm %s" % sig_oid)
    return SignerInfo(signer, hash_name, key_algorithm, signature, signed_attributes)


class UnreadableSignature(ModSignError):
    """A PKCS#7 blob that is one well-formed SignedData envelope exactly filling the trailer's ``sig_len``,
    whose contents we cannot read (an RSA-PSS signer, an unknown digest...).

    Its bounds are proven by the DER, so cutting it off leaves exactly the payload: such a signature can be
    replaced like another key's, unless ``signer`` (the first SignerInfo's, when it can be read) names one
    of our certificates. Anything less sound raises a plain ModSignError (never cut).
    """

    def __init__(self, cause, path=None, signer=None):
        # type: (str, Optional[str], Optional[SignerId]) -> None
        super(UnreadableSignature, self).__init__(cause, path)
        self.signer = signer


def _first_signer(signed_data):
    # type: (der.TLV) -> Optional[SignerId]
    """The first SignerInfo's signer, read as far as it goes (for a signature we cannot read otherwise)."""
    try:
        first = der.children(der.children(signed_data.value)[-1].value)[0]
        return _signer_id(der.children(first.value)[1])
    except (ValueError, IndexError):
        return None


def parse_signed_data(pkcs7, path=None):
    # type: (bytes, Optional[str]) -> List[SignerInfo]
    """The signers of a module's PKCS#7 blob; refuses what the kernel would refuse to parse."""
    try:
        content_info = der.children(der.read_one(pkcs7, der.SEQUENCE).value)
        if der.decode_oid(der.expect(content_info[0], der.OID, "contentType").value) != OID_SIGNED_DATA:
            raise ValueError("content type is not signedData")
        signed_data = der.read_one(der.expect(content_info[1], der.context(0), "content").value, der.SEQUENCE)
    except (ValueError, IndexError) as exc:
        raise ModSignError("unparseable PKCS#7 signature (%s)" % exc, path)
    try:
        fields = der.children(signed_data.value)
        encap = der.children(der.expect(fields[2], der.SEQUENCE, "encapContentInfo").value)
        if len(encap) > 1:
            raise ValueError("signature is not detached (it embeds content)")
        signer_set = der.expect(fields[-1], der.SET, "signerInfos")
        signers = [_parse_signer_info(item) for item in der.children(signer_set.value)]
    except (ValueError, IndexError) as exc:
        raise UnreadableSignature("unreadable PKCS#7 signature (%s)" % exc, path, _first_signer(signed_data))
    if not signers:
        raise UnreadableSignature("PKCS#7 signature has no signer", path)
    return signers
