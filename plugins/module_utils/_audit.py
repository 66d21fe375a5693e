# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The signature state of every module of a kernel, against the certificates it trusts.

Private to skm.modsign; used by skm_module_info (and through it the enforce
role's safety gate). No Ansible imports.

A module is ``trusted`` only when ``_signing.judge`` says so: its signature
names one of the given certificates and verifies over the payload with it,
and the kernel can decompress it (``_verdicts.judge_container``; otherwise
``bad_container``). Everything else (unsigned, another key, bad signature,
unreadable) is not.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shutil
import subprocess
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ansible_collections.skm.modsign.plugins.module_utils import _der as der
from ansible_collections.skm.modsign.plugins.module_utils import _keys as keys
from ansible_collections.skm.modsign.plugins.module_utils import _signing as signing
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._files import display_path, read_regular
from ansible_collections.skm.modsign.plugins.module_utils._gate import read_kconfig
from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import format_serial, name_to_text
from ansible_collections.skm.modsign.plugins.module_utils._verdicts import (
    BAD_CONTAINER, CacheUse, Decompression, Judged, builtin_certificates_of, decompression_of, judge_container,
    judge_paths,
)

STATES = (signing.TRUSTED, signing.UNSIGNED, signing.UNKNOWN_KEY, signing.BAD_SIGNATURE, BAD_CONTAINER,
          signing.UNPARSEABLE)
MAX_CERTIFICATE_FILE_BYTES = 1 << 20
_OID_CN = "2.5.4.3"
_PEM_CERT = re.compile(b"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


# ---------------------------------------------------------------- which kernels

def _version_key(version):
    # type: (str) -> List[Any]
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-+~_]", version)]


def default_boot_kernel(boot_dir="/boot", modules_root="/lib/modules"):
    # type: (str, str) -> Tuple[Optional[str], str]
    """The kernel version the next boot will most likely start, and how it was found.

    In order: ``grubby --default-kernel`` (BLS: Fedora/RHEL), the ``vmlinuz``
    link (Debian ``/vmlinuz``, SUSE ``/boot/vmlinuz``), else the newest
    version under ``modules_root`` (what GRUB's generated menu lists first).
    """
    grubby = shutil.which("grubby")
    if grubby:
        proc = subprocess.run([grubby, "--default-kernel"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              check=False)
        image = proc.stdout.decode("utf-8", "replace").strip()
        if proc.returncode == 0 and os.path.basename(image).startswith("vmlinuz-"):
            return os.path.basename(image)[len("vmlinuz-"):], "grubby --default-kernel"
    for link in ("/vmlinuz", os.path.join(boot_dir, "vmlinuz")):
        if os.path.islink(link):
            target = os.path.basename(os.path.realpath(link))
            if target.startswith("vmlinuz-"):
                return target[len("vmlinuz-"):], link
    try:
        versions = [v for v in os.listdir(modules_root) if os.path.isdir(os.path.join(modules_root, v))]
    except OSError:
        versions = []
    if versions:
        return sorted(versions, key=_version_key)[-1], "newest in %s" % modules_root
    return None, "none found"


# ---------------------------------------------------------------- trusted certificates

def certificates_in_file(path):
    # type: (str) -> List[bytes]
    """Every certificate in a PEM file (DER each), or the file itself when it is DER."""
    data = read_regular(path, "the certificate file", MAX_CERTIFICATE_FILE_BYTES)
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        if data.lstrip().startswith(b"-----BEGIN"):
            raise ModSignError("no PEM certificate in this file", path)
        return [data]
    return [keys.certificate_der(keys.load_certificate(block, path)) for block in blocks]


def describe_certificate(cert_id, source):
    # type: (Any, str) -> Dict[str, Any]
    return {"subject": name_to_text(cert_id.subject), "issuer": name_to_text(cert_id.issuer),
            "serial": format_serial(cert_id.serial), "skid": cert_id.skid.hex() if cert_id.skid else None,
            "fingerprint_sha256": cert_id.fingerprint, "source": source}


def load_trusted(cert_files, images, cache_dir=None, write_cache=True):
    # type: (Sequence[str], Sequence[str], Optional[str], bool) -> Tuple[List[signing.TrustedCertificate], List[Dict[str, Any]]]
    """Trusted certificates from files and from kernel images' built-in keyrings (unusable key types skipped)."""
    trusted, described = [], []
    seen = set()
    sources = [(der_bytes, path) for path in cert_files for der_bytes in certificates_in_file(path)]
    for image in images:
        sources.extend((cert.der, "built into %s" % image)
                       for cert in builtin_certificates_of(image, cache_dir, write_cache))
    for der_bytes, source in sources:
        try:
            cert = signing.TrustedCertificate.from_bytes(der_bytes, source)
        except ModSignError:
            if source in cert_files:
                raise
            continue  # a built-in certificate of a type that cannot sign modules
        if cert.id.der in seen:
            continue
        seen.add(cert.id.der)
        trusted.append(cert)
        described.append(describe_certificate(cert.id, source))
    return trusted, described


# ---------------------------------------------------------------- modules

def common_name(name_der):
    # type: (Optional[bytes]) -> Optional[str]
    """The CN of a DER Name (what modinfo prints as ``signer``)."""
    if not name_der:
        return None
    try:
        for rdn in der.children(der.read_one(name_der, der.SEQUENCE).value):
            for atv in der.children(rdn.value):
                attr_oid, value = der.children(atv.value)[:2]
                if der.decode_oid(attr_oid.value) == _OID_CN:
                    return value.value.decode("utf-8", "replace")
    except (ValueError, IndexError):
        return None
    return None


def describe_module(judged, decompression):
    # type: (Judged, Decompression) -> Dict[str, Any]
    """One module's state, with the signer as modinfo shows it (signer, sig_key, sig_hashalgo) and, when it is
    compressed, who decompresses it."""
    verdict = judge_container(judged, decompression)
    entry = {"path": display_path(judged.path), "state": verdict.state}  # type: Dict[str, Any]
    if verdict.signer is not None:
        signer = verdict.signer
        entry["signer"] = common_name(signer.issuer) if signer.skid is None else None
        entry["sig_key"] = signer.skid.hex().upper() if signer.skid is not None else format_serial(signer.serial or 0)
        entry["sig_hashalgo"] = verdict.hash_name
    if verdict.state == signing.TRUSTED and verdict.certificate is not None:
        entry["trusted_by"] = name_to_text(verdict.certificate.subject)
    by = decompression.of(judged.container)
    if by is not None:
        entry["container"] = judged.container
        entry["decompressed_by"] = by
    if verdict.reason:
        entry["reason"] = verdict.reason
    return entry


def kernel_decompression(config_path):
    # type: (str) -> Decompression
    """Who decompresses the modules of the kernel whose config is at ``config_path`` (which may be missing)."""
    if not os.path.lexists(config_path):
        return decompression_of(None, config_path)
    text = read_regular(config_path, "the kernel config").decode("utf-8", "replace")
    return decompression_of(read_kconfig(text), config_path)


def decompression_by_kernel(paths, modules_root, boot_dir):
    # type: (Sequence[str], str, str) -> List[Tuple[List[str], Decompression]]
    """``paths`` grouped by the kernel whose module tree (``<modules_root>/<version>``) holds them, each group with
    who decompresses for that kernel (its ``<boot_dir>/config-<version>``); paths outside every tree: unknown."""
    root = os.path.realpath(modules_root) + os.sep
    groups = {}  # type: Dict[Optional[str], List[str]]
    for path in paths:
        real = os.path.realpath(path)
        version = real[len(root):].split(os.sep, 1)[0] if real.startswith(root) else None
        groups.setdefault(version, []).append(path)
    return [(group, kernel_decompression(os.path.join(boot_dir, "config-" + version)) if version
             else decompression_of(None))
            for version, group in sorted(groups.items(), key=lambda item: item[0] or "")]


def audit(paths, trusted, workers=0, cache_dir=None, write_cache=True, decompression=None):
    # type: (Sequence[str], Sequence[signing.TrustedCertificate], int, Optional[str], bool, Optional[Decompression]) -> Tuple[List[Dict[str, Any]], CacheUse]
    """Every module's entry (see describe_module), and how much the verdict cache (if any) answered.

    ``decompression``: who decompresses the modules (default: unknown, judged as strictly as in-kernel).
    """
    decompression = decompression or decompression_of(None)
    judged, cache_use = judge_paths(paths, trusted, workers, cache_dir, write_cache)
    return [describe_module(one, decompression) for one in judged], cache_use


def summary(entries):
    # type: (Sequence[Dict[str, Any]]) -> Dict[str, int]
    counts = dict((state, 0) for state in STATES)
    for entry in entries:
        counts[entry["state"]] += 1
    counts["total"] = len(entries)
    return counts
