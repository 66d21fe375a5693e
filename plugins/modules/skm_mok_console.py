#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: skm_mok_console
short_description: Confirm a staged MOK enrollment in shim's MokManager over a serial console, headlessly
description:
  - Runs O(console_command) (for example C(ipmitool -I lanplus -H bmc -U admin -E sol activate),
    C(virsh console vm1 --force), C(socat - UNIX-CONNECT:/run/vm1.serial)) and drives shim's MokManager on
    that console the way a person would - press a key at the countdown, C(Enroll MOK), C(View key 0),
    C(Continue), C(Yes), the password, C(Reboot).
  - "Run it on the controller (C(delegate_to: localhost)) while the managed host reboots with a request staged
    by M(skm.modsign.skm_mok_enroll); start it before the reboot reaches the firmware (MokManager's countdown
    is 10 seconds by default; C(skm_mok_enroll) O(skm.modsign.skm_mok_enroll#module:timeout) can lengthen it)."
  - The fingerprint MokManager shows for key 0 must be the one of O(certificate) (or O(fingerprint)). When it
    differs the module answers C(No) at C(Enroll the key(s)?), lets the host boot on and fails; nothing is
    enrolled. A wrong password fails after O(password_attempts) tries, also without enrolling.
  - Every failure names the MokManager screen where the dialogue stopped and returns the console transcript.
    The password is never in the transcript, the result or the logs (it is shown as C(********)).
  - Needs the Python library C(pexpect) where the module runs (the controller).
version_added: 0.2.0
author: skm.modsign contributors (@skm-modsign)
options:
  console_command:
    description:
      - The command that attaches to the host's serial console, as a list of arguments (no shell), or a
        string split like a shell would split it.
      - The console must carry the firmware's output (UEFI serial redirection / OVMF serial) and pass keys.
    type: raw
    required: true
  password:
    description: The one-time password given to M(skm.modsign.skm_mok_enroll) (C(mokutil --import)).
    type: str
    required: true
  certificate:
    description:
      - Path, where the module runs, of the staged DER certificate; its SHA1 and SHA256 fingerprints are the
        ones accepted. One of O(certificate) or O(fingerprint) is required.
    type: path
  fingerprint:
    description: The expected SHA1 or SHA256 fingerprint, hex, colons and spaces allowed.
    type: str
  countdown_timeout:
    description: Seconds to wait for MokManager's C(Press any key) countdown after the module starts.
    type: float
    default: 900
  screen_timeout:
    description: Seconds to wait for each following screen.
    type: float
    default: 120
  key_delay:
    description: Seconds of console silence that count as "the screen has finished drawing" after a key.
    type: float
    default: 0.5
  password_attempts:
    description:
      - How many times to type the password when MokManager says it does not match (MokManager allows 3).
    type: int
    default: 1
  reboot:
    description: Choose C(Reboot) after enrolling (otherwise the dialogue stops at MokManager's menu).
    type: bool
    default: true
  transcript_path:
    description: Also write the masked transcript to this file (mode 0600), where the module runs.
    type: path
extends_documentation_fragment:
  - skm.modsign.attributes
attributes:
  check_mode:
    support: partial
    details: In check mode the console command is not run; the module reports what it would do.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: It answers a request once; with no request staged it fails at the countdown saying so.
notes:
  - Tested against the real shim MokManager (Debian shim-signed) on OVMF's serial console; the recorded screens
    are in tests/unit/captured_mokmanager/.
"""

EXAMPLES = r"""
- name: Reboot the host into MokManager (the request was staged by skm_mok_enroll)
  ansible.builtin.shell: sleep 2 && systemctl reboot
  async: 1
  poll: 0

- name: Confirm the enrollment on the BMC's serial-over-LAN
  skm.modsign.skm_mok_console:
    console_command: [ipmitool, -I, lanplus, -H, "{{ bmc_host }}", -U, admin, -E, sol, activate]
    certificate: "{{ playbook_dir }}/keys/mok.der"
    password: "{{ mok_password }}"
  delegate_to: localhost
"""

RETURN = r"""
enrolled:
  description: Whether MokManager accepted the password and enrolled the key.
  returned: always
  type: bool
fingerprint:
  description: The fingerprint MokManager showed for key 0 (hex, lower case).
  returned: when the key view was reached
  type: str
screens:
  description: The screens the dialogue went through, in order.
  returned: always
  type: list
  elements: str
screen:
  description: The screen where a failed dialogue stopped.
  returned: failure
  type: str
declined:
  description: The fingerprint differed and the module answered C(No); nothing was enrolled.
  returned: failure
  type: bool
transcript:
  description: The console as text, keys sent shown as C(<<Down>>) etc., the password as C(********).
  returned: always (except in check mode)
  type: str
"""

import shlex

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import pexpect  # noqa: F401  pylint: disable=unused-import
    HAS_PEXPECT = True
except ImportError:
    HAS_PEXPECT = False

from ansible_collections.skm.modsign.plugins.module_utils import _mokmanager as mokmanager


def expected_fingerprints(module):
    if module.params["fingerprint"]:
        try:
            return [mokmanager.normalize_fingerprint(module.params["fingerprint"])]
        except ValueError as exc:
            module.fail_json(msg="fingerprint: %s" % exc)
    path = module.params["certificate"]
    try:
        with open(path, "rb") as handle:
            der = handle.read(1 << 20)
    except (IOError, OSError) as exc:
        module.fail_json(msg="%s: cannot read the certificate (%s)" % (path, exc.strerror or exc))
    if der.lstrip().startswith(b"-----BEGIN"):
        module.fail_json(msg="%s: is PEM; give the DER certificate that skm_mok_enroll staged" % path)
    return list(mokmanager.fingerprints(der).values())


def console_argv(module):
    command = module.params["console_command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(part) for part in command or []]
    if not argv:
        module.fail_json(msg="console_command is empty")
    return argv


def write_transcript(module, text):
    path = module.params["transcript_path"]
    if path:
        import os
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            console_command=dict(type="raw", required=True),
            password=dict(type="str", required=True, no_log=True),
            certificate=dict(type="path"),
            fingerprint=dict(type="str"),
            countdown_timeout=dict(type="float", default=900),
            screen_timeout=dict(type="float", default=120),
            key_delay=dict(type="float", default=0.5, no_log=False),
            password_attempts=dict(type="int", default=1, no_log=False),
            reboot=dict(type="bool", default=True),
            transcript_path=dict(type="path"),
        ),
        required_one_of=[("certificate", "fingerprint")],
        mutually_exclusive=[("certificate", "fingerprint")],
        supports_check_mode=True,
    )
    expected = expected_fingerprints(module)
    argv = console_argv(module)
    if module.check_mode:
        module.exit_json(changed=True, enrolled=False, screens=[],
                         msg="would attach with %s and confirm the key %s" % (argv[0], " or ".join(expected)))
    if not HAS_PEXPECT:
        module.fail_json(msg=missing_required_lib("pexpect"))
    try:
        console = mokmanager.CommandConsole(argv)
    except Exception as exc:  # pexpect raises its own ExceptionPexpect for a missing command
        module.fail_json(msg="cannot run the console command %s: %s" % (argv[0], exc))
    dialogue = mokmanager.Dialogue(console, module.params["password"], expected,
                                   countdown_timeout=module.params["countdown_timeout"],
                                   screen_timeout=module.params["screen_timeout"],
                                   key_delay=module.params["key_delay"],
                                   password_attempts=module.params["password_attempts"],
                                   confirm_reboot=module.params["reboot"])
    try:
        result = dialogue.run()
    except mokmanager.MokManagerError as exc:
        write_transcript(module, exc.transcript)
        module.fail_json(msg=str(exc), changed=len(dialogue.screens) > 1, enrolled=exc.enrolled,
                         declined=exc.declined, screen=exc.screen, screens=dialogue.screens,
                         transcript=exc.transcript)
    finally:
        console.close()
    write_transcript(module, result["transcript"])
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
