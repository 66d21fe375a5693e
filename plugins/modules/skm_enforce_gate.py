#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: skm_enforce_gate
short_description: Refuse module signature enforcement while the next boot would not load every module
description:
  - The safety gate before C(module.sig_enforce=1). For the kernel that boots next (or O(kernel)) it fails, listing
    the reasons, when that kernel would refuse a module once enforcement is on.
  - Every module under C(/lib/modules/<version>) must be signed by a key that kernel trusts - the certificates
    built into its image (read from C(/boot/vmlinuz-<version>)), plus O(secondary_certificates) when the kernel has
    a secondary keyring, plus O(mok_certificates) only when O(trust_mok) says shim exports MokListTrustedRT and the
    kernel links MOK into the machine keyring. Unsigned, unknown-key, bad and unparseable signatures are listed,
    and so are files that are not regular files (a FIFO, a link to a device; never read) and validly signed
    modules that kernel cannot decompress (V(bad_container) - with C(CONFIG_MODULE_DECOMPRESS=y) the kernel's own
    xz decoder refuses the CRC64 check xz writes by default; where kmod decompresses, RV(decompression) says so).
  - A kernel image that is truncated or corrupt (its built-in certificates cannot be extracted) fails the gate
    with that reason.
  - The kernel's C(/boot/config-<version>) must let it verify our signatures at all - C(CONFIG_MODULE_SIG=y), our
    key type built in (C(CONFIG_CRYPTO_RSA=y), C(CONFIG_CRYPTO_ECDSA=y)) and our hash built in
    (C(CONFIG_CRYPTO_SHA512=y) for sha384/sha512; C(=m) does not count - a module cannot verify the module that
    would provide it). Debian 6.1, for example, ships sha512 as a module and no ECDSA.
  - Each of O(certificates) (ours) must be in one of those keyrings.
  - With O(allow_untrusted=true) the gate reports the same findings, warns and lets the play go on.
version_added: 0.1.0
author:
  - skm.modsign contributors (@skm-modsign)
extends_documentation_fragment:
  - skm.modsign.attributes
  - skm.modsign.signing_hash
attributes:
  check_mode:
    support: full
    details: Read-only; runs the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Read-only; never reports a change.
options:
  root_dir:
    description: The root of the system to check (C(/boot), C(/lib/modules) are read under it).
    type: path
    default: /
  kernel:
    description:
      - The kernel version to check. Default - the one that boots next - grubenv's C(saved_entry) BLS entry, else
        the C(/boot/vmlinuz) or C(/vmlinuz) link, else the first C(linux) line of C(grub.cfg), else systemd-boot's
        default entry, else the newest C(/boot/vmlinuz-*).
    type: str
  modules_dir:
    description: The modules of that kernel. Default - C(<root_dir>/lib/modules/<kernel>).
    type: path
  certificates:
    description: Our certificates (PEM or DER), which must be trusted by that kernel for modules.
    type: list
    elements: path
    default: []
  secondary_certificates:
    description: Certificates added to the kernel's secondary trusted keyring (by C(keyctl) at boot, for example).
    type: list
    elements: path
    default: []
  mok_certificates:
    description: Certificates enrolled in MOK (see M(skm.modsign.skm_mok_enroll)).
    type: list
    elements: path
    default: []
  trust_mok:
    description:
      - Whether shim exports MokListTrustedRT on these hosts (C(mokutil --trust-mok)), which lets the kernel link
        MOK certificates into the machine keyring and trust them for modules. Without it, MOK certificates do not
        count.
    type: bool
    default: false
  hash:
    description: The hash we sign with; the kernel must have it built in. Default - the hashes of our signatures found.
  allow_untrusted:
    description:
      - Override - report the findings as a warning and do not fail. Enforcing then may leave the host without
        drivers (storage, network) at the next boot.
    type: bool
    default: false
  workers:
    description: Processes verifying modules. V(0) - one per core.
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
  runtime_evidence:
    description:
      - When the gate judges the running kernel on the live system (O(root_dir=/)), also read that kernel's own
        evidence (as M(skm.modsign.skm_kernel_facts) does) and refuse when a loaded module has taint E (unsigned,
        or signed by a key in no trusted keyring) or one of O(certificates) is in no keyring it trusts for modules,
        whatever the files say. Where the prediction from files and the evidence disagree, RV(notes) names both.
    type: bool
    default: true
notes:
  - Requires C(cryptography) >= 3.3 on the host.
seealso:
  - module: skm.modsign.skm_kernel_cmdline
  - module: skm.modsign.skm_module_info
"""

EXAMPLES = r"""
- name: Refuse to enforce while any module of the next kernel would be refused
  skm.modsign.skm_enforce_gate:
    certificates: [/var/lib/skm/current/signing_key.pem]
    mok_certificates: [/var/lib/skm/current/signing_key.der]
    trust_mok: true
    hash: sha256
"""

RETURN = r"""
passed:
  description: Whether that kernel would load every module with enforcement on and trusts our certificates.
  returned: always
  type: bool
overridden:
  description: The gate did not pass and O(allow_untrusted) let the play continue.
  returned: always
  type: bool
kernel:
  description: The kernel version checked.
  returned: success
  type: str
  sample: 6.1.0-13-amd64
kernel_source:
  description: How that kernel was found.
  returned: success
  type: str
  sample: /boot/vmlinuz -> vmlinuz-6.1.0-13-amd64
modules_total:
  description: Number of modules checked.
  returned: success
  type: int
offenders:
  description: Modules that kernel would refuse.
  returned: success
  type: list
  elements: dict
  contains:
    path: {description: "The module file (bytes that are not UTF-8 escaped as \\xNN)", type: str}
    state: {description: "unsigned, unknown_key, bad_signature, bad_container or unparseable", type: str}
    reason: {description: "Why, with the signer when there is one", type: str}
problems:
  description: Why that kernel cannot verify our signatures (config, keyrings).
  returned: success
  type: list
  elements: str
notes:
  description: Certificates that do not count and why.
  returned: success
  type: list
  elements: str
builtin_certificates:
  description: The certificates built into that kernel's image.
  returned: success
  type: list
  elements: str
verdict_cache:
  description: The cache file used (O(verdict_cache)), how many verdicts it answered and how many modules were read.
  returned: when O(verdict_cache) is set
  type: dict
  contains:
    path: {description: The cache file, type: str}
    hits: {description: Modules answered from the cache, type: int}
    misses: {description: Modules read and verified, type: int}
    note: {description: Why the cache file was not used or not written (null when it was), type: str}
decompression:
  description: Who decompresses that kernel's compressed modules, from its config.
  returned: success
  type: dict
  contains:
    by: {description: "V(kernel) (C(CONFIG_MODULE_DECOMPRESS=y), for its own format) or V(kmod) (user space)", type: str}
    kernel_format: {description: "The format the kernel decompresses itself (xz, gzip, zstd), when it does", type: str}
    why: {description: The config options that decide it, type: str}
module_hashes:
  description: Hashes of the trusted module signatures found.
  returned: success
  type: list
  elements: str
runtime:
  description:
    - The running kernel's evidence as the gate used it - C(applied) (false, with C(reason), unless the gate judged the
      running kernel on the live system), C(running_kernel), C(problems) (added to RV(problems)), C(disagreements)
      (added to RV(notes)) and the evidence's C(verdict).
  returned: when O(runtime_evidence=true)
  type: dict
"""

from ansible_collections.skm.modsign.plugins.module_utils import _gate as gate
from ansible_collections.skm.modsign.plugins.module_utils import _runtime as runtime
from ansible_collections.skm.modsign.plugins.module_utils._ansible import build_module, fail, require_cryptography
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._files import read_regular
from ansible_collections.skm.modsign.plugins.module_utils._signing import TrustedCertificate


def certificate(path):
    """A certificate file (PEM or DER); a FIFO or a device is refused, never read."""
    return TrustedCertificate.from_bytes(read_regular(path, "the certificate file", 1 << 20), path)


def main():
    module = build_module(dict(
        root_dir=dict(type="path", default="/"),
        kernel=dict(type="str"),
        modules_dir=dict(type="path"),
        certificates=dict(type="list", elements="path", default=[]),
        secondary_certificates=dict(type="list", elements="path", default=[]),
        mok_certificates=dict(type="list", elements="path", default=[]),
        trust_mok=dict(type="bool", default=False),
        hash=dict(type="str", choices=["sha256", "sha384", "sha512", "sha3-256", "sha3-384", "sha3-512"]),
        allow_untrusted=dict(type="bool", default=False),
        workers=dict(type="int", default=0),
        verdict_cache=dict(type="path"),
        runtime_evidence=dict(type="bool", default=True),
    ))
    require_cryptography(module)
    p = module.params
    result = dict(changed=False, passed=False, overridden=False)
    try:
        ours = [(path, certificate(path)) for path in p["certificates"]]
        outcome = gate.check(
            root=p["root_dir"], kernel=p["kernel"], ours=ours,
            secondary=[certificate(path) for path in p["secondary_certificates"]],
            mok=[certificate(path) for path in p["mok_certificates"]],
            trust_mok=p["trust_mok"], hashes=[p["hash"]] if p["hash"] else [],
            modules_dir=p["modules_dir"], workers=p["workers"],
            cache_dir=p["verdict_cache"], write_cache=not module.check_mode)
        if p["runtime_evidence"]:   # the running kernel's own evidence counts over the files' prediction
            result["runtime"] = evidence = runtime.gate_evidence(p["certificates"], outcome.kernel, p["root_dir"],
                                                                 outcome.problems, runtime.module_runner(module))
            outcome = outcome._replace(problems=outcome.problems + evidence["problems"],
                                       notes=outcome.notes + evidence["disagreements"])
    except ModSignError as exc:
        fail(module, exc, **result)
    result.update(
        passed=outcome.passed, kernel=outcome.kernel, kernel_source=outcome.kernel_source,
        modules_total=outcome.modules_total, problems=outcome.problems, notes=outcome.notes,
        offenders=[o._asdict() for o in outcome.offenders], builtin_certificates=outcome.builtin,
        module_hashes=outcome.hashes, decompression=outcome.decompression.as_dict(), msg=outcome.message())
    if outcome.cache.path is not None:
        result["verdict_cache"] = outcome.cache._asdict()
    if not outcome.passed:
        if not p["allow_untrusted"]:
            module.fail_json(**result)
        result["overridden"] = True
        module.warn("safety gate overridden (allow_untrusted): " + outcome.message())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
