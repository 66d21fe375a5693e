# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel .config files: parse, set the module-signing options, render byte for byte.

Private to skm.modsign. A .config is lines of three kinds: ``CONFIG_X=value``,
``# CONFIG_X is not set`` and everything else (comments, blank lines), which
is kept as it is. Setting an option rewrites only its own line, or appends a
line when the option is missing (Arch-SKM's script silently does nothing
there). Choice groups (the signing hash, the key type, the compression) are
written whole: the chosen member ``=y``, every other member "is not set".
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
NOT_SET = "n"
# A choice member that is not chosen: written "is not set" where the file has it, never added (a kernel
# version may not know every member, e.g. 6.1 has no MODULE_SIG_SHA3_*).
UNCHOSEN = "unchosen"

HASH_CHOICES = ["SHA1", "SHA224", "SHA256", "SHA384", "SHA512", "SHA3_256", "SHA3_384", "SHA3_512"]
KEY_TYPE_CHOICES = ["RSA", "ECDSA"]
COMPRESS_CHOICES = ["NONE", "GZIP", "XZ", "ZSTD"]
# The crypto a kernel must have built in (=y) to verify a module signature with that hash.
HASH_CRYPTO = {"sha256": "CONFIG_CRYPTO_SHA256", "sha384": "CONFIG_CRYPTO_SHA512", "sha512": "CONFIG_CRYPTO_SHA512",
               "sha3-256": "CONFIG_CRYPTO_SHA3", "sha3-384": "CONFIG_CRYPTO_SHA3", "sha3-512": "CONFIG_CRYPTO_SHA3"}
KEY_CRYPTO = {"rsa": "CONFIG_CRYPTO_RSA", "ecdsa": "CONFIG_CRYPTO_ECDSA"}


class Line(NamedTuple):
    text: str                 # the line without its newline
    name: Optional[str]       # CONFIG_ name, or None for comments and blank lines
    value: Optional[str]      # the value as written ("y", "m", "\"str\"", "123"), or "n" for "is not set"


def _quote(value):
    # type: (str) -> str
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


def parse_config(text, path=None):
    # type: (str, Optional[str]) -> List[Line]
    """Split a .config into lines; refuse what is not a kernel config (naming the first bad line)."""
    if "\0" in text:
        raise ModSignError("not a kernel config (binary data)", path)
    lines = []
    seen_option = False
    for number, raw in enumerate(text.split("\n"), 1):
        set_match = _SET.match(raw)
        if set_match:
            lines.append(Line(raw, set_match.group(1), set_match.group(2)))
            seen_option = True
            continue
        unset = _UNSET.match(raw)
        if unset:
            lines.append(Line(raw, unset.group(1), NOT_SET))
            seen_option = True
            continue
        if raw.strip() and not raw.startswith("#"):
            raise ModSignError("not a kernel config (line %d is neither CONFIG_X=value nor a comment: %r)"
                               % (number, raw[:60]), path)
        lines.append(Line(raw, None, None))
    if not seen_option:
        raise ModSignError("not a kernel config (no CONFIG_ option in it)", path)
    return lines


def render(lines):
    # type: (Sequence[Line]) -> str
    return "\n".join(line.text for line in lines)


def values(lines):
    # type: (Sequence[Line]) -> Dict[str, str]
    out = {}  # type: Dict[str, str]
    for line in lines:
        if line.name:
            out[line.name] = line.value or ""
    return out


def _line_for(name, value):
    # type: (str, str) -> str
    return "# %s is not set" % name if value == NOT_SET else "%s=%s" % (name, value)


def apply(lines, wanted):
    # type: (List[Line], Sequence[Tuple[str, str]]) -> Tuple[List[Line], List[Dict[str, Optional[str]]]]
    """Set each (name, value); return the new lines and what changed (name, before, after)."""
    out = list(lines)
    index = dict((line.name, i) for i, line in enumerate(out) if line.name)
    changes = []  # type: List[Dict[str, Optional[str]]]
    for name, value in wanted:
        if value == UNCHOSEN:
            if name not in index:
                continue
            value = NOT_SET
        new = Line(_line_for(name, value), name, value)
        if name in index:
            old = out[index[name]]
            if old.value == value:
                continue
            out[index[name]] = new
            changes.append({"name": name, "before": old.value, "after": value})
        else:
            # Keep the file's final newline: insert before a trailing empty line.
            at = len(out) - 1 if out and out[-1].text == "" else len(out)
            out.insert(at, new)
            index = dict((line.name, i) for i, line in enumerate(out) if line.name)
            changes.append({"name": name, "before": None, "after": value})
    return out, changes


def _choice(prefix, members, chosen):
    # type: (str, Sequence[str], str) -> List[Tuple[str, str]]
    return [(prefix + member, "y" if member == chosen else UNCHOSEN) for member in members]


def _flag(value):
    # type: (bool) -> str
    return "y" if value else NOT_SET


class Settings(NamedTuple):
    """What the user asks for; None leaves an option as the file has it."""

    sig: Optional[bool] = True
    sig_force: Optional[bool] = None
    sig_all: Optional[bool] = None
    hash_name: Optional[str] = None        # sha256 ... sha3-512 (sha1/sha224 are not offered)
    key: Optional[str] = None              # CONFIG_MODULE_SIG_KEY
    key_type: Optional[str] = None         # rsa or ecdsa
    trusted_keys: Optional[str] = None     # CONFIG_SYSTEM_TRUSTED_KEYS
    compress: Optional[str] = None         # none, gzip, xz, zstd
    decompress: Optional[bool] = None
    allow_missing_namespace_imports: Optional[bool] = None
    builtin_crypto: bool = True            # hash and key algorithm =y, not =m
    extra: Dict[str, str] = {}


def check_settings(settings):
    # type: (Settings) -> None
    if settings.key_type == "ecdsa" and settings.hash_name in ("sha256", "sha3-256"):
        raise ModSignError("an ECDSA module signing key cannot be combined with %s: the kernel's certs/Kconfig "
                           "makes MODULE_SIG_KEY_TYPE_ECDSA depend on !(MODULE_SIG_SHA256 || MODULE_SIG_SHA3_256); "
                           "use sha384 or sha512" % settings.hash_name)
    if settings.decompress and settings.compress in (None, "none"):
        raise ModSignError("decompress needs compress set to gzip, xz or zstd: the kernel's MODULE_DECOMPRESS "
                           "depends on the compression it decompresses")
    for name in settings.extra:
        if not re.match(r"^CONFIG_[A-Za-z0-9_]+$", name):
            raise ModSignError("extra option %r is not a CONFIG_ name" % name)


def wanted_values(settings):
    # type: (Settings) -> List[Tuple[str, str]]
    """The (CONFIG_X, value) pairs ``settings`` asks for, in a stable order."""
    check_settings(settings)
    wanted = []  # type: List[Tuple[str, str]]
    if settings.sig is not None:
        wanted.append(("CONFIG_MODULE_SIG", _flag(settings.sig)))
    if settings.sig_force is not None:
        wanted.append(("CONFIG_MODULE_SIG_FORCE", _flag(settings.sig_force)))
    if settings.sig_all is not None:
        wanted.append(("CONFIG_MODULE_SIG_ALL", _flag(settings.sig_all)))
    if settings.hash_name is not None:
        member = settings.hash_name.upper().replace("-", "_")
        wanted += _choice("CONFIG_MODULE_SIG_", HASH_CHOICES, member)
        wanted.append(("CONFIG_MODULE_SIG_HASH", _quote(settings.hash_name)))
        if settings.builtin_crypto:
            wanted.append((HASH_CRYPTO[settings.hash_name], "y"))
    if settings.key is not None:
        wanted.append(("CONFIG_MODULE_SIG_KEY", _quote(settings.key)))
    if settings.key_type is not None:
        wanted += _choice("CONFIG_MODULE_SIG_KEY_TYPE_", KEY_TYPE_CHOICES, settings.key_type.upper())
        if settings.builtin_crypto:
            wanted.append((KEY_CRYPTO[settings.key_type], "y"))
    if settings.trusted_keys is not None:
        wanted.append(("CONFIG_SYSTEM_TRUSTED_KEYRING", "y"))
        wanted.append(("CONFIG_SYSTEM_TRUSTED_KEYS", _quote(settings.trusted_keys)))
    if settings.compress is not None:
        wanted += _choice("CONFIG_MODULE_COMPRESS_", COMPRESS_CHOICES, settings.compress.upper())
    if settings.decompress is not None:
        wanted.append(("CONFIG_MODULE_DECOMPRESS", _flag(settings.decompress)))
    if settings.allow_missing_namespace_imports is not None:
        wanted.append(("CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS", _flag(settings.allow_missing_namespace_imports)))
    for name in sorted(settings.extra):
        wanted.append((name, settings.extra[name]))
    # One value per name: a later, more specific entry (extra) wins.
    merged = {}  # type: Dict[str, str]
    order = []  # type: List[str]
    for name, value in wanted:
        if name not in merged:
            order.append(name)
        merged[name] = value
    return [(name, merged[name]) for name in order]


def edit(text, settings, path=None):
    # type: (str, Settings, Optional[str]) -> Tuple[str, List[Dict[str, Optional[str]]]]
    """The new text of a config and the list of changes; the text is unchanged when nothing changes."""
    lines = parse_config(text, path)
    new_lines, changes = apply(lines, wanted_values(settings))
    return (render(new_lines) if changes else text), changes
