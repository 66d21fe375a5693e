# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signing keys and their certificates: make, inspect, decide when to rotate, write.

Private to skm.modsign. Needs ``cryptography`` (see ``_keys.require_cryptography``).

The certificate carries what the kernel's certs/x509.genkey asks for
(basicConstraints critical CA:FALSE, keyUsage digitalSignature,
subjectKeyIdentifier, authorityKeyIdentifier) plus extendedKeyUsage
codeSigning, which some MOK / machine-keyring setups require. The ``ca``
profile makes CA:TRUE + keyCertSign for kernels whose machine keyring only
takes CA certificates.

One key generation is a set of files in one directory::

    signing_key.key   private key, PEM (PKCS#8; encrypted when a passphrase is given), 0600
    signing_key.crt   certificate, PEM    (CONFIG_SYSTEM_TRUSTED_KEYS, DKMS mok_certificate)
    signing_key.der   certificate, DER    (mokutil --import)
    signing_key.pem   private key + certificate, PEM (CONFIG_MODULE_SIG_KEY), 0600
    skm-key.json      what was asked for and when it was made (the rotation clock)
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.skm.modsign.plugins.module_utils import _key_set as key_set
from ansible_collections.skm.modsign.plugins.module_utils import _keys as keys
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._files import read_bytes
from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import certificate_id, hash_algorithm

try:
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:
    pass  # keys.require_cryptography() reports it

FILES = {
    "private_key": "signing_key.key",
    "certificate": "signing_key.crt",
    "certificate_der": "signing_key.der",
    "combined": "signing_key.pem",
    "metadata": "skm-key.json",
}
SECRET_FILES = ("private_key", "combined")
ORDER = ("certificate", "certificate_der", "private_key", "combined", "metadata")   # metadata, the marker, last
KEY_SIZES = {"rsa": (2048, 3072, 4096), "ecdsa": (256, 384)}
PROFILES = ("signing", "ca")
REGENERATE = ("never", "fail", "partial_idempotence", "full_idempotence", "always")
_SUBJECT_KEYS = {
    "CN": "COMMON_NAME", "commonName": "COMMON_NAME", "O": "ORGANIZATION_NAME", "organizationName":
    "ORGANIZATION_NAME", "OU": "ORGANIZATIONAL_UNIT_NAME", "C": "COUNTRY_NAME", "ST": "STATE_OR_PROVINCE_NAME",
    "L": "LOCALITY_NAME", "emailAddress": "EMAIL_ADDRESS",
}


class KeySpec(NamedTuple):
    key_type: str = "rsa"           # rsa or ecdsa
    key_size: int = 4096            # RSA bits, or the curve size (256 = P-256, 384 = P-384)
    hash_name: str = "sha512"       # certificate self-signature hash; also the recorded module hash
    subject: Dict[str, str] = {"CN": "skm.modsign module signing key"}
    validity_days: int = 36500      # like the kernel's x509.genkey
    profile: str = "signing"


def check_spec(spec):
    # type: (KeySpec) -> None
    if spec.key_type not in KEY_SIZES:
        raise ModSignError("key_type must be rsa or ecdsa, not %r" % spec.key_type)
    if spec.key_size not in KEY_SIZES[spec.key_type]:
        raise ModSignError("%s keys of size %s are not supported (choose %s)"
                           % (spec.key_type, spec.key_size, ", ".join(str(s) for s in KEY_SIZES[spec.key_type])))
    bits = hash_algorithm(spec.hash_name).size * 8
    if spec.key_type == "ecdsa" and bits < spec.key_size:
        raise ModSignError("an ECDSA P-%d key needs a hash of at least %d bits, not %s"
                           % (spec.key_size, spec.key_size, spec.hash_name))
    if spec.profile not in PROFILES:
        raise ModSignError("profile must be one of %s" % ", ".join(PROFILES))
    if spec.validity_days < 1:
        raise ModSignError("validity_days must be at least 1")
    for key in spec.subject:
        if key not in _SUBJECT_KEYS:
            raise ModSignError("unknown subject attribute %r (use %s)" % (key, ", ".join(sorted(_SUBJECT_KEYS))))


def parse_refresh(text):
    # type: (str) -> Optional[datetime.timedelta]
    """'7d', '30days', '12h', '2w', '1y' -> timedelta; 'never' -> None; 'always' -> timedelta(0)."""
    value = str(text).strip().lower()
    if value == "never":
        return None
    if value == "always":
        return datetime.timedelta(0)
    match = re.match(r"^(\d+)\s*(h|hours?|d|days?|w|weeks?|m|months?|y|years?)$", value)
    if not match:
        raise ModSignError("refresh %r is not understood: use e.g. 12h, 7d, 30days, 2w, 6m, 1y, always or never"
                           % text)
    number, unit = int(match.group(1)), match.group(2)[0]
    hours = {"h": 1, "d": 24, "w": 24 * 7, "m": 24 * 30, "y": 24 * 365}[unit]
    return datetime.timedelta(hours=number * hours)


def generate_private_key(spec):
    # type: (KeySpec) -> object
    keys.require_cryptography()
    if spec.key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.key_size)
    return ec.generate_private_key(ec.SECP256R1() if spec.key_size == 256 else ec.SECP384R1())


def build_certificate(private_key, spec, now):
    # type: (object, KeySpec, datetime.datetime) -> object
    """A self-signed certificate for ``private_key`` as the kernel's x509.genkey (or the CA profile) asks."""
    name = x509.Name([x509.NameAttribute(getattr(NameOID, _SUBJECT_KEYS[k]), v) for k, v in spec.subject.items()])
    public_key = private_key.public_key()
    ca = spec.profile == "ca"
    builder = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=spec.validity_days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=ca)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    )
    return builder.sign(private_key, keys.hash_instance(spec.hash_name))


class KeyFacts(NamedTuple):
    """The public facts of one key generation (safe to return and show in a diff)."""

    fingerprint: str     # sha256 of the DER certificate
    skid: str
    serial: str
    subject: str
    not_before: str
    not_after: str
    key_type: str
    key_size: int
    hash_name: str
    profile: str
    created: str         # when this generation was made (ISO 8601, UTC)


def _iso(moment):
    # type: (datetime.datetime) -> str
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def facts_of(cert, created, spec_hash, profile):
    # type: (object, str, str, str) -> KeyFacts
    der = keys.certificate_der(cert)
    cid = certificate_id(der)
    key_type, key_size = keys.describe_key(cert.public_key())
    not_before = getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before.replace(
        tzinfo=datetime.timezone.utc)
    return KeyFacts(cid.fingerprint, cid.skid.hex() if cid.skid else "", "%x" % cid.serial,
                    cert.subject.rfc4514_string(), _iso(not_before), _iso(keys.not_after(cert)), key_type,
                    key_size, spec_hash, profile, created)


class Existing(NamedTuple):
    facts: Optional[KeyFacts]
    problem: Optional[str]       # why it cannot be used as it is (None: readable and consistent)
    unreadable: bool = False     # the problem is that the key cannot be read at all (wrong passphrase...)
    conflict: bool = False       # files of the set disagree (a certificate of another key): never guessed
    repairs: Dict[str, bytes] = {}   # kind -> content that makes the set whole again, the key kept


class _KeySource(NamedTuple):
    path: str
    pem: bytes                   # the private key's PEM block, exactly as stored (encrypted or not)


def _key_source(paths):
    # type: (Dict[str, str]) -> Optional[_KeySource]
    """Where the private key is: signing_key.key, else the key block of signing_key.pem; None: no key."""
    for kind in ("private_key", "combined"):
        if os.path.lexists(paths[kind]):
            pem = keys.private_key_pem(read_bytes(paths[kind]))
            if pem is not None or kind == "private_key":
                return _KeySource(paths[kind], pem if pem is not None else read_bytes(paths[kind]))
    return None


def _conflict(path, cause):
    # type: (str, str) -> Existing
    return Existing(None, "%s: %s; the key is kept. Move the wrong file away (skm_genkey then rebuilds it from the "
                          "key), or use regenerate=always to make a new key (the old set is kept)" % (path, cause),
                    conflict=True)


def _existing_certificate(paths, private_key):
    # type: (Dict[str, str], object) -> Tuple[Optional[object], Optional[Existing]]
    """The certificate of the key: signing_key.crt, else .der, else the one in .pem. (None, None): none left."""
    for kind in ("certificate", "certificate_der", "combined"):
        path = paths[kind]
        if not os.path.lexists(path):
            continue
        data = read_bytes(path)
        if kind == "combined" and b"CERTIFICATE-----" not in data:
            continue
        try:
            cert = keys.load_certificate(data, path)
            keys.check_pair(private_key, cert, path)
        except ModSignError as exc:
            whose = ("it holds another certificate" if kind == "combined"
                     else "the private key is " + paths["private_key"])
            return None, _conflict(path, "%s (%s)" % (exc.cause, whose))
        return cert, None
    return None, None


def _combined_conflict(paths, key_pem, passphrase, private_key):
    # type: (Dict[str, str], bytes, Optional[str], object) -> Optional[Existing]
    """signing_key.pem holding a private key other than ours is a second key: never overwritten."""
    if not os.path.lexists(paths["combined"]):
        return None
    other = keys.private_key_pem(read_bytes(paths["combined"]))
    if other is None or other == key_pem:
        return None
    try:
        keys.check_pair(keys.load_private_key(other, passphrase, paths["combined"]),
                        _SelfCertificate(private_key), paths["combined"])
    except ModSignError as exc:
        return _conflict(paths["combined"], "holds a private key other than %s (%s)" % (paths["private_key"],
                                                                                        exc.cause))
    return None


class _SelfCertificate(object):
    """Stands in for a certificate in keys.check_pair: "the certificate of this private key"."""

    def __init__(self, private_key):
        self._public = private_key.public_key()

    def public_key(self):
        return self._public


def _signature_hash_name(cert, default):
    # type: (object, str) -> str
    """The hash of the certificate's self-signature, as skm-key.json records it (cryptography's names)."""
    try:
        name = cert.signature_hash_algorithm.name
    except (AttributeError, UnsupportedAlgorithm):
        return default
    return name if name in ("sha256", "sha384", "sha512", "sha3-256", "sha3-384", "sha3-512") else default


def _profile_of(cert):
    # type: (object) -> str
    try:
        return "ca" if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca else "signing"
    except x509.ExtensionNotFound:
        return "signing"


def _read_metadata(path):
    # type: (str) -> Optional[Dict[str, object]]
    """skm-key.json if it is whole: an object with a well-formed creation time; None otherwise."""
    try:
        meta = json.loads(read_bytes(path).decode("utf-8"))
        created = str(meta["created"])
        datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ")
    except (ModSignError, ValueError, KeyError, TypeError):
        return None
    return meta if isinstance(meta, dict) else None


def _metadata_bytes(facts, made_by="skm.modsign.skm_genkey"):
    # type: (KeyFacts, str) -> bytes
    meta = {"created": facts.created, "key_type": facts.key_type, "key_size": facts.key_size,
            "hash": facts.hash_name, "profile": facts.profile, "fingerprint": facts.fingerprint, "made_by": made_by}
    return (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8")


def inspect(directory, passphrase=None, now=None, spec=None):
    # type: (str, Optional[str], Optional[datetime.datetime], Optional[KeySpec]) -> Optional[Existing]
    """What is in ``directory`` now; None when there is no key there.

    A readable key is never reported as something to replace because files around it are missing:
    the certificate's other forms, the combined PEM and skm-key.json are rebuilt from the key and its
    certificate (``repairs``), and a key whose certificate is gone gets a new certificate (made from
    ``spec``). A certificate or combined PEM that belongs to another key is a conflict: never guessed.
    """
    moment = now or datetime.datetime.now(datetime.timezone.utc)
    paths = dict((k, os.path.join(directory, v)) for k, v in FILES.items())
    try:
        source = _key_source(paths)
        if source is None:
            return None
        private_key = keys.load_private_key(source.pem, passphrase, source.path)
    except ModSignError as exc:
        return Existing(None, str(exc), unreadable=True)
    try:
        cert, conflict = _existing_certificate(paths, private_key)
        conflict = conflict or _combined_conflict(paths, source.pem, passphrase, private_key)
    except ModSignError as exc:
        return Existing(None, str(exc), unreadable=True)
    if conflict is not None:
        return conflict
    repairs = {}  # type: Dict[str, bytes]
    if source.path != paths["private_key"]:
        repairs["private_key"] = source.pem
    meta = _read_metadata(paths["metadata"])
    if cert is None:
        cert = build_certificate(private_key, spec or KeySpec(), moment)
        meta = None
    return _with_repairs(paths, source.pem, cert, meta, spec, repairs, moment)


def _with_repairs(paths, key_pem, cert, meta, spec, repairs, now):
    # type: (Dict[str, str], bytes, object, Optional[Dict[str, object]], Optional[KeySpec], Dict[str, bytes], datetime.datetime) -> Existing
    """The facts of a kept key, and what must be rewritten around it (certificate forms, combined PEM, metadata)."""
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_der = keys.certificate_der(cert)
    current = dict((kind, read_bytes(paths[kind]) if os.path.lexists(paths[kind]) else None)
                   for kind in ("certificate", "certificate_der", "combined"))
    if not _holds_certificate(current["certificate"], cert_der):
        repairs["certificate"] = cert_pem
    if current["certificate_der"] != cert_der:
        repairs["certificate_der"] = cert_der
    if not _holds_certificate(current["combined"], cert_der) or keys.private_key_pem(current["combined"]) != key_pem:
        repairs["combined"] = key_pem + cert_pem
    if meta is None:
        facts = facts_of(cert, _iso(keys.not_before(cert)), _signature_hash_name(cert, (spec or KeySpec()).hash_name),
                         _profile_of(cert))
        repairs["metadata"] = _metadata_bytes(facts, "skm.modsign.skm_genkey (rebuilt from the key and certificate)")
    else:
        facts = facts_of(cert, str(meta["created"]), str(meta.get("hash", "")), str(meta.get("profile", "")))
    try:
        keys.check_certificate_dates(cert, paths["certificate"], now)
    except ModSignError as exc:
        return Existing(facts, exc.cause, repairs=repairs)
    return Existing(facts, None, repairs=repairs)


def _holds_certificate(data, cert_der):
    # type: (Optional[bytes], bytes) -> bool
    if data is None or b"CERTIFICATE-----" not in data:
        return False
    try:
        return keys.certificate_der(keys.load_certificate(data)) == cert_der
    except ModSignError:
        return False


def repair_reason(existing):
    # type: (Existing) -> str
    names = ", ".join(FILES[kind] for kind in ORDER if kind in existing.repairs)
    return "kept the key; rebuilt from the key and its certificate: %s" % names


def mismatch(facts, spec):
    # type: (KeyFacts, KeySpec) -> Optional[str]
    """How an existing key differs from what is asked, or None."""
    wanted = {"key_type": spec.key_type, "key_size": spec.key_size, "hash": spec.hash_name, "profile": spec.profile}
    have = {"key_type": facts.key_type, "key_size": facts.key_size, "hash": facts.hash_name, "profile": facts.profile}
    diffs = ["%s is %s, asked for %s" % (k, have[k], wanted[k]) for k in sorted(wanted) if have[k] != wanted[k]]
    return "; ".join(diffs) or None


def age(facts, now):
    # type: (KeyFacts, datetime.datetime) -> datetime.timedelta
    created = datetime.datetime.strptime(facts.created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    return now - created


def decide(existing, spec, regenerate, refresh, now):
    # type: (Optional[Existing], KeySpec, str, Optional[datetime.timedelta], datetime.datetime) -> Optional[str]
    """Why a new key must be made (None: keep the one there). Raises when ``regenerate`` forbids what is needed."""
    if existing is None:
        return "no key yet"
    if regenerate == "always":
        return "regenerate=always"
    if existing.conflict:
        raise ModSignError(existing.problem)
    if existing.problem is not None:
        if regenerate == "full_idempotence" or (not existing.unreadable and regenerate == "partial_idempotence"):
            return existing.problem
        hint = "full_idempotence" if existing.unreadable else "partial_idempotence or full_idempotence"
        raise ModSignError("the existing key cannot be used (%s); regenerate=%s keeps it, %s would replace it"
                           % (existing.problem, regenerate, hint))
    different = mismatch(existing.facts, spec)
    if different:
        if regenerate in ("partial_idempotence", "full_idempotence"):
            return different
        if regenerate == "fail":
            raise ModSignError("the existing key does not match the options (%s); regenerate=partial_idempotence "
                               "would replace it" % different)
        return None  # never
    if refresh is not None and regenerate != "never" and age(existing.facts, now) >= refresh:
        return "older than the refresh period (made %s)" % existing.facts.created
    return None


class Generation(NamedTuple):
    facts: KeyFacts
    files: Dict[str, bytes]


def make_generation(spec, passphrase, now):
    # type: (KeySpec, Optional[str], datetime.datetime) -> Generation
    """A new key and certificate, serialized into every file of a generation (not written yet)."""
    check_spec(spec)
    private_key = generate_private_key(spec)
    cert = build_certificate(private_key, spec, now)
    encryption = (serialization.BestAvailableEncryption(passphrase.encode("utf-8")) if passphrase
                  else serialization.NoEncryption())
    key_pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    created = _iso(now)
    facts = facts_of(cert, created, spec.hash_name, spec.profile)
    return Generation(facts, {
        "private_key": key_pem,
        "certificate": cert_pem,
        "certificate_der": keys.certificate_der(cert),
        "combined": key_pem + cert_pem,
        "metadata": _metadata_bytes(facts),
    })


def set_files(files, secret_mode=0o600, public_mode=0o644, kinds=ORDER):
    # type: (Dict[str, bytes], int, int, Sequence[str]) -> List[key_set.KeyFile]
    """The files of a set in writing order (the metadata, the marker of a complete set, last)."""
    return [key_set.KeyFile(FILES[kind], files[kind], secret_mode if kind in SECRET_FILES else public_mode)
            for kind in kinds if kind in files]


def write_generation(directory, generation, secret_mode=0o600, public_mode=0o644):
    # type: (str, Generation, int, int) -> Dict[str, str]
    """Write every file of ``generation`` into ``directory`` as one set; return their paths."""
    key_set.ensure_directory(directory)
    key_set.write_in_place(directory, set_files(generation.files, secret_mode, public_mode))
    return dict((kind, os.path.join(directory, FILES[kind])) for kind in ORDER)


def free_name(base, now):
    # type: (str, datetime.datetime) -> str
    """A generation name not yet taken under ``base`` (two rotations within one second get -1, -2...)."""
    name = generation_name(now)
    suffix = 1
    while os.path.lexists(os.path.join(base, name)):
        name = "%s-%d" % (generation_name(now), suffix)
        suffix += 1
    return name


def generation_name(now):
    # type: (datetime.datetime) -> str
    """The ArchWiki layout names a generation by its date and time."""
    return now.astimezone(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")


def swap_current(base, target_name, link_name="current"):
    # type: (str, str, str) -> None
    """Point ``base/current`` at ``target_name`` atomically (new link beside it, then rename over)."""
    link = os.path.join(base, link_name)
    tmp = os.path.join(base, ".%s.~skm~" % link_name)
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target_name, tmp)
        os.rename(tmp, link)
    except OSError as exc:
        raise ModSignError("cannot switch the current link (%s)" % (exc.strerror or exc), link)


def generations(base):
    # type: (str) -> List[str]
    """Generation directory names under ``base``, oldest first."""
    try:
        names = os.listdir(base)
    except OSError:
        return []
    return sorted(n for n in names if re.match(r"^\d{8}-\d{6}(-\d+)?$", n) and os.path.isdir(os.path.join(base, n)))


def prune(base, keep, protect):
    # type: (str, int, str) -> List[str]
    """Remove the oldest generations beyond ``keep`` (never ``protect``); return what was removed."""
    removed = []
    old = [n for n in generations(base) if n != protect]
    for name in old[:max(0, len(old) - (keep - 1))]:
        directory = os.path.join(base, name)
        for entry in os.listdir(directory):
            os.unlink(os.path.join(directory, entry))
        os.rmdir(directory)
        removed.append(directory)
    return removed
