#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: skm_kernel_cmdline
short_description: Ensure a kernel argument (module.sig_enforce=1) is on, or off, every boot entry
description:
  - Puts one kernel argument on the command line of every boot entry, or takes it off, for the bootloader the host
    uses, and keeps every other argument byte for byte.
  - V(grub) (Debian, Ubuntu) - a drop-in C(/etc/default/grub.d/60-skm-modsign.cfg) appends the argument to
    C(GRUB_CMDLINE_LINUX); then C(update-grub) (or C(grub-mkconfig -o)) regenerates C(grub.cfg). Removal deletes the
    drop-in and takes the argument out of C(GRUB_CMDLINE_LINUX)/C(GRUB_CMDLINE_LINUX_DEFAULT) in
    C(/etc/default/grub) and the other drop-ins.
  - V(grubby) (Fedora, RHEL) - C(grubby --update-kernel=ALL --args=...) (or C(--remove-args=...)), which edits every
    BootLoaderSpec entry in C(/boot/loader/entries), C($kernelopts) in C(grubenv), C(/etc/default/grub) and
    C(/etc/kernel/cmdline).
  - V(bls) (Fedora, RHEL without grubby) - the C(options) of every entry in C(/boot/loader/entries) and
    C(/etc/kernel/cmdline), edited by this module; never C(grub2-mkconfig), which does not write the entries'
    options. Entries whose options take C($kernelopts) from C(grubenv) are refused (only grubby edits it).
  - V(systemd_boot) - the C(options) of every C(loader/entries/*.conf) on the ESP (C(/efi), C(/boot/efi), C(/boot))
    and C(/etc/kernel/cmdline), which C(kernel-install) uses for kernels installed later.
  - V(kernel_install) - C(/etc/kernel/cmdline) only, for unified kernel images built by C(kernel-install).
  - The argument counts as present only when it is in effect on EVERY boot entry (the last occurrence of its name
    wins, as in the kernel); otherwise the files are fixed and the bootloader tool runs. A second run reports
    C(changed=false), so a play that reboots on change does not reboot again.
  - After the bootloader tool ran, the entries are read again; an entry still without the argument fails the task.
version_added: 0.1.0
author:
  - skm.modsign contributors (@skm-modsign)
extends_documentation_fragment:
  - skm.modsign.attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change (files and predicted entries); never runs update-grub or grubby.
  diff_mode:
    support: full
    details: Before and after of every file written, and of the boot entries a bootloader tool would rewrite.
  idempotent:
    support: full
    details: Decided from the boot entries themselves; a second run changes nothing.
options:
  argument:
    description:
      - One kernel argument, V(name) or V(name=value) (the kernel's grammar). The name is letters, digits, V(_), V(.),
        V(-); the value is printable ASCII without spaces, quotes, backslashes, V($), backticks or the shell's
        operator and grouping characters (V(;), V(&), V(|), V(<), V(>), parentheses, braces, V(#)); or it is
        double-quoted, with spaces, single quotes and those operators allowed but no double quote, backslash, V($) or backtick. Anything
        else is refused, because the shell that C(update-grub) runs, GRUB's script parser or a BLS entry would
        interpret it.
      - The GRUB drop-in is written with shell quoting and checked with C(sh -n) and by sourcing it in a clean
        C(sh) before it replaces the old one; with O(state=absent) an edited C(/etc/default/grub) or drop-in must
        source to the same values without the argument. A C(GRUB_CMDLINE_LINUX) set with a command
        substitution, backticks or a variable other than C(GRUB_CMDLINE_LINUX*) is refused, the file unchanged.
    type: str
    default: module.sig_enforce=1
  state:
    description:
      - V(present) - in effect on every boot entry. V(absent) - no argument of that name on any entry.
    type: str
    choices: [present, absent]
    default: present
  bootloader:
    description:
      - Which configuration to manage. V(auto) - grubby when it is installed and BLS entries exist, else
        systemd-boot when C(loader/loader.conf) is on an ESP, else V(bls) when C(/boot/loader/entries) holds entries (never
        GRUB then), else GRUB when its tools or C(/etc/default/grub) exist,
        else kernel-install when C(/etc/kernel/cmdline) or C(install.conf) exists. Nothing recognised is a failure.
    type: str
    choices: [auto, grub, grubby, bls, systemd_boot, kernel_install]
    default: auto
  root_dir:
    description:
      - The root of the system to manage; files are read and written under it. When it is not C(/) the bootloader
        tool runs in it with C(chroot) (for an image or a prepared tree with its own tools).
    type: path
    default: /
  runtime:
    description:
      - Also turn enforcement on in the running kernel now, by writing C(1) to
        C(/sys/module/module/parameters/sig_enforce) (under O(root_dir)). The kernel accepts turning it on, never
        off, until the next boot. Only with O(argument=module.sig_enforce=1) and O(state=present).
    type: bool
    default: false
  dropin_name:
    description:
      - File name of the GRUB drop-in in C(/etc/default/grub.d/) (sourced in name order after C(/etc/default/grub)).
    type: str
    default: 60-skm-modsign.cfg
notes:
  - Files that are symbolic links (C(/etc/default/grub), drop-ins, C(/etc/kernel/cmdline), boot entries) are written
    through to their target, resolved inside O(root_dir); the link is kept. A link leading out of O(root_dir) is
    refused.
  - Changing the command line takes effect at the next boot; this module never reboots.
  - When C(/etc/kernel/cmdline) does not exist it is started from the newest boot entry's options (or
    C(/proc/cmdline) without C(BOOT_IMAGE=)/C(initrd=)), never from the argument alone, which would drop C(root=).
seealso:
  - module: skm.modsign.skm_enforce_gate
  - name: The Boot Loader Specification
    description: The boot entries V(grubby) and V(systemd_boot) edit.
    link: https://uapi-group.org/specifications/specs/boot_loader_specification/
"""

EXAMPLES = r"""
- name: Enforce module signatures from the next boot on
  skm.modsign.skm_kernel_cmdline:
    argument: module.sig_enforce=1
  register: cmdline

- name: Take it off again (every entry, every config file that mentions it)
  skm.modsign.skm_kernel_cmdline:
    argument: module.sig_enforce=1
    state: absent

- name: Prepare a mounted image
  skm.modsign.skm_kernel_cmdline:
    root_dir: /mnt/image
    bootloader: systemd_boot
"""

RETURN = r"""
bootloader:
  description: The bootloader configuration managed (detected or given).
  returned: always
  type: str
  sample: grub
argument:
  description: The argument managed.
  returned: always
  type: str
  sample: module.sig_enforce=1
entries:
  description: Every boot entry as it is at the end (in check mode - as it would be), with its arguments.
  returned: always
  type: list
  elements: dict
  contains:
    path: {description: File holding the entry, type: str}
    name: {description: "Kernel path, entry id or title", type: str}
    options: {description: Arguments in effect, type: str}
    satisfied: {description: Whether the entry is as O(state) asks, type: bool}
files:
  description: Files written (or, in check mode, that would be), relative to O(root_dir).
  returned: always
  type: list
  elements: str
  sample: [/etc/default/grub.d/60-skm-modsign.cfg]
command:
  description: The bootloader tool that ran (or would run in check mode); empty when none was needed.
  returned: always
  type: list
  elements: str
  sample: [update-grub]
runtime_enforced:
  description:
    - Whether the running kernel enforces module signatures now (C(/sys/module/module/parameters/sig_enforce));
      null when the file does not exist. In check mode with O(runtime), what it would be.
  returned: always
  type: bool
notes:
  description: Things worth knowing about this bootloader (for example that a UKI must be rebuilt).
  returned: always
  type: list
  elements: str
"""

import os
import tempfile

from ansible_collections.skm.modsign.plugins.module_utils import _cmdline as cmdline
from ansible_collections.skm.modsign.plugins.module_utils import _gate as gate
from ansible_collections.skm.modsign.plugins.module_utils._ansible import build_module, fail
from ansible_collections.skm.modsign.plugins.module_utils._atomic import atomic_write
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._files import write_target


def _entries(entries):
    return [dict(path=e.path, name=e.name, options=e.options, satisfied=e.satisfied) for e in entries]


def _diff(plan):
    """Readable before/after: files we write, and the entries a bootloader tool rewrites."""
    diffs = []
    for change in plan.changes:
        diffs.append(dict(before_header=change.path, after_header=change.path,
                          before=change.before or "", after=change.after or ""))
    if plan.command:
        before = "".join("%s: %s\n" % (e.name, e.options) for e in plan.entries)
        after = "".join("%s: %s\n" % (e.name, e.options) for e in plan.predicted)
        diffs.append(dict(before_header="boot entries", after_header="boot entries (after %s)" % plan.command[-1],
                          before=before, after=after))
    return diffs


def _sourced(module, path, cwd):
    """GRUB_CMDLINE_LINUX and _DEFAULT after sourcing ``path`` in a clean sh, as grub-mkconfig does."""
    script = '. "$1"; printf "%s\\0" ' + " ".join('"$%s"' % n for n in cmdline.CMDLINE_VARIABLES)
    rc, out, err = module.run_command(["env", "-i", "sh", "-c", script, "sh", path], cwd=cwd, encoding=None)
    values = out.split(b"\0")
    if rc != 0 or len(values) != len(cmdline.CMDLINE_VARIABLES) + 1:
        return None
    return [v.decode("utf-8", "replace") for v in values[:-1]]


def _check_grub_shell(module, change, path, arg, state):
    """Before anything is written: the new GRUB shell file parses (sh -n) and sources to what we intend.

    Our drop-in must add exactly the argument; an edited file must source to the same arguments as before
    without ours.
    """
    ours = change.path.endswith("/" + module.params["dropin_name"])
    with tempfile.TemporaryDirectory(prefix="skm-cmdline-") as tmp:
        new, old = os.path.join(tmp, "new"), os.path.join(tmp, "old")
        with open(new, "w") as handle:
            handle.write(change.after)
        with open(old, "w") as handle:
            handle.write(change.before or "")
        rc, _out, err = module.run_command(["sh", "-n", new], cwd=tmp)
        if rc != 0:
            raise ModSignError("the new content would not parse as sh (%s); left unchanged" % err.strip(), path)
        before, after = _sourced(module, old, tmp), _sourced(module, new, tmp)
    if before is None or after is None or not cmdline.sourced_cmdline_expected(
            before, after, arg, "present" if ours and state == "present" else "absent"):
        raise ModSignError("the new content would source to %s=%r, not to what was intended; left unchanged"
                           % (cmdline.CMDLINE_VARIABLES[0], (after or ["?"])[0]), path)


def _apply(module, plan, root, arg, state, result):
    """Check every GRUB shell file, then write each change through symbolic links, then run the tool."""
    if plan.bootloader == "grub":
        for change in plan.changes:
            if change.after is not None:
                _check_grub_shell(module, change, cmdline.under(root, change.path), cmdline.check_arg(arg), state)
    for change in plan.changes:
        path = cmdline.under(root, change.path)
        result["changed"] = True
        if change.after is None:
            os.unlink(path)      # our drop-in: a link to it is removed, whatever it points to stays
            continue
        target = write_target(path, root)
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o755)
        atomic_write(target, change.after.encode("utf-8"), mode=None if change.before is not None else 0o644)
    if plan.command:
        result["changed"] = True
        rc, out, err = module.run_command(plan.command)
        if rc != 0:
            raise ModSignError("%s failed (rc=%d): %s" % (" ".join(plan.command), rc, (err or out).strip()[-2000:]))


def _runtime(module, root, arg, state, result):
    """Read (and with ``runtime``, turn on) enforcement in the running kernel; sets ``changed`` when it would."""
    path = cmdline.under(root, gate.SIG_ENFORCE)
    now = gate.runtime_enforced(path)
    result["runtime_enforced"] = now
    if not module.params["runtime"]:
        return
    if state != "present" or cmdline.arg_name(arg) != "module.sig_enforce" or not cmdline.has_arg(arg, "module.sig_enforce=1"):
        raise ModSignError("runtime can only turn module.sig_enforce=1 on (state=present); it cannot be turned off "
                           "without a reboot")
    if now is None:
        raise ModSignError("does not exist: this kernel has no module signature support to turn on", path)
    if now:
        return
    result["changed"] = True
    result["runtime_enforced"] = True
    if module.check_mode:
        return
    gate.enable_runtime(path)
    if not gate.runtime_enforced(path):
        raise ModSignError("wrote 1 but the kernel still reports enforcement off", path)


def main():
    module = build_module(dict(
        argument=dict(type="str", default="module.sig_enforce=1"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        bootloader=dict(type="str", choices=["auto"] + list(cmdline.BOOTLOADERS), default="auto"),
        root_dir=dict(type="path", default="/"),
        dropin_name=dict(type="str", default=cmdline.DROPIN_NAME),
        runtime=dict(type="bool", default=False),
    ))
    p = module.params
    root, arg, state = p["root_dir"], p["argument"], p["state"]
    result = dict(changed=False, argument=arg, bootloader=p["bootloader"], entries=[], files=[], command=[],
                  notes=[])
    try:
        if "/" in p["dropin_name"] or not p["dropin_name"].endswith(".cfg"):
            raise ModSignError("dropin_name must be a file name ending in .cfg (grub-mkconfig sources only those)")
        plan = cmdline.plan(root, arg, state, p["bootloader"], p["dropin_name"])
        _runtime(module, root, arg, state, result)
        result.update(bootloader=plan.bootloader, files=[c.path for c in plan.changes],
                      command=plan.command or [], notes=plan.notes)
        if module._diff and plan.changed:
            result["diff"] = _diff(plan)
        if module.check_mode or not plan.changed:
            result["changed"] = plan.changed or result["changed"]
            result["entries"] = _entries(plan.predicted if plan.changed else plan.entries)
            module.exit_json(**result)
        _apply(module, plan, root, arg, state, result)
        after = cmdline.plan(root, arg, state, plan.bootloader, p["dropin_name"])
        result["entries"] = _entries(after.entries)
        missing = [e for e in after.entries if not e.satisfied]
        if missing or (not after.entries and state == "present"):
            raise ModSignError("after %s, %s: %s" % (
                " ".join(plan.command or ["writing the files"]),
                "these boot entries still do not have it as asked" if missing else "there is no boot entry",
                ", ".join("%s (%s)" % (e.name, e.path) for e in missing)))
    except ModSignError as exc:
        fail(module, exc, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
