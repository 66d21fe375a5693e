#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: skm_module_info
short_description: Report the signature state of every kernel module against trusted certificates
description:
  - For one or more kernel versions (default - the running kernel and the default boot kernel) or for given paths,
    reads every module (C(.ko), C(.ko.xz), C(.ko.gz), C(.ko.zst), by magic bytes) and says whether it is
    V(unsigned), V(trusted) (signed by one of the trusted certificates and the signature verifies; which one),
    V(unknown_key) (signed by a key none of them is; the signer as C(modinfo) prints it), V(bad_signature)
    (names a trusted certificate but does not verify, or carries signed attributes the kernel refuses),
    V(bad_container) (validly signed, but the kernel that loads it cannot decompress it) or V(unparseable)
    (corrupt file or signature, or not a regular file - a FIFO or a link to a device is never read).
  - Compressed modules are judged against the kernel's config (C(<boot_dir>/config-<version>)). With
    C(CONFIG_MODULE_DECOMPRESS=y) the kernel decompresses modules of its C(CONFIG_MODULE_COMPRESS_*) format itself,
    and its xz decoder refuses the CRC64 check C(xz) writes by default ("decompression failed with status 6");
    otherwise kmod decompresses them in user space. Each compressed module says which (C(decompressed_by)). With
    O(path), a module under C(<modules_root>/<version>) is judged against C(<boot_dir>/config-<version>). Without a
    config (a path outside every module tree, or a missing config file) a CRC64 C(.ko.xz) is V(bad_container), as
    in-kernel decompression cannot be ruled out.
  - File names that are not UTF-8 are reported with those bytes escaped (C(\xff)).
  - A module is V(trusted) only when its signature verifies with a trusted certificate; an unsigned module, a
    module signed by any other key, and a tampered module never are. The enforce role's safety gate relies on it.
  - Read-only; runs the same in check mode.
version_added: 0.1.0
author:
  - skm.modsign contributors (@skm-modsign)
extends_documentation_fragment:
  - skm.modsign.attributes
attributes:
  check_mode:
    support: full
    details: Read-only; check mode changes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Read-only; never reports a change.
options:
  kernel:
    description:
      - Kernel versions to audit (directories under O(modules_root)).
      - Default - the running kernel and the default boot kernel (C(grubby --default-kernel), else the
        C(/vmlinuz) or C(/boot/vmlinuz) link, else the newest version under O(modules_root)).
    type: list
    elements: str
  path:
    description:
      - Audit these module files, directories (recursive) or globs instead of whole kernels.
    type: list
    elements: str
  modules_root:
    description:
      - Where the module trees of O(kernel) live.
      - With O(path), a module under C(<modules_root>/<version>) is judged against that kernel's config (who
        decompresses it).
    type: path
    default: /lib/modules
  boot_dir:
    description: Where the kernel images (C(vmlinuz-<version>)) and configs (C(config-<version>)) are.
    type: path
    default: /boot
  trusted_certs:
    description:
      - Certificate files (PEM, one or more certificates each, or DER) whose signatures count as trusted, for
        example the MOK certificate enrolled for the fleet key.
    type: list
    elements: path
    default: []
  builtin_certs:
    description:
      - Also trust the certificates built into each audited kernel's image (C(<boot_dir>/vmlinuz-<version>)),
        the distribution's or the custom kernel's own signing key. Ignored with O(path).
    type: bool
    default: true
  report:
    description:
      - Which modules RV(modules) lists. V(all), V(untrusted) (every module that is not V(trusted)) or V(none)
        (only the summary counts).
    type: str
    choices: [all, untrusted, none]
    default: all
  workers:
    description: Processes verifying modules; V(0) - one per core.
    type: int
    default: 0
  verdict_cache:
    description:
      - A directory for a per-host cache of what was learnt of each module (signed or not, the signer, the hash,
        and which certificates its signature verified with), so that a later run reads and verifies only the
        modules that changed. A module counts as unchanged while its device, inode, size, mtime and ctime (ns)
        are the same; any write changes the ctime and a replaced file has a new inode.
      - The certificates built into a kernel image are kept the same way (finding them means decompressing the
        image).
      - Two files, C(verdicts.json) and C(builtin-certificates.json), mode 0600, shared by
        M(skm.modsign.skm_module_info) and M(skm.modsign.skm_enforce_gate). A file is ignored (and replaced) when
        another user owns it or others may write it. They are written only outside check mode.
      - Unset - every module is read and verified.
    type: path
notes:
  - Needs C(cryptography) on the host to verify signatures.
  - Certificates enrolled only in MOK or the firmware are not read from the machine; list them in O(trusted_certs).
seealso:
  - module: skm.modsign.skm_sign
"""

EXAMPLES = r"""
- name: Audit the running and the default boot kernel against the fleet certificate
  skm.modsign.skm_module_info:
    trusted_certs: [/etc/skm/fleet-signing.crt]
  register: audit

- name: Refuse to go on while a module of the boot kernel is not trusted
  ansible.builtin.assert:
    that: audit.all_trusted
    fail_msg: "{{ audit.summary }}"

- name: Only the problems of one kernel's DKMS modules
  skm.modsign.skm_module_info:
    path: /lib/modules/6.1.0-13-amd64/updates
    trusted_certs: [/var/lib/shim-signed/mok/MOK.der]
    report: untrusted
"""

RETURN = r"""
kernels:
  description: One entry per audited kernel (empty with O(path)).
  returned: always
  type: list
  elements: dict
  contains:
    version:
      description: Kernel version.
      type: str
    role:
      description: Why it was audited - V(running), V(default_boot), both, or V(requested).
      type: list
      elements: str
    modules_dir:
      description: The module tree read.
      type: str
    image:
      description: The kernel image whose built-in certificates were trusted, if found.
      type: str
    decompression:
      description:
        - Who decompresses this kernel's compressed modules - C(by) V(kernel) (with C(kernel_format)), V(kmod) or
          V(unknown) (no config) - and C(why).
      type: dict
    summary:
      description: Counts per state for this kernel.
      type: dict
    all_trusted:
      description: Every module of this kernel is V(trusted).
      type: bool
modules:
  description: The modules selected by O(report), each with its state.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The module file.
      type: str
    kernel:
      description: The kernel version it belongs to (absent with O(path)).
      type: str
    state:
      description: V(trusted), V(unsigned), V(unknown_key), V(bad_signature), V(bad_container) or V(unparseable).
      type: str
    container:
      description: A compressed module's format, with the xz check (V(xz/crc32), V(xz/crc64), V(gzip), V(zstd)).
      type: str
    decompressed_by:
      description: Who decompresses a compressed module - V(kernel), V(kmod) or V(unknown).
      type: str
    signer:
      description: The signer's issuer common name, as C(modinfo) prints C(signer).
      type: str
    sig_key:
      description: The signer's serial (colon-separated hex, as C(modinfo) prints C(sig_key)) or SKID (hex).
      type: str
    sig_hashalgo:
      description: The signature's hash.
      type: str
    trusted_by:
      description: The subject of the trusted certificate that verified it.
      type: str
    reason:
      description: Why a signature is bad, a container refused or a module unparseable.
      type: str
summary:
  description: Counts per state over everything audited, and C(total).
  returned: always
  type: dict
  sample: {total: 4023, trusted: 4020, unsigned: 2, unknown_key: 1, bad_signature: 0, bad_container: 0, unparseable: 0}
all_trusted:
  description: Every audited module is V(trusted) (what a safety gate asks before enforcing signatures).
  returned: always
  type: bool
trusted_certificates:
  description: The certificates modules were checked against (subject, issuer, serial, skid, fingerprint, source).
  returned: always
  type: list
  elements: dict
verdict_cache:
  description: The cache file used (O(verdict_cache)), how many verdicts it answered and how many modules were read.
  returned: when O(verdict_cache) is set
  type: dict
  contains:
    path: {description: The cache file, type: str}
    hits: {description: Modules answered from the cache, type: int}
    misses: {description: Modules read and verified, type: int}
    note: {description: Why the cache file was not used or not written (null when it was), type: str}
default_boot_kernel_source:
  description: How the default boot kernel was found (when O(kernel) and O(path) are not given).
  returned: when the default kernels are audited
  type: str
"""

import os

from ansible_collections.skm.modsign.plugins.module_utils import _audit as audit
from ansible_collections.skm.modsign.plugins.module_utils import _sign_batch as batch
from ansible_collections.skm.modsign.plugins.module_utils import _signing as signing
from ansible_collections.skm.modsign.plugins.module_utils._ansible import build_module, fail, require_cryptography
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

ARGUMENT_SPEC = dict(
    kernel=dict(type="list", elements="str"),
    path=dict(type="list", elements="str"),
    modules_root=dict(type="path", default="/lib/modules"),
    boot_dir=dict(type="path", default="/boot"),
    trusted_certs=dict(type="list", elements="path", default=[]),
    builtin_certs=dict(type="bool", default=True),
    report=dict(type="str", choices=["all", "untrusted", "none"], default="all"),
    workers=dict(type="int", default=0),
    verdict_cache=dict(type="path"),
)


def kernels_to_audit(module, result):
    """[(version, roles)] from the options, or the running and the default boot kernel."""
    p = module.params
    if p["kernel"]:
        return [(version, ["requested"]) for version in p["kernel"]]
    running = os.uname()[2]
    boot, source = audit.default_boot_kernel(p["boot_dir"], p["modules_root"])
    result["default_boot_kernel_source"] = source
    if boot is None or boot == running:
        return [(running, ["running"] + (["default_boot"] if boot else []))]
    return [(running, ["running"]), (boot, ["default_boot"])]


def add_cache_use(result, cache_use):
    """Sum the verdict cache's answers over the kernels audited."""
    if cache_use.path is None:
        return
    total = result.setdefault("verdict_cache", {"path": cache_use.path, "hits": 0, "misses": 0, "note": None})
    total["hits"] += cache_use.hits
    total["misses"] += cache_use.misses
    total["note"] = total["note"] or cache_use.note


def main():
    module = build_module(ARGUMENT_SPEC, mutually_exclusive=[("kernel", "path")])
    require_cryptography(module)
    p = module.params
    result = {"changed": False, "kernels": []}
    try:
        if p["path"]:
            groups = [(None, None, paths, [], decompression) for paths, decompression
                      in audit.decompression_by_kernel(batch.expand_paths(p["path"]), p["modules_root"], p["boot_dir"])]
        else:
            groups = []
            for version, roles in kernels_to_audit(module, result):
                modules_dir = os.path.join(p["modules_root"], version)
                if not os.path.isdir(modules_dir):
                    if p["kernel"]:
                        raise ModSignError("no module tree for kernel %s" % version, modules_dir)
                    module.warn("kernel %s (%s) has no module tree at %s; nothing to audit for it"
                                % (version, " and ".join(roles), modules_dir))
                    continue
                image = os.path.join(p["boot_dir"], "vmlinuz-" + version)
                images = [image] if p["builtin_certs"] and os.path.isfile(image) else []
                decompression = audit.kernel_decompression(os.path.join(p["boot_dir"], "config-" + version))
                groups.append((version, roles, batch.expand_paths([modules_dir]), images, decompression))
        everything, described = [], {}
        for version, roles, paths, images, decompression in groups:
            trusted, certs = audit.load_trusted(p["trusted_certs"], images, p["verdict_cache"], not module.check_mode)
            described.update((c["fingerprint_sha256"], c) for c in certs)
            entries, cache_use = audit.audit(paths, trusted, p["workers"], p["verdict_cache"], not module.check_mode,
                                             decompression)
            add_cache_use(result, cache_use)
            if version is not None:
                for entry in entries:
                    entry["kernel"] = version
                counts = audit.summary(entries)
                result["kernels"].append({
                    "version": version, "role": roles, "modules_dir": os.path.join(p["modules_root"], version),
                    "image": images[0] if images else None, "summary": counts,
                    "decompression": decompression.as_dict(),
                    "all_trusted": counts[signing.TRUSTED] == counts["total"]})
            everything.extend(entries)
    except ModSignError as exc:
        fail(module, exc)
    result["trusted_certificates"] = list(described.values())
    result["summary"] = audit.summary(everything)
    result["all_trusted"] = result["summary"][signing.TRUSTED] == result["summary"]["total"]
    if p["report"] == "all":
        result["modules"] = everything
    elif p["report"] == "untrusted":
        result["modules"] = [e for e in everything if e["state"] != signing.TRUSTED]
    else:
        result["modules"] = []
    module.exit_json(**result)


if __name__ == "__main__":
    main()
