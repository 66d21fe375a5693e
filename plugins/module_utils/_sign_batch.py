# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signing many modules as one task: which files, what happened to each, and controller mode.

Private to skm.modsign. Shared by the skm_sign module (on the host) and its
action plugin (on the controller). No Ansible imports.

Host mode is ``_signing.sign_module_files`` plus path expansion and the
result format. Controller mode splits the same work in three steps so that
the private key never leaves the controller and no module crosses the network:

1. survey (host, no ``cryptography`` needed): per module, the digest of its
   payload under the requested hash, a stat token, and, when its signature
   names our certificate, that raw signature (and the digest it covers).
   A host that has ``cryptography`` checks a signature by our certificate
   with the requested hash itself (public key only) and reports a valid one
   as ``current``: a few dozen bytes per module on an idempotent rerun;
2. decide and sign (controller): verify those signatures with the
   certificate, ``_signing.decide`` exactly as host mode does, and make a
   raw signature over each digest that needs one (key loaded once, every core);
3. write (host): re-read each module, check the stat token and the digest
   again (a module changed in between is reported failed, not written),
   build the PKCS#7 from the raw signature and the certificate (pure DER),
   append, recompress like the original and replace the file atomically.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import glob
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ansible_collections.skm.modsign.plugins.module_utils import _atomic as atomic
from ansible_collections.skm.modsign.plugins.module_utils import _keys as keys
from ansible_collections.skm.modsign.plugins.module_utils import _signing as signing
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._parallel import default_workers, map_files
from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import (
    CertificateId, build_signed_data, certificate_id, digest, hash_algorithm, own_signature, parse_signed_data,
)
from ansible_collections.skm.modsign.plugins.module_utils._signed_cache import SignedCache
from ansible_collections.skm.modsign.plugins.module_utils._trailer import trailer

_GLOB_CHARS = ("*", "?", "[")
BATCH = 128   # modules per work item at most (one durability flush per batch, see signing.plan_batches)


# ---------------------------------------------------------------- which files

def expand_paths(paths, temps=None):
    # type: (Sequence[str], Optional[List[str]]) -> List[str]
    """Module files named by ``paths``: files, directories (recursive) and globs.

    A file or directory that does not exist is an error; a glob that matches
    nothing is not (an empty ``updates/dkms`` is normal). A symbolic link to a
    module (RHEL's weak-updates) stands for its target: the target is signed
    in place, once, and reported; the link stays a link. ``temps`` receives
    our temporary files seen on the way (see ``signing.find_modules``).
    """
    roots = []  # type: List[str]
    for entry in paths:
        if any(ch in entry for ch in _GLOB_CHARS):
            roots.extend(sorted(glob.glob(entry, recursive=True)))
        elif os.path.lexists(entry):
            roots.append(entry)
        else:
            raise ModSignError("no such file or directory", entry)
    found = signing.find_modules(roots, temps)
    return sorted(set(os.path.realpath(p) if os.path.islink(p) else p for p in found))


def remove_stale_temps(temps, started, check_mode=False):
    # type: (Sequence[str], float, bool) -> int
    """Delete (count, in check mode) the temporary files a killed run left; the rule is ``_atomic.remove_stale_temps``'s."""
    return atomic.remove_stale_temps(temps, started, dry_run=check_mode)


def run_batches(func, paths, workers):
    # type: (Any, Sequence[str], int) -> List[Any]
    """``func`` over module ``paths`` in batches (``signing.plan_batches``) on ``workers`` processes
    (0: ``signing.worker_count``); in the order of ``paths``."""
    workers = signing.worker_count(paths, workers)
    planned = signing.plan_batches(paths, workers, signing.fd_limited(BATCH))
    done = map_files(lambda chunk: [func(paths[i]) for i in chunk], planned, workers, chunksize=1)
    out = [None] * len(paths)  # type: List[Any]
    for chunk, results in zip(planned, done):
        for index, result in zip(chunk, results):
            out[index] = result
    return out


# ---------------------------------------------------------------- the result

def summarize(outcomes, check_mode=False):
    # type: (Sequence[signing.Outcome], bool) -> Dict[str, Any]
    """The task result both modes return: per-module lists and counts."""
    lists = {"signed": [], "replaced": [], "already_signed": [], "foreign": [], "failures": []}  # type: Dict[str, List[Any]]
    for o in outcomes:
        if o.status == signing.SIGNED:
            lists["signed"].append(o.path)
        elif o.status == signing.ALREADY_SIGNED:
            lists["already_signed"].append(o.path)
        elif o.status == signing.REPLACED:
            lists["replaced"].append(o.path)
            if o.signer:
                lists["foreign"].append({"path": o.path, "signer": o.signer, "action": "replaced"})
        elif o.status == signing.FOREIGN:
            lists["foreign"].append({"path": o.path, "signer": o.signer or "another key", "action": "left"})
        else:
            lists["failures"].append({"path": o.path, "reason": o.reason or "failed"})
    counts = dict((name, len(items)) for name, items in lists.items())
    counts["failed"] = counts.pop("failures")
    counts["total"] = len(outcomes)
    result = dict(lists)  # type: Dict[str, Any]
    result["counts"] = counts
    result["changed"] = bool(lists["signed"] or lists["replaced"])
    verb = "would sign" if check_mode else "signed"
    result["msg"] = "%s %d, re-signed %d, already signed %d, foreign left %d, failed %d (of %d modules)" % (
        verb, counts["signed"], counts["replaced"], counts["already_signed"],
        sum(1 for f in lists["foreign"] if f["action"] == "left"), counts["failed"], counts["total"])
    return result


def failure_message(result):
    # type: (Dict[str, Any]) -> Optional[str]
    """The task's failure message when any module failed (naming them), else None."""
    failed = result["failures"]
    if not failed:
        return None
    shown = "; ".join("%s: %s" % (f["path"], f["reason"]) for f in failed[:20])
    more = " (and %d more)" % (len(failed) - 20) if len(failed) > 20 else ""
    return "%d of %d modules failed: %s%s" % (len(failed), result["counts"]["total"], shown, more)


def diff(result, check_mode=False):
    # type: (Dict[str, Any], bool) -> Dict[str, str]
    """A readable before/after of the modules whose signature changes."""
    before, after = [], []
    foreign = dict((f["path"], f["signer"]) for f in result["foreign"])
    for path in result["signed"]:
        before.append("%s: unsigned\n" % path)
        after.append("%s: signed\n" % path)
    for path in result["replaced"]:
        before.append("%s: %s\n" % (path, foreign.get(path, "signed by this key with another hash")))
        after.append("%s: signed\n" % path)
    header = "modules (%s)" % ("would change" if check_mode else "changed")
    return {"before": "".join(before), "after": "".join(after), "before_header": header, "after_header": header}


# ---------------------------------------------------------------- controller mode: wire format

def b64(data):
    # type: (bytes) -> str
    return base64.b64encode(data).decode("ascii")


def unb64(text):
    # type: (str) -> bytes
    return base64.b64decode(text.encode("ascii"))


CURRENT = "current"   # survey state: validly signed by our certificate with the requested hash (checked on the host)


def survey_module(path, cert, hash_name, public_key=None):
    # type: (str, CertificateId, str, Optional[object]) -> Dict[str, Any]
    """Host side, step 1: what the controller needs to judge and sign one module (no crypto library).

    Keys: ``p`` path, ``t`` stat token, ``d`` digest of the payload under
    ``hash_name`` (binary values in base64), ``s`` state: ``unsigned``, ``ours`` (the signature names
    ``cert``: ``h`` its hash, ``g`` its raw signature, ``sd`` the digest it
    covers when ``h`` differs), ``unknown_key`` (``n`` the signer as text),
    ``bad_signature``/``failed`` (``r`` the reason); with ``public_key``
    (the certificate's, when the host has ``cryptography``) ``current``: ours,
    with ``hash_name``, valid (nothing else is sent).
    """
    try:
        with signing.OpenModule(path) as module:
            payload, pkcs7 = module.payload, module.pkcs7
            payload_digest = digest(payload, hash_name)
            entry = {"p": path, "t": module.stat_token(), "d": b64(payload_digest)}  # type: Dict[str, Any]
            if pkcs7 is None:
                entry["s"] = signing.UNSIGNED
                return entry
            raw, info = None, None
            for use_skid in (False, True):   # the signature exactly as we make it: no DER parsing
                raw = own_signature(pkcs7, cert, hash_name, use_skid) if cert.skid or not use_skid else None
                if raw is not None:
                    break
            if raw is None:
                info = parse_signed_data(pkcs7, path)[0]
                if not info.has_signed_attributes and cert.matches(info.signer) and info.hash_name == hash_name:
                    raw = info.signature
            if raw is not None:
                if public_key is not None and keys.verify_digest(public_key, raw, payload_digest, hash_name):
                    return {"p": path, "s": CURRENT}
                entry.update(s="ours", h=hash_name, g=b64(raw))
            elif info.has_signed_attributes:
                entry.update(s=signing.BAD_SIGNATURE, r="signed attributes (the kernel refuses them on module signatures)")
            elif cert.matches(info.signer):
                entry.update(s="ours", h=info.hash_name, g=b64(info.signature))
                if info.hash_name != hash_name:
                    entry["sd"] = b64(digest(payload, info.hash_name))
            else:
                entry.update(s=signing.UNKNOWN_KEY, n=info.signer.describe())
            return entry
    except ModSignError as exc:
        return {"p": path, "s": signing.FAILED, "r": exc.with_path(path).cause}


def survey(paths, cert_der, hash_name, workers=0, cache=None):
    # type: (Sequence[str], bytes, str, int, Optional[SignedCache]) -> List[Dict[str, Any]]
    """Host side, step 1 for every module (see ``survey_module``); ``cache`` answers the unchanged ones as current."""
    cert = certificate_id(cert_der)
    hash_name = hash_algorithm(hash_name).name
    public_key = None
    if keys.HAS_CRYPTOGRAPHY:   # optional: check our own signatures here, send only "current" for them
        try:
            public_key = signing.TrustedCertificate.from_bytes(cert_der).public_key
        except ModSignError:
            public_key = None
    if cache is None:
        return run_batches(lambda path: survey_module(path, cert, hash_name, public_key), paths, workers)
    known, rest = cache.split(paths)
    entries = dict((path, {"p": path, "s": CURRENT}) for path in known)
    for entry in run_batches(lambda path: survey_module(path, cert, hash_name, public_key), rest, workers):
        entries[entry["p"]] = entry
        if entry["s"] == CURRENT:
            cache.remember_verified(entry["p"])
    return [entries[path] for path in paths]


def plan(entries, signing_key, replace_foreign):
    # type: (Sequence[Dict[str, Any]], signing.SigningKey, bool) -> List[Tuple[signing.Outcome, Optional[Dict[str, Any]]]]
    """Controller side, step 2: the outcome of each surveyed module, and what to sign for those that change.

    The verdicts are the ones ``_signing.judge`` gives in host mode; the
    decision is ``_signing.decide`` itself, so both modes agree.
    """
    planned = []
    for entry in entries:
        path, state = entry["p"], entry["s"]
        if state == signing.FAILED:
            planned.append((signing.Outcome(path, signing.FAILED, entry.get("r")), None))
            continue
        if state == CURRENT:   # checked on the host with the certificate's public key
            verdict = signing.Verdict(signing.TRUSTED, None, signing_key.hash_name, signing_key.certificate)
        elif state == "ours":
            covered = unb64(entry.get("sd") or entry["d"])
            ok = keys.verify_digest(signing_key.trusted.public_key, unb64(entry["g"]), covered, entry["h"])
            verdict = signing.Verdict(signing.TRUSTED if ok else signing.BAD_SIGNATURE, None, entry["h"],
                                      signing_key.certificate,
                                      None if ok else "signature does not verify with the certificate it names")
        elif state == signing.UNKNOWN_KEY:
            verdict = signing.Verdict(signing.UNKNOWN_KEY)
        else:
            verdict = signing.Verdict(state, reason=entry.get("r"))
        action = signing.decide(verdict, signing_key.is_current(verdict), replace_foreign)
        signer = entry.get("n") if state == signing.UNKNOWN_KEY else signing.describe_verdict(verdict)
        if state == signing.UNKNOWN_KEY and signer:
            signer = "signed by an unknown key (%s)" % signer
        planned.append((signing.Outcome(path, action, signer=signer),
                        entry if action in (signing.SIGNED, signing.REPLACED) else None))
    return planned


def fork_map(func, items, workers=0):
    # type: (Any, Sequence[Any], int) -> List[Any]
    """``[func(i) for i in items]`` on forked children, results (JSON values) back through pipes.

    For the controller: Ansible runs an action plugin inside its own worker
    process, where a multiprocessing pool can hang at shutdown. Here each child
    takes every n-th item, writes its results to its pipe and leaves with
    os._exit; no pool, no threads, nothing inherited is torn down.
    """
    workers = min(workers or default_workers(), len(items))
    if workers <= 1 or not hasattr(os, "fork"):
        return [func(item) for item in items]
    children = []
    for index in range(workers):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(read_end)
            code = 0
            try:
                data = json.dumps([func(item) for item in items[index::workers]]).encode("utf-8")
            except BaseException as exc:  # reported by the parent; never key material (see _keys)
                code, data = 1, json.dumps("%s" % exc).encode("utf-8")
            view = memoryview(data)
            while view:
                view = view[os.write(write_end, view):]
            os._exit(code)
        os.close(write_end)
        children.append((pid, read_end))
    parts, errors = [], []
    for pid, read_end in children:
        chunks = []
        while True:
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(read_end)
        status = os.waitpid(pid, 0)[1]
        data = b"".join(chunks)
        if status != 0:
            errors.append(json.loads(data.decode("utf-8")) if data else "worker died (status %d)" % status)
        else:
            parts.append(json.loads(data.decode("utf-8")))
    if errors:
        raise ModSignError("signing on the controller failed: %s" % errors[0])
    out = [None] * len(items)  # type: List[Any]
    for index, part in enumerate(parts):
        out[index::workers] = part
    return out


def sign_digests(signing_key, digests, workers=0):
    # type: (signing.SigningKey, Sequence[str], int) -> List[str]
    """Raw signatures over digests (both base64), on every core of the controller; the key never moves."""
    return fork_map(lambda d: b64(signing_key.sign_digest(unb64(d))), digests, workers)


def write_requests(planned, signatures):
    # type: (Sequence[Tuple[signing.Outcome, Optional[Dict[str, Any]]]], Sequence[str]) -> List[Dict[str, str]]
    """What the host needs to write each changed module: path, stat token, digest, raw signature."""
    entries = [entry for _outcome, entry in planned if entry is not None]
    return [{"p": e["p"], "t": e["t"], "d": e["d"], "g": g} for e, g in zip(entries, signatures)]


def _write_one(request, cert, hash_name, use_skid, batch):
    # type: (Dict[str, str], CertificateId, str, bool, atomic.AtomicBatch) -> Optional[str]
    """Write one module's temporary file into ``batch``; the failure reason, if any."""
    path = request["p"]
    try:
        with signing.OpenModule(path) as module:
            if module.stat_token() != request["t"] or b64(digest(module.payload, hash_name)) != request["d"]:
                return "module changed since its digest was taken; not written"
            pkcs7 = build_signed_data(cert, hash_name, unb64(request["g"]), use_skid)
            error = batch.add(path, module.content(trailer(pkcs7)), hold=module.hold())
            return None if error is None else error.cause
    except ModSignError as exc:
        return exc.with_path(path).cause
    except (ValueError, KeyError, TypeError) as exc:
        return "malformed write request (%s)" % exc


def _write_batch(requests, cert, hash_name, use_skid):
    # type: (Sequence[Dict[str, str]], CertificateId, str, bool) -> Tuple[List[Tuple[str, Optional[str]]], List[str], Dict[str, os.stat_result]]
    batch = atomic.AtomicBatch(durable=False)
    made = [(r.get("p", ""), _write_one(r, cert, hash_name, use_skid, batch)) for r in requests]
    errors = batch.commit()
    return ([(path, errors[path].cause if reason is None and path in errors else reason) for path, reason in made],
            sorted(batch.directories), batch.written)


def write_signatures(requests, cert_der, hash_name, use_skid=False, workers=0, cache=None):
    # type: (Sequence[Dict[str, str]], bytes, str, bool, int, Optional[SignedCache]) -> Dict[str, str]
    """Host side, step 3: write every requested module; returns the failures by path.

    ``cache`` records each module written (with its stat right after the rename).
    """
    cert = certificate_id(cert_der)
    hash_name = hash_algorithm(hash_name).name
    if use_skid and cert.skid is None:
        raise ModSignError("the certificate has no subjectKeyIdentifier; cannot name the signer by SKID")
    paths = [r.get("p", "") for r in requests]
    workers = signing.worker_count(paths, workers)
    planned = signing.plan_batches(paths, workers, signing.fd_limited(BATCH))
    done = map_files(lambda chunk: _write_batch([requests[i] for i in chunk], cert, hash_name, use_skid),
                     planned, workers, chunksize=1)
    atomic.finish_closes()
    atomic.flush_directories(directory for _made, directories, _written in done for directory in directories)
    if cache is not None:
        for _made, _directories, written in done:
            for path, st in written.items():
                cache.remember_written(path, st)
    return dict((path, reason) for made, _dirs, _written in done for path, reason in made if reason is not None)


def outcomes_after_write(planned, failures):
    # type: (Sequence[Tuple[signing.Outcome, Optional[Dict[str, Any]]]], Dict[str, str]) -> List[signing.Outcome]
    return [signing.Outcome(o.path, signing.FAILED, failures[o.path]) if o.path in failures else o
            for o, _entry in planned]


def signing_key_from_bytes(key_data, cert_data, passphrase=None, hash_name="sha512", use_skid=False,
                           key_name=None, cert_name=None):
    # type: (bytes, Optional[bytes], Optional[str], str, bool, Optional[str], Optional[str]) -> signing.SigningKey
    """A SigningKey from PEM/DER bytes (a vaulted variable) rather than files; the certificate may sit in the key PEM."""
    private_key = keys.load_private_key(key_data, passphrase, key_name)
    cert = keys.load_certificate(key_data if cert_data is None else cert_data,
                                 key_name if cert_data is None else cert_name)
    return signing.SigningKey(private_key, cert, hash_name, use_skid, cert_name or key_name)
