#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: skm_certificates
short_description: Put every generation of the fleet signing certificate on a host in one step
description:
  - Writes the files M(skm.modsign.skm_genkey) keeps on the controller to a host's key directory, for every key
    generation at once, in the same layout - C(<path>/<generation>/signing_key.crt) (PEM) and C(signing_key.der)
    (the same certificate as DER, for C(mokutil --import)), mode 0644, and C(<path>/current) pointing at the newest
    generation - so that DKMS, the kernel build and the MOK role find them where a host-made key would be.
  - With O(private_keys=absent) (controller key mode) it also removes any C(signing_key.key) and C(signing_key.pem)
    from those generations, so a host that once held the key holds it no more. With O(private_keys=present) (shared
    key mode) it writes them, mode 0600.
  - One task and one connection for what would otherwise be a directory, two copies, a link and a removal per
    generation; unchanged files are compared, not rewritten (a second run reports no change).
  - Needs no C(cryptography) on the host (the DER is the PEM's base64 body).
  - With O(private_keys=present), a private key or combined PEM that belongs to another certificate is refused
    before anything is written; the error names the generation and the option, never key material. The public
    halves are compared (RSA modulus and exponent, the EC point); an encrypted private key cannot be read without
    its passphrase, so then only its agreement with the combined PEM is checked.
  - Certificate dates are not checked - old generations stay on the host for the modules they signed, and the
    kernel ignores the dates (README, "Certificate validity dates").
version_added: 0.2.0
author:
  - skm.modsign contributors (@skm-modsign)
extends_documentation_fragment:
  - skm.modsign.attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change; writes nothing.
  diff_mode:
    support: full
    details: One line per file before and after - certificates by SHA-256, private keys only as present, never their
      bytes.
  idempotent:
    support: full
    details: Files are compared byte for byte, with their modes and the link target.
options:
  path:
    description: The host's key directory (the signing_key role's C(skm_signing_key_dir)).
    type: path
    required: true
  generations:
    description: Every generation to place, oldest first.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The generation's directory name (skm_genkey's dated layout, for example V(20261123-112902)).
        type: str
        required: true
      certificate:
        description: The certificate, PEM (for example C(lookup('ansible.builtin.file', '.../signing_key.crt',
          rstrip=false))).
        type: str
        required: true
      private_key:
        description: The private key, PEM, for O(private_keys=present).
        type: str
      combined:
        description: The private key followed by the certificate, PEM (C(signing_key.pem)), for
          O(private_keys=present).
        type: str
  current:
    description: The generation C(<path>/current) points at. Default - the last of O(generations).
    type: str
  private_keys:
    description:
      - V(absent) - no C(signing_key.key) or C(signing_key.pem) stays in these generations (controller key mode).
      - V(present) - write them from O(generations[].private_key) and O(generations[].combined), both required for
        every generation (shared key mode).
    type: str
    choices: [absent, present]
    default: absent
notes:
  - Private keys and their combined PEM are C(no_log) options; they are sent over the connection like a copied file
    is, and appear in no result, log line or diff.
seealso:
  - module: skm.modsign.skm_genkey
  - module: skm.modsign.skm_mok_enroll
"""

EXAMPLES = r"""
- name: Give every host the fleet certificates, keep the private key on the controller
  skm.modsign.skm_certificates:
    path: /var/lib/skm-modsign/keys
    generations:
      - name: 20261123-112902
        certificate: "{{ lookup('ansible.builtin.file', '~/.skm-modsign/keys/20261123-112902/signing_key.crt',
          rstrip=false) }}"
    private_keys: absent
"""

RETURN = r"""
changes:
  description: What changed (or would change in check mode), a line each - C(write), C(remove), C(mkdir) or
    C(link), then the path.
  returned: always
  type: list
  elements: str
  sample: ["write /var/lib/skm-modsign/keys/20261123-112902/signing_key.der", "link /var/lib/skm-modsign/keys/current"]
current:
  description: The generation C(current) points at.
  returned: always
  type: str
  sample: 20261123-112902
"""

from ansible_collections.skm.modsign.plugins.module_utils import _key_files as key_files
from ansible_collections.skm.modsign.plugins.module_utils._ansible import build_module, fail
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

ARGUMENT_SPEC = dict(
    path=dict(type="path", required=True),
    generations=dict(type="list", elements="dict", required=True, options=dict(
        name=dict(type="str", required=True),
        certificate=dict(type="str", required=True),
        private_key=dict(type="str", no_log=True),
        combined=dict(type="str", no_log=True),
    )),
    current=dict(type="str"),
    private_keys=dict(type="str", choices=["absent", "present"], default="absent"),
)


def main():
    module = build_module(ARGUMENT_SPEC)
    p = module.params
    keep_keys = p["private_keys"] == "present"
    result = dict(changed=False, changes=[])
    try:
        if not p["generations"]:
            raise ModSignError("no generation given", p["path"])
        generations = []
        for gen in p["generations"]:
            if keep_keys and not (gen["private_key"] and gen["combined"]):
                raise ModSignError("private_keys=present needs private_key and combined for generation %s"
                                   % gen["name"], p["path"])
            if not keep_keys and (gen["private_key"] or gen["combined"]):
                raise ModSignError("a private key was given for generation %s but private_keys=absent"
                                   % gen["name"], p["path"])
            generation = key_files.Generation(gen["name"], gen["certificate"], gen["private_key"], gen["combined"])
            key_files.check_generation(generation, p["path"])
            generations.append(generation)
        current = p["current"] or generations[-1].name
        if current not in [g.name for g in generations]:
            raise ModSignError("current %s is not one of the generations given" % current, p["path"])
        result["current"] = current
        changes = key_files.plan(p["path"], generations, current, keep_keys)
        result["changes"] = ["%s %s" % (c.action, c.path) for c in changes]
        result["changed"] = bool(changes)
        if changes and module._diff:
            result["diff"] = dict(before=key_files.describe_host(p["path"], generations),
                                  after=key_files.describe_wanted(p["path"], generations, current),
                                  before_header=p["path"], after_header=p["path"])
        if changes and not module.check_mode:
            key_files.apply(p["path"], generations, current, changes)
    except ModSignError as exc:
        fail(module, exc, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
