# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The safety gate before ``module.sig_enforce=1``: will the next boot still load every module?

Private to skm.modsign. For the kernel that boots next it answers three
questions, each with a list of reasons when the answer is no:

1. Can that kernel verify our signatures at all? (its ``/boot/config-<version>``:
   CONFIG_MODULE_SIG, the key type and the hash built in — ``=m`` does not
   count, a module cannot verify the signature of the module that would load it)
2. Does it trust our certificates for modules? Built into the image
   (``.builtin_trusted_keys``), added to the secondary keyring, or enrolled in
   MOK and linked through the machine keyring (needs MokListTrustedRT).
3. Is every one of its modules signed by a key it trusts, in a container it (or kmod) can decompress?

No command runs here; the module feeds in what it read.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import os
import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.skm.modsign.plugins.module_utils import _cmdline as cmdline
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._files import display_path, read_regular, read_text_if_exists
from ansible_collections.skm.modsign.plugins.module_utils._kconfig import HASH_CRYPTO, KEY_CRYPTO
from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import CertificateId, name_to_text
from ansible_collections.skm.modsign.plugins.module_utils._signing import (
    TRUSTED, TrustedCertificate, Verdict, describe_verdict, find_modules,
)
from ansible_collections.skm.modsign.plugins.module_utils._verdicts import (
    CacheUse, Decompression, builtin_certificates_of, decompression_of, judge_container, judge_paths,
)

LabelledCertificate = Tuple[str, TrustedCertificate]
Certificates = Sequence[TrustedCertificate]
Names = Sequence[str]
Dir = Optional[str]


# ------------------------------------------------------- which kernel boots --

def _version_key(version):
    # type: (str) -> List[object]
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", version)]


def _version_of(kernel_path):
    # type: (str) -> Optional[str]
    base = os.path.basename(kernel_path)
    for prefix in ("vmlinuz-", "vmlinux-", "bzImage-", "kernel-"):
        if base.startswith(prefix):
            return base[len(prefix):]
    parts = kernel_path.strip("/").split("/")
    if len(parts) >= 2 and base in ("linux", "vmlinuz"):    # systemd-boot: /<machine-id>/<version>/linux
        return parts[-2]
    return None


def _boot_text(path):
    # type: (str) -> Optional[str]
    """The text of a boot file (grubenv, grub.cfg, a BLS entry), None when it is missing; a FIFO never blocks."""
    if not os.path.exists(path):
        return None
    return read_regular(path, "the boot file", 1 << 24).decode("utf-8", "replace")


def default_kernel(root):
    # type: (str) -> Tuple[str, str]
    """(version, how it was found) of the kernel that boots next in the tree at ``root``.

    In order: the BLS entry grubenv's saved_entry names (grubby's --default-kernel), the
    /boot/vmlinuz or /vmlinuz symlink (Debian's linux-base), the first ``linux`` line of
    grub.cfg, systemd-boot's ``default`` in loader.conf, the newest /boot/vmlinuz-*.
    """
    env = cmdline.grubenv(_boot_text(cmdline.under(root, "/boot/grub2/grubenv")) or "")
    saved = env.get("saved_entry")
    if saved:
        path = cmdline.under(root, "/boot/loader/entries/%s.conf" % saved)
        text = _boot_text(path)
        if text is not None:
            version = cmdline.bls_value(text, "version") or _version_of(cmdline.bls_value(text, "linux") or "")
            if version:
                return version, "grubenv saved_entry %s" % saved
    for link in ("/boot/vmlinuz", "/vmlinuz"):
        path = cmdline.under(root, link)
        if os.path.islink(path):
            version = _version_of(os.readlink(path))
            if version:
                return version, "%s -> %s" % (link, os.readlink(path))
    for cfg in ("/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"):
        entries = cmdline.grub_cfg_entries(_boot_text(cmdline.under(root, cfg)) or "")
        if entries and _version_of(entries[0][0]):
            return _version_of(entries[0][0]) or "", "first entry of %s" % cfg
    for esp in cmdline.systemd_boot_dirs(root):
        conf = _boot_text(cmdline.under(root, os.path.join(esp, "loader", "loader.conf"))) or ""
        default = cmdline.bls_value(conf, "default")
        if default:
            entry = _boot_text(cmdline.under(root, os.path.join(esp, "loader", "entries", default)))
            if entry is not None and cmdline.bls_value(entry, "version"):
                return cmdline.bls_value(entry, "version") or "", "systemd-boot default %s" % default
    images = glob.glob(cmdline.under(root, "/boot/vmlinuz-*"))
    if images:
        newest = max((os.path.basename(p)[len("vmlinuz-"):] for p in images), key=_version_key)
        return newest, "newest /boot/vmlinuz-*"
    raise ModSignError("cannot tell which kernel boots next (no grubenv saved_entry, /boot/vmlinuz link, grub.cfg "
                       "entry or /boot/vmlinuz-*); name it with the kernel option", root)


# --------------------------------------------------------- kernel config --

def read_kconfig(text):
    # type: (str) -> Dict[str, str]
    """CONFIG_X -> value ('y', 'm', '"text"'); options that are 'not set' are left out."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("CONFIG_") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def config_problems(kconfig, key_types, hashes):
    # type: (Dict[str, str], Sequence[str], Sequence[str]) -> List[str]
    """Why this kernel cannot verify signatures made with ``key_types``/``hashes`` (empty: it can)."""
    problems = []
    if kconfig.get("CONFIG_MODULE_SIG") != "y":
        problems.append("CONFIG_MODULE_SIG is not set: this kernel does not check module signatures at all")
    for key_type in sorted(set(key_types)):
        option = KEY_CRYPTO.get(key_type)
        if option is None:
            problems.append("%s keys cannot sign kernel modules" % key_type)
        elif kconfig.get(option) != "y":
            problems.append("%s keys need %s=y (this kernel has %s)"
                            % (key_type.upper(), option, _shown(kconfig.get(option))))
    for hash_name in sorted(set(hashes)):
        option = HASH_CRYPTO.get(hash_name)
        if option is None:
            problems.append("hash %s is not one the kernel verifies module signatures with" % hash_name)
        elif kconfig.get(option) != "y":
            problems.append("hash %s needs %s=y (this kernel has %s; a module cannot verify the module that "
                            "would provide it)" % (hash_name, option, _shown(kconfig.get(option))))
    return problems


def _shown(value):
    # type: (Optional[str]) -> str
    if value is None:
        return "it not set"
    return "=%s, a module" % value if value == "m" else "=%s" % value


# ----------------------------------------------------------- keyrings ----

class Keyrings(NamedTuple):
    """The certificates a kernel checks module signatures against, by where they come from."""

    builtin: List[TrustedCertificate]
    secondary: List[TrustedCertificate]
    machine: List[TrustedCertificate]     # MOK, linked for modules only with MokListTrustedRT
    notes: List[str]

    @property
    def trusted(self):
        # type: () -> List[TrustedCertificate]
        return self.builtin + self.secondary + self.machine


def keyrings(builtin_certs, kconfig, secondary=(), mok=(), trust_mok=False):
    # type: (Sequence[CertificateId], Dict[str, str], Certificates, Certificates, bool) -> Keyrings
    """Which declared certificates this kernel trusts for modules, next to its built-in ones.

    Upstream 6.x verifies modules against the built-in and the secondary keyring;
    MOK certificates reach the secondary keyring through the machine keyring only
    when CONFIG_INTEGRITY_MACHINE_KEYRING=y and shim sets MokListTrustedRT.
    """
    builtin = []
    notes = []
    for cert in builtin_certs:
        try:
            builtin.append(TrustedCertificate.from_bytes(cert.der))
        except ModSignError as exc:
            notes.append("built-in certificate %s ignored: %s" % (describe_certificate(cert), exc.cause))
    usable_secondary = list(secondary)
    if secondary and kconfig.get("CONFIG_SECONDARY_TRUSTED_KEYRING") != "y":
        notes.append("CONFIG_SECONDARY_TRUSTED_KEYRING is not set: certificates declared in the secondary "
                     "keyring are not trusted by this kernel")
        usable_secondary = []
    usable_mok = []  # type: List[TrustedCertificate]
    if mok:
        if not trust_mok:
            notes.append("MOK certificates are not trusted for modules without MokListTrustedRT (trust_mok)")
        elif kconfig.get("CONFIG_INTEGRITY_MACHINE_KEYRING") != "y" or \
                kconfig.get("CONFIG_SECONDARY_TRUSTED_KEYRING") != "y":
            notes.append("MOK certificates need CONFIG_INTEGRITY_MACHINE_KEYRING=y and "
                         "CONFIG_SECONDARY_TRUSTED_KEYRING=y to be trusted for modules")
        else:
            usable_mok = list(mok)
    return Keyrings(builtin, usable_secondary, usable_mok, notes)


def untrusted_certificates(ours, rings):
    # type: (Sequence[Tuple[str, TrustedCertificate]], Keyrings) -> List[str]
    """(label, cert) pairs of our certificates that none of the kernel's keyrings holds."""
    held = set(c.id.der for c in rings.trusted)
    return [label for label, cert in ours if cert.id.der not in held]


# ------------------------------------------------------------ modules -----

class Offender(NamedTuple):
    path: str
    state: str
    reason: str


def offenders(verdicts):
    # type: (Sequence[Tuple[str, Verdict]]) -> List[Offender]
    """The modules whose verdict is not trusted, their names escaped (see ``_files.display_path``)."""
    out = []
    for path, verdict in verdicts:
        if verdict.state != TRUSTED:
            out.append(Offender(display_path(path), verdict.state, describe_verdict(verdict) or verdict.reason
                                or verdict.state))
    return out


class GateResult(NamedTuple):
    kernel: str
    kernel_source: str
    modules_total: int
    offenders: List[Offender]
    problems: List[str]            # config and keyring reasons
    notes: List[str]
    builtin: List[str]             # descriptions of the built-in certificates
    hashes: List[str]              # hashes the kernel's modules are signed with
    cache: CacheUse                # how many verdicts came from the per-host cache
    decompression: Decompression   # who decompresses its compressed modules

    @property
    def passed(self):
        # type: () -> bool
        return not self.offenders and not self.problems

    def message(self, limit=20):
        # type: (int) -> str
        if self.passed:
            return "kernel %s: all %d modules are signed by keys it trusts" % (self.kernel, self.modules_total)
        parts = ["kernel %s (%s) would not load everything with module.sig_enforce=1"
                 % (self.kernel, self.kernel_source)]
        parts.extend(self.problems)
        if self.offenders:
            shown = ", ".join("%s (%s)" % (o.path, o.reason) for o in self.offenders[:limit])
            more = "" if len(self.offenders) <= limit else " and %d more" % (len(self.offenders) - limit)
            parts.append("%d of %d modules are not signed by a key it trusts: %s%s"
                         % (len(self.offenders), self.modules_total, shown, more))
        return "; ".join(parts)


def check(root="/", kernel=None, ours=(), secondary=(), mok=(), trust_mok=False, key_types=(), hashes=(),
          modules_dir=None, workers=0, cache_dir=None, write_cache=True):
    # type: (str, Optional[str], Sequence[LabelledCertificate], Certificates, Certificates, bool, Names, Names, Dir, int, Dir, bool) -> GateResult
    """The gate for the tree at ``root``: which kernel boots next, and would it load every module.

    ``ours``: (label, certificate) that must be trusted; ``key_types``/``hashes``: what we sign with.
    """
    source = "given"
    if not kernel:
        kernel, source = default_kernel(root)
    config_path = cmdline.under(root, "/boot/config-%s" % kernel)
    if not os.path.lexists(config_path):
        raise ModSignError("missing: the gate cannot tell what kernel %s verifies without its config" % kernel,
                           config_path)
    kconfig = read_kconfig(read_regular(config_path, "the kernel config").decode("utf-8", "replace"))
    decompression = decompression_of(kconfig, config_path)
    image_path = cmdline.under(root, "/boot/vmlinuz-%s" % kernel)
    rings = keyrings(builtin_certificates_of(image_path, cache_dir, write_cache), kconfig, secondary, mok, trust_mok)
    problems = []
    untrusted = untrusted_certificates(ours, rings)
    if untrusted:
        problems.append("not in a keyring kernel %s trusts for modules (built-in, secondary, or MOK with "
                        "MokListTrustedRT): %s" % (kernel, ", ".join(untrusted)))
    directory = modules_dir or cmdline.under(root, "/lib/modules/%s" % kernel)
    if not os.path.isdir(directory):
        raise ModSignError("missing: no modules directory for kernel %s" % kernel, directory)
    checked, cache_use = judge_paths(find_modules([directory]), rings.trusted, workers, cache_dir, write_cache)
    judged = [(one.path, judge_container(one, decompression)) for one in checked]   # type: List[Tuple[str, Verdict]]
    signed_hashes = sorted(set(v.hash_name for _p, v in judged if v.state == TRUSTED and v.hash_name))
    ours_ids = set(cert.id.der for _label, cert in ours)
    our_hashes = set(v.hash_name for _p, v in judged
                     if v.state == TRUSTED and v.certificate is not None and v.certificate.der in ours_ids)
    our_types = set(key_types) | set(_key_type(cert) for _label, cert in ours)
    problems = config_problems(kconfig, sorted(our_types), sorted(set(hashes) | our_hashes)) + problems
    return GateResult(kernel, source, len(judged), offenders(judged), problems, rings.notes,
                      [describe_certificate(c.id) for c in rings.builtin], signed_hashes, cache_use, decompression)


def _key_type(cert):
    # type: (TrustedCertificate) -> str
    return "ecdsa" if cert.id.public_key_algorithm == "1.2.840.10045.2.1" else "rsa"


def describe_certificate(cert):
    # type: (CertificateId) -> str
    return "%s (sha256 %s)" % (name_to_text(cert.subject), cert.fingerprint[:16])


# ------------------------------------------------------- runtime switch ---

SIG_ENFORCE = "/sys/module/module/parameters/sig_enforce"


def runtime_enforced(path=SIG_ENFORCE):
    # type: (str) -> Optional[bool]
    """Whether the running kernel enforces signatures now (None: it has no such parameter)."""
    text = read_text_if_exists(path)
    if text is None:
        return None
    return text.strip() in ("Y", "1", "y")


def enable_runtime(path=SIG_ENFORCE):
    # type: (str) -> None
    """Turn enforcement on in the running kernel (module.sig_enforce is bool_enable_only: on, never off)."""
    try:
        with open(path, "w") as handle:
            handle.write("1\n")
    except OSError as exc:
        raise ModSignError("cannot turn enforcement on (%s)" % (exc.strerror or exc), path)
