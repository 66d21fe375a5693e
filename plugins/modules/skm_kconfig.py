#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: skm_kconfig
short_description: Set the module-signing options in kernel .config files
version_added: 0.1.0
description:
  - Sets C(CONFIG_MODULE_SIG), C(_FORCE), C(_ALL), the signing hash (exactly one of C(CONFIG_MODULE_SIG_SHA*)
    set, the others the file has written C(# CONFIG_... is not set), C(CONFIG_MODULE_SIG_HASH) to match),
    C(CONFIG_MODULE_SIG_KEY), the key type, C(CONFIG_SYSTEM_TRUSTED_KEYS), the module compression,
    C(CONFIG_MODULE_DECOMPRESS) and C(CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS) in one or many configs.
  - Also builds in (C(=y), not C(=m)) what verifying a signature needs - the hash (C(CONFIG_CRYPTO_SHA256),
    C(CONFIG_CRYPTO_SHA512), C(CONFIG_CRYPTO_SHA3)) and the key algorithm (C(CONFIG_CRYPTO_RSA),
    C(CONFIG_CRYPTO_ECDSA)). A kernel with the hash only as a module rejects such signatures.
  - A missing option is added; every other line is kept byte for byte. Writes are atomic. A member of a choice
    group that the file does not mention (6.1 has no C(CONFIG_MODULE_SIG_SHA3_*)) is not added just to say it is
    not set, so running C(make olddefconfig) and then this module again reports no change.
  - Refuses, naming the file, what the kernel's Kconfig forbids or would silently undo - an ECDSA key type with a
    256-bit hash (also when the hash is the one the file already has), a SHA-3 hash in the config of a kernel
    older than 6.7 (read from the config's header), O(decompress) without a compression or, before 6.2, with
    zstd. Every file is checked before any is written.
  - Turning off an option whose Kconfig default is off (O(sig), O(sig_force), O(decompress),
    O(allow_missing_namespace_imports)) rewrites its line where the file has one and adds none where it has not.
  - Run C(make olddefconfig) afterwards, as for any .config edit.
author:
  - skm.modsign contributors (@skm-modsign)
extends_documentation_fragment:
  - skm.modsign.attributes
  - skm.modsign.signing_hash
attributes:
  check_mode:
    support: full
    details: Reports the changes per file; writes nothing.
  diff_mode:
    support: full
    details: A unified diff per changed file.
  idempotent:
    support: full
    details: Also after C(make olddefconfig) in between (see above).
options:
  path:
    description: A .config file, or a glob matching several (like genkeys.py C(--config 'conf/config.*')).
    type: path
    required: true
  sig:
    description: C(CONFIG_MODULE_SIG).
    type: bool
    default: true
  sig_force:
    description: C(CONFIG_MODULE_SIG_FORCE) - reject unsigned modules. Unset leaves it as it is.
    type: bool
  sig_all:
    description: C(CONFIG_MODULE_SIG_ALL) - sign every module at C(make modules_install).
    type: bool
  hash:
    description: The module signing hash (the choice group and C(CONFIG_MODULE_SIG_HASH)).
  key:
    description: C(CONFIG_MODULE_SIG_KEY) - the combined key and certificate PEM (skm_genkey's C(combined)).
    type: str
  key_type:
    description:
      - C(CONFIG_MODULE_SIG_KEY_TYPE_RSA) or C(_ECDSA) (also builds in the matching crypto).
      - When O(key) is an absolute path to an existing file, the key in its certificate must be of this type.
    type: str
    choices: [rsa, ecdsa]
  trusted_keys:
    description: C(CONFIG_SYSTEM_TRUSTED_KEYS) - PEM file of extra certificates the kernel trusts.
    type: str
  compress:
    description: Module compression at C(modules_install) (C(CONFIG_MODULE_COMPRESS_*)).
    type: str
    choices: [none, gzip, xz, zstd]
  decompress:
    description:
      - C(CONFIG_MODULE_DECOMPRESS) - the kernel decompresses modules itself. Needs a compression (O(compress) or
        the file's own); gzip or xz before Linux 6.2.
    type: bool
  allow_missing_namespace_imports:
    description: C(CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS).
    type: bool
  builtin_crypto:
    description: Build in the hash and key algorithm needed to verify signatures.
    type: bool
    default: true
  extra:
    description:
      - Any other options, C(CONFIG_NAME) to a value as written in .config (V(y), V(m), a number, a quoted
        string), or V(n) / false for "is not set".
    type: dict
    default: {}
  backup:
    description: Keep a copy of each changed file next to it (RV(files[].backup_file)).
    type: bool
    default: false
seealso:
  - module: skm.modsign.skm_genkey
"""

EXAMPLES = r"""
- name: Every config the package ships signs with our ECDSA key, sha512
  skm.modsign.skm_kconfig:
    path: "{{ srcdir }}/config*"
    key: certs-local/current/signing_key.pem
    key_type: ecdsa
    hash: sha512
    sig_force: true
    compress: xz
    decompress: true

- name: Trust an extra certificate in a custom kernel
  skm.modsign.skm_kconfig:
    path: /usr/src/linux/.config
    trusted_keys: /etc/skm-modsign/fleet.crt
    hash: sha256
    backup: true
"""

RETURN = r"""
files:
  description: One entry per config file matched.
  type: list
  elements: dict
  returned: always
  contains:
    path:
      description: The file.
      type: str
    changed:
      description: Whether it changed (or would, in check mode).
      type: bool
    changes:
      description: The options set - C(name), C(before) (null when the line was missing), C(after).
      type: list
      elements: dict
    backup_file:
      description: The copy kept with O(backup=true).
      type: str
      returned: when a backup was made
"""

import glob
import os

from ansible_collections.skm.modsign.plugins.module_utils import _kconfig as kconfig
from ansible_collections.skm.modsign.plugins.module_utils import _keys as keys
from ansible_collections.skm.modsign.plugins.module_utils._ansible import build_module, fail
from ansible_collections.skm.modsign.plugins.module_utils._atomic import atomic_write
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._files import read_bytes


def _extra_value(value):
    if value is True:
        return "y"
    if value is False:
        return kconfig.NOT_SET
    return str(value)


def settings_from(params):
    return kconfig.Settings(
        sig=params["sig"], sig_force=params["sig_force"], sig_all=params["sig_all"], hash_name=params["hash"],
        key=params["key"], key_type=params["key_type"], trusted_keys=params["trusted_keys"],
        compress=params["compress"], decompress=params["decompress"],
        allow_missing_namespace_imports=params["allow_missing_namespace_imports"],
        builtin_crypto=params["builtin_crypto"],
        extra=dict((str(k), _extra_value(v)) for k, v in params["extra"].items()))


def check_key_file(key, key_type):
    """When O(key) is a file on this host, its certificate's key must be of O(key_type).

    A kernel built with the wrong key type lacks the algorithm (CONFIG_CRYPTO_ECDSA) to verify its own modules.
    Only the certificate is parsed; a relative path (resolved by the kernel build) is not checked.
    """
    if not key or not key_type or not os.path.isabs(key) or not os.path.isfile(key) or not keys.HAS_CRYPTOGRAPHY:
        return
    kind, bits = keys.describe_key(keys.load_certificate(read_bytes(key, "the signing key"), key).public_key())
    if kind != key_type:
        raise ModSignError("the certificate in this file has a %s-%d key, but key_type is %s" % (kind, bits, key_type),
                           key)


def plan_file(path, settings):
    """The old text, the new text and the changes of one config (nothing written)."""
    data = read_bytes(path, "the config")
    new_text, changes = kconfig.edit(data, settings, path)   # refuses what is not UTF-8 kernel config text
    return data.decode("utf-8"), new_text, changes


def main():
    module = build_module(
        argument_spec=dict(
            path=dict(type="path", required=True),
            sig=dict(type="bool", default=True),
            sig_force=dict(type="bool"),
            sig_all=dict(type="bool"),
            hash=dict(type="str", choices=["sha256", "sha384", "sha512", "sha3-256", "sha3-384", "sha3-512"]),
            key=dict(type="str", no_log=False),
            key_type=dict(type="str", choices=["rsa", "ecdsa"]),
            trusted_keys=dict(type="str", no_log=False),
            compress=dict(type="str", choices=["none", "gzip", "xz", "zstd"]),
            decompress=dict(type="bool"),
            allow_missing_namespace_imports=dict(type="bool"),
            builtin_crypto=dict(type="bool", default=True),
            extra=dict(type="dict", default={}),
            backup=dict(type="bool", default=False),
        ),
    )
    pattern = module.params["path"]  # type path: ~ and $VARS already expanded
    paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    if not paths:
        module.fail_json(msg="%s: no kernel config matches this pattern" % pattern, changed=False)
    try:
        settings = settings_from(module.params)
        kconfig.check_settings(settings)
        check_key_file(settings.key, settings.key_type)
        # Every file is read and checked before any is written: one bad config changes none.
        plans = [(path,) + plan_file(path, settings) for path in paths]
        entries, diffs = [], []
        for path, text, new_text, changes in plans:
            entry = dict(path=path, changed=bool(changes), changes=changes)
            if changes:
                diffs.append(dict(before_header=path, after_header=path, before=text, after=new_text))
                if not module.check_mode:
                    if module.params["backup"]:
                        entry["backup_file"] = module.backup_local(path)
                    atomic_write(path, new_text.encode("utf-8"))
            entries.append(entry)
    except ModSignError as exc:
        fail(module, exc)
    result = dict(changed=any(e["changed"] for e in entries), files=entries)
    if module._diff:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
