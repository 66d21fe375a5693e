# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel command lines and the bootloader files that carry them.

Private to skm.modsign. Pure functions over text plus a planner that reads a
file tree and says which files change and which bootloader command must run;
nothing here runs a command or writes a file (the module does, outside check
mode).

Where an argument lives, per bootloader:

- ``grub`` (Debian/Ubuntu): ``GRUB_CMDLINE_LINUX`` from ``/etc/default/grub``
  and ``/etc/default/grub.d/*.cfg`` (shell, sourced in order by grub-mkconfig);
  the boot entries are the ``linux`` lines of the generated ``grub.cfg``.
- ``grubby`` (Fedora/RHEL): BootLoaderSpec entries in ``/boot/loader/entries``
  whose ``options`` may name ``$kernelopts`` from ``/boot/grub2/grubenv``;
  ``grubby --update-kernel=ALL --args=/--remove-args=`` edits them all (and
  ``/etc/default/grub``, ``/etc/kernel/cmdline``).
- ``systemd_boot``: ``/etc/kernel/cmdline`` (read by kernel-install for new
  kernels) and every ``loader/entries/*.conf`` on the ESP/XBOOTLDR.
- ``kernel_install`` (UKI): ``/etc/kernel/cmdline`` only; a unified kernel
  image carries its command line inside and must be rebuilt to change it.

An argument counts as present only when EVERY boot entry has it (the last
occurrence of its name wins, as the kernel parses the line).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import os
import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._files import read_text_if_exists

BOOTLOADERS = ("grub", "grubby", "systemd_boot", "kernel_install")
DROPIN_NAME = "60-skm-modsign.cfg"
MARKER = "# Managed by skm.modsign (enforce role): kernel module signature enforcement."


# ---------------------------------------------------------------- the line --

class Token(NamedTuple):
    start: int
    end: int
    text: str


def tokens(cmdline):
    # type: (str) -> List[Token]
    """Arguments with their spans. Whitespace separates; double quotes group (as the kernel's next_arg)."""
    out = []  # type: List[Token]
    i, n = 0, len(cmdline)
    while i < n:
        while i < n and cmdline[i].isspace():
            i += 1
        if i >= n:
            break
        start, quoted = i, False
        while i < n and (quoted or not cmdline[i].isspace()):
            if cmdline[i] == '"':
                quoted = not quoted
            i += 1
        out.append(Token(start, i, cmdline[start:i]))
    return out


def split_args(cmdline):
    # type: (str) -> List[str]
    return [t.text for t in tokens(cmdline)]


def arg_name(arg):
    # type: (str) -> str
    """The parameter name, dashes and underscores equal (the kernel's parameq)."""
    return arg.split("=", 1)[0].replace('"', "").replace("-", "_")


def _value(arg):
    # type: (str) -> Optional[str]
    return arg.split("=", 1)[1].replace('"', "") if "=" in arg else None


def check_arg(arg):
    # type: (str) -> str
    arg = arg.strip()
    if not arg or len(split_args(arg)) != 1 or arg.split("=", 1)[0] in ("", "--"):
        raise ModSignError("%r is not one kernel argument (name or name=value, no spaces)" % arg)
    if any(c in arg for c in "$`\\'"):
        raise ModSignError("%r: shell or quoting characters are not allowed in the argument" % arg)
    return arg


def has_arg(cmdline, arg):
    # type: (str, str) -> bool
    """Whether ``arg`` is in effect: the last argument of that name carries the same value.

    Arguments after a bare ``--`` go to init, not the kernel.
    """
    name, want, last = arg_name(arg), _value(arg), None  # type: str, Optional[str], Optional[str]
    for text in split_args(cmdline):
        if text == "--":
            break
        if arg_name(text) == name:
            last = text
    return last is not None and _value(last) == want


def mentions(cmdline, arg):
    # type: (str, str) -> bool
    """Whether any argument of that name appears at all (what ``absent`` removes)."""
    name = arg_name(arg)
    return any(arg_name(text) == name for text in split_args(cmdline))


def _cut(cmdline, drop):
    # type: (str, Sequence[Token]) -> str
    """Remove tokens (and the whitespace before each) keeping every other byte."""
    for tok in sorted(drop, key=lambda t: -t.start):
        start = tok.start
        while start > 0 and cmdline[start - 1] in " \t":
            start -= 1
        if start == 0:
            end = tok.end
            while end < len(cmdline) and cmdline[end] in " \t":
                end += 1
            cmdline = cmdline[end:]
        else:
            cmdline = cmdline[:start] + cmdline[tok.end:]
    return cmdline


def without_arg(cmdline, arg):
    # type: (str, str) -> str
    """``cmdline`` with every argument named like ``arg`` removed; everything else byte for byte."""
    name = arg_name(arg)
    return _cut(cmdline, [t for t in tokens(cmdline) if arg_name(t.text) == name])


def with_arg(cmdline, arg):
    # type: (str, str) -> str
    """``cmdline`` with ``arg`` in effect: unchanged when it already is, else other values of it
    removed and ``arg`` appended (before a ``--`` that starts init's arguments)."""
    if has_arg(cmdline, arg):
        return cmdline
    name = arg_name(arg)
    toks = tokens(cmdline)
    init = next((t for t in toks if t.text == "--"), None)
    kernel_toks = [t for t in toks if init is None or t.start < init.start]
    base = _cut(cmdline, [t for t in kernel_toks if arg_name(t.text) == name])
    if init is not None:
        at = next(t.start for t in tokens(base) if t.text == "--")
        return base[:at] + arg + " " + base[at:]
    stripped = base.rstrip()
    return (stripped + " " + arg if stripped else arg) + base[len(stripped):]


def edit(cmdline, arg, state):
    # type: (str, str, str) -> str
    return with_arg(cmdline, arg) if state == "present" else without_arg(cmdline, arg)


def satisfied(cmdline, arg, state):
    # type: (str, str, str) -> bool
    return has_arg(cmdline, arg) if state == "present" else not mentions(cmdline, arg)


# ------------------------------------------------------ shell assignments --

_ASSIGN = re.compile(r'^(?P<lead>\s*(?:export\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)=)(?P<value>"(?:[^"\\]|\\.)*"|\'[^\']*\'|[^\s#;]*)(?P<rest>.*)$')


def shell_assignments(text, name):
    # type: (str, str) -> List[Tuple[int, str]]
    """(line index, unquoted value) of each plain assignment ``name=...`` in a shell file."""
    out = []
    for index, line in enumerate(text.split("\n")):
        match = _ASSIGN.match(line)
        if match and match.group("name") == name:
            value = match.group("value")
            if value[:1] in "\"'" and len(value) >= 2:
                value = value[1:-1]
            out.append((index, value))
    return out


def edit_shell_assignment(text, name, arg, state):
    # type: (str, str, str, str) -> str
    """Add or remove ``arg`` inside every ``name="..."`` assignment; other lines byte for byte.

    Used for removal (``absent``) from /etc/default/grub and drop-ins: adding is done by our own drop-in.
    """
    lines = text.split("\n")
    for index, value in shell_assignments(text, name):
        match = _ASSIGN.match(lines[index])
        new_value = edit(value, arg, state)
        if new_value == value:
            continue
        quote = match.group("value")[:1] if match.group("value")[:1] in "\"'" else '"'
        lines[index] = "%s%s%s%s%s" % (match.group("lead"), quote, new_value, quote, match.group("rest"))
    return "\n".join(lines)


def grub_dropin(arg):
    # type: (str) -> str
    """Our drop-in: sourced by grub-mkconfig after /etc/default/grub, it appends to GRUB_CMDLINE_LINUX."""
    return '%s\nGRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX %s"\n' % (MARKER, arg)


_GRUB_LINUX = re.compile(r"^\s*(linux|linuxefi|linux16)\s+(\S+)(.*)$")


def grub_cfg_entries(text):
    # type: (str) -> List[Tuple[str, str]]
    """(kernel path, arguments) of every ``linux`` line of a generated grub.cfg."""
    out = []
    for line in text.splitlines():
        match = _GRUB_LINUX.match(line)
        if match:
            out.append((match.group(2), match.group(3).strip()))
    return out


# ------------------------------------------------------ BLS entries, env --

def bls_options(text):
    # type: (str) -> str
    """The ``options`` of a BootLoaderSpec entry (several lines are joined with a space)."""
    values = []
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if parts and parts[0] == "options":
            values.append(parts[1].strip() if len(parts) > 1 else "")
    return " ".join(v for v in values if v)


def bls_value(text, key):
    # type: (str, str) -> Optional[str]
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if parts and parts[0] == key:
            return parts[1].strip() if len(parts) > 1 else ""
    return None


def edit_bls_entry(text, arg, state):
    # type: (str, str, str) -> str
    """An entry with ``arg`` in effect (appended to its last options line) or removed from every one."""
    lines = text.split("\n")
    indexes = [i for i, line in enumerate(lines) if line.strip().split(None, 1)[:1] == ["options"]]
    if state == "absent":
        for i in indexes:
            lines[i] = without_arg(lines[i], arg) if len(tokens(lines[i])) > 1 else lines[i]
        return "\n".join(lines)
    if has_arg(bls_options(text), arg):
        return text
    if not indexes:
        at = len(lines) - 1 if lines and lines[-1] == "" else len(lines)
        lines.insert(at, "options %s" % arg)
        return "\n".join(lines)
    for i in indexes[:-1]:
        rest = tokens(lines[i])[1:]
        lines[i] = _cut(lines[i], [t for t in rest if arg_name(t.text) == arg_name(arg)])
    lines[indexes[-1]] = with_arg(lines[indexes[-1]], arg)
    return "\n".join(lines)


def grubenv(text):
    # type: (str) -> Dict[str, str]
    """Variables of a GRUB environment block (``name=value`` lines, ``#`` padding)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def expand_kernelopts(options, env):
    # type: (str, Dict[str, str]) -> str
    """What GRUB passes for a BLS ``options`` value: ``$var``/``${var}`` from grubenv."""
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), options)


# ------------------------------------------------------------ the planner --

class FileChange(NamedTuple):
    path: str
    before: Optional[str]     # None: the file does not exist
    after: Optional[str]      # None: the file is removed


class Entry(NamedTuple):
    path: str                 # the file holding it (entry file, grub.cfg, /etc/kernel/cmdline)
    name: str                 # kernel path or entry id
    options: str              # effective arguments
    satisfied: bool


class Plan(NamedTuple):
    bootloader: str
    entries: List[Entry]            # how things stand now
    changes: List[FileChange]       # files we write ourselves
    command: Optional[List[str]]    # the bootloader's own tool, when it must run
    predicted: List[Entry]          # entries as they will be (for check/diff of tool-made changes)
    notes: List[str]

    @property
    def changed(self):
        # type: () -> bool
        return bool(self.changes or self.command)


def under(root, path):
    # type: (str, str) -> str
    return os.path.join(root, path.lstrip("/"))


def _exists(root, *paths):
    # type: (str, str) -> Optional[str]
    for path in paths:
        if os.path.lexists(under(root, path)):
            return path
    return None


ESP_CANDIDATES = ("/efi", "/boot/efi", "/boot")


def systemd_boot_dirs(root):
    # type: (str) -> List[str]
    """ESP/XBOOTLDR directories (in-tree paths) that hold systemd-boot's loader/ directory."""
    found = []
    for esp in ESP_CANDIDATES:
        base = under(root, esp)
        if (os.path.exists(os.path.join(base, "loader", "loader.conf"))
                or glob.glob(os.path.join(base, "EFI", "systemd", "systemd-boot*.efi"))):
            found.append(esp)
    if found and "/boot" not in found and os.path.isdir(under(root, "/boot/loader/entries")):
        found.append("/boot")      # XBOOTLDR mounted at /boot next to an ESP at /efi
    return found


def detect(root):
    # type: (str) -> str
    """Which bootloader configuration this tree uses; a clear failure when none is recognised."""
    if _exists(root, "/usr/sbin/grubby", "/usr/bin/grubby", "/sbin/grubby") and \
            os.path.isdir(under(root, "/boot/loader/entries")):
        return "grubby"
    if systemd_boot_dirs(root):
        return "systemd_boot"
    if _exists(root, "/usr/sbin/update-grub", "/usr/sbin/grub-mkconfig", "/usr/sbin/grub2-mkconfig",
               "/etc/default/grub", "/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"):
        return "grub"
    if _exists(root, "/etc/kernel/cmdline", "/etc/kernel/install.conf", "/usr/lib/kernel/install.conf"):
        return "kernel_install"
    raise ModSignError("no bootloader recognised: looked for grubby with BLS entries, systemd-boot "
                       "(loader/loader.conf on /efi, /boot/efi, /boot), GRUB (update-grub, grub-mkconfig, "
                       "/etc/default/grub) and kernel-install (/etc/kernel/cmdline); set bootloader explicitly",
                       root)


def _chroot(root, argv):
    # type: (str, List[str]) -> List[str]
    return argv if os.path.abspath(root) == "/" else ["chroot", root] + argv


def grub_cfg_path(root):
    # type: (str) -> str
    if _exists(root, "/usr/sbin/update-grub", "/boot/grub/grub.cfg"):
        return "/boot/grub/grub.cfg"
    if _exists(root, "/usr/sbin/grub2-mkconfig", "/boot/grub2/grub.cfg"):
        return "/boot/grub2/grub.cfg"
    return "/boot/grub/grub.cfg"


def grub_command(root):
    # type: (str) -> List[str]
    """update-grub where Debian ships it, else grub2-mkconfig/grub-mkconfig -o <grub.cfg>."""
    if _exists(root, "/usr/sbin/update-grub"):
        return _chroot(root, ["update-grub"])
    tool = "grub2-mkconfig" if _exists(root, "/usr/sbin/grub2-mkconfig") else "grub-mkconfig"
    return _chroot(root, [tool, "-o", grub_cfg_path(root)])


def _plan_grub(root, arg, state, dropin_name):
    # type: (str, str, str, str) -> Plan
    cfg_path = grub_cfg_path(root)
    cfg = read_text_if_exists(under(root, cfg_path))
    entries = [Entry(cfg_path, kernel, options, satisfied(options, arg, state))
               for kernel, options in grub_cfg_entries(cfg or "")]
    dropin = "/etc/default/grub.d/%s" % dropin_name
    current = read_text_if_exists(under(root, dropin))
    changes = []  # type: List[FileChange]
    if state == "present":
        wanted = grub_dropin(arg)
        if current != wanted:
            changes.append(FileChange(dropin, current, wanted))
    else:
        if current is not None:
            changes.append(FileChange(dropin, current, None))
        others = ["/etc/default/grub"] + sorted(
            "/etc/default/grub.d/" + os.path.basename(p)
            for p in glob.glob(under(root, "/etc/default/grub.d/*.cfg")))
        for path in others:
            text = read_text_if_exists(under(root, path))
            if text is None or path == dropin:
                continue
            new = text
            for name in ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"):
                new = edit_shell_assignment(new, name, arg, state)
            if new != text:
                changes.append(FileChange(path, text, new))
    stale = cfg is None or not entries or not all(e.satisfied for e in entries)
    command = grub_command(root) if changes or stale else None
    predicted = [Entry(e.path, e.name, edit(e.options, arg, state), True) for e in entries]
    notes = [] if cfg is not None else ["%s does not exist yet; it is generated" % cfg_path]
    return Plan("grub", entries, changes, command, predicted, notes)


def _bls_entries(root, entries_dir, env):
    # type: (str, str, Dict[str, str]) -> List[Tuple[str, str, str]]
    """(in-tree path, text, effective options) of every entry file, sorted by name."""
    out = []
    for path in sorted(glob.glob(os.path.join(under(root, entries_dir), "*.conf"))):
        text = read_text_if_exists(path) or ""
        rel = os.path.join(entries_dir, os.path.basename(path))
        out.append((rel, text, expand_kernelopts(bls_options(text), env)))
    return out


def _plan_grubby(root, arg, state):
    # type: (str, str, str) -> Plan
    env_text = read_text_if_exists(under(root, "/boot/grub2/grubenv")) or ""
    env = grubenv(env_text)
    found = _bls_entries(root, "/boot/loader/entries", env)
    if not found:
        raise ModSignError("no BootLoaderSpec entries (*.conf); grubby has nothing to update",
                           under(root, "/boot/loader/entries"))
    entries = [Entry(p, bls_value(t, "id") or os.path.basename(p), o, satisfied(o, arg, state)) for p, t, o in found]
    command = None
    if not all(e.satisfied for e in entries):
        if state == "present":
            command = _chroot(root, ["grubby", "--update-kernel=ALL", "--args=%s" % arg])
        else:
            command = _chroot(root, ["grubby", "--update-kernel=ALL", "--remove-args=%s" % arg.split("=", 1)[0]])
    predicted = [Entry(e.path, e.name, edit(e.options, arg, state), True) for e in entries]
    return Plan("grubby", entries, [], command, predicted, [])


def _proc_cmdline(root):
    # type: (str) -> Optional[str]
    if os.path.abspath(root) != "/":
        return None
    text = read_text_if_exists("/proc/cmdline")
    if text is None:
        return None
    keep = [a for a in split_args(text) if arg_name(a) not in ("BOOT_IMAGE", "initrd")]
    return " ".join(keep)


def _plan_kernel_cmdline(root, arg, state, seed):
    # type: (str, str, str, Optional[str]) -> Tuple[Entry, Optional[FileChange]]
    """/etc/kernel/cmdline: kernel-install reads it for every new kernel (else /proc/cmdline)."""
    path = "/etc/kernel/cmdline"
    text = read_text_if_exists(under(root, path))
    if text is None:
        if state == "absent":
            return Entry(path, "kernel-install", "", True), None
        if seed is None:
            raise ModSignError("does not exist and there is no boot entry or /proc/cmdline to start it from "
                               "(creating it with only our argument would drop root= and every other argument)",
                               under(root, path))
        text_now, base = None, seed.strip() + "\n"
    else:
        text_now, base = text, text
    line = base.split("\n", 1)[0]
    new = edit(line, arg, state) + base[len(line):]
    entry = Entry(path, "kernel-install", line, text is not None and satisfied(line, arg, state))
    return entry, (FileChange(path, text_now, new) if new != text_now else None)


def _plan_systemd_boot(root, arg, state):
    # type: (str, str, str) -> Plan
    found = []
    for esp in systemd_boot_dirs(root):
        found.extend(_bls_entries(root, os.path.join(esp, "loader", "entries"), {}))
    entries, changes = [], []  # type: List[Entry], List[FileChange]
    for path, text, options in found:
        entries.append(Entry(path, bls_value(text, "title") or os.path.basename(path), options,
                             satisfied(options, arg, state)))
        new = edit_bls_entry(text, arg, state)
        if new != text:
            changes.append(FileChange(path, text, new))
    seed = found[-1][2] if found else _proc_cmdline(root)
    kentry, kchange = _plan_kernel_cmdline(root, arg, state, seed)
    entries.append(kentry)
    if kchange:
        changes.append(kchange)
    notes = [] if found else ["no loader/entries/*.conf found: only /etc/kernel/cmdline is managed"]
    predicted = [Entry(e.path, e.name, edit(e.options, arg, state), True) for e in entries]
    return Plan("systemd_boot", entries, changes, None, predicted, notes)


def _plan_kernel_install(root, arg, state):
    # type: (str, str, str) -> Plan
    kentry, kchange = _plan_kernel_cmdline(root, arg, state, _proc_cmdline(root))
    notes = ["a unified kernel image carries its command line inside: new images (kernel-install add) "
             "take /etc/kernel/cmdline; existing ones keep theirs until rebuilt"]
    predicted = [kentry._replace(options=edit(kentry.options, arg, state), satisfied=True)]
    return Plan("kernel_install", [kentry], [kchange] if kchange else [], None, predicted, notes)


def plan(root, arg, state="present", bootloader="auto", dropin_name=DROPIN_NAME):
    # type: (str, str, str, str, str) -> Plan
    """What it takes to make ``arg`` present (or absent) in every boot entry of the tree at ``root``."""
    arg = check_arg(arg)
    if state not in ("present", "absent"):
        raise ModSignError("state must be present or absent, not %r" % state)
    if bootloader == "auto":
        bootloader = detect(root)
    if bootloader == "grub":
        return _plan_grub(root, arg, state, dropin_name)
    if bootloader == "grubby":
        return _plan_grubby(root, arg, state)
    if bootloader == "systemd_boot":
        return _plan_systemd_boot(root, arg, state)
    if bootloader == "kernel_install":
        return _plan_kernel_install(root, arg, state)
    raise ModSignError("unknown bootloader %r (expected one of: auto, %s)" % (bootloader, ", ".join(BOOTLOADERS)))
