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

A module must also reach the kernel: a compressed one is decompressed either by kmod in user
space or, with CONFIG_MODULE_DECOMPRESS=y, by the kernel itself, whose xz decoder refuses the
CRC64 check xz writes by default. So each module's container (compression, and the xz check) is
kept beside its verdict, and ``judge_container`` turns a trusted verdict into ``bad_container``
when the kernel that will load it cannot decompress it (see ``Decompression``).

Only regular files are read (a FIFO named .ko would block the read forever, a link to /dev/zero
would read until memory runs out); anything else is unparseable, with the reason.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.skm.modsign.plugins.module_utils import _cache_file as cache_file
from ansible_collections.skm.modsign.plugins.module_utils import _compression as compression
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._files import read_regular
from ansible_collections.skm.modsign.plugins.module_utils._kernel_image import builtin_certificates
from ansible_collections.skm.modsign.plugins.module_utils._parallel import map_files
from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import CertificateId, SignerId, certificate_id
from ansible_collections.skm.modsign.plugins.module_utils._signing import (
    BAD_SIGNATURE, BAD_SIGNATURE_REASON, TRUSTED, UNKNOWN_KEY, UNPARSEABLE, UNSIGNED, TrustedCertificate, Verdict,
    judge,
)
from ansible_collections.skm.modsign.plugins.module_utils._trailer import split_signature

FORMAT = 3
CACHE_FILE = "verdicts.json"
IMAGES_FILE = "builtin-certificates.json"
BAD_CONTAINER = "bad_container"     # validly signed, but the kernel that loads it cannot decompress it


class Judged(NamedTuple):
    path: str
    verdict: Verdict
    container: Optional[str]    # see _compression.container; None when the file could not be read


def check_module(path, trusted):
    # type: (str, Sequence[TrustedCertificate]) -> Tuple[Verdict, Optional[str]]
    """The verdict on the module file ``path`` against ``trusted``, and its container."""
    try:
        raw = read_regular(path, "module")
        kind, data = compression.decompress(raw, path)
        length, pkcs7 = split_signature(data, path)
    except ModSignError as exc:
        return Verdict(UNPARSEABLE, reason=exc.cause), None
    except MemoryError:
        return Verdict(UNPARSEABLE, reason="out of memory while reading or decompressing it"), None
    return judge(memoryview(data)[:length], pkcs7, trusted, path), compression.container(kind, raw[:8])


class CacheUse(NamedTuple):
    path: Optional[str]     # the cache file, None when no cache was asked for
    hits: int
    misses: int
    note: Optional[str]     # why an existing cache file was not used or not written


# An entry, by identity: [version, a path it was seen at, what was learnt]; what was learnt:
# [state, hash, reason, issuer hex, serial, skid hex, {certificate fingerprint: verified}, container].
# state is UNSIGNED or BAD_SIGNATURE when that holds whatever the certificates (no signature; signed
# attributes), else "signed".
_SIGNED = "signed"


def _learnt(verdict, old_results, container_name):
    # type: (Verdict, Dict[str, bool], Optional[str]) -> List[Any]
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
            results, container_name]


def _answer(entry, trusted):
    # type: (List[Any], Sequence[TrustedCertificate]) -> Optional[Verdict]
    """The verdict against ``trusted`` from what the cache knows, or None when it must be verified."""
    state, hash_name, reason, issuer, serial, skid, results = entry[:7]
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
        return builtin_certificates(read_regular(image_path, "the kernel image"), image_path)
    cache_path = os.path.join(cache_dir, IMAGES_FILE)
    entries, _note = cache_file.load(cache_path, FORMAT)
    try:
        identity, version = cache_file.identity(os.stat(image_path))
    except OSError:
        identity, version = "", []
    cached = entries.get(identity)
    if cached is not None and cached[0] == version:
        return [certificate_id(bytes.fromhex(der_hex), image_path) for der_hex in cached[2]]
    found = builtin_certificates(read_regular(image_path, "the kernel image"), image_path)
    if write_cache and identity:
        entries[identity] = [version, image_path, [cert.der.hex() for cert in found]]
        cache_file.save(cache_path, FORMAT, entries)
    return found


def judge_paths(paths, trusted, workers=0, cache_dir=None, write_cache=True):
    # type: (Sequence[str], Sequence[TrustedCertificate], int, Optional[str], bool) -> Tuple[List[Judged], CacheUse]
    """Each module's verdict against ``trusted`` and its container, in the order of ``paths`` (misses on every core)."""
    if not cache_dir:
        checked = map_files(lambda path: check_module(path, trusted), list(paths), workers)
        return [Judged(path, v, c) for path, (v, c) in zip(paths, checked)], CacheUse(None, 0, len(paths), None)
    cache_path = os.path.join(cache_dir, CACHE_FILE)
    entries, note = cache_file.load(cache_path, FORMAT)
    found = {}      # type: Dict[str, Tuple[Verdict, Optional[str]]]
    seen = {}       # type: Dict[str, Tuple[str, List[int]]]
    for path in paths:
        try:
            seen[path] = cache_file.identity(os.stat(path))
        except OSError:
            continue      # check_module says why
        identity, version = seen[path]
        cached = entries.get(identity)
        if cached is not None and cached[0] == version:
            verdict = _answer(cached[2], trusted)
            if verdict is not None:
                found[path] = (verdict, cached[2][7])
    misses = [path for path in paths if path not in found]
    found.update(zip(misses, map_files(lambda path: check_module(path, trusted), misses, workers)))
    if write_cache and misses:
        for path in misses:
            verdict, container_name = found[path]
            if path in seen and verdict.state != UNPARSEABLE:
                identity, version = seen[path]
                cached = entries.get(identity)
                old_results = cached[2][6] if cached is not None and cached[0] == version else {}
                entries[identity] = [version, path, _learnt(verdict, old_results, container_name)]
        note = cache_file.save(cache_path, FORMAT, entries) or note
    return ([Judged(path, found[path][0], found[path][1]) for path in paths],
            CacheUse(cache_path, len(paths) - len(misses), len(misses), note))


# ---------------------------------------------------------------- who decompresses

class Decompression(NamedTuple):
    """Who decompresses a kernel's compressed modules, from its config.

    With CONFIG_MODULE_DECOMPRESS=y the kernel decompresses modules of the one format it was built for
    (CONFIG_MODULE_COMPRESS_XZ/GZIP/ZSTD) itself (kmod hands them over as they are); otherwise, and for
    other formats, kmod decompresses them in user space. Without the config nobody can say: ``unknown``,
    judged as strictly as the kernel would.
    """

    by: str                     # kernel, kmod or unknown
    kernel_format: Optional[str]  # the format the kernel decompresses itself (by == kernel)
    why: str

    def of(self, container_name):
        # type: (Optional[str]) -> Optional[str]
        """Who decompresses a module of ``container_name``: kernel, kmod, unknown (None: not compressed)."""
        kind = (container_name or compression.NONE).partition("/")[0]
        if kind == compression.NONE:
            return None
        if self.by == "kernel" and kind != self.kernel_format:
            return "kmod"
        return self.by

    def as_dict(self):
        # type: () -> Dict[str, Any]
        return {"by": self.by, "kernel_format": self.kernel_format, "why": self.why}


_KERNEL_FORMATS = (("CONFIG_MODULE_COMPRESS_XZ", compression.XZ), ("CONFIG_MODULE_COMPRESS_GZIP", compression.GZIP),
                   ("CONFIG_MODULE_COMPRESS_ZSTD", compression.ZSTD))


def decompression_of(kconfig, config_path=None):
    # type: (Optional[Dict[str, str]], Optional[str]) -> Decompression
    """Who decompresses the modules of the kernel whose config is ``kconfig`` (None: no config found)."""
    if kconfig is None:
        return Decompression("unknown", None, "no kernel config%s: a kernel with CONFIG_MODULE_DECOMPRESS=y may "
                             "decompress modules itself" % (" at %s" % config_path if config_path else ""))
    if kconfig.get("CONFIG_MODULE_DECOMPRESS") != "y":
        return Decompression("kmod", None, "CONFIG_MODULE_DECOMPRESS is not set: kmod decompresses modules in "
                             "user space")
    for option, kind in _KERNEL_FORMATS:
        if kconfig.get(option) == "y":
            return Decompression("kernel", kind, "CONFIG_MODULE_DECOMPRESS=y and %s=y: the kernel decompresses "
                                 "%s modules itself" % (option, kind))
    return Decompression("kmod", None, "CONFIG_MODULE_DECOMPRESS=y but no CONFIG_MODULE_COMPRESS_XZ/GZIP/ZSTD: "
                         "kmod decompresses modules in user space")


def judge_container(judged, decompression):
    # type: (Judged, Decompression) -> Verdict
    """``judged``'s verdict, made ``bad_container`` when it is trusted but the kernel could not decompress it."""
    verdict = judged.verdict
    if verdict.state != TRUSTED or decompression.of(judged.container) not in ("kernel", "unknown"):
        return verdict
    refused = compression.kernel_refuses(judged.container or compression.NONE)
    if refused is None:
        return verdict
    if decompression.by == "unknown":
        refused += "; %s" % decompression.why
    return verdict._replace(state=BAD_CONTAINER, reason=refused)
