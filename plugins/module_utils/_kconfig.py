# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel .config files: parse, set the module-signing options, render byte for byte.

Private to skm.modsign. A .config is lines of three kinds: ``CONFIG_X=value``,
``# CONFIG_X is not set`` and everything else (comments, blank lines), which
is kept as it is. Setting an option rewrites only its own line, or appends a
line when the option is missing (Arch-SKM's script silently does nothing
there). Choice groups (the signing hash, the key type, the compression) are
written whole: the chosen member ``=y``, every other member present in the
file "is not set". A member the file does not mention is left out rather than
added as "is not set": the config may be for a kernel that has no such option
(6.1 has no CONFIG_MODULE_SIG_SHA3_*), whose ``make olddefconfig`` would drop
the line again, and the next run would add it again - never idempotent.

``parse_config`` is the entry point for untrusted input: it takes text or
bytes and raises only ModSignError.

Line endings: a .config written on Windows or by a tool that uses CRLF has "\r\n" after each line. The
kernel's Kconfig (confdata.c) reads both forms with either ending, so we do too: a line's ending is kept
when it is rewritten, and a line we add takes the ending most lines of the file have. Nothing gets mixed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
NOT_SET = "n"
# "Off" where absence already means off: written "is not set" where the file has the option, never added.
# For a choice member not chosen (a kernel version may not know every member: 6.1 has no MODULE_SIG_SHA3_*)
# and for a bool whose Kconfig default is n (MODULE_SIG_FORCE, MODULE_DECOMPRESS...): olddefconfig drops
# "is not set" of an option whose dependencies are unmet, and adding it back each run is never idempotent.
UNCHOSEN = "unchosen"

HASH_CHOICES = ["SHA1", "SHA224", "SHA256", "SHA384", "SHA512", "SHA3_256", "SHA3_384", "SHA3_512"]
KEY_TYPE_CHOICES = ["RSA", "ECDSA"]
COMPRESS_CHOICES = ["NONE", "GZIP", "XZ", "ZSTD"]
# The crypto a kernel must have built in (=y) to verify a module signature with that hash (the gate reads it too).
HASH_CRYPTO = {
    "sha1": "CONFIG_CRYPTO_SHA1", "sha224": "CONFIG_CRYPTO_SHA256", "sha256": "CONFIG_CRYPTO_SHA256",
    "sha384": "CONFIG_CRYPTO_SHA512", "sha512": "CONFIG_CRYPTO_SHA512",
    "sha3-256": "CONFIG_CRYPTO_SHA3", "sha3-384": "CONFIG_CRYPTO_SHA3", "sha3-512": "CONFIG_CRYPTO_SHA3",
}
KEY_CRYPTO = {"rsa": "CONFIG_CRYPTO_RSA", "ecdsa": "CONFIG_CRYPTO_ECDSA"}
# CONFIG_MODULE_SIG_SHA3_* came with Linux 6.7 (commit 446b1e0b7b39, "module: enable automatic module
# signing with FIPS 202 SHA-3"); an older kernel's olddefconfig silently drops it.
SHA3_SINCE = (6, 7)
# 6.1's MODULE_DECOMPRESS depends on MODULE_COMPRESS_GZIP || MODULE_COMPRESS_XZ (seen in linux-source-6.1:
# olddefconfig drops it with zstd); zstd decompression in the kernel followed in 6.2.
ZSTD_DECOMPRESS_SINCE = (6, 2)
_HEADER = re.compile(r"^# Linux/\S+ (\d+)\.(\d+)[.\d]*\S* Kernel Configuration$")


class Line(NamedTuple):
    text: str                 # the line without its "\n" (a CRLF file's lines keep their "\r")
    name: Optional[str]       # CONFIG_ name, or None for comments and blank lines
    value: Optional[str]      # the value as written ("y", "m", "\"str\"", "123"), or "n" for "is not set"


def _quote(value):
    # type: (str) -> str
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


def parse_config(text, path=None):
    # type: (Union[str, bytes], Optional[str]) -> List[Line]
    """Split a .config into lines; refuse what is not a kernel config (naming the first bad line).

    Takes text or bytes (UTF-8); raises only ModSignError.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ModSignError("not a kernel config (not UTF-8 text)", path)
    if not isinstance(text, str):
        raise ModSignError("not a kernel config (expected text, got %s)" % type(text).__name__, path)
    if "\0" in text:
        raise ModSignError("not a kernel config (binary data)", path)
    lines = []
    seen_option = False
    for number, raw in enumerate(text.split("\n"), 1):
        content = _without_cr(raw)
        set_match = _SET.match(content)
        if set_match:
            if "\r" in set_match.group(2):
                raise ModSignError("not a kernel config (line %d holds a carriage return inside a value; CR-only "
                                   "line endings?)" % number, path)
            lines.append(Line(raw, set_match.group(1), set_match.group(2)))
            seen_option = True
            continue
        unset = _UNSET.match(content)
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


def _without_cr(text):
    # type: (str) -> str
    return text[:-1] if text.endswith("\r") else text


def kernel_version(lines):
    # type: (Sequence[Line]) -> Optional[Tuple[int, int]]
    """(major, minor) from the header Kconfig writes ("# Linux/x86 6.1.0 Kernel Configuration"), or None."""
    for line in lines[:10]:
        match = _HEADER.match(_without_cr(line.text))
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


def line_ending(lines):
    # type: (Sequence[Line]) -> str
    """The ending most lines of the file have: "\r\n" or "\n" (also for a file of one line, or a tie)."""
    ended = lines[:-1]   # the last piece has no "\n" after it
    crlf = sum(1 for line in ended if line.text.endswith("\r"))
    return "\r\n" if crlf > len(ended) - crlf else "\n"


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


def _line_for(name, value, carriage_return=False):
    # type: (str, str, bool) -> str
    text = "# %s is not set" % name if value == NOT_SET else "%s=%s" % (name, value)
    return text + "\r" if carriage_return else text


def apply(lines, wanted):
    # type: (List[Line], Sequence[Tuple[str, str]]) -> Tuple[List[Line], List[Dict[str, Optional[str]]]]
    """Set each (name, value); return the new lines and what changed (name, before, after).

    Every line of a name is rewritten (Kconfig takes the last of duplicates; none may keep a stale
    value). UNCHOSEN is "is not set" where the file has the option and nothing where it has not.
    """
    out = list(lines)
    crlf = line_ending(lines) == "\r\n"
    changes = []  # type: List[Dict[str, Optional[str]]]
    for name, wanted_value in wanted:
        value = NOT_SET if wanted_value == UNCHOSEN else wanted_value
        where = [i for i, line in enumerate(out) if line.name == name]
        if where:
            stale = [i for i in where if out[i].value != value]
            if not stale:
                continue
            # "before" is what Kconfig reads now (the last line), or the stale duplicate when that one is right.
            before = out[where[-1]].value if where[-1] in stale else out[stale[0]].value
            for i in stale:
                out[i] = Line(_line_for(name, value, out[i].text.endswith("\r")), name, value)
            changes.append({"name": name, "before": before, "after": value})
        elif wanted_value != UNCHOSEN:
            _append(out, Line(_line_for(name, value, crlf), name, value), crlf)
            changes.append({"name": name, "before": None, "after": value})
    return out, changes


def _append(out, new, crlf):
    # type: (List[Line], Line, bool) -> None
    """Add ``new`` at the end, keeping the file's final newline (before the empty piece after it) or its lack."""
    if out and out[-1].text == "":
        out.insert(len(out) - 1, new)
        return
    if out and crlf and not out[-1].text.endswith("\r"):
        out[-1] = out[-1]._replace(text=out[-1].text + "\r")   # the old last line now has an ending: the file's
    out.append(new._replace(text=new.text[:-1]) if new.text.endswith("\r") else new)


def _choice(prefix, members, chosen):
    # type: (str, Sequence[str], str) -> List[Tuple[str, str]]
    return [(prefix + member, "y" if member == chosen else UNCHOSEN) for member in members]


def _flag(value, default_off=True):
    # type: (bool, bool) -> str
    """A bool option: y, or off - UNCHOSEN when absence already means off (Kconfig default n)."""
    return "y" if value else (UNCHOSEN if default_off else NOT_SET)


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


_ECDSA_REFUSAL = ("an ECDSA module signing key cannot be combined with %s: the kernel's certs/Kconfig makes "
                  "MODULE_SIG_KEY_TYPE_ECDSA depend on !(MODULE_SIG_SHA256 || MODULE_SIG_SHA3_256) (since Linux "
                  "6.7); use sha384 or sha512")
_DECOMPRESS_REFUSAL = ("decompress needs compress set to gzip, xz or zstd: the kernel's MODULE_DECOMPRESS "
                       "depends on the compression it decompresses")


def check_settings(settings):
    # type: (Settings) -> None
    """Refuse what no kernel config can hold, before any file is read."""
    if settings.key_type == "ecdsa" and settings.hash_name in ("sha256", "sha3-256"):
        raise ModSignError(_ECDSA_REFUSAL % settings.hash_name)
    if settings.decompress and settings.compress == "none":
        raise ModSignError(_DECOMPRESS_REFUSAL)
    for name in settings.extra:
        if not re.match(r"^CONFIG_[A-Za-z0-9_]+$", name):
            raise ModSignError("extra option %r is not a CONFIG_ name" % name)
    texts = [("key", settings.key), ("trusted_keys", settings.trusted_keys)]
    texts += list(settings.extra.items())
    for name, value in texts:
        if value is not None and any(c in value for c in "\n\r\0"):
            raise ModSignError("%s must be one line (a newline would add lines of its own to the config)" % name)


def check_result(result, version=None, path=None):
    # type: (Dict[str, str], Optional[Tuple[int, int]], Optional[str]) -> None
    """Refuse a resulting config that the kernel's Kconfig would quietly change back.

    ``result`` is ``values()`` of the edited file, so options the user did not set count too
    (an ECDSA key type asked for on a config that signs with sha256).
    """
    chosen = [m for m in HASH_CHOICES if result.get("CONFIG_MODULE_SIG_" + m) == "y"]
    if result.get("CONFIG_MODULE_SIG_KEY_TYPE_ECDSA") == "y":
        weak = [m for m in chosen if m in ("SHA256", "SHA3_256")]
        if weak:
            raise ModSignError(_ECDSA_REFUSAL % weak[0].lower().replace("_", "-"), path)
    sha3 = [m for m in chosen if m.startswith("SHA3_")]
    if sha3 and version is not None and version < SHA3_SINCE:
        raise ModSignError("this config is for Linux %d.%d, which has no CONFIG_MODULE_SIG_%s (signing with SHA-3 "
                           "came with Linux %d.%d): its make olddefconfig would drop it; use sha256, sha384 or sha512"
                           % (version + (sha3[0],) + SHA3_SINCE), path)
    if result.get("CONFIG_MODULE_DECOMPRESS") == "y":
        compress = [m for m in COMPRESS_CHOICES if m != "NONE" and result.get("CONFIG_MODULE_COMPRESS_" + m) == "y"]
        if not compress:
            raise ModSignError(_DECOMPRESS_REFUSAL, path)
        if compress == ["ZSTD"] and version is not None and version < ZSTD_DECOMPRESS_SINCE:
            raise ModSignError("this config is for Linux %d.%d, whose kernel decompresses gzip and xz modules only "
                               "(zstd came with Linux %d.%d): its make olddefconfig would drop "
                               "CONFIG_MODULE_DECOMPRESS; use compress xz or gzip, or no decompress"
                               % (version + ZSTD_DECOMPRESS_SINCE), path)


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
        wanted.append(("CONFIG_MODULE_SIG_ALL", _flag(settings.sig_all, default_off=False)))   # default y
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
    # type: (Union[str, bytes], Settings, Optional[str]) -> Tuple[str, List[Dict[str, Optional[str]]]]
    """The new text of a config and the list of changes; the text is unchanged when nothing changes."""
    lines = parse_config(text, path)
    new_lines, changes = apply(lines, wanted_values(settings))
    check_result(values(new_lines), kernel_version(lines), path)
    return (render(new_lines) if changes else render(lines)), changes
