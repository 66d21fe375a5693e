# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signing and verifying kernel modules: the signing core's public face.

Private to skm.modsign. Modules, the action plugin, tests and benchmarks use
these functions; they hold no Ansible imports.

A module is read (and decompressed, by magic bytes), split at its signature
trailer, judged against certificates, signed over a digest of its payload,
recompressed the way modules_install does and written atomically.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

try:
    import resource
except ImportError:  # not a Unix
    resource = None  # type: ignore[assignment]

from ansible_collections.skm.modsign.plugins.module_utils import _compression as compression
from ansible_collections.skm.modsign.plugins.module_utils import _keys as keys
from ansible_collections.skm.modsign.plugins.module_utils._atomic import (
    CLOSE_QUEUE, TEMP_SUFFIX, AtomicBatch, finish_closes, flush_directories, is_temp_name,
)
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._files import open_regular, read_bytes
from ansible_collections.skm.modsign.plugins.module_utils._parallel import default_workers, map_files
from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import (
    WEAK_HASHES, CertificateId, SignerId, UnreadableSignature, build_signed_data, certificate_id,
    check_signing_certificate, digest, hash_algorithm, own_signature, parse_signed_data,
)
from ansible_collections.skm.modsign.plugins.module_utils._trailer import (
    ModuleSignature, append_signature, parse_signature, split_signature, trailer,
)

# Verdicts on a module's signature.
UNSIGNED = "unsigned"
TRUSTED = "trusted"            # valid signature by one of the given certificates
UNKNOWN_KEY = "unknown_key"    # signed, but by none of the given certificates
BAD_SIGNATURE = "bad_signature"  # names a given certificate, but does not verify
UNPARSEABLE = "unparseable"

# What signing did to a module.
SIGNED = "signed"
ALREADY_SIGNED = "already_signed"
REPLACED = "replaced"
FOREIGN = "foreign"            # signed by another key (or badly) and left alone
TAMPERED = "tampered"          # names our certificate but does not verify: evidence, left alone
FAILED = "failed"


class ModuleFile(NamedTuple):
    """A module as read from disk."""

    path: str
    compression: str        # none, xz, gzip, zstd
    raw: bytes              # the file's bytes
    signature: ModuleSignature

    @property
    def payload(self):
        # type: () -> bytes
        return self.signature.payload


def read_module(path):
    # type: (str) -> ModuleFile
    raw = read_bytes(path)
    kind, data = compression.decompress(raw, path)
    return ModuleFile(path, kind, raw, parse_signature(data, path))


def module_bytes(module, pkcs7):
    # type: (ModuleFile, bytes) -> bytes
    """The file content of ``module`` with ``pkcs7`` as its only signature, recompressed like the original."""
    return compression.compress(module.compression, append_signature(module.payload, pkcs7), module.path)


class TrustedCertificate(NamedTuple):
    id: CertificateId
    public_key: object

    @classmethod
    def from_bytes(cls, data, path=None):
        # type: (bytes, Optional[str]) -> TrustedCertificate
        cert = keys.load_certificate(data, path)
        keys.check_key_supported(cert.public_key(), path)
        return cls(certificate_id(keys.certificate_der(cert), path), cert.public_key())

    @classmethod
    def from_file(cls, path):
        # type: (str) -> TrustedCertificate
        return cls.from_bytes(read_bytes(path), path)


BAD_SIGNATURE_REASON = "signature does not verify with the certificate it names"


def unverifiable(cause):
    # type: (str) -> str
    """The reason for a signature that names a given certificate but cannot be read: it does not verify either."""
    return "names the certificate but cannot be verified: %s" % cause


class Verdict(NamedTuple):
    state: str                              # UNSIGNED, TRUSTED, UNKNOWN_KEY, BAD_SIGNATURE, UNPARSEABLE
    signer: Optional[SignerId] = None
    hash_name: Optional[str] = None
    certificate: Optional[CertificateId] = None   # the given certificate it names
    reason: Optional[str] = None
    cut_safe: bool = False    # UNPARSEABLE only: a sound SignedData envelope we cannot read (see UnreadableSignature)


def judge(payload, pkcs7, trusted, path=None):
    # type: (bytes, Optional[bytes], Sequence[TrustedCertificate], Optional[str]) -> Verdict
    """Which of ``trusted`` signed ``payload`` (with detached ``pkcs7``), and whether it verifies."""
    if pkcs7 is None:
        return Verdict(UNSIGNED)
    try:
        signers = parse_signed_data(pkcs7, path)
    except UnreadableSignature as exc:
        for cert in trusted:
            if exc.signer is not None and cert.id.matches(exc.signer):
                return Verdict(BAD_SIGNATURE, exc.signer, None, cert.id, unverifiable(exc.cause))
        return Verdict(UNPARSEABLE, reason=exc.cause, cut_safe=True)
    except ModSignError as exc:
        return Verdict(UNPARSEABLE, reason=exc.cause)
    info = signers[0]
    if info.has_signed_attributes:
        return Verdict(BAD_SIGNATURE, info.signer, info.hash_name,
                       reason="signed attributes (the kernel refuses them on module signatures)")
    for cert in trusted:
        if cert.id.matches(info.signer):
            ok = keys.verify_digest(cert.public_key, info.signature, digest(payload, info.hash_name), info.hash_name)
            if ok:
                return Verdict(TRUSTED, info.signer, info.hash_name, cert.id)
            return Verdict(BAD_SIGNATURE, info.signer, info.hash_name, cert.id, reason=BAD_SIGNATURE_REASON)
    return Verdict(UNKNOWN_KEY, info.signer, info.hash_name)


def judge_for_key(payload, pkcs7, signing_key, path=None):
    # type: (Union[bytes, memoryview], Optional[bytes], SigningKey, Optional[str]) -> Verdict
    """``judge`` against the signing key's certificate, with a fast path for a signature exactly as we make it."""
    if pkcs7 is not None:
        cert, hash_name = signing_key.certificate, signing_key.hash_name
        signature = own_signature(pkcs7, cert, hash_name, signing_key.use_skid)
        if signature is not None:
            signer = SignerId(None, None, cert.skid) if signing_key.use_skid else SignerId(cert.issuer, cert.serial, None)
            if keys.verify_digest(signing_key.trusted.public_key, signature, digest(payload, hash_name), hash_name):
                return Verdict(TRUSTED, signer, hash_name, cert)
            return Verdict(BAD_SIGNATURE, signer, hash_name, cert, "signature does not verify with the certificate it names")
    return judge(payload, pkcs7, [signing_key.trusted], path)


def verify_module(path, trusted):
    # type: (str, Sequence[TrustedCertificate]) -> Verdict
    try:
        _kind, data = compression.decompress(read_bytes(path), path)
        length, pkcs7 = split_signature(data, path)
    except ModSignError as exc:
        return Verdict(UNPARSEABLE, reason=exc.cause)
    return judge(memoryview(data)[:length], pkcs7, trusted, path)


class SigningKey:
    """A private key and its certificate, loaded once and checked as a pair."""

    def __init__(self, private_key, cert, hash_name="sha512", use_skid=False, path=None, allow_expired=False):
        # type: (object, object, str, bool, Optional[str], bool) -> None
        keys.check_key_supported(private_key, path)
        keys.check_pair(private_key, cert, path)
        self.hash_name = hash_algorithm(hash_name).name
        keys.check_hash_for_key(private_key, self.hash_name, path)
        if not allow_expired:
            keys.check_certificate_dates(cert, path)
        self._private_key = private_key
        self.use_skid = use_skid
        self.trusted = TrustedCertificate(certificate_id(keys.certificate_der(cert), path), cert.public_key())
        check_signing_certificate(self.trusted.id, path)
        if use_skid and self.trusted.id.skid is None:
            raise ModSignError("the certificate has no subjectKeyIdentifier; cannot name the signer by SKID", path)

    @classmethod
    def from_files(cls, key_path, cert_path=None, passphrase=None, hash_name="sha512", use_skid=False,
                   allow_expired=False):
        # type: (str, Optional[str], Optional[str], str, bool, bool) -> SigningKey
        """Load the key (and the certificate; default: from the combined key+cert PEM)."""
        key_data = read_bytes(key_path)
        private_key = keys.load_private_key(key_data, passphrase, key_path)
        cert_path = cert_path or key_path
        cert = keys.load_certificate(key_data if cert_path == key_path else read_bytes(cert_path), cert_path)
        return cls(private_key, cert, hash_name, use_skid, cert_path, allow_expired)

    @property
    def certificate(self):
        # type: () -> CertificateId
        return self.trusted.id

    def sign_digest(self, payload_digest):
        # type: (bytes) -> bytes
        """The raw signature over a payload digest (the controller-mode primitive)."""
        if len(payload_digest) != hash_algorithm(self.hash_name).size:
            raise ModSignError("a %s digest is %d bytes, got %d"
                               % (self.hash_name, hash_algorithm(self.hash_name).size, len(payload_digest)))
        return keys.sign_digest(self._private_key, payload_digest, self.hash_name)

    def pkcs7_for_digest(self, payload_digest):
        # type: (bytes) -> bytes
        return build_signed_data(self.certificate, self.hash_name, self.sign_digest(payload_digest), self.use_skid)

    def signature_trailer(self, payload):
        # type: (bytes) -> bytes
        """What to append to ``payload``: this key's PKCS#7, struct module_signature and the magic."""
        return trailer(self.pkcs7_for_digest(digest(payload, self.hash_name)))

    def sign_payload(self, payload):
        # type: (bytes) -> bytes
        """Payload with this key's signature appended (an uncompressed signed module)."""
        return payload + self.signature_trailer(payload)

    def is_current(self, verdict):
        # type: (Verdict) -> bool
        """A verdict that needs no new signature: ours, valid, with the requested hash."""
        return (verdict.state == TRUSTED and verdict.certificate == self.certificate
                and verdict.hash_name == self.hash_name)


class Outcome(NamedTuple):
    path: str
    status: str                  # SIGNED, ALREADY_SIGNED, REPLACED, FOREIGN, TAMPERED, FAILED
    reason: Optional[str] = None
    signer: Optional[str] = None  # the previous signer, for FOREIGN/TAMPERED/REPLACED
    tampered: bool = False        # REPLACED: the previous signature named our certificate and did not verify


def is_tampered(verdict):
    # type: (Verdict) -> bool
    """A signature that names one of our certificates but does not verify: the module changed after signing."""
    return verdict.state == BAD_SIGNATURE and verdict.certificate is not None


def decide(verdict, key_is_current, replace_foreign, replace_tampered=False):
    # type: (Verdict, bool, bool, bool) -> str
    """What signing does to a module: ALREADY_SIGNED, SIGNED, REPLACED, FOREIGN, TAMPERED or FAILED.

    Our own valid signature with another hash is replaced. A signature naming
    our certificate that does not verify is tampering, never "foreign": it is
    replaced only with ``replace_tampered``. Another key's signature, or one we
    cannot read inside a sound envelope, is replaced only with ``replace_foreign``;
    a trailer we cannot cut safely fails.
    """
    if verdict.state == UNSIGNED:
        return SIGNED
    if key_is_current:
        return ALREADY_SIGNED
    if verdict.state == TRUSTED:
        return REPLACED
    if is_tampered(verdict):
        return REPLACED if replace_tampered else TAMPERED
    if verdict.state == UNPARSEABLE and not verdict.cut_safe:
        return FAILED
    return REPLACED if replace_foreign else FOREIGN


def outcome_of(path, verdict, action):
    # type: (str, Verdict, str) -> Outcome
    """The reported outcome of ``decide``'s ``action`` on ``verdict``."""
    if action == FAILED:
        return Outcome(path, FAILED, verdict.reason or "unparseable signature")
    return Outcome(path, action, signer=describe_verdict(verdict), tampered=is_tampered(verdict))


def describe_unknown_signer(signer_text, hash_name):
    # type: (str, Optional[str]) -> str
    weak = " with the weak hash %s" % hash_name if hash_name in WEAK_HASHES else ""
    return "signed by an unknown key (%s)%s" % (signer_text, weak)


def describe_verdict(verdict):
    # type: (Verdict) -> Optional[str]
    if verdict.state == UNKNOWN_KEY and verdict.signer is not None:
        return describe_unknown_signer(verdict.signer.describe(), verdict.hash_name)
    if verdict.state == BAD_SIGNATURE:
        return verdict.reason or "bad signature"
    if verdict.state == UNPARSEABLE:
        return verdict.reason or "unparseable signature"
    return None


class _ReadBuffer:
    """One reusable buffer per process to read modules into (no allocation, no page faults per module)."""

    def __init__(self):
        # type: () -> None
        self._buf = bytearray(1 << 20)

    def read(self, fd):
        # type: (int) -> memoryview
        """The whole content of the open file ``fd``, valid until the next ``read``."""
        size = os.fstat(fd).st_size + 1   # one byte more: the read that returns 0 proves the end
        if len(self._buf) < size:
            self._buf = bytearray(size + (size >> 2))
        view = memoryview(self._buf)
        got = 0
        while True:
            if got == len(view):   # the file grew while we read it
                grown = bytearray(2 * len(view))
                grown[:got] = view
                self._buf, view = grown, memoryview(grown)
            count = os.readv(fd, [view[got:]])
            if not count:
                return view[:got]
            got += count


_BUFFER = None  # type: Optional[_ReadBuffer]


def _read_buffer():
    # type: () -> _ReadBuffer
    global _BUFFER
    if _BUFFER is None:
        _BUFFER = _ReadBuffer()
    return _BUFFER


class OpenModule:
    """A module file open for reading, split at its signature, for one batch step.

    ``payload`` is a view into a buffer this process reuses: valid until the
    next ``OpenModule``. ``hold()`` hands the descriptor over (to an
    ``AtomicBatch``, which closes it after the rename); otherwise leaving the
    ``with`` block closes it.
    """

    def __init__(self, path):
        # type: (str) -> None
        self.path = path
        self.fd = open_regular(path)  # type: Optional[int]   # a FIFO or a device is refused, never read
        try:
            try:
                raw = _read_buffer().read(self.fd)
            except OSError as exc:
                raise ModSignError("cannot read (%s)" % (exc.strerror or exc), path)
            self.compression = compression.detect(raw[:8])
            # why in-kernel decompression would refuse this container (xz with a CRC64 check), else None
            self.container_refused = compression.kernel_refuses(compression.container(self.compression, raw[:8]))
            data = raw
            if self.compression != compression.NONE:
                data = memoryview(compression.decompress(bytes(raw), path)[1])
            length, self.pkcs7 = split_signature(data, path)
            self.payload = data[:length]
        except BaseException:
            self.close()
            raise

    def stat_token(self):
        # type: () -> str
        """Inode, size and mtime of the file read (controller mode detects a change with it)."""
        st = os.fstat(self.fd)  # type: ignore[arg-type]
        return "%d:%d:%d" % (st.st_ino, st.st_size, st.st_mtime_ns)

    def content(self, signature_trailer):
        # type: (bytes) -> Union[bytes, Tuple[memoryview, bytes]]
        """The new file content with ``signature_trailer`` as the only signature, compressed like the original."""
        if self.compression == compression.NONE:
            return self.payload, signature_trailer   # written as two chunks, no copy
        return compression.compress(self.compression, b"".join((self.payload, signature_trailer)), self.path)

    def hold(self):
        # type: () -> Optional[int]
        fd, self.fd = self.fd, None
        return fd

    def close(self):
        # type: () -> None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        # type: () -> OpenModule
        return self

    def __exit__(self, *exc_info):
        # type: (object) -> None
        self.close()


def _sign_one(path, signing_key, replace_foreign, check_mode, batch, replace_tampered=False):
    # type: (str, SigningKey, bool, bool, AtomicBatch, bool) -> Outcome
    """Judge one module and, when it changes, write its temporary file into ``batch``."""
    try:
        with OpenModule(path) as module:
            verdict = judge_for_key(module.payload, module.pkcs7, signing_key, path)
            current = signing_key.is_current(verdict) and module.container_refused is None   # else recompress
            action = decide(verdict, current, replace_foreign, replace_tampered)
            outcome = outcome_of(path, verdict, action)
            if action not in (SIGNED, REPLACED) or check_mode:
                return outcome
            content = module.content(signing_key.signature_trailer(module.payload))
            error = batch.add(path, content, hold=module.hold())   # closes the original after the rename
            return outcome if error is None else Outcome(path, FAILED, error.cause)
    except ModSignError as exc:
        return Outcome(path, FAILED, exc.with_path(path).cause)


def _sign_batch(paths, signing_key, replace_foreign, check_mode, durable=True, replace_tampered=False):
    # type: (Sequence[str], SigningKey, bool, bool, bool, bool) -> Tuple[List[Outcome], List[str], Dict[str, os.stat_result]]
    """Sign ``paths`` with one durability flush.

    Returns the outcomes, the directories whose entries changed and the stat of each file written.
    """
    batch = AtomicBatch(durable=durable)
    outcomes = [_sign_one(path, signing_key, replace_foreign, check_mode, batch, replace_tampered) for path in paths]
    errors = batch.commit()
    return ([Outcome(o.path, FAILED, errors[o.path].cause) if o.path in errors and o.status != FAILED else o
             for o in outcomes], sorted(batch.directories), batch.written)


def sign_module_file(path, signing_key, replace_foreign=False, check_mode=False, replace_tampered=False):
    # type: (str, SigningKey, bool, bool, bool) -> Outcome
    """Sign one module file in place; never raises for a bad module, reports it as FAILED."""
    try:
        return _sign_batch([path], signing_key, replace_foreign, check_mode, True, replace_tampered)[0][0]
    finally:
        finish_closes()


def _size(path):
    # type: (str) -> int
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


MIN_BATCH = 4
COMPRESSED_SUFFIXES = (".xz", ".gz", ".zst")


def worker_count(paths, workers=0):
    # type: (Sequence[str], int) -> int
    """``workers``, or the default: one process per core when most modules are compressed
    (recompressing is pure CPU and two compressors per core thrash its cache), else two per
    core (one computes while the other waits for the disk)."""
    if workers:
        return workers
    compressed = sum(1 for path in paths if path.endswith(COMPRESSED_SUFFIXES))
    return default_workers() * (1 if 2 * compressed > len(paths) else 2)


def fd_limited(batch):
    # type: (int) -> int
    """``batch``, lowered if need be so that a batch's descriptors fit the open-file limit.

    A module in a batch holds two (its temporary file and the original, see
    ``AtomicBatch``); up to ``_atomic.CLOSE_QUEUE`` more wait to be closed.
    """
    if resource is None:
        return batch
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ValueError, OSError):
        return batch
    if soft == resource.RLIM_INFINITY:
        return batch
    return max(MIN_BATCH, min(batch, (soft - CLOSE_QUEUE - 64) // 2))


def plan_batches(paths, workers, batch=128):
    # type: (Sequence[str], int, int) -> List[List[int]]
    """Indexes of ``paths`` in work batches, largest files first, so that no core is left with a long tail.

    A batch holds up to ``batch`` files, about 1/(8 x workers) of all the
    bytes (a big module, costly to recompress, goes alone) and, towards the
    end, half the remaining files' share of one worker (the last batches are
    small); the workers take the batches in order (longest processing time
    first). Each batch costs one filesystem flush, so the first ones are big.
    """
    sizes = [_size(path) for path in paths]
    budget = max(1, sum(sizes) // max(1, 8 * workers))
    batches, current, current_bytes = [], [], 0  # type: List[List[int]], List[int], int
    limit = batch
    for done, index in enumerate(sorted(range(len(paths)), key=lambda i: -sizes[i])):
        if current and (len(current) >= limit or current_bytes + sizes[index] > budget):
            batches.append(current)
            current, current_bytes = [], 0
        if not current:
            limit = max(MIN_BATCH, min(batch, (len(paths) - done) // (2 * max(1, workers))))
        current.append(index)
        current_bytes += sizes[index]
    if current:
        batches.append(current)
    return batches


def sign_module_files(paths, signing_key, replace_foreign=False, check_mode=False, workers=0, batch=128,
                      written=None, replace_tampered=False):
    # type: (Sequence[str], SigningKey, bool, bool, int, int, Optional[Dict[str, os.stat_result]], bool) -> List[Outcome]
    """Sign many module files on every core; outcomes in the order of ``paths``.

    Files are handled in batches (see ``plan_batches``) so that one filesystem
    flush makes a whole batch's new content durable before its renames (see
    ``AtomicBatch``); the renamed directory entries are flushed once at the
    end. ``workers``: see ``worker_count``. ``written``, when given, receives
    the stat of each file written, taken right after its rename. ``replace_tampered``: see ``decide``.
    """
    workers = worker_count(paths, workers)
    batches = plan_batches(paths, workers, fd_limited(batch))
    results = map_files(lambda chunk: _sign_batch([paths[i] for i in chunk], signing_key, replace_foreign,
                                                  check_mode, False, replace_tampered), batches, workers, chunksize=1)
    finish_closes()
    flush_directories(directory for _outcomes, directories, _written in results for directory in directories)
    outcomes = [None] * len(paths)  # type: List[Optional[Outcome]]
    for chunk, (chunk_outcomes, _directories, chunk_written) in zip(batches, results):
        for index, outcome in zip(chunk, chunk_outcomes):
            outcomes[index] = outcome
        if written is not None:
            written.update(chunk_written)
    return outcomes  # type: ignore[return-value]


MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


def find_modules(paths, temps=None):
    # type: (Iterable[str], Optional[List[str]]) -> List[str]
    """Expand files and directories (recursively) into a sorted list of module files.

    Inside a directory a file counts when its name looks like a module; a file
    named directly is always taken (its content decides, by magic bytes).
    ``temps``, when given, receives the temporary files of ours (see
    ``_atomic.is_temp_name``) seen in the directories searched or holding a
    file named directly, for ``_atomic.remove_stale_temps``.
    """
    found = set()
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in files:
                    if name.endswith(MODULE_SUFFIXES):
                        found.add(os.path.join(root, name))
                    elif temps is not None and name.endswith(TEMP_SUFFIX) and is_temp_name(name):
                        temps.append(os.path.join(root, name))
        else:
            found.add(path)
            if temps is not None:
                temps.extend(_temps_beside(path))
    if temps is not None:
        temps[:] = sorted(set(temps))
    return sorted(found)


def _temps_beside(path):
    # type: (str) -> List[str]
    directory = os.path.dirname(os.path.abspath(path))
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [os.path.join(directory, name) for name in names if name.endswith(TEMP_SUFFIX) and is_temp_name(name)]
