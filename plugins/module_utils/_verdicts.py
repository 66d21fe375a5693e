# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every module's verdict against a set of certificates, with an optional per-host cache.

Private to skm.modsign; used by the audit (skm_module_info) and the safety gate
(skm_enforce_gate). No Ansible imports.

Checking a kernel's ~4000 modules reads, hashes and verifies ~400 MB. A host that
nothing changed on since the last run should not pay that again, so what was learnt
of a module is kept in a cache file and reused while the module file is provably the
same file with the same content: same device, inode, size, mtime and ctime (in ns).
Any write to a file changes its ctime, which no user-space call can set back, and a
file replaced by rename has a new inode: a changed module is always read again. The
stat is taken before the file is read, so a file changed during the read misses next
time.

What is kept does not depend on the certificates asked about: whether the module is
signed, its signer (issuer+serial or SKID) and hash, and for each certificate that was
tried, by SHA-256 fingerprint, whether the signature verified with it. A verdict is
answered from the cache only when that is enough: unsigned, or no certificate of the
set names the signer (unknown key), or the certificate that names it was tried before.
Otherwise the module is read and verified again. So the gate (kernel keyrings) and the
audit (our certificates) share one file and one pass over the modules.

The certificates built into a kernel image are kept the same way, by the image file's identity, in a second
file: finding them means decompressing the image.

A cache file is used only when it belongs to the user running and nobody else can write
it; otherwise it is ignored and replaced. Unparseable modules are never cached (a read
error may pass).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.skm.modsign.plugins.module_utils import _cache_file as cache_file
from ansible_collections.skm.modsign.plugins.module_utils._files import read_bytes
from ansible_collections.skm.modsign.plugins.module_utils._kernel_image import builtin_certificates
from ansible_collections.skm.modsign.plugins.module_utils._parallel import map_files
from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import CertificateId, SignerId, certificate_id
from ansible_collections.skm.modsign.plugins.module_utils._signing import (
    BAD_SIGNATURE, BAD_SIGNATURE_REASON, TRUSTED, UNKNOWN_KEY, UNPARSEABLE, UNSIGNED, TrustedCertificate, Verdict,
    verify_module,
)

FORMAT = 2
CACHE_FILE = "verdicts.json"
IMAGES_FILE = "builtin-certificates.json"

Judged = List[Tuple[str, Verdict]]


class CacheUse(NamedTuple):
    path: Optional[str]     # the cache file, None when no cache was asked for
    hits: int
    misses: int
    note: Optional[str]     # why an existing cache file was not used or not written


# An entry, by identity: [version, a path it was seen at, what was learnt]; what was learnt:
# [state, hash, reason, issuer hex, serial, skid hex, {certificate fingerprint: verified}].
# state is UNSIGNED or BAD_SIGNATURE when that holds whatever the certificates (no signature; signed
# attributes), else "signed".
_SIGNED = "signed"


def _learnt(verdict, old_results):
    # type: (Verdict, Dict[str, bool]) -> List[Any]
    signer = verdict.signer
    results = dict(old_results)
    state = _SIGNED
    if verdict.state == UNSIGNED or (verdict.state == BAD_SIGNATURE and verdict.certificate is None):
        state = verdict.state
    elif verdict.certificate is not None:
        results[verdict.certificate.fingerprint] = verdict.state == TRUSTED
    return [state, verdict.hash_name, verdict.reason if state != _SIGNED else None,
            None if signer is None or signer.issuer is None else signer.issuer.hex(),
            None if signer is None else signer.serial,
            None if signer is None or signer.skid is None else signer.skid.hex(),
            results]


def _answer(entry, trusted):
    # type: (List[Any], Sequence[TrustedCertificate]) -> Optional[Verdict]
    """The verdict against ``trusted`` from what the cache knows, or None when it must be verified."""
    state, hash_name, reason, issuer, serial, skid, results = entry
    if state == UNSIGNED:
        return Verdict(UNSIGNED)
    signer = SignerId(bytes.fromhex(issuer) if issuer is not None else None, serial,
                      bytes.fromhex(skid) if skid is not None else None)
    if state == BAD_SIGNATURE:
        return Verdict(BAD_SIGNATURE, signer, hash_name, reason=reason)
    for cert in trusted:        # the first certificate that names the signer decides, as in judge()
        if cert.id.matches(signer):
            verified = results.get(cert.id.fingerprint)
            if verified is None:
                return None
            if verified:
                return Verdict(TRUSTED, signer, hash_name, cert.id)
            return Verdict(BAD_SIGNATURE, signer, hash_name, cert.id, BAD_SIGNATURE_REASON)
    return Verdict(UNKNOWN_KEY, signer, hash_name)


def builtin_certificates_of(image_path, cache_dir=None, write_cache=True):
    # type: (str, Optional[str], bool) -> List[CertificateId]
    """The certificates built into the kernel image at ``image_path``.

    Finding them means decompressing the image (about a second for a distribution kernel), so with a
    ``cache_dir`` they are kept by the image file's identity, like the verdicts.
    """
    if not cache_dir:
        return builtin_certificates(read_bytes(image_path, "the kernel image"), image_path)
    cache_path = os.path.join(cache_dir, IMAGES_FILE)
    entries, _note = cache_file.load(cache_path, FORMAT)
    try:
        identity, version = cache_file.identity(os.stat(image_path))
    except OSError:
        identity, version = "", []
    cached = entries.get(identity)
    if cached is not None and cached[0] == version:
        return [certificate_id(bytes.fromhex(der_hex), image_path) for der_hex in cached[2]]
    found = builtin_certificates(read_bytes(image_path, "the kernel image"), image_path)
    if write_cache and identity:
        entries[identity] = [version, image_path, [cert.der.hex() for cert in found]]
        cache_file.save(cache_path, FORMAT, entries)
    return found


def judge_paths(paths, trusted, workers=0, cache_dir=None, write_cache=True):
    # type: (Sequence[str], Sequence[TrustedCertificate], int, Optional[str], bool) -> Tuple[Judged, CacheUse]
    """Each module's verdict against ``trusted``, in the order of ``paths`` (misses on every core)."""
    if not cache_dir:
        verdicts = map_files(lambda path: verify_module(path, trusted), list(paths), workers)
        return list(zip(paths, verdicts)), CacheUse(None, 0, len(paths), None)
    cache_path = os.path.join(cache_dir, CACHE_FILE)
    entries, note = cache_file.load(cache_path, FORMAT)
    found = {}      # type: Dict[str, Verdict]
    seen = {}       # type: Dict[str, Tuple[str, List[int]]]
    for path in paths:
        try:
            seen[path] = cache_file.identity(os.stat(path))
        except OSError:
            continue      # verify_module says why
        identity, version = seen[path]
        cached = entries.get(identity)
        if cached is not None and cached[0] == version:
            verdict = _answer(cached[2], trusted)
            if verdict is not None:
                found[path] = verdict
    misses = [path for path in paths if path not in found]
    found.update(zip(misses, map_files(lambda path: verify_module(path, trusted), misses, workers)))
    if write_cache and misses:
        for path in misses:
            if path in seen and found[path].state != UNPARSEABLE:
                identity, version = seen[path]
                cached = entries.get(identity)
                old_results = cached[2][-1] if cached is not None and cached[0] == version else {}
                entries[identity] = [version, path, _learnt(found[path], old_results)]
        note = cache_file.save(cache_path, FORMAT, entries) or note
    return [(path, found[path]) for path in paths], CacheUse(cache_path, len(paths) - len(misses), len(misses), note)
