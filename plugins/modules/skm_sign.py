#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: skm_sign
short_description: Sign kernel modules idempotently, on the host or with the key kept on the controller
description:
  - Signs one kernel module, a list, a glob or a directory tree (for example every module under
    C(/lib/modules/<kver>/updates)) the way the kernel's C(scripts/sign-file) does (PKCS#7, detached,
    no signed attributes, no certificates; byte-identical with sign-file for RSA).
  - Handles C(.ko), C(.ko.xz), C(.ko.gz) and C(.ko.zst); compression is found by magic bytes, the signature goes
    inside the compressed stream and the module is recompressed as the kernel's C(modules_install) does.
  - Idempotent by verification, not by file hashes (ECDSA signatures are random). A module already validly signed
    by this certificate with the requested hash is left alone and never rewritten or recompressed. A module signed
    by this certificate with another hash (including the weak sha1 and sha224 that kernel 6.1 still loads) is
    re-signed. A module signed by another key, or whose signature we cannot read inside a sound PKCS#7 envelope
    (an RSA-PSS signer, for example), is reported as foreign and left alone unless O(replace_foreign=true).
  - A module whose signature names this certificate but does not verify was changed after it was signed (the
    kernel refuses it with EKEYREJECTED). It is reported in RV(tampered) with a warning and left alone; only
    O(replace_tampered=true) re-signs it, O(replace_foreign) never does.
  - A trailer that cannot be cut off safely (it lies about its lengths, or the PKCS#7 does not exactly fill it)
    is a failure in every case.
  - One bad module does not stop the others; the task fails at the end when any module failed, naming each one
    and the cause. Every write is atomic (temporary file, fsync, rename), keeping mode, owner and SELinux label.
  - "Controller mode (O(key_location=controller)): the private key stays on the controller. The host computes
    only the digest of each module's payload (and reports an existing signature when it names our certificate);
    the controller verifies, decides and signs each digest with the key loaded once, on every controller core;
    the host builds the PKCS#7 from the raw signature and the certificate, appends it, recompresses and replaces
    the file atomically. Module bytes never cross the network (under 2 KiB per module does), and a module that
    changed between the two steps is reported failed and not written. The host needs no C(cryptography) library
    in this mode."
  - "Controller mode trusts the host only as far as it must: it signs only paths that the task's O(path) names
    (the same rules, read lexically; a C(..) component, or a link whose target lies elsewhere, is refused) and
    only after the digest is recorded in O(signing_log). A compromised host can still have any content it
    places under O(path) signed: it computes the digests. The log is what lets you find out."
version_added: 0.1.0
author:
  - skm.modsign contributors (@skm-modsign)
extends_documentation_fragment:
  - skm.modsign.attributes
  - skm.modsign.attributes.action
  - skm.modsign.signing_hash
attributes:
  check_mode:
    support: full
    details: Reports what would be signed; computes no signature and writes nothing.
  diff_mode:
    support: full
    details: A readable list of the modules whose signature would change, before and after.
  idempotent:
    support: full
    details: Decided by verifying each existing signature; a second run reports C(changed=false).
  action:
    support: full
    details: The action plugin runs controller mode; in host mode it passes the task through.
options:
  path:
    description:
      - Module files, directories (searched recursively for C(*.ko), C(*.ko.xz), C(*.ko.gz), C(*.ko.zst)) or
        globs (C(**) is recursive), on the managed host.
      - A file named directly is taken whatever its name; its content decides (ELF, or compressed ELF).
      - A file or directory that does not exist is an error; a glob that matches nothing signs nothing.
      - A symbolic link to a module (for example in C(weak-updates)) stands for its target, which is signed in
        place and reported under its real path; the link stays a link.
    type: list
    elements: str
    required: true
    aliases: [paths]
  key_location:
    description:
      - Where the private key is. V(host) - O(key) and O(cert) are paths on the managed host and signing happens
        there (needs C(cryptography) on the host).
      - V(controller) - O(key)/O(cert) are paths on the controller (searched like C(src) of M(ansible.builtin.copy)),
        or O(key_content)/O(cert_content) hold the PEM (for example a vaulted variable); the key never leaves the
        controller.
    type: str
    choices: [host, controller]
    default: host
  key:
    description:
      - The private key (PEM or DER), or the combined key+certificate PEM that C(CONFIG_MODULE_SIG_KEY) names.
      - Required with O(key_location=host); with O(key_location=controller) give this or O(key_content).
    type: path
  key_content:
    description:
      - The private key PEM itself (optionally followed by the certificate), for example from an Ansible Vault
        variable. Only with O(key_location=controller); refused in host mode so that a key is never sent to a host
        by accident.
    type: str
  cert:
    description:
      - The certificate (PEM or DER) matching the key. Default - the certificate inside the O(key) PEM.
    type: path
  cert_content:
    description:
      - The certificate PEM itself. Only with O(key_location=controller).
    type: str
  passphrase:
    description:
      - Passphrase of an encrypted private key (what the kernel build reads from C(KBUILD_SIGN_PIN)).
      - Never logged; in controller mode never sent to the host.
    type: str
  hash:
    description:
      - Digest algorithm of the signature, as C(CONFIG_MODULE_SIG_HASH) names it. The SHA-3 ones need kernel 6.7+.
      - An ECDSA key needs a hash at least as long as the key (P-384 - V(sha384) or V(sha512)). This is our policy,
        following the advice of the kernel's C(certs/Kconfig) (a shorter hash weakens the signature to its length);
        the kernel itself (6.1) would load a P-384 signature over sha256.
    default: sha512
  signer_id:
    description:
      - How the signature names its signer. V(issuer_serial) as C(sign-file) does by default, or V(skid)
        (subjectKeyIdentifier, C(sign-file -k)).
    type: str
    choices: [issuer_serial, skid]
    default: issuer_serial
  replace_foreign:
    description:
      - Re-sign modules signed by another key, or with a signature we cannot read inside a sound PKCS#7 envelope
        (for example an RSA-PSS signer, which the kernel cannot verify). By default they are reported in
        RV(foreign) and left alone.
      - Never re-signs a module whose signature names this certificate but does not verify (see
        O(replace_tampered)), and never cuts a trailer that lies about its lengths (that module fails).
    type: bool
    default: false
  replace_tampered:
    description:
      - Re-sign modules whose signature names this certificate but does not verify. Such a module was changed
        after it was signed with this key; re-signing it makes the kernel load the changed code. Set this only
        after you have checked why it changed (for example a module patched on purpose, or rebuilt in place).
      - By default they are reported in RV(tampered), with a warning, and left alone.
    type: bool
    default: false
  signing_log:
    description:
      - Controller mode only (ignored in host mode). A file on the controller to which every signature the
        controller makes is appended, one JSON object a line, before the host receives it - V(time) (UTC),
        V(host) (inventory name), V(path), V(module) and V(vermagic) (as the host read them from the module's
        C(.modinfo)), V(digest) (C(<hash>:<hex>) of the payload), V(certificate) (SHA-256 fingerprint) and
        V(action) (V(signed) or V(replaced)).
      - Default C($XDG_STATE_HOME/skm-modsign/signing-log.jsonl) (C(~/.local/state/...)); created 0600 in a 0700
        directory. When it cannot be written the task fails before anything is signed.
      - V('') turns the log off (not recommended - it is the record of what hosts had signed).
    type: str
  workers:
    description:
      - Number of processes on the host. V(0) - twice the number of cores (one computes while another waits for
        the disk), or one per core when most modules are compressed (recompressing is pure CPU). The controller
        in controller mode signs on all its cores.
    type: int
    default: 0
  verdict_cache:
    description:
      - A directory on the host for a cache of the modules this certificate already signed with this hash, so that a
        re-run reads and verifies only the modules that changed. A module counts as unchanged while its device,
        inode, size, mtime and ctime (ns) are the same as when it was verified or written; any write changes the
        ctime and a replaced file has a new inode. Foreign, unsigned and failed modules are never cached.
      - One file, C(signed.json), mode 0600; ignored (and replaced) when another user owns it or others may write
        it; written only outside check mode. M(skm.modsign.skm_enforce_gate) and M(skm.modsign.skm_module_info)
        never read it, so the same directory can serve all three.
      - Both modes; in controller mode the cache lives on the host and answers the survey step.
      - Unset - every module is read and its signature verified.
    type: path
  controller_request:
    description:
      - Internal. Set only by the skm_sign action plugin between the steps of controller mode; a task must not
        set it (the action plugin refuses it).
    type: dict
notes:
  - Requires C(cryptography) >= 3.3 on the host in host mode, on the controller in controller mode.
  - C(.ko.zst) needs the C(zstandard) Python package or the C(zstd) command on the host.
seealso:
  - name: Kernel module signing facility
    description: The format this module writes.
    link: https://www.kernel.org/doc/html/latest/admin-guide/module-signing.html
"""

EXAMPLES = r"""
- name: Sign every DKMS-built module of the running kernel with the host's key
  skm.modsign.skm_sign:
    path: "/lib/modules/{{ ansible_kernel }}/updates"
    key: /var/lib/shim-signed/mok/MOK.priv
    cert: /var/lib/shim-signed/mok/MOK.der
    hash: sha256

- name: Sign with the fleet key kept on the controller (it never reaches the host)
  skm.modsign.skm_sign:
    path:
      - "/lib/modules/{{ ansible_kernel }}/updates/dkms"
      - "/lib/modules/{{ ansible_kernel }}/extra/*.ko*"
    key_location: controller
    key: keys/fleet-signing.pem          # on the controller
    passphrase: "{{ vault_signing_passphrase }}"

- name: Same, key and certificate from vaulted variables
  skm.modsign.skm_sign:
    path: /lib/modules/6.1.0-13-amd64/updates
    key_location: controller
    key_content: "{{ vault_fleet_key_pem }}"
    cert_content: "{{ fleet_cert_pem }}"
    hash: sha384

- name: Take over modules signed by an old key
  skm.modsign.skm_sign:
    path: /opt/drivers/nvidia.ko.xz
    key: /root/keys/current/signing_key.pem
    replace_foreign: true

# Ad hoc:
# ansible all -m skm.modsign.skm_sign -a 'path=/lib/modules/6.1.0-13-amd64/updates key=/root/mok.pem'
"""

RETURN = r"""
signed:
  description: Modules that were unsigned and are now signed (in check mode - would be).
  returned: always
  type: list
  elements: str
replaced:
  description: Modules whose signature was replaced (our key with another hash, or a foreign one with O(replace_foreign)).
  returned: always
  type: list
  elements: str
already_signed:
  description: Modules validly signed by this certificate with the requested hash; left untouched.
  returned: always
  type: list
  elements: str
foreign:
  description: Modules signed by another key or with a bad signature, with the signer and what was done.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The module.
      type: str
    signer:
      description: The previous signer (issuer and serial, or SKID, and a weak hash), or why its signature is bad.
      type: str
    action:
      description: V(left) (reported only) or V(replaced).
      type: str
tampered:
  description:
    - Modules whose signature names this certificate but does not verify (changed after signing), and what was
      done - V(left), or V(replaced) with O(replace_tampered). A warning names the ones left.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The module.
      type: str
    signer:
      description: Why the signature is bad.
      type: str
    action:
      description: V(left) or V(replaced).
      type: str
failures:
  description:
    - Modules that could not be signed, with the cause. The task fails when this is not empty.
    - (Not named C(failed), which Ansible reserves for the task's own status.)
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The module. A name that is not UTF-8 shows its other bytes as C(\xNN) escapes, in every list.
      type: str
    reason:
      description: Why (corrupt stream, not a module, not a regular file, outside the task's path, changed
        meanwhile, write error...).
      type: str
counts:
  description: Number of modules in each list, and C(total).
  returned: always
  type: dict
  sample: {signed: 3, replaced: 0, already_signed: 40, foreign: 1, tampered: 0, failed: 0, total: 44}
stale_temps_removed:
  description:
    - Temporary files (C(.<module>.<random>.~skm~)) that an earlier, killed run left beside the modules and this
      run deleted (in check mode - would delete). Only files older than this run and locked by no live process
      are deleted, so a concurrent run's files are never touched.
  returned: always
  type: int
  sample: 0
verdict_cache:
  description: The cache file used (O(verdict_cache)), how many modules it answered and how many were read.
  returned: when O(verdict_cache) is set
  type: dict
  contains:
    path: {description: The cache file, type: str}
    hits: {description: "Modules answered from the cache: already signed, not read", type: int}
    misses: {description: Modules read, type: int}
    note: {description: Why the cache file was not used or not written (null when it was), type: str}
key_location:
  description: Where the signing happened.
  returned: always
  type: str
  sample: controller
"""

import time

from ansible_collections.skm.modsign.plugins.module_utils import _sign_batch as batch
from ansible_collections.skm.modsign.plugins.module_utils import _signing as signing
from ansible_collections.skm.modsign.plugins.module_utils._ansible import build_module, fail, require_cryptography
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._files import display_path
from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import certificate_id, hash_algorithm
from ansible_collections.skm.modsign.plugins.module_utils._signed_cache import SignedCache

ARGUMENT_SPEC = dict(
    path=dict(type="list", elements="str", required=True, aliases=["paths"]),
    key_location=dict(type="str", choices=["host", "controller"], default="host"),
    key=dict(type="path"),
    key_content=dict(type="str", no_log=True),
    cert=dict(type="path"),
    cert_content=dict(type="str"),
    passphrase=dict(type="str", no_log=True),
    hash=dict(type="str", choices=["sha256", "sha384", "sha512", "sha3-256", "sha3-384", "sha3-512"],
              default="sha512"),
    signer_id=dict(type="str", choices=["issuer_serial", "skid"], default="issuer_serial"),
    replace_foreign=dict(type="bool", default=False),
    replace_tampered=dict(type="bool", default=False),
    signing_log=dict(type="str"),
    workers=dict(type="int", default=0),
    verdict_cache=dict(type="path"),
    controller_request=dict(type="dict"),
)
MUTUALLY_EXCLUSIVE = [("key", "key_content"), ("cert", "cert_content")]
REQUIRED_IF = [("key_location", "host", ("key",))]


def sign_on_host(module, paths):
    """Host mode: the key is here; the signing core does the work on every core."""
    require_cryptography(module)
    p = module.params
    if p["key_content"] or p["cert_content"]:
        module.fail_json(msg="key_content and cert_content are only for key_location=controller")
    signing_key = signing.SigningKey.from_files(p["key"], p["cert"], p["passphrase"], p["hash"],
                                                use_skid=p["signer_id"] == "skid")
    if not p["verdict_cache"]:
        return signing.sign_module_files(paths, signing_key, p["replace_foreign"], module.check_mode, p["workers"],
                                         replace_tampered=p["replace_tampered"]), None
    cache = SignedCache(p["verdict_cache"], signing_key.certificate.fingerprint, signing_key.hash_name)
    known, rest = cache.split(paths)
    written = {}
    outcomes = signing.sign_module_files(rest, signing_key, p["replace_foreign"], module.check_mode, p["workers"],
                                         written=written, replace_tampered=p["replace_tampered"])
    if not module.check_mode:
        cache.learn(outcomes, written)
        cache.save()
    by_path = dict((outcome.path, outcome) for outcome in outcomes)
    by_path.update((path, signing.Outcome(path, signing.ALREADY_SIGNED)) for path in known)
    return [by_path[path] for path in paths], cache.report(len(paths))


def controller_step(module, paths, removed):
    """Controller mode, host side: survey (digests, no crypto library) or write (append the controller's signatures)."""
    p = module.params
    request = p["controller_request"]
    cert_der = batch.unb64(request["certificate"])
    # Ansible echoes the arguments back as "invocation"; a summary keeps the return small (bytes per module).
    invocation = {"module_args": dict(p, controller_request={"step": request.get("step"),
                                                             "entries": len(request.get("entries") or [])})}
    cache = None
    if p["verdict_cache"]:
        cache = SignedCache(p["verdict_cache"], certificate_id(cert_der).fingerprint, hash_algorithm(p["hash"]).name)
    if request.get("step") == "survey":
        entries = batch.survey(paths, cert_der, p["hash"], p["workers"], cache)
        extra = {}
        if cache is not None:
            if not module.check_mode:
                cache.save()
            extra["verdict_cache"] = cache.report(len(paths))
        module.exit_json(changed=False, entries=entries, stale_temps_removed=removed, invocation=invocation, **extra)
    if request.get("step") == "write":
        if module.check_mode:
            module.exit_json(changed=False, failures={}, invocation=invocation)
        failures = batch.write_signatures(request.get("entries") or [], cert_der, p["hash"],
                                          p["signer_id"] == "skid", p["workers"], cache)
        if cache is not None:
            cache.save()
        module.exit_json(changed=True, failures=failures, invocation=invocation)
    module.fail_json(msg="controller_request: unknown step %r" % request.get("step"))


def main():
    started = time.time()
    module = build_module(ARGUMENT_SPEC, mutually_exclusive=MUTUALLY_EXCLUSIVE, required_if=REQUIRED_IF)
    p = module.params
    removed = 0
    try:
        paths = []
        if p["controller_request"] is None or p["controller_request"].get("step") == "survey":
            temps = []
            paths = batch.expand_paths(p["path"], temps)
            # Temporary files a killed run left beside the modules (see _atomic.remove_stale_temps).
            removed = batch.remove_stale_temps(temps, started, module.check_mode)
        if p["controller_request"] is not None:
            controller_step(module, paths, removed)
        if p["key_location"] == "controller":
            module.fail_json(msg="key_location=controller runs through the skm.modsign.skm_sign action plugin; "
                                 "call the module as skm.modsign.skm_sign from a play or ad hoc")
        outcomes, cache_use = sign_on_host(module, paths)
    except ModSignError as exc:
        fail(module, ModSignError(display_path(exc.cause), exc.path and display_path(exc.path)))
    result = batch.summarize(outcomes, module.check_mode)
    result["key_location"] = "host"
    if cache_use is not None:
        result["verdict_cache"] = cache_use
    result["stale_temps_removed"] = removed
    if module._diff:
        result["diff"] = batch.diff(result, module.check_mode)
    message = batch.failure_message(result)
    if message:
        result["msg"] = message
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
