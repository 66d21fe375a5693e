#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: skm_genkey
short_description: Make, keep or rotate a kernel module signing key and its certificate
version_added: 0.1.0
description:
  - Makes an RSA or ECDSA private key and a self-signed X.509 certificate with the extensions the kernel's
    C(certs/x509.genkey) asks for (basicConstraints critical CA:FALSE, keyUsage digitalSignature,
    subjectKeyIdentifier, authorityKeyIdentifier) plus extendedKeyUsage codeSigning, which some MOK and
    machine-keyring setups need.
  - Writes every form the consumers want into one directory - C(signing_key.key) (private key PEM, 0600),
    C(signing_key.crt) (certificate PEM, for C(CONFIG_SYSTEM_TRUSTED_KEYS) and DKMS C(mok_certificate)),
    C(signing_key.der) (certificate DER, for C(mokutil --import)), C(signing_key.pem) (key and certificate,
    for C(CONFIG_MODULE_SIG_KEY)) and C(skm-key.json) (what was asked and when the key was made).
  - Idempotent - a readable, unexpired key matching the options is kept. Rotation follows an explicit rule,
    O(refresh), measured from the creation time recorded in C(skm-key.json), never from file times.
  - With O(layout=dated) (the ArchWiki layout) each generation gets a date-time directory and a C(current)
    symlink is switched atomically to the newest; O(keep) old generations are kept.
  - A readable private key is never replaced because files around it are missing or damaged. A missing, empty or
    corrupt C(skm-key.json) is rebuilt from the key and its certificate (the creation time becomes the
    certificate's notBefore, so the rotation clock never restarts); a missing C(signing_key.der), C(signing_key.crt)
    or C(signing_key.pem) is rebuilt from the others; a key whose certificate is gone (no C(.crt), C(.der) or
    certificate in C(.pem)) gets a new certificate for the same key, made from O(subject), O(validity_days),
    O(hash) and O(profile). A certificate or combined PEM that belongs to another key is never guessed at - the
    task fails naming the file; move the wrong file away, or use O(regenerate=always).
  - A new key is only made by policy (O(regenerate), O(refresh), an expired or not yet valid certificate), and
    the previous set is kept - in its generation directory (O(layout=dated)), or hard-linked into
    C(<path>/previous/YYYYmmdd-HHMMSS/) (O(layout=flat)).
  - A key set is written whole or not at all. Every file is first written into a private staging directory
    beside it; a full disk, a quota or an I/O error fails there and nothing the user had is touched
    (C(changed=false)). A new dated generation is renamed into place in one step and C(current) flips only
    after it. A flat set is then renamed file by file over the old one (renames need no room), the old set
    already kept in C(previous/). A failure returns RV(written) and RV(not_written). O(owner) and O(group) are
    checked before anything is written.
  - Certificate dates follow the collection's one rule (README, "Certificate validity dates") - a key is kept only
    while its certificate is inside its validity dates (notBefore <= now <= notAfter on this host's clock);
    outside them it counts as unusable (rotated under V(partial_idempotence), refused under V(never)).
  - The private key never appears in the result, the diff or the logs.
author:
  - skm.modsign contributors (@skm-modsign)
extends_documentation_fragment:
  - skm.modsign.attributes
  - skm.modsign.signing_hash
attributes:
  check_mode:
    support: full
    details: Says whether a key would be made and why; writes nothing.
  diff_mode:
    support: full
    details: Before and after of the public facts (fingerprint, serial, validity, type).
  idempotent:
    support: full
    details: A kept key (see O(regenerate), O(refresh)) is not rewritten.
options:
  path:
    description:
      - The key directory (O(layout=flat)), or the directory holding the generations and the C(current) link
        (O(layout=dated)).
    type: path
    required: true
  layout:
    description:
      - V(flat) keeps one generation directly in O(path).
      - V(dated) makes O(path)/YYYYmmdd-HHMMSS per generation and points O(path)/current at the newest.
    type: str
    choices: [flat, dated]
    default: flat
  key_type:
    description: V(rsa) or V(ecdsa) (the kernel verifies ECDSA module signatures since 5.13).
    type: str
    choices: [rsa, ecdsa]
    default: rsa
  key_size:
    description:
      - RSA modulus bits (2048, 3072, 4096), or the ECDSA curve (256 for P-256, 384 for P-384).
      - Default 4096 for RSA and 384 for ECDSA.
    type: int
  hash:
    description:
      - Hash of the certificate's self-signature, recorded as the module signing hash. An ECDSA key needs a hash
        at least as long as the curve.
    default: sha512
  subject:
    description: Subject (and issuer) name attributes, e.g. C(CN), C(O), C(OU), C(C), C(emailAddress).
    type: dict
    default: {CN: skm.modsign module signing key}
  validity_days:
    description: Certificate lifetime in days (default 100 years, like the kernel's x509.genkey).
    type: int
    default: 36500
  profile:
    description:
      - V(signing) - CA:FALSE, digitalSignature, as the kernel makes its own key.
      - V(ca) - CA:TRUE with keyCertSign, for kernels whose machine keyring accepts only CA certificates.
    type: str
    choices: [signing, ca]
    default: signing
  passphrase:
    description:
      - Encrypts the private key (what the kernel build reads from C(KBUILD_SIGN_PIN)). Also needed to read an
        existing encrypted key.
    type: str
  refresh:
    description:
      - Make a new key once the current one is this old - V(12h), V(7d), V(30days), V(2w), V(6m), V(1y) - or
        V(always), or V(never). Measured from the creation time in C(skm-key.json).
      - Has no effect with O(regenerate=never).
    type: str
    default: never
  regenerate:
    description:
      - What to do with an existing key, like community.crypto's openssl_privatekey.
      - Whatever the value, a readable key whose set is incomplete (C(skm-key.json), a certificate form or the
        combined PEM missing or damaged) is kept and the set rebuilt around it; see the description.
      - V(never) - keep the key there whatever the options say; fail when it cannot be used as it is
        (unreadable, wrong passphrase, expired or not yet valid).
      - V(fail) - fail if the existing key does not match the options.
      - V(partial_idempotence) - replace a key that does not match the options, or whose certificate is expired or
        not yet valid; fail when it cannot be read (wrong passphrase), so a typo never throws a key away.
      - V(full_idempotence) - like V(partial_idempotence), and also replace a key that cannot be read.
      - V(always) - make a new key on every run.
      - A replaced key is kept (the previous generation directory, or C(previous/) with O(layout=flat)).
    type: str
    choices: [never, fail, partial_idempotence, full_idempotence, always]
    default: partial_idempotence
  keep:
    description:
      - With O(layout=dated), how many generations to keep, the current one included.
      - With O(layout=flat), how many sets to keep counting the current one; at least the previous set is always
        kept in C(previous/).
    type: int
    default: 3
  private_key_mode:
    description: Mode of the files holding the private key.
    type: str
    choices: ['0600', '0400']
    default: '0600'
  owner:
    description: Owner of every file written (default - the user Ansible runs as). An unknown name fails the task
      before anything is written.
    type: str
  group:
    description: Group of every file written.
    type: str
requirements:
  - cryptography >= 3.3
seealso:
  - module: skm.modsign.skm_kconfig
  - module: skm.modsign.skm_sign
  - module: skm.modsign.skm_mok_enroll
"""

EXAMPLES = r"""
- name: One fleet key, rotated yearly, ArchWiki layout
  skm.modsign.skm_genkey:
    path: /var/lib/skm-modsign/keys
    layout: dated
    key_type: ecdsa
    key_size: 384
    hash: sha512
    refresh: 1y
    subject:
      CN: Example Corp module signing
      O: Example Corp
  register: key

- name: A passphrase-protected RSA key for a kernel build (CONFIG_MODULE_SIG_KEY = the combined PEM)
  skm.modsign.skm_genkey:
    path: "{{ build_dir }}/certs-local"
    key_type: rsa
    key_size: 4096
    passphrase: "{{ vault_kbuild_sign_pin }}"

- name: Show what the kernel will trust
  ansible.builtin.debug:
    msg: "{{ key.certificate }} sha256 {{ key.fingerprint }} valid until {{ key.not_after }}"
"""

RETURN = r"""
generated:
  description: Whether a new key was made (or would be, in check mode).
  type: bool
  returned: always
reason:
  description: Why a new key was made, or why the existing one was kept.
  type: str
  returned: always
  sample: older than the refresh period (made 2026-01-01T00:00:00Z)
directory:
  description: The directory of the key generation in use.
  type: str
  returned: always
current:
  description: The C(current) link, with O(layout=dated).
  type: str
  returned: when layout is dated
private_key:
  description: Path of the private key PEM (the path only, never the key).
  type: str
  returned: always
certificate:
  description: Path of the certificate PEM.
  type: str
  returned: always
certificate_der:
  description: Path of the certificate DER (for mokutil).
  type: str
  returned: always
combined:
  description: Path of the key and certificate PEM (for CONFIG_MODULE_SIG_KEY).
  type: str
  returned: always
fingerprint:
  description: SHA-256 of the DER certificate, hex. Empty in check mode when a key would be made.
  type: str
  returned: always
skid:
  description: Subject key identifier, hex.
  type: str
  returned: always
serial:
  description: Certificate serial number, hex.
  type: str
  returned: always
not_after:
  description: End of the certificate's validity (ISO 8601, UTC).
  type: str
  returned: always
key_type:
  description: V(rsa) or V(ecdsa).
  type: str
  returned: always
key_size:
  description: RSA bits or curve size.
  type: int
  returned: always
created:
  description: When the key in use was made (ISO 8601, UTC), as recorded in skm-key.json.
  type: str
  returned: always
removed_generations:
  description: Old generation directories (or O(layout=flat) previous sets) removed by O(keep).
  type: list
  elements: str
  returned: always
previous_generation:
  description: With O(layout=flat), where the replaced key set was kept (C(<path>/previous/YYYYmmdd-HHMMSS)).
  type: str
  returned: when a flat key set was replaced
written:
  description: On failure, the files already replaced or created (empty - nothing the user had was touched).
  type: list
  elements: str
  returned: when writing the key set failed
not_written:
  description: On failure, the files of the set that were not written.
  type: list
  elements: str
  returned: when writing the key set failed
"""

import datetime
import os

from ansible_collections.skm.modsign.plugins.module_utils import _key_set as key_set
from ansible_collections.skm.modsign.plugins.module_utils import _keygen as keygen
from ansible_collections.skm.modsign.plugins.module_utils._ansible import build_module, fail, require_cryptography
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

DEFAULT_SIZES = {"rsa": 4096, "ecdsa": 384}


def _facts_text(facts):
    if facts is None:
        return "(no key)\n"
    return "".join("%s: %s\n" % (k, v) for k, v in facts._asdict().items())


def _public_result(facts):
    if facts is None:
        return dict(fingerprint="", skid="", serial="", not_after="", key_type="", key_size=0, created="")
    return dict(fingerprint=facts.fingerprint, skid=facts.skid, serial=facts.serial, not_after=facts.not_after,
                key_type=facts.key_type, key_size=facts.key_size, created=facts.created)


def _paths(directory):
    return dict((kind, os.path.join(directory, name)) for kind, name in keygen.FILES.items() if kind != "metadata")


def _set_ownership(module, paths, uid, gid, check_mode):
    """Apply owner/group and the private-key mode to existing files; True when something changed."""
    secret_mode = int(module.params["private_key_mode"], 8)
    changed = False
    for kind, path in paths.items():
        st = os.stat(path)
        if kind in keygen.SECRET_FILES and st.st_mode & 0o7777 != secret_mode:
            changed = True
            if not check_mode:
                os.chmod(path, secret_mode)
        if (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid):
            changed = True
            if not check_mode:
                os.chown(path, uid, gid)
    return changed


def _repair(module, existing, directory, uid, gid, result):
    """Rebuild the files around a kept key (its metadata, certificate forms, combined PEM)."""
    result.update(changed=True, reason=keygen.repair_reason(existing))
    if not module.check_mode:
        secret_mode = int(module.params["private_key_mode"], 8)
        key_set.write_in_place(directory, keygen.set_files(existing.repairs, secret_mode), uid, gid)


def _new_key(module, spec, now, base, dated, uid, gid, result):
    """Make a new key set: a new generation directory (dated) or the flat set, the old one kept."""
    params = module.params
    result["changed"] = True
    if dated:
        name = keygen.free_name(base, now)
        directory = os.path.join(base, name)
    else:
        directory = base
    if module.check_mode:
        return directory, None
    generation = keygen.make_generation(spec, params["passphrase"], now)
    files = keygen.set_files(generation.files, int(params["private_key_mode"], 8))
    made_base = key_set.ensure_directory(base)
    try:
        key_set.remove_stale_staging(base)
        if dated:
            key_set.write_new_directory(base, name, files, uid, gid)
            try:
                keygen.swap_current(base, name)
            except ModSignError as exc:
                raise key_set.SetWriteError(exc.cause, link_path(base), [directory], [link_path(base)])
            result["removed_generations"] = keygen.prune(base, max(1, params["keep"]), name)
        else:
            previous = os.path.join(base, key_set.PREVIOUS_DIR)
            kept = key_set.write_in_place(base, files, uid, gid,
                                          os.path.join(previous, keygen.free_name(previous, now)))
            if kept:
                result["previous_generation"] = kept
                result["removed_generations"] = keygen.prune(previous, max(1, params["keep"] - 1),
                                                             os.path.basename(kept))
    except key_set.SetWriteError:
        if made_base:
            _remove_empty(base)
        raise
    return directory, generation.facts


def link_path(base):
    return os.path.join(base, "current")


def _remove_empty(directory):
    try:
        os.rmdir(directory)
    except OSError:
        pass


def run(module, result):
    params = module.params
    uid, gid = key_set.resolve_owner(params["owner"], params["group"])   # before anything is written
    key_type = params["key_type"]
    spec = keygen.KeySpec(key_type, params["key_size"] or DEFAULT_SIZES[key_type], params["hash"],
                          dict((str(k), str(v)) for k, v in params["subject"].items()), params["validity_days"],
                          params["profile"])
    keygen.check_spec(spec)
    refresh = keygen.parse_refresh(params["refresh"])
    now = datetime.datetime.now(datetime.timezone.utc)
    base = params["path"]
    dated = params["layout"] == "dated"
    link = link_path(base)
    active = os.path.realpath(link) if dated and os.path.exists(link) else (None if dated else base)

    existing = keygen.inspect(active, params["passphrase"], now, spec) if active else None
    reason = keygen.decide(existing, spec, params["regenerate"], refresh, now)
    before = existing.facts if existing else None
    result["generated"] = reason is not None
    if dated:
        result["current"] = link

    if reason is None:
        directory = active
        after = before
        result["reason"] = "kept: readable, unexpired and matching the options"
        if existing.repairs:
            _repair(module, existing, directory, uid, gid, result)
        if not module.check_mode or not existing.repairs:
            if _set_ownership(module, _paths(directory), uid, gid, module.check_mode):
                result["changed"] = True
    else:
        result["reason"] = reason
        directory, after = _new_key(module, spec, now, base, dated, uid, gid, result)

    result.update(_public_result(after))
    result["directory"] = directory
    result.update(_paths(directory))
    if module._diff:
        result["diff"] = dict(before=_facts_text(before),
                              after=_facts_text(after) if after else ("(a new key)\n" if reason else "(no key)\n"),
                              before_header=directory, after_header=directory)
        if reason is None and existing.repairs:
            result["diff"]["after"] += result["reason"] + "\n"
    return result


def main():
    module = build_module(
        argument_spec=dict(
            path=dict(type="path", required=True),
            layout=dict(type="str", choices=["flat", "dated"], default="flat"),
            key_type=dict(type="str", choices=["rsa", "ecdsa"], default="rsa"),
            key_size=dict(type="int"),
            hash=dict(type="str", choices=["sha256", "sha384", "sha512", "sha3-256", "sha3-384", "sha3-512"],
                      default="sha512"),
            subject=dict(type="dict", default={"CN": "skm.modsign module signing key"}),
            validity_days=dict(type="int", default=36500),
            profile=dict(type="str", choices=["signing", "ca"], default="signing"),
            passphrase=dict(type="str", no_log=True),
            refresh=dict(type="str", default="never"),
            regenerate=dict(type="str", choices=list(keygen.REGENERATE), default="partial_idempotence"),
            keep=dict(type="int", default=3),
            private_key_mode=dict(type="str", choices=["0600", "0400"], default="0600"),
            owner=dict(type="str"),
            group=dict(type="str"),
        ),
    )
    require_cryptography(module)
    result = dict(changed=False, generated=False, removed_generations=[])
    try:
        run(module, result)
    except key_set.SetWriteError as exc:
        result.update(changed=bool(exc.written), written=exc.written, not_written=exc.not_written)
        fail(module, exc, **_failure_result(result))
    except ModSignError as exc:
        fail(module, exc, **_failure_result(result))
    except OSError as exc:  # filesystem errors outside the set writer (chmod/chown of a kept key, the link)
        fail(module, ModSignError(exc.strerror or str(exc), exc.filename or module.params["path"]),
             **_failure_result(result))
    module.exit_json(**result)


def _failure_result(result):
    return dict((k, v) for k, v in result.items() if k in ("changed", "written", "not_written", "previous_generation",
                                                           "removed_generations", "reason"))


if __name__ == "__main__":
    main()
