# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Loading signing keys and certificates, and what the kernel accepts of them.

Private to skm.modsign. Needs the ``cryptography`` library; importing this
file without it works, and ``require_cryptography()`` raises a clear error.

The kernel verifies module signatures made with RSA (PKCS#1 v1.5) and, since
5.13, ECDSA on P-256 and P-384. It refuses RSA-PSS, P-521, Ed25519 and Ed448.
No error message here ever contains key bytes or a passphrase.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re
import traceback
from typing import List, NamedTuple, Optional, Tuple

from ansible_collections.skm.modsign.plugins.module_utils import _der as der
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import hash_algorithm, readable_hash

try:
    import cryptography
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

MIN_CRYPTOGRAPHY = "cryptography >= 3.3"


def _fast_load_kwargs():
    # type: () -> dict
    """Since cryptography 39 the costly RSA key check (primality of p and q: 0.25 s for RSA-4096) can be skipped.

    We skip it and instead prove the key with one signature checked against its
    public key (``_self_test``), which is what matters for signing.
    """
    try:
        major = int(cryptography.__version__.split(".")[0])
    except (NameError, ValueError, AttributeError):
        return {}
    return {"unsafe_skip_rsa_key_validation": True} if major >= 39 else {}


_LOAD_KWARGS = _fast_load_kwargs() if HAS_CRYPTOGRAPHY else {}
RSA_SIZES = (2048, 3072, 4096)
EC_CURVES = ("secp256r1", "secp384r1")
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18


def require_cryptography():
    # type: () -> None
    if not HAS_CRYPTOGRAPHY:
        raise ModSignError("the Python library %s is required for this operation but is not installed "
                           "on this host" % MIN_CRYPTOGRAPHY)


def hash_instance(name):
    # type: (str) -> "hashes.HashAlgorithm"
    return {
        "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
        "sha3-256": hashes.SHA3_256, "sha3-384": hashes.SHA3_384, "sha3-512": hashes.SHA3_512,
        "sha1": hashes.SHA1, "sha224": hashes.SHA224,   # verifying old signatures only (see _pkcs7.WEAK_HASHES)
    }[readable_hash(name).name]()


def _pem_blocks(data, kind):
    # type: (bytes, bytes) -> List[bytes]
    """Every PEM block whose label ends with ``kind`` (e.g. b"PRIVATE KEY")."""
    blocks = []
    pos = 0
    while True:
        start = data.find(b"-----BEGIN ", pos)
        if start < 0:
            return blocks
        label_end = data.find(b"-----", start + 11)
        if label_end < 0:
            return blocks
        label = data[start + 11:label_end]
        end_marker = b"-----END " + label + b"-----"
        end = data.find(end_marker, label_end)
        if end < 0:
            return blocks
        if label.endswith(kind):
            blocks.append(data[start:end + len(end_marker)] + b"\n")
        pos = end + len(end_marker)


def load_private_key(data, passphrase=None, path=None):
    # type: (bytes, Optional[str], Optional[str]) -> object
    """The private key in ``data`` (PEM, possibly the combined key+cert file, or DER).

    Errors name the file and the cause: encrypted without a passphrase, wrong
    passphrase, unsupported key type. They never include key bytes.
    """
    require_cryptography()
    password = passphrase.encode("utf-8") if passphrase else None
    blocks = _pem_blocks(data, b"PRIVATE KEY")
    try:
        if blocks:
            key = serialization.load_pem_private_key(blocks[0], password=password, **_LOAD_KWARGS)
        elif data.startswith(b"-----BEGIN"):
            raise ModSignError("no PEM private key in this file", path)
        else:
            key = serialization.load_der_private_key(data, password=password, **_LOAD_KWARGS)
    except TypeError as exc:
        if "not encrypted" in str(exc):
            raise ModSignError("a passphrase was given but the private key is not encrypted", path)
        raise ModSignError("the private key is encrypted and no passphrase was given", path)
    except UnsupportedAlgorithm:
        raise ModSignError("unsupported private key type (the kernel verifies RSA and ECDSA P-256/P-384)", path)
    except ValueError:
        if password is not None:
            raise ModSignError("cannot decrypt the private key: wrong passphrase, or not a private key", path)
        raise ModSignError("not a readable private key (PEM or DER)", path)
    check_key_supported(key, path)
    if _LOAD_KWARGS and isinstance(key, rsa.RSAPrivateKey):
        _self_test(key, path)
    return key


def _self_test(key, path=None):
    # type: (object, Optional[str]) -> None
    """Refuse an RSA key whose signatures do not verify with its own public key (a corrupt key)."""
    test_digest = b"\x5a" * 32
    try:
        ok = verify_digest(key.public_key(), sign_digest(key, test_digest, "sha256"), test_digest, "sha256")
    except ValueError:
        ok = False
    if not ok:
        raise ModSignError("the private key is inconsistent (its signatures do not verify with its public key)", path)


def load_certificate(data, path=None):
    # type: (bytes, Optional[str]) -> "x509.Certificate"
    """The first certificate in ``data`` (PEM, combined key+cert PEM, or DER)."""
    require_cryptography()
    blocks = _pem_blocks(data, b"CERTIFICATE")
    try:
        if blocks:
            return x509.load_pem_x509_certificate(blocks[0])
        if data.startswith(b"-----BEGIN"):
            raise ModSignError("no PEM certificate in this file", path)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ModSignError("not a valid X.509 certificate (%s)" % exc, path)


def certificate_der(cert):
    # type: ("x509.Certificate") -> bytes
    return cert.public_bytes(serialization.Encoding.DER)


def describe_key(key):
    # type: (object) -> Tuple[str, int]
    """("rsa", bits) or ("ecdsa", bits) for a public or private key."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "rsa", key.key_size
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return "ecdsa", key.curve.key_size
    return type(key).__name__, 0


def check_key_supported(key, path=None):
    # type: (object, Optional[str]) -> None
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        if key.key_size < 2048:
            raise ModSignError("RSA key of %d bits is too small (use 2048, 3072 or 4096)" % key.key_size, path)
        return
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if key.curve.name not in EC_CURVES:
            raise ModSignError("ECDSA curve %s is not accepted by the kernel (use P-256 or P-384)"
                               % key.curve.name, path)
        return
    raise ModSignError("%s keys cannot sign kernel modules (the kernel verifies RSA and ECDSA P-256/P-384)"
                       % type(key).__name__.lstrip("_"), path)


def check_hash_for_key(key, hash_name, path=None):
    # type: (object, str, Optional[str]) -> None
    """Refuse key/hash pairs the kernel would not verify."""
    name = hash_algorithm(hash_name).name
    key_type, bits = describe_key(key)
    if key_type == "ecdsa" and hash_algorithm(name).size * 8 < bits:
        # The kernel's certs/Kconfig asks for "a strong hash of same or higher bit length" than the
        # ECDSA key; a shorter one only weakens the signature. The kernel itself (6.1) loads such a module:
        # refusing it is our policy, and the message says so.
        raise ModSignError("an ECDSA P-%d key needs a hash of at least %d bits, not %s (skm.modsign's policy, "
                           "following the kernel's certs/Kconfig advice; the kernel itself would load it)"
                           % (bits, bits, name), path)


def check_pair(key, cert, path=None):
    # type: (object, "x509.Certificate", Optional[str]) -> None
    """Refuse a private key that does not belong to the certificate."""
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, fmt) != \
            cert.public_key().public_bytes(serialization.Encoding.DER, fmt):
        raise ModSignError("the private key does not match the certificate", path)


def not_after(cert):
    # type: ("x509.Certificate") -> datetime.datetime
    value = getattr(cert, "not_valid_after_utc", None)
    if value is None:
        value = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    return value


def not_before(cert):
    # type: ("x509.Certificate") -> datetime.datetime
    value = getattr(cert, "not_valid_before_utc", None)
    if value is None:
        value = cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)
    return value


# The validity rule, one for every module (README "Certificate validity dates").
# The kernel does not look at a certificate's dates when it loads a module: x509_public_key.c only prints
# them, and pkcs7_verify.c compares them only with a signing-time signed attribute, which sign-file and we
# never put in a module signature. So the dates are our policy, applied where we make something new with a
# certificate: skm_sign signs, skm_mok_enroll stages an enrollment, skm_genkey keeps a key - only while
# notBefore <= now <= notAfter. Verification (the audit, the gate) and distribution of old generations
# (skm_certificates) ignore the dates, as the kernel does.

def _format_time(moment):
    # type: (datetime.datetime) -> str
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def check_valid_now(valid_from, valid_to, path=None, now=None):
    # type: (datetime.datetime, datetime.datetime, Optional[str], Optional[datetime.datetime]) -> None
    """Refuse a certificate outside its validity window (see the rule above)."""
    moment = now or datetime.datetime.now(datetime.timezone.utc)
    if moment < valid_from:
        raise ModSignError("the certificate is not valid before %s (this host's clock says %s): we sign, enroll "
                           "and keep only certificates inside their validity dates"
                           % (_format_time(valid_from), _format_time(moment)), path)
    if valid_to < moment:
        raise ModSignError("the certificate expired on %s" % _format_time(valid_to), path)


def check_certificate_dates(cert, path=None, now=None):
    # type: ("x509.Certificate", Optional[str], Optional[datetime.datetime]) -> None
    check_valid_now(not_before(cert), not_after(cert), path, now)


def _decode_time(item):
    # type: (der.TLV) -> datetime.datetime
    text = item.value.decode("ascii")
    if item.tag == _UTC_TIME:           # YYMMDDHHMMSSZ; RFC 5280: 50-99 are 19xx
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text
    elif item.tag != _GENERALIZED_TIME:
        raise ValueError("validity: expected UTCTime or GeneralizedTime, found tag 0x%02x" % item.tag)
    if not re.match(r"^\d{14}Z$", text):
        raise ValueError("validity: time %r is not YYYYMMDDHHMMSSZ" % text)
    return datetime.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=datetime.timezone.utc)


def validity_window(cert_der, path=None):
    # type: (bytes, Optional[str]) -> Tuple[datetime.datetime, datetime.datetime]
    """(notBefore, notAfter) of a DER certificate, read without the cryptography library."""
    try:
        cert = der.read_one(cert_der, der.SEQUENCE)
        fields = der.children(der.expect(der.children(cert.value)[0], der.SEQUENCE, "tbsCertificate").value)
        if fields and fields[0].tag == der.context(0):
            fields = fields[1:]
        times = der.children(der.expect(fields[3], der.SEQUENCE, "validity").value)
        return _decode_time(times[0]), _decode_time(times[1])
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ModSignError("not a valid X.509 certificate (%s)" % exc, path)


_CURVE_OIDS = {"1.2.840.10045.3.1.7": "secp256r1", "1.3.132.0.34": "secp384r1", "1.3.132.0.35": "secp521r1"}


class PublicKeyInfo(NamedTuple):
    algorithm: str                  # OID of the key algorithm
    parameters: Optional[bytes]     # the parameters' DER (for EC: the curve OID), None when absent
    key: bytes                      # the subjectPublicKey BIT STRING's content, unused-bits byte dropped


def subject_public_key_info(cert_der, path=None):
    # type: (bytes, Optional[str]) -> PublicKeyInfo
    """The certificate's SubjectPublicKeyInfo, read without the cryptography library."""
    try:
        fields = der.children(der.children(der.read_one(cert_der, der.SEQUENCE).value)[0].value)
        if fields and fields[0].tag == der.context(0):
            fields = fields[1:]
        algorithm, key = der.children(der.expect(fields[5], der.SEQUENCE, "subjectPublicKeyInfo").value)
        parts = der.children(der.expect(algorithm, der.SEQUENCE, "algorithm").value)
        bits = der.read_one(key.raw, der.BIT_STRING).value
        return PublicKeyInfo(der.decode_oid(parts[0].value), parts[1].raw if len(parts) > 1 else None, bits[1:])
    except (ValueError, IndexError) as exc:
        raise ModSignError("not a valid X.509 certificate (%s)" % exc, path)


def check_certificate_curve(cert_der, path=None):
    # type: (bytes, Optional[str]) -> None
    """Refuse an ECDSA certificate on a curve the kernel does not verify (P-521, brainpool...)."""
    info = subject_public_key_info(cert_der, path)
    if info.algorithm != "1.2.840.10045.2.1" or info.parameters is None:
        return
    oid = der.decode_oid(der.read_one(info.parameters).value) if info.parameters[0] == der.OID else "explicit"
    curve = _CURVE_OIDS.get(oid, oid)
    if curve not in EC_CURVES:
        raise ModSignError("ECDSA curve %s is not accepted by the kernel (use P-256 or P-384)" % curve, path)


def private_key_pem(data):
    # type: (bytes) -> Optional[bytes]
    """The first PEM private key block in ``data`` (a key file or the combined key+cert), or None."""
    blocks = _pem_blocks(data, b"PRIVATE KEY")
    return blocks[0] if blocks else None


def sign_digest(key, digest, hash_name):
    # type: (object, bytes, str) -> bytes
    """The raw signature (PKCS#1 v1.5 or DER ECDSA) over a precomputed digest."""
    prehashed = utils.Prehashed(hash_instance(hash_name))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(digest, padding.PKCS1v15(), prehashed)
    return key.sign(digest, ec.ECDSA(prehashed))


def verify_digest(public_key, signature, digest, hash_name):
    # type: (object, bytes, bytes, str) -> bool
    prehashed = utils.Prehashed(hash_instance(hash_name))
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, digest, padding.PKCS1v15(), prehashed)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, digest, ec.ECDSA(prehashed))
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True
