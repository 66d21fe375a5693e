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
    zstd. Every file is checked before any is written; a refused config changes none.
  - Only regular files are read. A match that cannot be read or written (a FIFO, a link to a device, an immutable
    file) is an error naming it; the other configs are still handled, and the failure lists which were written
    (RV(written)) and which were not (RV(not_written)). A task that wrote any config reports C(changed=true),
    also when it fails.
  - A symbolic link (a C(.config) kept elsewhere) stays a link; its final target is written, resolved as this
    host sees it (the module has no root_dir; an absolute link target is the file the kernel build would read).
    The diff and O(backup) are of that target; the backup is kept next to the target.
  - A file with CRLF line endings keeps them. Both line forms are recognised with a trailing CR (as the kernel's
    Kconfig reads them), a rewritten line keeps its own ending and an added line takes the one most lines have.
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
    description: Keep a copy of each changed file next to it (RV(files[].backup_file)); for a symbolic link,
      next to its target.
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
    error:
      description: Why this config was not read or not written (the message names the file and the cause).
      type: str
      returned: when this file failed
written:
  description: The configs this task replaced (a symbolic link by the path matched); none in check mode.
  type: list
  elements: str
  returned: always
not_written:
  description: The configs that could not be read or written (RV(files[].error) says why); the task then fails.
  type: list
  elements: str
  returned: always
"""

import glob
import os

from ansible_collections.skm.modsign.plugins.module_utils import _kconfig as kconfig
from ansible_collections.skm.modsign.plugins.module_utils import _keys as keys
from ansible_collections.skm.modsign.plugins.module_utils._ansible import build_module, fail
from ansible_collections.skm.modsign.plugins.module_utils._atomic import atomic_write
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._files import read_bytes, read_regular, write_target


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


def read_config(path):
    """The bytes of a config and the file that a write to it must replace.

    Only a regular file is read (a FIFO or a link to /dev/zero is an error naming it, never a hang). A
    symbolic link is kept: its final target is written, as this host sees it (the module has no root_dir;
    an absolute link target means the same file to the kernel build that reads the config).
    """
    data = read_regular(path, "the config")
    return write_target(path, "/"), data


def plan_configs(paths, settings):
    """(plans, errors): per readable file (path, target, old text, new text, changes); per unreadable its error.

    A file that cannot be read is reported and the others are still handled. A config whose content is
    refused (not a kernel config, a combination Kconfig would undo) raises: the task is wrong, none is written.
    """
    plans, errors = [], {}
    for path in paths:
        try:
            target, data = read_config(path)
        except ModSignError as exc:
            errors[path] = exc
            continue
        new_text, changes = kconfig.edit(data, settings, path)   # refuses what is not UTF-8 kernel config text
        plans.append((path, target, data.decode("utf-8"), new_text, changes))
    return plans, errors


def write_config(module, target, new_text):
    """Replace ``target`` atomically; the backup (O(backup)) is kept next to it. Returns the backup's path."""
    backup_file = None
    if module.params["backup"]:
        try:
            backup_file = module.backup_local(target)
        except Exception as exc:   # Ansible raises a bare Exception, its cause an OSError
            raise ModSignError("cannot keep a backup, so not written (%s)" % (exc.__cause__ or exc), target)
    atomic_write(target, new_text.encode("utf-8"))
    return backup_file


def failure_message(paths, errors, written):
    """What went wrong per file, then which configs were written and which were not."""
    not_written = [path for path in paths if path in errors]
    return "%d of %d configs not handled: %s. Written: %s. Not written: %s" % (
        len(not_written), len(paths), "; ".join(str(errors[path]) for path in not_written),
        ", ".join(written) or "none", ", ".join(not_written))


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
        # Every readable file is checked before any is written: one refused config changes none.
        plans, errors = plan_configs(paths, settings)
    except ModSignError as exc:
        fail(module, exc)
    entries = dict((path, dict(path=path, changed=False, changes=[], error=str(exc))) for path, exc in errors.items())
    written, diffs = [], []
    for path, target, text, new_text, changes in plans:
        entry = entries[path] = dict(path=path, changed=bool(changes), changes=changes)
        if not changes:
            continue
        if not module.check_mode:
            try:
                backup_file = write_config(module, target, new_text)
            except ModSignError as exc:   # the others are still written; the result says which were
                errors[path] = exc.with_path(path)
                entry.update(changed=False, error=str(errors[path]))
                continue
            written.append(path)
            if backup_file:
                entry["backup_file"] = backup_file
        diffs.append(dict(before_header=path, after_header=path, before=text, after=new_text))
    result = dict(changed=bool(written) or (module.check_mode and bool(diffs)),
                  files=[entries[path] for path in paths], written=written,
                  not_written=[path for path in paths if path in errors])
    if module._diff:
        result["diff"] = diffs
    if errors:
        module.fail_json(msg=failure_message(paths, errors, written), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
