#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: skm_kernel_facts
short_description: What the running kernel really trusts, enforces, has loaded and has refused
description:
  - Reads the running kernel's own evidence, beside the prediction that M(skm.modsign.skm_module_info) and
    M(skm.modsign.skm_enforce_gate) make from files.
  - The keyrings C(.builtin_trusted_keys), C(.secondary_trusted_keys), C(.machine), C(.platform) and C(.blacklist)
    with the keys they hold (with C(keyctl) where it is installed; else C(/proc/keys) names the keyrings and counts
    their keys but cannot say which key is in which), and C(/proc/key-users).
  - Which keyrings the kernel checks module signatures against, read from the links of C(.secondary_trusted_keys)
    (or C(.builtin_trusted_keys) alone), and whether each certificate in O(certificates) is in one of them. A key
    in C(.platform) only (firmware db) does not count.
  - The lockdown mode, the EFI variables SecureBoot, SetupMode, MokSBStateRT and MokListTrustedRT, C(sig_enforce)
    and the running kernel's C(CONFIG_MODULE_SIG_FORCE), the taint mask, every loaded module with its taint
    letters (E is a module the kernel did not verify), its signer and key (C(modinfo)) and whether we signed it,
    and the kernel's own messages about module signatures since boot (C(dmesg), else C(journalctl -k -b)).
  - What cannot be read is C(unknown) with the reason (a container, a host without EFI, C(keyctl) or C(dmesg)
    access); what is read but not understood is C(unparsed); neither ever counts as trusted.
  - Needs no C(cryptography) on the host.
version_added: 0.3.0
author:
  - skm.modsign contributors (@skm-modsign)
extends_documentation_fragment:
  - skm.modsign.attributes
attributes:
  check_mode:
    support: full
    details: It only reads; check mode returns the same facts.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Never changes anything.
options:
  certificates:
    description:
      - Our certificates (PEM, possibly several in one file, or DER), on the managed host. Each is looked up in the
        kernel's keyrings by the description the kernel gives it (subject name and key identifier), and modules
        signed by one of them count as ours.
    type: list
    elements: path
    default: []
    aliases: [trusted_certs]
  proc_dir:
    description: Where procfs is (a captured tree in tests).
    type: path
    default: /proc
  sys_dir:
    description: Where sysfs is (a captured tree in tests).
    type: path
    default: /sys
  boot_dir:
    description: Where C(config-<release>) of the running kernel is.
    type: path
    default: /boot
seealso:
  - module: skm.modsign.skm_module_info
  - module: skm.modsign.skm_enforce_gate
"""

EXAMPLES = r"""
- name: Read what the running kernel trusts and has loaded
  skm.modsign.skm_kernel_facts:
    certificates:
      - /var/lib/skm-modsign/keys/current/signing_key.crt
  register: kernel_facts

- name: Stop when our certificate is in no module-trusting keyring
  ansible.builtin.assert:
    that: kernel_facts.certificates | map(attribute='trusted_for_modules') is all
    fail_msg: "{{ kernel_facts.verdict.attention }}"
"""

RETURN = r"""
verdict:
  description: C(ok), C(attention) (with the reasons) or C(unknown) (with what could not be read).
  returned: always
  type: dict
  sample: {state: attention, attention: ["loaded without a trusted signature (taint E): skm_e2e"], unknown: []}
certificates:
  description:
    - Per certificate in O(certificates) - its kernel description, the keyrings holding it, and
      C(trusted_for_modules) (true, false, or null when the keyrings could not be read).
  returned: always
  type: list
  elements: dict
module_trusting_keyrings:
  description: The keyrings module signatures are checked against (null when unreadable).
  returned: always
  type: list
  elements: str
  sample: [.secondary_trusted_keys, .builtin_trusted_keys, .machine]
keyrings:
  description:
    - C(source) (C(keyctl) or C(/proc/keys)), C(keyrings) (per name - C(state), C(value) - the keys, each with
      C(type), C(description), C(subject), C(key_id)), C(kernel_keys) (every X.509 key in C(/proc/keys)),
      C(key_users) and C(unparsed) lines.
  returned: always
  type: dict
lockdown:
  description: The lockdown mode (C(none), C(integrity), C(confidentiality)) as a fact (C(state), C(value)).
  returned: always
  type: dict
efi:
  description: C(secure_boot), C(setup_mode), C(mok_sb_state), C(mok_list_trusted), each a fact with a boolean value.
  returned: always
  type: dict
sig_enforce:
  description: C(/sys/module/module/parameters/sig_enforce) as a fact with a boolean value.
  returned: always
  type: dict
config_module_sig_force:
  description: CONFIG_MODULE_SIG_FORCE of the running kernel's config as a fact with a boolean value.
  returned: always
  type: dict
taint:
  description: The kernel taint mask (C(mask)) and its letters (C(value)).
  returned: always
  type: dict
  sample: {state: known, value: [O, E], mask: 12288}
modules:
  description:
    - The loaded modules - C(name), C(taint), C(kernel_verified) (no E), C(signer), C(sig_key), C(sig_hashalgo),
      C(ours) - and the lines of C(/proc/modules) not understood.
  returned: always
  type: dict
rejections:
  description:
    - The kernel's messages about module signatures since boot, each with C(kind) (C(verification_failed),
      C(untrusted_pkcs7), C(lockdown), C(rejected), C(unknown_key)), C(module) where the kernel names it, and
      the C(message); C(source) says where they were read.
  returned: always
  type: dict
"""

from ansible_collections.skm.modsign.plugins.module_utils import _runtime as runtime
from ansible_collections.skm.modsign.plugins.module_utils._ansible import build_module, fail
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

ARGUMENT_SPEC = dict(
    certificates=dict(type="list", elements="path", default=[], aliases=["trusted_certs"]),
    proc_dir=dict(type="path", default="/proc"),
    sys_dir=dict(type="path", default="/sys"),
    boot_dir=dict(type="path", default="/boot"),
)


def main():
    module = build_module(ARGUMENT_SPEC)
    p = module.params
    prefixes = runtime.Prefixes(p["proc_dir"], p["sys_dir"], p["boot_dir"])
    try:
        evidence = runtime.collect(p["certificates"], prefixes, runtime.module_runner(module))
    except ModSignError as exc:
        fail(module, exc)
    module.exit_json(changed=False, **evidence)


if __name__ == "__main__":
    main()
