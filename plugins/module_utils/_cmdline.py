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
- ``bls`` (Fedora/RHEL without grubby): the ``options`` of every entry in
  ``/boot/loader/entries`` and ``/etc/kernel/cmdline``, edited here; entries
  that take ``$kernelopts`` from grubenv are refused (only grubby edits that).
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
from ansible_collections.skm.modsign.plugins.module_utils._files import read_regular, write_target

MAX_BOOT_FILE_BYTES = 16 << 20    # a grub.cfg, an entry or /etc/default/grub is a few kB

BOOTLOADERS = ("grub", "grubby", "bls", "systemd_boot", "kernel_install")
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


# What this module writes: the kernel's param[=value] (lib/cmdline.c next_arg), narrowed to what the shell
# update-grub sources, GRUB's script parser (grub.cfg's linux lines) and BLS entries all carry verbatim.
_ARG_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_PLAIN_VALUE = r"[!%*+,./0-9:=?@A-Z\[\]^_a-z~-]*"      # printable ASCII without space " $ ` \ ' ; & | < > ( ) { } #
_QUOTED_VALUE = r'"[ !#%-\[\]-_a-~]*"'                 # printable ASCII and spaces without " $ ` \
_ARGUMENT = re.compile(r"\A%s(?:=(?:%s|%s))?\Z" % (_ARG_NAME, _PLAIN_VALUE, _QUOTED_VALUE))


def check_arg(arg):
    # type: (str) -> str
    """``arg`` when it is one kernel argument this module can write safely; else a clear error."""
    arg = arg.strip()
    if not _ARGUMENT.match(arg):
        raise ModSignError(
            "argument %r is not one kernel argument this module writes: expected name or name=value, the name of "
            "letters, digits, '_', '.', '-'; the value printable ASCII without spaces or any of \" $ ` \\ ' ; & | "
            "< > ( ) { } #, or a double-quoted value (spaces allowed) without \" $ ` \\ (update-grub's shell, "
            "GRUB's script parser and BLS entries would interpret those)" % arg)
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
#
# /etc/default/grub and its drop-ins are shell that grub-mkconfig sources. An assignment's value is lexed
# as POSIX sh would (quotes, escapes, $NAME), each character of the result remembering where it came from,
# so that removing an argument cuts exactly its characters and never a quote, an escape or an expansion.
# What cannot be evaluated without running it (command substitution, backticks, other variables,
# ${...} operators) is refused.

CMDLINE_VARIABLES = ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT")
_REFERENCE = "\0"     # stands for a $GRUB_CMDLINE_LINUX* reference in a lexed value
_ASSIGNMENT = re.compile(r"^[ \t]*(?:export[ \t]+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)=", re.M)
_DOLLAR_NAME = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


class ShellValue(NamedTuple):
    start: int                          # first character of the value in the file text
    end: int                            # just past the shell word
    text: str                           # the value as sh assigns it, references as _REFERENCE
    spans: List[Tuple[int, int, int]]   # per character of text: (raw start, raw end, quoting region)


class UnparsableShell(ModSignError):
    pass


def lex_shell_value(text, start, name):
    # type: (str, int, str) -> ShellValue
    """The value of the assignment whose word starts at ``start``; UnparsableShell for what sh would run."""
    out, spans, region, i, n = [], [], 0, start, len(text)   # type: List[str], List[Tuple[int, int, int]], int, int, int

    def refuse(what):
        # type: (str) -> UnparsableShell
        return UnparsableShell("%s is set with %s, which this module cannot evaluate without running it; "
                               "refusing to edit the file" % (name, what))

    def dollar(at, region):
        # type: (int, int) -> int
        if text.startswith("$(", at):
            raise refuse("a command substitution $(...)")
        match = _DOLLAR_NAME.match(text, at)
        if match is None:
            raise refuse("%r" % text[at:at + 3])
        var = match.group("braced") or match.group("plain")
        if var not in CMDLINE_VARIABLES:
            raise refuse("the variable $%s" % var)
        out.append(_REFERENCE)
        spans.append((at, match.end(), region))
        return match.end()

    while i < n and text[i] not in " \t\n;&|<>()":
        char = text[i]
        if char in "'\"":
            region += 1     # a quoted string is a region of its own, and so is the unquoted text after it
        if char == "'":
            close = text.find("'", i + 1)
            if close < 0:
                raise refuse("an unterminated single quote")
            for j in range(i + 1, close):
                out.append(text[j])
                spans.append((j, j + 1, region))
            i = close + 1
            region += 1
        elif char == '"':
            i += 1
            while True:
                if i >= n:
                    raise refuse("an unterminated double quote")
                char = text[i]
                if char == '"':
                    i += 1
                    region += 1
                    break
                if char == "`":
                    raise refuse("a command substitution `...`")
                if char == "$":
                    i = dollar(i, region)
                elif char == "\\" and text[i + 1:i + 2] in ("$", "`", '"', "\\"):
                    out.append(text[i + 1])
                    spans.append((i, i + 2, region))
                    i += 2
                elif char == "\\" and text[i + 1:i + 2] == "\n":
                    raise refuse("a line continuation")
                else:
                    out.append(char)
                    spans.append((i, i + 1, region))
                    i += 1
        elif char == "`":
            raise refuse("a command substitution `...`")
        elif char == "$":
            i = dollar(i, region)
        elif char == "\\":
            if text[i + 1:i + 2] in ("", "\n"):
                raise refuse("a line continuation")
            out.append(text[i + 1])
            spans.append((i, i + 2, region))
            i += 2
        elif char == "~":
            raise refuse("a tilde expansion")
        else:
            out.append(char)
            spans.append((i, i + 1, region))
            i += 1
    return ShellValue(start, i, "".join(out), spans)


def _raw_cut(value, tok, name):
    # type: (ShellValue, Token, str) -> Tuple[int, int]
    """The raw span to delete for the kernel argument ``tok`` of ``value`` (with one side's blanks)."""
    spans = value.spans
    region = spans[tok.start][2]
    if any(spans[k][2] != region for k in range(tok.start, tok.end)):
        raise UnparsableShell("%s: %r is split across shell quotes; refusing to cut it" % (name, tok.text))
    first, last = tok.start, tok.end - 1
    while first > 0 and value.text[first - 1] in " \t" and spans[first - 1][2] == region:
        first -= 1
    if first == tok.start:
        while last + 1 < len(spans) and value.text[last + 1] in " \t" and spans[last + 1][2] == region:
            last += 1
    return spans[first][0], spans[last][1]


def _assignments(text, names):
    # type: (str, Sequence[str]) -> List[Tuple[str, ShellValue]]
    """Every ``name=...`` of ``names`` at the start of a line, lexed; other forms of setting them are refused."""
    found, taken = [], -1   # type: List[Tuple[str, ShellValue]], int
    for match in _ASSIGNMENT.finditer(text):
        if match.group("name") in names and match.start() >= taken:
            value = lex_shell_value(text, match.end(), match.group("name"))
            found.append((match.group("name"), value))
            taken = value.end
    starts = set(value.start for _name, value in found)
    for name in names:
        for match in re.finditer(r"(?<![A-Za-z0-9_$])%s\+?=" % name, text):
            line = text[text.rfind("\n", 0, match.start()) + 1:match.start()]
            if match.end() not in starts and not line.lstrip().startswith("#"):
                raise UnparsableShell("%s is set in a form this module does not edit (%r); refusing to edit "
                                      "the file" % (name, (line + text[match.start():]).split("\n", 1)[0]))
    return found


def shell_assignments(text, name):
    # type: (str, str) -> List[str]
    """The value of each plain assignment ``name=...`` in a shell file (references as ``$name``)."""
    return [v.text.replace(_REFERENCE, "$" + n) for n, v in _assignments(text, (name,))]


def remove_from_shell_assignments(text, arg, names=CMDLINE_VARIABLES):
    # type: (str, str, Sequence[str]) -> str
    """Every argument named like ``arg`` taken out of the ``names`` assignments; every other byte kept."""
    name = arg_name(arg)
    cuts = []  # type: List[Tuple[int, int]]
    for var, value in _assignments(text, names):
        for tok in tokens(value.text):
            if _REFERENCE in tok.text and tok.text != _REFERENCE:
                raise UnparsableShell("%s: %r joins a variable to other text; refusing to edit the file"
                                      % (var, tok.text.replace(_REFERENCE, "$" + var)))
            if tok.text != _REFERENCE and arg_name(tok.text) == name:
                cuts.append(_raw_cut(value, tok, var))
    for start, end in sorted(cuts, reverse=True):
        text = text[:start] + text[end:]
    return text


def shell_double_quoted(text):
    # type: (str) -> str
    """``text`` as one double-quoted sh word."""
    return '"%s"' % re.sub(r'([\\"$`])', r"\\\1", text)


def grub_dropin(arg):
    # type: (str) -> str
    """Our drop-in: sourced by grub-mkconfig after /etc/default/grub, it appends to GRUB_CMDLINE_LINUX."""
    return '%s\nGRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX%s\n' % (MARKER, shell_double_quoted(" " + arg)[1:])


def sourced_cmdline_expected(before, after, arg, state):
    # type: (Sequence[str], Sequence[str], str, str) -> bool
    """Whether sourced values ``after`` are ``before`` with ``arg`` removed (absent) or exactly ``arg`` (present).

    ``before``/``after``: the CMDLINE_VARIABLES as sourcing the old and the new file in a clean sh left them.
    """
    if state == "present":
        return list(after[:1]) == [" " + arg]
    name = arg_name(arg)
    return all(split_args(new) == [t for t in split_args(old) if arg_name(t) != name]
               for old, new in zip(before, after))


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


def read_boot_file(root, path):
    # type: (str, str) -> Optional[str]
    """The text of the in-tree ``path``, None when it does not exist.

    A symbolic link is read where a write would land (``write_target``: absolute targets inside ``root``).
    """
    target = write_target(under(root, path), root)
    if not os.path.lexists(target):
        return None
    try:
        return read_regular(target, max_size=MAX_BOOT_FILE_BYTES).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModSignError("not UTF-8 text (%s)" % exc, target)


def _exists(root, *paths):
    # type: (str, str) -> Optional[str]
    for path in paths:
        if os.path.lexists(under(root, path)):
            return path
    return None


ESP_CANDIDATES = ("/efi", "/boot/efi", "/boot")
BLS_ENTRIES = "/boot/loader/entries"


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
    bls = os.path.isdir(under(root, BLS_ENTRIES))
    if bls and _exists(root, "/usr/sbin/grubby", "/usr/bin/grubby", "/sbin/grubby"):
        return "grubby"
    if systemd_boot_dirs(root):
        return "systemd_boot"
    if bls and glob.glob(os.path.join(under(root, BLS_ENTRIES), "*.conf")):
        return "bls"    # never grub-mkconfig: with BLS it does not write the entries' options
    if _exists(root, "/usr/sbin/update-grub", "/usr/sbin/grub-mkconfig", "/usr/sbin/grub2-mkconfig",
               "/etc/default/grub", "/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"):
        return "grub"
    if _exists(root, "/etc/kernel/cmdline", "/etc/kernel/install.conf", "/usr/lib/kernel/install.conf"):
        return "kernel_install"
    raise ModSignError("no bootloader recognised: looked for BLS entries (/boot/loader/entries), systemd-boot "
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
    cfg = read_boot_file(root, cfg_path)
    entries = [Entry(cfg_path, kernel, options, satisfied(options, arg, state))
               for kernel, options in grub_cfg_entries(cfg or "")]
    dropin = "/etc/default/grub.d/%s" % dropin_name
    current = read_boot_file(root, dropin)
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
            text = read_boot_file(root, path)
            if text is None or path == dropin:
                continue
            try:
                new = remove_from_shell_assignments(text, arg)
            except UnparsableShell as exc:
                raise ModSignError(exc.cause, under(root, path))
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
        rel = os.path.join(entries_dir, os.path.basename(path))
        text = read_boot_file(root, rel) or ""
        out.append((rel, text, expand_kernelopts(bls_options(text), env)))
    return out


def _plan_grubby(root, arg, state):
    # type: (str, str, str) -> Plan
    env_text = read_boot_file(root, "/boot/grub2/grubenv") or ""
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


def _plan_bls(root, arg, state):
    # type: (str, str, str) -> Plan
    """BLS entries in /boot/loader/entries without grubby: edit them and /etc/kernel/cmdline ourselves."""
    found = _bls_entries(root, BLS_ENTRIES, {})
    if not found:
        raise ModSignError("BootLoaderSpec directory without entries (*.conf): nothing to put the argument on; "
                           "set bootloader explicitly if another one boots this host", under(root, BLS_ENTRIES))
    for path, text, _options in found:
        variables = sorted(set(re.findall(r"\$\{?[A-Za-z_][A-Za-z0-9_]*", bls_options(text))))
        if variables:
            raise ModSignError(
                "options take %s from GRUB's environment block (/boot/grub2/grubenv), which this module does not "
                "edit: install grubby (Fedora/RHEL package grubby) so that bootloader=grubby updates it, or write "
                "the arguments into the entries' options instead" % ", ".join(v.replace("{", "") for v in variables),
                under(root, path))
    entries, changes = _plan_entries_and_kernel_cmdline(root, arg, state, found)
    notes = ["grubby is not installed: the BLS entries and /etc/kernel/cmdline are edited directly; "
             "/etc/default/grub's GRUB_CMDLINE_LINUX is left as it is"]
    predicted = [Entry(e.path, e.name, edit(e.options, arg, state), True) for e in entries]
    return Plan("bls", entries, changes, None, predicted, notes)


def _proc_cmdline(root):
    # type: (str) -> Optional[str]
    if os.path.abspath(root) != "/":
        return None
    try:
        with open("/proc/cmdline") as handle:
            text = handle.read()
    except OSError:
        text = None
    if text is None:
        return None
    keep = [a for a in split_args(text) if arg_name(a) not in ("BOOT_IMAGE", "initrd")]
    return " ".join(keep)


def _plan_kernel_cmdline(root, arg, state, seed):
    # type: (str, str, str, Optional[str]) -> Tuple[Entry, Optional[FileChange]]
    """/etc/kernel/cmdline: kernel-install reads it for every new kernel (else /proc/cmdline)."""
    path = "/etc/kernel/cmdline"
    text = read_boot_file(root, path)
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


def _plan_entries_and_kernel_cmdline(root, arg, state, found):
    # type: (str, str, str, List[Tuple[str, str, str]]) -> Tuple[List[Entry], List[FileChange]]
    """Our own edit of BLS entries (``found``, see _bls_entries) and of /etc/kernel/cmdline."""
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
    return entries, changes


def _plan_systemd_boot(root, arg, state):
    # type: (str, str, str) -> Plan
    found = []
    for esp in systemd_boot_dirs(root):
        found.extend(_bls_entries(root, os.path.join(esp, "loader", "entries"), {}))
    entries, changes = _plan_entries_and_kernel_cmdline(root, arg, state, found)
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
    if bootloader == "bls":
        return _plan_bls(root, arg, state)
    if bootloader == "systemd_boot":
        return _plan_systemd_boot(root, arg, state)
    if bootloader == "kernel_install":
        return _plan_kernel_install(root, arg, state)
    raise ModSignError("unknown bootloader %r (expected one of: auto, %s)" % (bootloader, ", ".join(BOOTLOADERS)))
