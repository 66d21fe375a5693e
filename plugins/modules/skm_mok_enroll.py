#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: skm_mok_enroll
short_description: Stage enrollment or removal of a certificate in the UEFI Machine Owner Key list
description:
  - Stages a request with C(mokutil) to enroll (O(state=present)) or delete (O(state=absent)) a DER
    certificate in shim's Machine Owner Key (MOK) list, or only reports where it stands (O(state=query)).
  - "Enrollment is never finished by this module: after the next reboot a person at the console must confirm
    the request in shim's MokManager with the one-time O(password). The module reports RV(state=pending)
    (or RV(state=pending_delete)), RV(reboot_required) and the exact RV(console_steps)."
  - The state is read from what C(mokutil --test-key), C(--list-delete) and C(--sb-state) print, never from
    their exit codes (they changed meaning between mokutil releases).
  - The password is hashed by C(mokutil --generate-hash) reading it from standard input, and the hash is
    given to C(mokutil --import/--delete) through C(--hash-file) in a 0600 temporary file removed right
    after. The password never appears on a command line, in the result or in the logs.
  - A certificate already enrolled or already pending is left alone (C(changed=false)); a pending request
    keeps the password it was made with.
  - Every request is read back - after C(mokutil --import) the certificate's SHA-1 must be listed by
    C(mokutil --list-new) (C(--list-delete) after C(--delete)); C(mokutil) exits 0 also when the firmware kept
    nothing, so its exit code proves nothing. A request that is not staged fails the task, with C(changed=true)
    and RV(actions) listing what mokutil did.
  - With O(state=present), a certificate that neither our signer nor the kernel can use is refused before
    C(mokutil) runs - a key other than RSA or ECDSA P-256/P-384 (Ed25519, Ed448, RSA-PSS, P-521), or a
    certificate outside its validity dates (expired, or not valid yet on this host's clock; the collection's one
    rule, README "Certificate validity dates"). O(state=query) and O(state=absent) take any certificate.
version_added: "1.0.0"
author: skm.modsign contributors (@skm-modsign)
options:
  certificate:
    description:
      - Path on the managed host of the certificate in DER form (what C(skm_genkey) writes with format C(der)).
      - A PEM file is refused with a message that says how to convert it; it is not converted silently.
    type: path
    required: true
  state:
    description:
      - V(present) stages an enrollment request (or cancels a pending deletion).
      - V(absent) stages a deletion request for an enrolled certificate, or cancels a pending enrollment.
      - V(query) changes nothing and only reports.
    type: str
    choices: [present, absent, query]
    default: present
  password:
    description:
      - The one-time password the console operator types in MokManager to confirm the request
        (1 to 256 characters; 8 to 16 when O(trust_mok) is changed, as C(mokutil --trust-mok) demands).
      - Required for O(state=present) and O(state=absent). Never logged.
    type: str
  ignore_keyring:
    description:
      - Enroll even when the running kernel already trusts the certificate (built-in, C(.platform) or
        C(.machine) keyring). Without it such a certificate counts as present, as C(mokutil --import) would
        skip it.
    type: bool
    default: false
  timeout:
    description:
      - MokManager's countdown in seconds before it boots on without asking (C(mokutil --timeout));
        V(-1) waits for a key press forever. Shim's default is 10.
    type: int
  trust_mok:
    description:
      - V(true) requests that the kernel trust MOK keys for module signatures (C(mokutil --trust-mok), shim
        then exposes C(MokListTrustedRT) and the kernel puts MOK keys in its C(.machine) keyring);
        V(false) requests the opposite. Left as it is when omitted. Also confirmed in MokManager.
      - Some kernels accept only CA certificates into the C(.machine) keyring.
    type: bool
  when_unsupported:
    description:
      - What to do on a host that cannot take a MOK (no C(mokutil), no EFI variables, firmware without
        Secure Boot support) - V(fail) the task, or V(skip) it.
    type: str
    choices: [fail, skip]
    default: fail
notes:
  - Needs root (C(mokutil) writes EFI variables) and C(mokutil) on the host; shim must be the boot loader
    for the request to be acted upon.
extends_documentation_fragment:
  - skm.modsign.attributes
attributes:
  check_mode:
    support: full
    details: Reports the request it would stage (RV(actions), RV(after)); runs only the read-only mokutil queries.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: A certificate already enrolled or already pending is left alone, with its pending password.
seealso:
  - name: mokutil
    description: The tool this module drives.
    link: https://github.com/lcp/mokutil
"""

EXAMPLES = r"""
- name: Stage enrollment of the fleet certificate
  skm.modsign.skm_mok_enroll:
    certificate: /var/lib/skm/keys/current/signing_key.der
    password: "{{ mok_one_time_password }}"
    timeout: 30
    when_unsupported: skip
  register: mok

- name: Tell the operator what to do at the console
  ansible.builtin.debug:
    var: mok.console_steps
  when: mok.reboot_required

- name: Where does the certificate stand?
  skm.modsign.skm_mok_enroll:
    certificate: /var/lib/skm/keys/current/signing_key.der
    state: query

- name: Remove an old key
  skm.modsign.skm_mok_enroll:
    certificate: /var/lib/skm/keys/2023/signing_key.der
    state: absent
    password: "{{ mok_one_time_password }}"
"""

RETURN = r"""
state:
  description: >-
    The certificate's state after the task: C(enrolled) (in MokListRT), C(pending) (in MokNew, waits for
    MokManager), C(pending_delete) (enrolled, in MokDel), C(absent), C(in_db) (in the firmware db, trusted
    without MOK) or C(blocked) (in dbx or MokListX).
  returned: success
  type: str
  sample: pending
before:
  description: State, Secure Boot, keyring, trust and timeout as found.
  returned: success
  type: dict
  sample: {"state": "absent", "secure_boot": "enabled", "in_kernel_keyring": false, "timeout": 10}
after:
  description: The same as RV(before) after the task (predicted in check mode).
  returned: success
  type: dict
secure_boot:
  description: C(enabled), C(disabled), C(unsupported) or C(unknown), from C(mokutil --sb-state).
  returned: always
  type: str
reboot_required:
  description: True while a request waits for MokManager (pending enrollment, deletion or trust change).
  returned: success
  type: bool
console_steps:
  description: What the person at the console must do in MokManager after the reboot, in order.
  returned: success
  type: list
  elements: str
fingerprint:
  description: SHA-1 fingerprint of the certificate as MokManager's "View key" and mokutil show it.
  returned: success
  type: str
  sample: "79:bf:84:2a:42:60:5a:e0:4b:a5:21:2b:67:5f:32:8f:f0:aa:d5:68"
actions:
  description: The mokutil requests made (or that would be made in check mode); on failure, those made before it.
  returned: always
  type: list
  elements: str
  sample: ["import: requested", "timeout: 30"]
"""

from ansible_collections.skm.modsign.plugins.module_utils import _mok as mok
from ansible_collections.skm.modsign.plugins.module_utils._ansible import build_module, fail
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError


def _runner(module):
    def run(argv, data=None):
        rc, out, err = module.run_command(argv, data=data.decode("utf-8") if data is not None else None,
                                          binary_data=True, environ_update={"LC_ALL": "C"})
        return rc, out, err
    return run


def main():
    module = build_module(
        dict(
            certificate=dict(type="path", required=True),
            state=dict(type="str", choices=["present", "absent", "query"], default="present"),
            password=dict(type="str", no_log=True),
            ignore_keyring=dict(type="bool", default=False),
            timeout=dict(type="int"),
            trust_mok=dict(type="bool"),
            when_unsupported=dict(type="str", choices=["fail", "skip"], default="fail"),
        ),
        required_if=[("state", "present", ["password"]), ("state", "absent", ["password"])],
    )
    params = module.params
    timeout = params["timeout"]
    if timeout is not None and not -1 <= timeout <= 0x7FFF:
        module.fail_json(msg="timeout must be -1 (wait forever) or 0 to 32767 seconds, not %d" % timeout)
    path = params["certificate"]
    try:
        der = mok.read_certificate(path)
        if params["state"] == "present":
            mok.check_enrollable(der, path)
        binary = module.get_bin_path("mokutil")
        if binary is None:
            raise mok.MokUnsupported("mokutil is not installed on this host (Debian/Ubuntu/Fedora package mokutil)")
        mokutil = mok.Mokutil(_runner(module), binary)
        before = mok.query(mokutil, path, der)
        if params["state"] == "query":
            actions = []
        else:
            if params["password"] is not None:
                mok.check_password(params["password"])
            actions = mok.plan(before, params["state"], params["ignore_keyring"], timeout, params["trust_mok"])
        if actions and not module.check_mode:
            done = mok.apply(mokutil, path, actions, params["password"], params["ignore_keyring"],
                             fingerprint=before.fingerprint)
            after = mok.query(mokutil, path, der)
        else:
            done = [action.name for action in actions]
            after = mok.predict(before, actions)
    except mok.MokUnsupported as exc:
        if params["when_unsupported"] == "skip":
            module.exit_json(changed=False, skipped=True, msg="skipped: %s" % exc, secure_boot="unsupported")
        fail(module, exc, secure_boot="unsupported")
    except mok.MokRequestError as exc:
        fail(module, exc, changed=bool(exc.done), actions=exc.done)
    except ModSignError as exc:
        fail(module, exc)
    module.exit_json(
        changed=after != before, state=after.state, before=before.as_dict(), after=after.as_dict(),
        secure_boot=after.secure_boot, reboot_required=mok.reboot_required(after),
        console_steps=mok.console_steps(after), fingerprint=after.fingerprint, actions=done,
    )


if __name__ == "__main__":
    main()
