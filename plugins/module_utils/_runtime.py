# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The running kernel's own evidence: what it trusts, how it enforces, what it loaded and what it refused.

Private to skm.modsign; no Ansible imports, no ``cryptography`` needed (certificates are read as DER).
Meant to become the "running kernel" half of one kernel model (issue 17).

Every reader takes the directories it reads (``proc``, ``sys``, ``boot``) so tests can point it at a
captured tree, and a ``run(argv) -> (rc, stdout, stderr)`` for ``keyctl``, ``modinfo``, ``dmesg`` and
``journalctl``. Every fact is a dict with a ``state``:

  known     read and understood (``value`` holds it)
  absent    the thing does not exist here (no EFI, no such keyring, no such variable)
  unknown   it could not be read (no keyctl, dmesg not permitted, no /boot/config-...): ``reason`` says why
  unparsed  it was read but not understood (``raw`` holds what was read); never counted as trusted

Kernel facts the parsers rely on (Linux 6.1 - 6.12):
- /proc/keys (security/keys/proc.c): ``%08x %c%c%c%c%c%c%c %5d %4s %08x %5d %5d %-9.9s `` then the
  key type's describe(): a keyring prints ``<name>: <n>|empty``; an asymmetric key (type cut to
  ``asymmetri``) prints ``<description>: X509.<algo> <last 4 bytes of its id, hex> [<caps>]``.
- An X.509 key's description (crypto/asymmetric_keys/x509_public_key.c) is ``<name>: <hex>``, where the
  name is the subject's CN, or ``O: CN`` unless CN starts with O (or with O's first 7 characters), or
  O, or the e-mail; the hex is the subjectKeyIdentifier, or the raw serial when there is none.
- Module signatures are checked against .secondary_trusted_keys (VERIFY_USE_SECONDARY_KEYRING), which
  links .builtin_trusted_keys and, since 6.1 with CONFIG_INTEGRITY_MACHINE_KEYRING, .machine; without
  a secondary keyring only the builtin one. .platform (firmware db) is for kexec, not for modules.
  Which keyrings trust modules is therefore read from the links, not assumed.
- A module loaded without a valid signature from a trusted key taints the kernel with E
  (kernel/module/main.c, TAINT_UNSIGNED_MODULE), and the module's own /sys/module/<name>/taint says E.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import os
import re
import shutil
import subprocess
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.skm.modsign.plugins.module_utils import _der as der
from ansible_collections.skm.modsign.plugins.module_utils import _kconfig as kconfig
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._files import open_regular, read_regular
from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import certificate_id, format_serial

KNOWN, ABSENT, UNKNOWN, UNPARSED = "known", "absent", "unknown", "unparsed"
TRUST_KEYRINGS = (".builtin_trusted_keys", ".secondary_trusted_keys", ".machine", ".platform")
KEYRINGS = TRUST_KEYRINGS + (".blacklist",)
# Where module verification starts (system_keyring.c); the first that exists is the root of trust.
MODULE_TRUST_ROOTS = (".secondary_trusted_keys", ".builtin_trusted_keys")
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SHIM = "605dab50-e046-4300-abb6-3dd810dd8b23"
# (fact name, efivar name, vendor GUID). Shim mirrors MokSBState (boot-services only) into MokSBStateRT.
EFI_VARIABLES = (("secure_boot", "SecureBoot", EFI_GLOBAL), ("setup_mode", "SetupMode", EFI_GLOBAL),
                 ("mok_sb_state", "MokSBStateRT", SHIM), ("mok_list_trusted", "MokListTrustedRT", SHIM))
# kernel/panic.c taint_flags, bit -> letter (6.1 .. 6.12).
TAINT_LETTERS = "PFSRMBUDAWCIOELKXTN"
TAINT_UNSIGNED = "E"
MAX_PROC_BYTES = 16 << 20
MODINFO_BATCH = 200

Runner = Callable[[Sequence[str]], Tuple[int, str, str]]


class Prefixes(NamedTuple):
    """Where the kernel's pseudo file systems and /boot are (``/proc``, ``/sys``, ``/boot`` on a live host)."""

    proc: str = "/proc"
    sys: str = "/sys"
    boot: str = "/boot"


def fact(state, value=None, reason=None, raw=None):
    # type: (str, Any, Optional[str], Optional[str]) -> Dict[str, Any]
    out = {"state": state, "value": value}  # type: Dict[str, Any]
    if reason:
        out["reason"] = reason
    if raw is not None:
        out["raw"] = raw
    return out


def run_subprocess(argv):
    # type: (Sequence[str]) -> Tuple[int, str, str]
    """The default runner: rc 127 when the program is not installed, like a shell."""
    program = shutil.which(argv[0], path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if program is None:
        return 127, "", "%s: not installed" % argv[0]
    proc = subprocess.run([program] + list(argv[1:]), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, check=False, timeout=120)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def read_pseudo_file(path, what, max_size=MAX_PROC_BYTES):
    # type: (str, str, int) -> bytes
    """A /proc or /sys file: its size says 0 or 4096, and a sysctl refuses one huge read (ENOMEM)."""
    fd = open_regular(path, what, max_size)
    chunks, total = [], 0
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_size:
                raise ModSignError("more than %d bytes" % max_size, path)
    except OSError as exc:
        raise ModSignError("cannot read %s (%s)" % (what, exc.strerror or exc), path)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _read_text(path, what):
    # type: (str, str) -> Tuple[Optional[str], Optional[str]]
    """(text, None), or (None, reason) when the file is missing or unreadable (never raises)."""
    try:
        return read_pseudo_file(path, what).decode("utf-8", "replace"), None
    except ModSignError as exc:
        return None, str(exc)


def _missing(path):
    # type: (str) -> bool
    return not os.path.lexists(path)


# ---------------------------------------------------------------- certificates (ours)

class Certificate(NamedTuple):
    path: str
    subject: str            # the kernel's name for it (CN, "O: CN", O or e-mail)
    key_id: str             # SKID hex (or raw serial hex): the second half of the kernel's description
    serial: str             # as modinfo prints sig_key for an issuer+serial signature
    skid: Optional[str]     # as modinfo prints sig_key for a SKID signature
    issuer_cn: Optional[str]  # what modinfo prints as signer

    @property
    def description(self):
        # type: () -> str
        return "%s: %s" % (self.subject, self.key_id)


_OID_CN, _OID_O, _OID_EMAIL = "2.5.4.3", "2.5.4.10", "1.2.840.113549.1.9.1"
_PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----")


def _name_attributes(name_der):
    # type: (bytes) -> Dict[str, str]
    """The first value of each attribute type in a DER Name."""
    found = {}  # type: Dict[str, str]
    for rdn in der.children(der.read_one(name_der, der.SEQUENCE).value):
        for atv in der.children(rdn.value):
            attr_oid, value = der.children(atv.value)[:2]
            found.setdefault(der.decode_oid(attr_oid.value), value.value.decode("utf-8", "replace"))
    return found


def kernel_name(name_der):
    # type: (bytes) -> str
    """The name the kernel gives a certificate's subject (x509_fabricate_name)."""
    attrs = _name_attributes(name_der)
    cn, org, email = attrs.get(_OID_CN), attrs.get(_OID_O), attrs.get(_OID_EMAIL)
    if cn and org:
        if cn.startswith(org) or (len(cn) >= 7 and len(org) >= 7 and cn[:7] == org[:7]):
            return cn
        return "%s: %s" % (org, cn)
    return cn or org or email or ""


def _raw_serial(serial):
    # type: (int) -> bytes
    """The INTEGER's content bytes, as the kernel keeps them (a leading 00 where the top bit is set)."""
    return serial.to_bytes(serial.bit_length() // 8 + 1, "big", signed=True) if serial >= 0 else \
        serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)


def certificate_ders(data, path):
    # type: (bytes, str) -> List[bytes]
    """Every certificate in a PEM file (DER each), or the file itself when it is DER."""
    text = data.decode("ascii", "replace")
    blocks = _PEM_BLOCK.findall(text)
    if not blocks:
        if data.lstrip().startswith(b"-----BEGIN"):
            raise ModSignError("no PEM certificate in this file", path)
        return [data]
    try:
        return [base64.b64decode("".join(block.split()), validate=True) for block in blocks]
    except (binascii.Error, ValueError):
        raise ModSignError("a PEM certificate is not valid base64", path)


def load_certificates(paths):
    # type: (Iterable[str]) -> List[Certificate]
    """Our certificates, named and identified the way the kernel and modinfo will show them."""
    out = []
    for path in paths:
        for cert_der in certificate_ders(read_regular(path, "the certificate", 1 << 20), path):
            cid = certificate_id(cert_der, path)
            try:
                subject = kernel_name(cid.subject)
                issuer_cn = _name_attributes(cid.issuer).get(_OID_CN)
            except (ValueError, IndexError) as exc:
                raise ModSignError("not a valid X.509 certificate (%s)" % exc, path)
            key_id = (cid.skid if cid.skid is not None else _raw_serial(cid.serial)).hex()
            skid = format_serial(int.from_bytes(cid.skid, "big")) if cid.skid else None
            out.append(Certificate(path, subject, key_id, format_serial(cid.serial), skid, issuer_cn))
    return out


# ---------------------------------------------------------------- /proc/keys, /proc/key-users

class ProcKey(NamedTuple):
    serial: int
    flags: str
    usage: int
    expiry: str
    perm: str
    uid: int
    gid: int
    type: str               # cut to 9 characters by the kernel ("asymmetri")
    description: str
    summary: str            # what the key type's describe() adds after the description


_PROC_KEY = re.compile(r"^([0-9a-f]{8}) ([A-Za-z-]{7}) +(\d+) +(\S+) +([0-9a-f]{8}) +(-?\d+) +(-?\d+) "
                       r"(.{9}) (.*)$")
_KEYRING_SUMMARY = re.compile(r"^(.*): (empty|\d+)$")
_ASYMMETRIC_SUMMARY = re.compile(r"^(.*): (\S+\.\S+)(?: ([0-9a-f]+))? \[([^\]]*)\]$")


def split_description(key_type, text):
    # type: (str, str) -> Optional[Tuple[str, str]]
    """(description, summary) of the text after the type column, or None when the type's format does not fit."""
    if key_type == "keyring":
        match = _KEYRING_SUMMARY.match(text)
        return (match.group(1), match.group(2)) if match else None
    if key_type.startswith("asymmetri"):
        match = _ASYMMETRIC_SUMMARY.match(text)
        if match:
            return match.group(1), text[len(match.group(1)) + 2:]
        return None
    return text, ""


def _parse_lines(text, parse_line):
    # type: (str, Callable[[str], Any]) -> Tuple[List[Any], List[str]]
    """What ``parse_line`` makes of each non-blank line of ``text`` (None: not understood), and the lines it did
    not understand."""
    parsed, unparsed = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        item = parse_line(line)
        if item is None:
            unparsed.append(line)
        else:
            parsed.append(item)
    return parsed, unparsed


def _proc_key(line):
    # type: (str) -> Optional[ProcKey]
    match = _PROC_KEY.match(line)
    parts = split_description(match.group(8).rstrip(), match.group(9)) if match else None
    if not match or parts is None:
        return None
    return ProcKey(int(match.group(1), 16), match.group(2), int(match.group(3)), match.group(4),
                   match.group(5), int(match.group(6)), int(match.group(7)), match.group(8).rstrip(),
                   parts[0], parts[1])


def parse_proc_keys(text):
    # type: (str) -> Tuple[List[ProcKey], List[str]]
    """The keys of /proc/keys, and the lines that could not be parsed."""
    return _parse_lines(text, _proc_key)


_KEY_USER = re.compile(r"^\s*(\d+): +(\d+) (\d+)/(\d+) (\d+)/(\d+) (\d+)/(\d+)$")


def parse_key_users(text):
    # type: (str) -> Tuple[List[Dict[str, int]], List[str]]
    """/proc/key-users: per uid, keys held and quota (security/keys/proc.c proc_key_users_show)."""
    return _parse_lines(text, _key_user)


def _key_user(line):
    # type: (str) -> Optional[Dict[str, int]]
    match = _KEY_USER.match(line)
    if not match:
        return None
    n = [int(g) for g in match.groups()]
    return {"uid": n[0], "usage": n[1], "keys": n[2], "instantiated_keys": n[3],
            "quota_keys": n[4], "max_keys": n[5], "quota_bytes": n[6], "max_bytes": n[7]}


def describe_key(key_type, description, summary=""):
    # type: (str, str, str) -> Dict[str, Any]
    """A keyring entry for the report; an X.509 key gets its subject and key id, or ``unparsed``."""
    entry = {"type": key_type, "description": description}  # type: Dict[str, Any]
    if key_type.startswith("asymmetri"):
        entry["type"] = "asymmetric"
        subject, sep, key_id = description.rpartition(": ")
        if sep and re.match(r"^[0-9a-f]+$", key_id):
            entry.update(subject=subject, key_id=key_id, state=KNOWN)
        else:
            entry.update(subject=None, key_id=None, state=UNPARSED)
        if summary:
            entry["algorithm"] = summary.split(" ", 1)[0]
    return entry


# ---------------------------------------------------------------- keyctl

def parse_rdescribe(text):
    # type: (str) -> Optional[Tuple[str, str]]
    """(type, description) of ``keyctl rdescribe`` output ("type;uid;gid;perm;description")."""
    parts = text.rstrip("\n").split(";", 4)
    if len(parts) != 5 or not re.match(r"^[0-9a-f]{8}$", parts[3]):
        return None
    return parts[0], parts[4]


def parse_rlist(text):
    # type: (str) -> Optional[List[int]]
    """Key ids of ``keyctl rlist`` output, or None when it is not a list of numbers."""
    words = text.split()
    if not all(w.isdigit() for w in words):
        return None
    return [int(w) for w in words]


def _keyctl_keyring(run, name, proc_keys):
    # type: (Runner, str, Dict[int, ProcKey]) -> Dict[str, Any]
    rc, out, err = run(["keyctl", "rlist", "%:" + name])
    if rc == 127:
        return fact(UNKNOWN, reason="keyctl is not installed")
    if rc != 0:
        if "not found" in err or "No such" in err or "Can't find" in err or "Required key not available" in err:
            return fact(ABSENT, reason="no keyring %s in this kernel (keyctl: %s)" % (name, err.strip()))
        return fact(UNKNOWN, reason="keyctl rlist %%:%s failed: %s" % (name, err.strip() or "rc %d" % rc))
    ids = parse_rlist(out)
    if ids is None:
        return fact(UNPARSED, raw=out, reason="keyctl rlist printed something that is not key ids")
    entries = []
    for key_id in ids:
        entries.append(_keyctl_entry(run, key_id, proc_keys, describe=name != ".blacklist"))
    return fact(KNOWN, entries)


def _keyctl_entry(run, key_id, proc_keys, describe):
    # type: (Runner, int, Dict[int, ProcKey], bool) -> Dict[str, Any]
    parsed = None
    if describe:
        rc, out, _err = run(["keyctl", "rdescribe", str(key_id)])
        parsed = parse_rdescribe(out) if rc == 0 else None
    if parsed is None and key_id in proc_keys:
        known = proc_keys[key_id]
        parsed = (known.type, known.description)
    if parsed is None:
        return {"id": key_id, "type": None, "description": None, "state": UNPARSED}
    entry = describe_key(parsed[0], parsed[1], proc_keys[key_id].summary if key_id in proc_keys else "")
    entry["id"] = key_id
    entry.setdefault("state", KNOWN)
    return entry


# ---------------------------------------------------------------- keyrings: what the kernel trusts

def read_keyrings(prefixes, run):
    # type: (Prefixes, Runner) -> Dict[str, Any]
    """Every keyring we care about with its keys, from keyctl, or from /proc/keys where keyctl is missing."""
    text, reason = _read_text(os.path.join(prefixes.proc, "keys"), "/proc/keys")
    proc_keys, unparsed = parse_proc_keys(text) if text is not None else ([], [])
    by_serial = dict((k.serial, k) for k in proc_keys)
    users_text, _why = _read_text(os.path.join(prefixes.proc, "key-users"), "/proc/key-users")
    users, users_unparsed = parse_key_users(users_text) if users_text is not None else ([], [])
    keyrings = {}  # type: Dict[str, Dict[str, Any]]
    source = "keyctl"
    for name in KEYRINGS:
        keyrings[name] = _keyctl_keyring(run, name, by_serial)
    if all(k["state"] == UNKNOWN and "not installed" in k.get("reason", "") for k in keyrings.values()):
        source = "/proc/keys"
        keyrings = _keyrings_from_proc(proc_keys, text is not None, reason)
    return {"source": source, "keyrings": keyrings,
            "proc_keys": fact(KNOWN, len(proc_keys)) if text is not None else fact(UNKNOWN, reason=reason),
            "kernel_keys": [describe_key(k.type, k.description, k.summary) for k in proc_keys
                            if k.type.startswith("asymmetri")],
            "unparsed": unparsed + users_unparsed, "key_users": users}


def _keyrings_from_proc(proc_keys, readable, reason):
    # type: (List[ProcKey], bool, Optional[str]) -> Dict[str, Dict[str, Any]]
    """/proc/keys names the keyrings and counts their keys, but not which keys they hold."""
    named = dict((k.description, k) for k in proc_keys if k.type == "keyring")
    out = {}
    for name in KEYRINGS:
        if not readable:
            out[name] = fact(UNKNOWN, reason="keyctl is not installed and %s" % reason)
        elif name not in named:
            out[name] = fact(ABSENT, reason="not in /proc/keys (keyctl is not installed)")
        else:
            count = 0 if named[name].summary == "empty" else int(named[name].summary)
            out[name] = fact(UNKNOWN, reason="keyctl is not installed; /proc/keys says %s holds %d key(s) but "
                             "not which" % (name, count))
            out[name]["count"] = count
    return out


def module_trusting_keyrings(keyrings):
    # type: (Dict[str, Dict[str, Any]]) -> Optional[List[str]]
    """The keyrings module signatures are checked against: the root of trust and the keyrings it links.

    None when that cannot be read. Links are followed by name (keyctl describes a linked keyring by name).
    """
    for root in MODULE_TRUST_ROOTS:
        state = keyrings.get(root, {}).get("state")
        if state == ABSENT:
            continue
        if state != KNOWN:
            return None
        found, todo = [], [root]
        while todo:
            name = todo.pop()
            if name in found:
                continue
            found.append(name)
            ring = keyrings.get(name, {})
            for entry in ring.get("value") or []:
                if entry.get("type") == "keyring" and entry.get("description") in keyrings:
                    todo.append(entry["description"])
        return found
    return None


def certificate_trust(certs, keyring_facts):
    # type: (Sequence[Certificate], Dict[str, Any]) -> List[Dict[str, Any]]
    """For each of our certificates: the keyrings holding it, and whether the kernel trusts it for modules."""
    keyrings = keyring_facts["keyrings"]
    trusting = module_trusting_keyrings(keyrings)
    in_kernel = set(k["description"] for k in keyring_facts["kernel_keys"])
    out = []
    for cert in certs:
        holders = [name for name, ring in keyrings.items() if ring.get("state") == KNOWN and
                   any(e.get("description") == cert.description for e in ring["value"])]
        entry = {"path": cert.path, "description": cert.description, "subject": cert.subject,
                 "key_id": cert.key_id, "keyrings": holders}  # type: Dict[str, Any]
        if trusting is None:
            entry["trusted_for_modules"] = None
            entry["reason"] = "the module-trusting keyrings could not be read (%s)" % keyring_facts["source"]
            if cert.description in in_kernel:
                entry["reason"] += "; the key is in the kernel (/proc/keys), keyring unknown"
        else:
            entry["trusted_for_modules"] = any(name in trusting for name in holders)
            entry["reason"] = ("in %s" % ", ".join(holders) if holders else "in no keyring") + \
                "; modules are checked against %s" % ", ".join(trusting)
        out.append(entry)
    return out


# ---------------------------------------------------------------- lockdown, efivars, enforcement

def parse_lockdown(text):
    # type: (str) -> Dict[str, Any]
    match = re.match(r"^(?:[a-z]+ )*\[([a-z]+)\](?: [a-z]+)*$", text.strip())
    return fact(KNOWN, match.group(1)) if match else fact(UNPARSED, raw=text.strip())


def read_lockdown(prefixes):
    # type: (Prefixes) -> Dict[str, Any]
    path = os.path.join(prefixes.sys, "kernel", "security", "lockdown")
    if _missing(path):
        return fact(UNKNOWN, reason="%s does not exist (securityfs not mounted, or no lockdown LSM)" % path)
    text, reason = _read_text(path, "the lockdown mode")
    return parse_lockdown(text) if text is not None else fact(UNKNOWN, reason=reason)


def parse_efi_boolean(data):
    # type: (bytes) -> Dict[str, Any]
    """An efivarfs file: 4 bytes of attributes, then the value; a one-byte 0 or 1 is all we accept."""
    if len(data) != 5 or data[4] not in (0, 1):
        return fact(UNPARSED, raw=data.hex(), reason="expected 4 attribute bytes and one byte 0 or 1")
    return fact(KNOWN, data[4] == 1)


def read_efi(prefixes):
    # type: (Prefixes) -> Dict[str, Dict[str, Any]]
    efi = os.path.join(prefixes.sys, "firmware", "efi")
    varsdir = os.path.join(efi, "efivars")
    if _missing(efi):
        gone = fact(ABSENT, reason="not booted through EFI (%s does not exist)" % efi)
        return dict((name, gone) for name, _var, _guid in EFI_VARIABLES)
    try:
        present = set(os.listdir(varsdir))
    except OSError as exc:
        present = None
        why = "cannot list %s (%s)" % (varsdir, exc.strerror or exc)
    if not present:
        why = why if present is None else "%s is empty (efivarfs not mounted)" % varsdir
        return dict((name, fact(UNKNOWN, reason=why)) for name, _var, _guid in EFI_VARIABLES)
    out = {}
    for name, var, guid in EFI_VARIABLES:
        filename = "%s-%s" % (var, guid)
        if filename not in present:
            out[name] = fact(ABSENT, reason="no EFI variable %s" % var)
            continue
        try:
            out[name] = parse_efi_boolean(read_pseudo_file(os.path.join(varsdir, filename), "EFI variable", 4096))
        except ModSignError as exc:
            out[name] = fact(UNKNOWN, reason=str(exc))
    return out


def parse_sig_enforce(text):
    # type: (str) -> Dict[str, Any]
    value = text.strip()
    return fact(KNOWN, value == "Y") if value in ("Y", "N") else fact(UNPARSED, raw=value)


def read_enforcement(prefixes):
    # type: (Prefixes) -> Dict[str, Dict[str, Any]]
    path = os.path.join(prefixes.sys, "module", "module", "parameters", "sig_enforce")
    if _missing(path):
        sig_enforce = fact(UNKNOWN, reason="%s does not exist (CONFIG_MODULE_SIG off, or sysfs not mounted)" % path)
    else:
        text, reason = _read_text(path, "sig_enforce")
        sig_enforce = parse_sig_enforce(text) if text is not None else fact(UNKNOWN, reason=reason)
    return {"sig_enforce": sig_enforce, "config_module_sig_force": read_sig_force(prefixes)}


def read_sig_force(prefixes):
    # type: (Prefixes) -> Dict[str, Any]
    release, reason = _read_text(os.path.join(prefixes.proc, "sys", "kernel", "osrelease"), "the kernel release")
    if release is None:
        return fact(UNKNOWN, reason=reason)
    path = os.path.join(prefixes.boot, "config-%s" % release.strip())
    if _missing(path):
        return fact(UNKNOWN, reason="%s does not exist" % path)
    try:
        lines = kconfig.parse_config(read_regular(path, "the kernel config", MAX_PROC_BYTES), path)
    except ModSignError as exc:
        return fact(UNPARSED, reason=str(exc))
    value = kconfig.values(lines).get("CONFIG_MODULE_SIG_FORCE")
    out = fact(KNOWN, value == "y")
    out["path"] = path
    return out


# ---------------------------------------------------------------- taint and loaded modules

def taint_letters(mask):
    # type: (int) -> List[str]
    """The letters of the set bits of a taint mask; a bit this table does not know is named ``bit<N>``."""
    out = []
    for bit in range(mask.bit_length()):
        if mask >> bit & 1:
            out.append(TAINT_LETTERS[bit] if bit < len(TAINT_LETTERS) else "bit%d" % bit)
    return out


def read_taint(prefixes):
    # type: (Prefixes) -> Dict[str, Any]
    text, reason = _read_text(os.path.join(prefixes.proc, "sys", "kernel", "tainted"), "the taint mask")
    if text is None:
        return fact(UNKNOWN, reason=reason)
    if not text.strip().isdigit():
        return fact(UNPARSED, raw=text.strip())
    mask = int(text.strip())
    out = fact(KNOWN, taint_letters(mask))
    out["mask"] = mask
    return out


_PROC_MODULE = re.compile(r"^(\S+) (\d+) (\d+|-) (\S+) (Live|Loading|Unloading) (0x[0-9a-f]+)(?: \(([A-Z]+)\))?$")


def parse_proc_modules(text):
    # type: (str) -> Tuple[List[Dict[str, Any]], List[str]]
    return _parse_lines(text, _proc_module)


def _proc_module(line):
    # type: (str) -> Optional[Dict[str, Any]]
    match = _PROC_MODULE.match(line.strip())
    if not match:
        return None
    return {"name": match.group(1), "size": int(match.group(2)), "state": match.group(5),
            "taint": match.group(7) or ""}


def parse_modinfo(text):
    # type: (str) -> Dict[str, Dict[str, str]]
    """``modinfo a b c`` output, per module name: the fields we need (signer, sig_key, sig_hashalgo)."""
    found = {}  # type: Dict[str, Dict[str, str]]
    block = {}  # type: Dict[str, str]
    last = None

    def flush():
        name = block.get("name") or os.path.basename(block.get("filename", "")).split(".ko")[0].replace("-", "_")
        if name:
            found[name] = dict(block)

    for line in text.splitlines():
        if line.startswith(("\t", " ")) and last:
            block[last] += line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "filename" and block:
            flush()
            block = {}
        if key in ("filename", "name", "signer", "sig_key", "sig_hashalgo", "sig_id"):
            block[key] = value.strip()
            last = key
        else:
            last = None
    if block:
        flush()
    return found


def read_modules(prefixes, run, certs):
    # type: (Prefixes, Runner, Sequence[Certificate]) -> Dict[str, Any]
    text, reason = _read_text(os.path.join(prefixes.proc, "modules"), "/proc/modules")
    if text is None:
        return {"state": UNKNOWN, "reason": reason, "value": [], "unparsed": []}
    modules, unparsed = parse_proc_modules(text)
    info, info_reason = _modinfo(run, [m["name"] for m in modules])
    for module in modules:
        sys_taint, _why = _read_text(os.path.join(prefixes.sys, "module", module["name"], "taint"), "module taint")
        if sys_taint is not None:
            module["taint"] = sys_taint.strip()
        module["kernel_verified"] = TAINT_UNSIGNED not in module["taint"]
        fields = info.get(module["name"])
        if fields is None:
            module["signature"] = fact(UNKNOWN, reason=info_reason or "modinfo does not know this module")
            module["ours"] = None
            continue
        module["signer"] = fields.get("signer")
        module["sig_key"] = fields.get("sig_key")
        module["sig_hashalgo"] = fields.get("sig_hashalgo")
        module["signature"] = fact(KNOWN, "signed" if fields.get("sig_key") else "unsigned")
        module["ours"] = signed_by_us(fields, certs)
    return {"state": KNOWN, "value": modules, "unparsed": unparsed}


def _modinfo(run, names):
    # type: (Runner, List[str]) -> Tuple[Dict[str, Dict[str, str]], Optional[str]]
    found = {}  # type: Dict[str, Dict[str, str]]
    for start in range(0, len(names), MODINFO_BATCH):
        rc, out, err = run(["modinfo"] + names[start:start + MODINFO_BATCH])
        if rc == 127:
            return found, "modinfo is not installed"
        found.update(parse_modinfo(out))
    return found, None


def signed_by_us(fields, certs):
    # type: (Dict[str, str], Sequence[Certificate]) -> bool
    """modinfo's sig_key is the signer's serial (issuer+serial) or its SKID; signer is the issuer's CN."""
    key = (fields.get("sig_key") or "").upper()
    if not key:
        return False
    for cert in certs:
        if key == cert.serial and fields.get("signer") == cert.issuer_cn:
            return True
        if cert.skid and key == cert.skid:
            return True
    return False


# ---------------------------------------------------------------- rejections in the kernel log

REJECTIONS = (
    ("verification_failed", re.compile(r"(?P<module>[\w-]+): module verification failed: (?P<detail>.*)")),
    ("untrusted_pkcs7", re.compile(r"PKCS#7 signature not signed with a trusted key")),
    ("lockdown", re.compile(r"Lockdown: (?:(?P<comm>[^:]+): )?(?P<detail>(?:unsigned module loading|"
                            r"Loading of unsigned modules?) is restricted.*)")),
    ("rejected", re.compile(r"Loading of (?P<detail>unsigned module|module with unavailable key|"
                            r"module with unsupported crypto) is rejected")),
    ("unknown_key", re.compile(r"Request for unknown module key '(?P<detail>[^']*)' err")),
)
_TIMESTAMP = re.compile(r"^(?:<\d+>)?\[\s*\d+\.\d+\]\s?")


def parse_rejections(text):
    # type: (str) -> List[Dict[str, Any]]
    """The kernel's own words about a module it refused or did not trust, in order, with the module where named."""
    out = []
    for line in text.splitlines():
        message = _TIMESTAMP.sub("", line).strip()
        for kind, pattern in REJECTIONS:
            match = pattern.search(message)
            if match:
                groups = match.groupdict()
                out.append({"kind": kind, "module": groups.get("module"), "process": groups.get("comm"),
                            "detail": groups.get("detail"), "message": message})
                break
    return out


def read_rejections(run):
    # type: (Runner) -> Dict[str, Any]
    reasons = []
    for argv in (["dmesg"], ["journalctl", "-k", "-b", "-o", "cat", "--no-pager", "-q"]):
        rc, out, err = run(argv)
        if rc == 0:
            result = fact(KNOWN, parse_rejections(out))
            result["source"] = argv[0]
            return result
        reasons.append("%s: %s" % (argv[0], (err.strip() or "rc %d" % rc).splitlines()[0]))
    return fact(UNKNOWN, [], reason="; ".join(reasons))


# ---------------------------------------------------------------- all of it, and what it means

def collect(cert_paths, prefixes=Prefixes(), run=run_subprocess):
    # type: (Sequence[str], Prefixes, Runner) -> Dict[str, Any]
    """Every piece of evidence, and a verdict on it."""
    certs = load_certificates(cert_paths)
    keyrings = read_keyrings(prefixes, run)
    evidence = {
        "keyrings": keyrings,
        "module_trusting_keyrings": module_trusting_keyrings(keyrings["keyrings"]),
        "certificates": certificate_trust(certs, keyrings),
        "lockdown": read_lockdown(prefixes),
        "efi": read_efi(prefixes),
        "taint": read_taint(prefixes),
        "modules": read_modules(prefixes, run, certs),
        "rejections": read_rejections(run),
    }  # type: Dict[str, Any]
    evidence.update(read_enforcement(prefixes))
    evidence["verdict"] = verdict(evidence)
    return evidence


def untrusted_loaded_modules(evidence):
    # type: (Dict[str, Any]) -> List[str]
    """Loaded modules the kernel itself did not verify (taint E): unsigned, or signed by no trusted key."""
    return sorted(m["name"] for m in evidence["modules"]["value"] if not m["kernel_verified"])


def verdict(evidence):
    # type: (Dict[str, Any]) -> Dict[str, Any]
    """``ok`` / ``attention`` (with reasons) / ``unknown`` (with what could not be read)."""
    attention, unknown = [], []
    for cert in evidence["certificates"]:
        if cert["trusted_for_modules"] is False:
            attention.append("certificate %s (%s) is in no keyring the running kernel trusts for modules (%s)"
                             % (cert["path"], cert["description"], cert["reason"]))
        elif cert["trusted_for_modules"] is None:
            unknown.append("certificate %s: %s" % (cert["path"], cert["reason"]))
    loaded = untrusted_loaded_modules(evidence)
    if loaded:
        attention.append("loaded without a trusted signature (taint E): %s" % ", ".join(loaded))
    rejections = evidence["rejections"]
    if rejections["state"] == KNOWN and rejections["value"]:
        attention.append("%d module signature message(s) in the kernel log since boot"
                         % len(rejections["value"]))
    for name in ("modules", "rejections"):
        if evidence[name]["state"] != KNOWN:
            unknown.append("%s: %s" % (name, evidence[name].get("reason")))
    if evidence["keyrings"]["unparsed"]:
        unknown.append("%d line(s) of /proc/keys or /proc/key-users not understood"
                       % len(evidence["keyrings"]["unparsed"]))
    state = "attention" if attention else ("unknown" if unknown else "ok")
    return {"state": state, "attention": attention, "unknown": unknown}


# ---------------------------------------------------------------- the gate: evidence over prediction

def running_release(prefixes=Prefixes()):
    # type: (Prefixes) -> Optional[str]
    text, _reason = _read_text(os.path.join(prefixes.proc, "sys", "kernel", "osrelease"), "the kernel release")
    return text.strip() if text else None


def gate_findings(evidence, predicted_untrusted):
    # type: (Dict[str, Any], Sequence[str]) -> Tuple[List[str], List[str]]
    """(problems, disagreements) of the running kernel for the safety gate.

    Problems refuse enforcement whatever the files say: a loaded module the kernel did not verify (taint E:
    unsigned, or signed by a key in no trusted keyring), or one of our certificates in no module-trusting
    keyring. ``predicted_untrusted`` names the certificate paths the prediction from files (image, config,
    certificates given) says that kernel does not trust; where the evidence says otherwise, a disagreement
    names both. Evidence that could not be read refuses nothing and contradicts nothing.
    """
    problems, disagreements = [], []
    loaded = untrusted_loaded_modules(evidence)
    if loaded:
        problems.append("the running kernel has modules loaded that it did not verify (taint E: unsigned, or signed "
                        "by a key in no trusted keyring): %s" % ", ".join(loaded))
    for cert in evidence["certificates"]:
        actual = cert["trusted_for_modules"]
        if actual is False:
            problems.append("certificate %s (%s) is in no keyring the running kernel trusts for modules (%s)"
                            % (cert["path"], cert["description"], cert["reason"]))
        predicted = cert["path"] not in predicted_untrusted
        if actual is not None and actual != predicted:
            disagreements.append(
                "certificate %s: the files predict %s, the running kernel's keyrings say %s (%s)"
                % (cert["path"], _trusted_word(predicted), _trusted_word(actual), cert["reason"]))
    return problems, disagreements


def _trusted_word(trusted):
    # type: (bool) -> str
    return "trusted for modules" if trusted else "not trusted for modules"


def module_runner(module):
    # type: (Any) -> Runner
    """run(argv) through an AnsibleModule's run_command; a program that is not installed gives rc 127."""
    def run(argv):
        program = module.get_bin_path(argv[0])
        if program is None:
            return 127, "", "%s: not installed" % argv[0]
        return module.run_command([program] + list(argv[1:]), environ_update={"LC_ALL": "C"})
    return run


# The gate's own wording for certificates its prediction from files does not trust (_gate.check); read here
# until the kernel model of issue 17 hands the list over as data.
_GATE_UNTRUSTED = "not in a keyring kernel "


def gate_evidence(cert_paths, gate_kernel, root_dir, gate_problems, run, prefixes=Prefixes()):
    # type: (Sequence[str], str, str, Sequence[str], Runner, Prefixes) -> Dict[str, Any]
    """The running kernel's evidence for the safety gate, when the gate judges the running kernel itself.

    Returns ``applied`` (whether it counts), ``reason``, ``problems`` (they refuse enforcement),
    ``disagreements`` (prediction against evidence, naming both) and the evidence's ``verdict``.
    """
    release = running_release(prefixes)
    out = {"applied": False, "running_kernel": release, "problems": [], "disagreements": []}  # type: Dict[str, Any]
    if os.path.realpath(root_dir) != "/":
        out["reason"] = "root_dir %s is not the running system" % root_dir
        return out
    if release != gate_kernel:
        out["reason"] = "the gate judges kernel %s; the running kernel is %s" % (gate_kernel, release or "unknown")
        return out
    evidence = collect(cert_paths, prefixes, run)
    predicted_untrusted = [path for path in cert_paths
                           if any(p.startswith(_GATE_UNTRUSTED) and path in p for p in gate_problems)]
    problems, disagreements = gate_findings(evidence, predicted_untrusted)
    out.update(applied=True, reason="the gate judges the running kernel: its own evidence counts",
               problems=problems, disagreements=disagreements, verdict=evidence["verdict"])
    return out
