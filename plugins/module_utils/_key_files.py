# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The signing key's files on a host, every generation at once, as skm_genkey lays them out.

Private to skm.modsign; used by skm_certificates. No Ansible imports, no cryptography needed.

    <dir>/<generation>/signing_key.crt   certificate, PEM            0644
    <dir>/<generation>/signing_key.der   the same certificate, DER   0644 (mokutil --import)
    <dir>/<generation>/signing_key.key   private key, PEM            0600 (shared key mode only)
    <dir>/<generation>/signing_key.pem   private key + certificate   0600 (shared key mode only)
    <dir>/current -> <generation>
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import hashlib
import os
import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.skm.modsign.plugins.module_utils import _der as der
from ansible_collections.skm.modsign.plugins.module_utils import _keys as keys
from ansible_collections.skm.modsign.plugins.module_utils._atomic import atomic_write
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

CERT_PEM = "signing_key.crt"
CERT_DER = "signing_key.der"
PRIVATE_FILES = ("signing_key.key", "signing_key.pem")
CURRENT = "current"
_GENERATION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----")


class Generation(NamedTuple):
    name: str
    certificate: str                    # PEM
    private_key: Optional[str] = None   # PEM (shared key mode)
    combined: Optional[str] = None      # private key + certificate, PEM (shared key mode)


class Wanted(NamedTuple):
    path: str
    data: bytes
    mode: int
    secret: bool


class Change(NamedTuple):
    path: str
    action: str         # "write", "remove", "link", "mkdir"
    secret: bool = False


def certificate_der(pem, where):
    # type: (str, str) -> bytes
    """The DER of the first certificate in ``pem`` (what skm_genkey writes as signing_key.der)."""
    match = _PEM_CERT.search(pem)
    if match is None:
        raise ModSignError("no PEM certificate (-----BEGIN CERTIFICATE-----) given", where)
    try:
        return base64.b64decode("".join(match.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        raise ModSignError("the PEM certificate is not valid base64", where)


_PEM_KEY = re.compile(r"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----\s*(.*?)-----END \1-----", re.S)
_OID_RSA = "1.2.840.113549.1.1.1"
_OID_EC = "1.2.840.10045.2.1"


def _private_key_block(pem):
    # type: (str) -> Optional[Tuple[str, str]]
    """(label, body) of the first PEM private key in ``pem``; None when there is none."""
    match = _PEM_KEY.search(pem)
    return (match.group(1), "".join(match.group(2).split())) if match else None


def _rsa_public(rsa_private_key):
    # type: (bytes) -> Tuple[str, bytes]
    """RSAPrivateKey ::= SEQUENCE { version, modulus, publicExponent, ... } -> ("rsa", modulus||exponent)."""
    fields = der.children(der.read_one(rsa_private_key, der.SEQUENCE).value)
    return "rsa", fields[1].raw + fields[2].raw


def _ec_public(ec_private_key):
    # type: (bytes) -> Optional[Tuple[str, bytes]]
    """ECPrivateKey ::= SEQUENCE { version, privateKey, [0] parameters OPTIONAL, [1] publicKey OPTIONAL }."""
    for field in der.children(der.read_one(ec_private_key, der.SEQUENCE).value)[2:]:
        if field.tag == der.context(1):
            return "ec", der.read_one(field.value, der.BIT_STRING).value[1:]     # unused-bits byte dropped
    return None


def private_key_public_part(pem):
    # type: (str) -> Optional[Tuple[str, bytes]]
    """The public half of an unencrypted PEM private key, read without the cryptography library.

    None when it cannot be told without decrypting or computing (an encrypted key; an EC key stored
    without its public point)."""
    block = _private_key_block(pem)
    if block is None or block[0] == "ENCRYPTED PRIVATE KEY" or "Proc-Type: 4,ENCRYPTED" in pem:
        return None
    label, body = block
    data = base64.b64decode(body, validate=True)
    if label == "RSA PRIVATE KEY":
        return _rsa_public(data)
    if label == "EC PRIVATE KEY":
        return _ec_public(data)
    fields = der.children(der.read_one(data, der.SEQUENCE).value)       # PKCS#8 PrivateKeyInfo
    algorithm = der.decode_oid(der.children(fields[1].value)[0].value)
    inner = der.read_one(fields[2].raw, der.OCTET_STRING).value
    if algorithm == _OID_RSA:
        return _rsa_public(inner)
    if algorithm == _OID_EC:
        return _ec_public(inner)
    return None


def certificate_public_part(cert_der):
    # type: (bytes) -> Optional[Tuple[str, bytes]]
    """The certificate's public key in the form private_key_public_part gives."""
    info = keys.subject_public_key_info(cert_der)
    if info.algorithm == _OID_RSA:
        fields = der.children(der.read_one(info.key, der.SEQUENCE).value)
        return "rsa", fields[0].raw + fields[1].raw
    if info.algorithm == _OID_EC:
        return "ec", info.key
    return None


def check_key_matches(pem, certificate_pem, what, where):
    # type: (str, str, str, str) -> None
    """Refuse ``what`` (a private key, PEM) when it belongs to another certificate. The error never
    carries key material. A key we cannot read without its passphrase is left to the caller."""
    try:
        mine = private_key_public_part(pem)
        theirs = certificate_public_part(certificate_der(certificate_pem, where))
    except (ValueError, IndexError, binascii.Error):
        raise ModSignError("%s is not a readable PEM private key" % what, where)
    if _private_key_block(pem) is None:
        raise ModSignError("%s holds no PEM private key" % what, where)
    if mine is not None and theirs is not None and mine != theirs:
        raise ModSignError("%s does not match the certificate (it is the key of another certificate)" % what, where)


def check_generation(gen, where):
    # type: (Generation, str) -> None
    """A generation's private key and combined PEM must belong to its certificate."""
    label = "generation %s: " % gen.name
    for what, text in (("private_key", gen.private_key), ("combined", gen.combined)):
        if text:
            check_key_matches(text, gen.certificate, label + what, where)
    if gen.combined:
        if certificate_der(gen.combined, where) != certificate_der(gen.certificate, where):
            raise ModSignError(label + "combined does not match the certificate (it holds another certificate)",
                               where)
        if gen.private_key and _private_key_block(gen.combined) != _private_key_block(gen.private_key):
            raise ModSignError(label + "combined does not match the certificate: its private key is not "
                               "private_key", where)


def wanted_files(directory, generations):
    # type: (str, Sequence[Generation]) -> List[Wanted]
    out = []
    for gen in generations:
        if not _GENERATION.match(gen.name) or gen.name == CURRENT:
            raise ModSignError("generation name %r is not a plain directory name" % gen.name, directory)
        base = os.path.join(directory, gen.name)
        out.append(Wanted(os.path.join(base, CERT_PEM), gen.certificate.encode("ascii"), 0o644, False))
        out.append(Wanted(os.path.join(base, CERT_DER), certificate_der(gen.certificate, base), 0o644, False))
        for name, text in zip(PRIVATE_FILES, (gen.private_key, gen.combined)):
            if text:
                out.append(Wanted(os.path.join(base, name), text.encode("ascii"), 0o600, True))
    return out


def _differs(want):
    # type: (Wanted) -> bool
    try:
        st = os.lstat(want.path)
        if not os.path.isfile(want.path) or os.path.islink(want.path) or st.st_mode & 0o7777 != want.mode \
                or st.st_uid != os.geteuid() or st.st_size != len(want.data):
            return True
        with open(want.path, "rb") as handle:
            return handle.read() != want.data
    except OSError:
        return True


def plan(directory, generations, current, keep_private_keys):
    # type: (str, Sequence[Generation], str, bool) -> List[Change]
    """What must change so the host holds exactly these files (and no private key unless kept)."""
    changes = []
    for gen in generations:
        if not os.path.isdir(os.path.join(directory, gen.name)):
            changes.append(Change(os.path.join(directory, gen.name), "mkdir"))
    wanted = wanted_files(directory, generations)
    changes.extend(Change(w.path, "write", w.secret) for w in wanted if _differs(w))
    if not keep_private_keys:
        for gen in generations:
            for name in PRIVATE_FILES:
                path = os.path.join(directory, gen.name, name)
                if os.path.lexists(path):
                    changes.append(Change(path, "remove", True))
    link = os.path.join(directory, CURRENT)
    if not (os.path.islink(link) and os.readlink(link) == current):
        changes.append(Change(link, "link"))
    return changes


def apply(directory, generations, current, changes):
    # type: (str, Sequence[Generation], str, Sequence[Change]) -> None
    data = dict((w.path, w) for w in wanted_files(directory, generations))  # type: Dict[str, Wanted]
    for change in changes:
        try:
            if change.action == "mkdir":
                os.makedirs(change.path, 0o755)
                os.chmod(change.path, 0o755)
            elif change.action == "write":
                want = data[change.path]
                atomic_write(change.path, want.data, mode=want.mode)
            elif change.action == "remove":
                os.unlink(change.path)
            else:
                temp = change.path + ".skm-new"
                if os.path.lexists(temp):
                    os.unlink(temp)
                os.symlink(current, temp)
                os.replace(temp, change.path)
        except OSError as exc:
            raise ModSignError("cannot %s (%s)" % (change.action, exc.strerror or exc), change.path)


def _line(path, content, mode):
    # type: (str, bytes, int) -> str
    shown = "present (private key, not shown)" if os.path.basename(path) in PRIVATE_FILES else \
        "sha256 " + hashlib.sha256(content).hexdigest()
    return "%s: %s, mode %04o" % (path, shown, mode)


def describe_host(directory, generations):
    # type: (str, Sequence[Generation]) -> str
    """The generations' files as the host has them, a line each (for --diff): never a private key's bytes."""
    lines = []
    for gen in generations:
        for name in (CERT_PEM, CERT_DER) + PRIVATE_FILES:
            path = os.path.join(directory, gen.name, name)
            try:
                with open(path, "rb") as handle:
                    lines.append(_line(path, handle.read(), os.stat(path).st_mode & 0o7777))
            except OSError:
                continue
    link = os.path.join(directory, CURRENT)
    if os.path.islink(link):
        lines.append("%s -> %s" % (link, os.readlink(link)))
    return "".join(line + "\n" for line in lines)


def describe_wanted(directory, generations, current):
    # type: (str, Sequence[Generation], str) -> str
    """What describe_host will say once the files are in place."""
    lines = [_line(w.path, w.data, w.mode) for w in wanted_files(directory, generations)]
    lines.append("%s -> %s" % (os.path.join(directory, CURRENT), current))
    return "".join(line + "\n" for line in lines)
