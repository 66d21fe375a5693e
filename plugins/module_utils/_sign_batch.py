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
import fnmatch
import glob
import json
import os
import posixpath
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ansible_collections.skm.modsign.plugins.module_utils import _atomic as atomic
from ansible_collections.skm.modsign.plugins.module_utils import _keys as keys
from ansible_collections.skm.modsign.plugins.module_utils import _signing as signing
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._files import display_path
from ansible_collections.skm.modsign.plugins.module_utils._modinfo import modinfo
from ansible_collections.skm.modsign.plugins.module_utils._parallel import default_workers, map_files
from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import (
    CertificateId, UnreadableSignature, build_signed_data, certificate_id, digest, hash_algorithm, own_signature,
    parse_signed_data,
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
    nothing is not (an empty ``updates/dkms`` is normal); a path that exists
    is taken literally even when it holds glob characters (``drv[1].ko``). A
    symbolic link to a module (RHEL's weak-updates) stands for its target: the
    target is signed in place, once, and reported; the link stays a link. A
    link to anything but a regular file stays itself, so that its error names
    it. ``temps`` receives our temporary files seen on the way (see
    ``signing.find_modules``).
    """
    roots = []  # type: List[str]
    for entry in paths:
        if os.path.lexists(entry):
            roots.append(entry)
        elif any(ch in entry for ch in _GLOB_CHARS):
            roots.extend(sorted(glob.glob(entry, recursive=True)))
        else:
            raise ModSignError("no such file or directory", entry)
    found = signing.find_modules(roots, temps)
    return sorted(set(os.path.realpath(p) if os.path.islink(p) and os.path.isfile(p) else p for p in found))


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
    lists = {"signed": [], "replaced": [], "already_signed": [], "foreign": [], "tampered": [],
             "failures": []}  # type: Dict[str, List[Any]]
    for o in outcomes:
        path = display_path(o.path)
        if o.status == signing.SIGNED:
            lists["signed"].append(path)
        elif o.status == signing.ALREADY_SIGNED:
            lists["already_signed"].append(path)
        elif o.status == signing.REPLACED:
            lists["replaced"].append(path)
            if o.signer:
                lists["tampered" if o.tampered else "foreign"].append(
                    {"path": path, "signer": o.signer, "action": "replaced"})
        elif o.status == signing.FOREIGN:
            lists["foreign"].append({"path": path, "signer": o.signer or "another key", "action": "left"})
        elif o.status == signing.TAMPERED:
            lists["tampered"].append({"path": path, "signer": o.signer, "action": "left"})
        else:
            lists["failures"].append({"path": path, "reason": display_path(o.reason or "failed")})
    counts = dict((name, len(items)) for name, items in lists.items())
    counts["failed"] = counts.pop("failures")
    counts["total"] = len(outcomes)
    result = dict(lists)  # type: Dict[str, Any]
    result["counts"] = counts
    result["changed"] = bool(lists["signed"] or lists["replaced"])
    verb = "would sign" if check_mode else "signed"
    left_tampered = [t["path"] for t in lists["tampered"] if t["action"] == "left"]
    result["msg"] = "%s %d, re-signed %d, already signed %d, foreign left %d, tampered left %d, failed %d " \
        "(of %d modules)" % (verb, counts["signed"], counts["replaced"], counts["already_signed"],
                             sum(1 for f in lists["foreign"] if f["action"] == "left"), len(left_tampered),
                             counts["failed"], counts["total"])
    if left_tampered:
        result["warnings"] = [tampered_warning(left_tampered)]
    return result


def tampered_warning(paths):
    # type: (Sequence[str]) -> str
    shown = ", ".join(paths[:20]) + (" (and %d more)" % (len(paths) - 20) if len(paths) > 20 else "")
    return ("%d module(s) carry a signature naming this certificate that does not verify: the module changed "
            "after it was signed (tampering, or a corrupted file); the kernel refuses them. Left as they are; "
            "replace_tampered=true re-signs them as they are now: %s" % (len(paths), shown))


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
    foreign = dict((f["path"], f["signer"]) for f in result["foreign"] + result["tampered"])
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
OURS = "ours"         # survey state: the signature names our certificate; the controller verifies it
OURS_UNREADABLE = "ours_unreadable"   # survey state: names our certificate, cannot be read (so cannot verify)


def wire_path(path):
    # type: (str) -> Dict[str, str]
    """How a path travels in controller mode: ``p`` readable (see ``display_path``), plus ``b`` the exact
    bytes (base64) when the name is not UTF-8."""
    shown = display_path(path)
    if shown == path:
        return {"p": path}
    return {"p": shown, "b": b64(os.fsencode(path))}


def real_path(entry):
    # type: (Dict[str, Any]) -> str
    """The file an entry names (inverse of ``wire_path``)."""
    if entry.get("b"):
        return os.fsdecode(unb64(entry["b"]))
    return entry["p"]


def survey_module(path, cert, hash_name, public_key=None):
    # type: (str, CertificateId, str, Optional[object]) -> Dict[str, Any]
    """Host side, step 1: what the controller needs to judge and sign one module (no crypto library).

    Keys: ``p`` path (and ``b``, see ``wire_path``), ``t`` stat token, ``d`` digest of the payload under
    ``hash_name`` (binary values in base64), ``s`` state: ``unsigned``, ``ours`` (the signature names
    ``cert``: ``h`` its hash, ``g`` its raw signature, ``sd`` the digest it
    covers when ``h`` differs), ``unknown_key`` (``n`` the signer as text, ``h`` its hash),
    ``unparseable`` (a sound envelope we cannot read, ``r`` why), ``ours_unreadable`` (the same, naming
    ``cert``: tampered, ``r`` why), ``bad_signature``/``failed``
    (``r`` the reason); ``c`` why the kernel cannot decompress the container (it is rewritten);
    ``m``/``v`` the module's name and vermagic (for the controller's signing log) unless the state is ``failed``;
    with ``public_key`` (the certificate's, when the host has ``cryptography``) ``current``: ours, with ``hash_name``, valid (nothing else is sent).
    """
    where = wire_path(path)
    try:
        with signing.OpenModule(path) as module:
            payload, pkcs7 = module.payload, module.pkcs7
            payload_digest = digest(payload, hash_name)
            entry = dict(where, t=module.stat_token(), d=b64(payload_digest))  # type: Dict[str, Any]
            if pkcs7 is None:
                entry["s"] = signing.UNSIGNED
            else:
                entry.update(_signature_state(payload, pkcs7, payload_digest, cert, hash_name, public_key, path))
            if module.container_refused is not None:
                entry["c"] = module.container_refused    # the kernel cannot decompress it: rewrite whatever the state
            elif entry["s"] == CURRENT:
                return dict(where, s=CURRENT)
            info = modinfo(payload)
            entry.update(m=info.get("name", ""), v=info.get("vermagic", ""))
            return entry
    except ModSignError as exc:
        return dict(where, s=signing.FAILED, r=display_path(exc.with_path(path).cause))


def _signature_state(payload, pkcs7, payload_digest, cert, hash_name, public_key, path):
    # type: (memoryview, bytes, bytes, CertificateId, str, Optional[object], str) -> Dict[str, Any]
    """The survey keys that describe an existing signature (see ``survey_module``)."""
    raw, info = None, None
    for use_skid in (False, True):   # the signature exactly as we make it: no DER parsing
        raw = own_signature(pkcs7, cert, hash_name, use_skid) if cert.skid or not use_skid else None
        if raw is not None:
            break
    if raw is None:
        try:
            info = parse_signed_data(pkcs7, path)[0]
        except UnreadableSignature as exc:
            if exc.signer is not None and cert.matches(exc.signer):
                return {"s": OURS_UNREADABLE, "r": signing.unverifiable(exc.cause)}
            return {"s": signing.UNPARSEABLE, "r": exc.cause}
        if not info.has_signed_attributes and cert.matches(info.signer) and info.hash_name == hash_name:
            raw = info.signature
    if raw is not None:
        if public_key is not None and keys.verify_digest(public_key, raw, payload_digest, hash_name):
            return {"s": CURRENT}
        return {"s": OURS, "h": hash_name, "g": b64(raw)}
    if info is None or info.has_signed_attributes:
        return {"s": signing.BAD_SIGNATURE, "r": "signed attributes (the kernel refuses them on module signatures)"}
    if cert.matches(info.signer):
        state = {"s": OURS, "h": info.hash_name, "g": b64(info.signature)}
        if info.hash_name != hash_name:
            state["sd"] = b64(digest(payload, info.hash_name))
        return state
    return {"s": signing.UNKNOWN_KEY, "n": info.signer.describe(), "h": info.hash_name}


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
    entries = dict((path, dict(wire_path(path), s=CURRENT)) for path in known)
    for path, entry in zip(rest, run_batches(lambda path: survey_module(path, cert, hash_name, public_key), rest,
                                             workers)):
        entries[path] = entry
        if entry["s"] == CURRENT:
            cache.remember_verified(path)
    return [entries[path] for path in paths]


# ---------------------------------------------------------------- controller mode: what the host may ask for

def _glob_match(pattern, parts):
    # type: (Sequence[str], Sequence[str]) -> bool
    """``parts`` (path components) match ``pattern`` (components) as glob.glob(recursive=True) would match them."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_glob_match(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _glob_match(pattern[1:], parts[1:])


def outside_request(path, patterns):
    # type: (str, Sequence[str]) -> Optional[str]
    """Why the controller must not sign ``path`` for a task whose ``path`` option is ``patterns``, or None.

    The rules are ``expand_paths``'s, read lexically: ``path`` is one of the
    patterns itself (a file named directly), or lies in a directory one of them
    names, or under a glob match, with a module's name. A ``..`` component is
    refused (a host that resolves links decides where it leads). Paths are
    compared after ``posixpath.normpath``, on both sides.
    """
    if not path or "\0" in path or ".." in path.split("/"):
        return "not a plain path (empty, or with a '..' component); the controller does not sign it"
    norm = posixpath.normpath(path)
    parts = norm.split("/")
    module_name = parts[-1].endswith(signing.MODULE_SUFFIXES)
    for pattern in patterns:
        wanted = posixpath.normpath(pattern)
        if norm == wanted:
            return None
        if norm.startswith(wanted.rstrip("/") + "/") and module_name:
            return None
        if any(ch in pattern for ch in _GLOB_CHARS):
            glob_parts = wanted.split("/")
            for depth in range(1, len(parts) + 1):
                if _glob_match(glob_parts, parts[:depth]) and (depth == len(parts) or module_name):
                    return None
    return "outside the task's path (%s) or not a module name there; the controller does not sign it" % (
        ", ".join(patterns))


def refuse_outside(entries, patterns):
    # type: (Sequence[Dict[str, Any]], Sequence[str]) -> List[Dict[str, Any]]
    """``entries`` with each one the host may not ask a signature for turned into a failure (controller side).

    A link is reported under its target's real path, so a link that leads out
    of ``patterns`` is refused too.
    """
    checked = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("p"), str):
            checked.append({"p": repr(entry)[:200], "s": signing.FAILED, "r": "malformed survey entry"})
            continue
        try:
            reason = outside_request(real_path(entry), patterns)
        except (ValueError, TypeError):
            reason = "malformed path encoding"
        checked.append(entry if reason is None else {"p": entry["p"], "s": signing.FAILED, "r": reason})
    return checked


def plan(entries, signing_key, replace_foreign, replace_tampered=False):
    # type: (Sequence[Dict[str, Any]], signing.SigningKey, bool, bool) -> List[Tuple[signing.Outcome, Optional[Dict[str, Any]]]]
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
        try:
            verdict = _verdict_of(entry, signing_key)
            current = signing_key.is_current(verdict) and not entry.get("c")   # else recompress, as in host mode
            if not current:
                _check_signable(entry, signing_key.hash_name)
        except (KeyError, TypeError, ValueError) as exc:
            planned.append((signing.Outcome(path, signing.FAILED, "malformed survey entry (%s)" % exc), None))
            continue
        action = signing.decide(verdict, current, replace_foreign, replace_tampered)
        outcome = signing.outcome_of(path, verdict, action)
        if state == signing.UNKNOWN_KEY and entry.get("n"):
            outcome = outcome._replace(signer=signing.describe_unknown_signer(entry["n"], entry.get("h")))
        planned.append((outcome, entry if action in (signing.SIGNED, signing.REPLACED) else None))
    return planned


def _check_signable(entry, hash_name):
    # type: (Dict[str, Any], str) -> None
    """Raise ValueError/KeyError when an entry lacks what signing and the write request need (a forged one)."""
    if len(unb64(entry["d"])) != hash_algorithm(hash_name).size or not isinstance(entry["t"], str):
        raise ValueError("no %s digest or no stat token" % hash_name)


def _verdict_of(entry, signing_key):
    # type: (Dict[str, Any], signing.SigningKey) -> signing.Verdict
    """The host-mode verdict a survey entry stands for; a signature naming our certificate is verified here."""
    state = entry["s"]
    if state == CURRENT:   # checked on the host with the certificate's public key
        return signing.Verdict(signing.TRUSTED, None, signing_key.hash_name, signing_key.certificate)
    if state == OURS:
        covered = unb64(entry.get("sd") or entry["d"])
        ok = keys.verify_digest(signing_key.trusted.public_key, unb64(entry["g"]), covered, entry["h"])
        return signing.Verdict(signing.TRUSTED if ok else signing.BAD_SIGNATURE, None, entry["h"],
                               signing_key.certificate, None if ok else signing.BAD_SIGNATURE_REASON)
    if state == signing.UNKNOWN_KEY:
        return signing.Verdict(signing.UNKNOWN_KEY, hash_name=entry.get("h"))
    if state == signing.UNPARSEABLE:
        return signing.Verdict(signing.UNPARSEABLE, reason=entry.get("r"), cut_safe=True)
    if state == OURS_UNREADABLE:
        return signing.Verdict(signing.BAD_SIGNATURE, None, None, signing_key.certificate, entry.get("r"))
    return signing.Verdict(state, reason=entry.get("r"))


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
    """What the host needs to write each changed module: path (``p``, ``b``), stat token, digest, raw signature."""
    entries = [entry for _outcome, entry in planned if entry is not None]
    requests = []
    for entry, signature in zip(entries, signatures):
        request = {"p": entry["p"], "t": entry["t"], "d": entry["d"], "g": signature}
        if entry.get("b"):
            request["b"] = entry["b"]
        requests.append(request)
    return requests


def _write_one(request, cert, hash_name, use_skid, batch):
    # type: (Dict[str, str], CertificateId, str, bool, atomic.AtomicBatch) -> Optional[str]
    """Write one module's temporary file into ``batch``; the failure reason, if any."""
    try:
        path = real_path(request)
        with signing.OpenModule(path) as module:
            if module.stat_token() != request["t"] or b64(digest(module.payload, hash_name)) != request["d"]:
                return "module changed since its digest was taken; not written"
            pkcs7 = build_signed_data(cert, hash_name, unb64(request["g"]), use_skid)
            error = batch.add(path, module.content(trailer(pkcs7)), hold=module.hold())
            return None if error is None else display_path(error.cause)
    except ModSignError as exc:
        return display_path(exc.cause)
    except (ValueError, KeyError, TypeError) as exc:
        return "malformed write request (%s)" % exc


def _write_batch(requests, cert, hash_name, use_skid):
    # type: (Sequence[Dict[str, str]], CertificateId, str, bool) -> Tuple[List[Tuple[str, Optional[str]]], List[str], Dict[str, os.stat_result]]
    batch = atomic.AtomicBatch(durable=False)
    made = [(r, _write_one(r, cert, hash_name, use_skid, batch)) for r in requests]
    errors = dict((display_path(path), error) for path, error in batch.commit().items())
    return ([(r.get("p", ""), display_path(errors[r.get("p", "")].cause) if reason is None and r.get("p", "") in errors
              else reason) for r, reason in made], sorted(batch.directories), batch.written)


def write_signatures(requests, cert_der, hash_name, use_skid=False, workers=0, cache=None):
    # type: (Sequence[Dict[str, str]], bytes, str, bool, int, Optional[SignedCache]) -> Dict[str, str]
    """Host side, step 3: write every requested module; returns the failures by path.

    ``cache`` records each module written (with its stat right after the rename).
    """
    cert = certificate_id(cert_der)
    hash_name = hash_algorithm(hash_name).name
    if use_skid and cert.skid is None:
        raise ModSignError("the certificate has no subjectKeyIdentifier; cannot name the signer by SKID")
    paths = []
    for request in requests:
        try:
            paths.append(real_path(request))
        except (ValueError, TypeError, AttributeError):
            paths.append("")
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
