#!/usr/bin/env python3
"""Benchmark the signing core against the kernel's own sign-file on Debian's whole module tree.

Not a test: it prints numbers for the issue notes. Steps, all on the same machine in one run:
  1. unpack Debian's linux-image (cached), copy its modules twice and strip their signatures
     with our core (the kernel's sign-file only appends);
  2. sign copy A with a sequential `sign-file` loop (what DKMS / Arch-SKM / make modules_install do),
     and a final sync (sign-file does not fsync; the core's result is durable);
  3. sign copy B with the core on every core (key loaded once, forked workers);
  4. re-check the signed tree B (the idempotent re-run: verify, change nothing);
  5. floors: sha512 over all payload bytes (one core); the private-key operations alone (4023
     signatures over precomputed digests, on every core); the durable atomic rewrite of every file
     with its own content (read, temporary file, syncfs, rename: the write path without crypto).
A step that creates files waits until 60 s after the last step that replaced many (benchlib.settle:
ext4 scans past inodes freed less than 60 s ago); trees are deleted only at the end. Each tree is read
into the page cache just before its timed step (benchlib.warm: this VM pages out cache idle for ~30 s);
the cold read is timed and printed.
Each of RSA-4096/sha512 and ECDSA-P384/sha384 by default (--keys to choose). Every timed step starts
after a sync; wall seconds are the result, CPU seconds (workers included) are printed beside them.
Targets (issue 2): core >= 8x faster than sign-file with RSA-4096, >= 20x with ECDSA P-384;
RSA-4096 core within 1.3x of the private-key operations.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from benchlib import HASH_FOR, Step, churned, load, settle, warm  # noqa: E402  (puts the collection on sys.path)

from ansible_collections.skm.modsign.plugins.module_utils import _atomic as atomic  # noqa: E402
from ansible_collections.skm.modsign.plugins.module_utils import _parallel as parallel  # noqa: E402
from ansible_collections.skm.modsign.plugins.module_utils import _signing as signing  # noqa: E402
from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import digest  # noqa: E402
from ansible_collections.skm.modsign.plugins.module_utils._trailer import strip_signature  # noqa: E402
from tests.lib.debian_kernel import SIGN_FILE, debian_kernel  # noqa: E402
from tests.lib.keys import make_key  # noqa: E402


def stripped_copy(source: pathlib.Path, dest: pathlib.Path) -> list[str]:
    shutil.copytree(source, dest)
    files = signing.find_modules([str(dest)])
    for path in files:
        data = pathlib.Path(path).read_bytes()
        pathlib.Path(path).write_bytes(strip_signature(data, path))
    return files


def sign_file_loop(files: list[str], key, hash_name: str) -> None:
    """sign-file on each module, then one sync: its output durable too, as the core's is."""
    for path in files:
        subprocess.run([SIGN_FILE, hash_name, str(key.key), str(key.cert), path], check=True)
    os.sync()


def _rewrite_batch(paths: list[str]) -> list[str]:
    """Replace each file by itself the way the core writes (same batch size and durability)."""
    batch = atomic.AtomicBatch(durable=False)
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        batch.add(path, os.read(fd, os.fstat(fd).st_size + 1), hold=fd)
    assert not batch.commit()
    return sorted(batch.directories)


def rewrite_tree(files: list[str], workers: int) -> None:
    """The write floor: a durable atomic rewrite of every file, no crypto, on every core."""
    chunks = [files[i:i + 32] for i in range(0, len(files), 32)]
    done = parallel.map_files(_rewrite_batch, chunks, workers or 2 * parallel.default_workers(), chunksize=1)
    atomic.flush_directories(d for dirs in done for d in dirs)


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # run the cleanup (finally) when killed
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", default="rsa4096,p384", help="comma list of " + ",".join(HASH_FOR))
    parser.add_argument("--limit", type=int, default=0, help="use only the first N modules (0: all)")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()

    kernel = debian_kernel()
    work = pathlib.Path(tempfile.mkdtemp(prefix="skm-bench-"))
    try:
        source = kernel.modules_dir / "kernel"
        if args.limit:
            limited = work / "source"
            for path in sorted(source.rglob("*.ko"))[:args.limit]:
                target = limited / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
            source = limited
        total_bytes = sum(p.stat().st_size for p in source.rglob("*.ko"))
        print(f"tree: {kernel.package}, {sum(1 for _ in source.rglob('*.ko'))} modules, "
              f"{total_bytes / 1e6:.0f} MB; {parallel.default_workers()} cores; {load()}")
        payloads = [pathlib.Path(p).read_bytes() for p in signing.find_modules([str(source)])]
        t_hash = Step(lambda: [hashlib.sha512(strip_signature(p)).digest() for p in payloads])
        del payloads
        print(f"floor: sha512 over every module, one core: {t_hash}")

        for kind in args.keys.split(","):
            hash_name = HASH_FOR[kind]
            key = make_key(work / "keys", kind)
            files_a = stripped_copy(source, work / f"{kind}-signfile")
            files_b = stripped_copy(source, work / f"{kind}-core")
            signing_key = signing.SigningKey.from_files(str(key.key), str(key.cert), hash_name=hash_name)
            settle()
            cold = Step(lambda: warm(files_b))
            core = Step(lambda: signing.sign_module_files(files_b, signing_key, workers=args.workers))
            churned()
            assert {o.status for o in core.result} == {signing.SIGNED}, core.result[:3]
            check = Step(lambda: signing.sign_module_files(files_b, signing_key, workers=args.workers))
            assert {o.status for o in check.result} == {signing.ALREADY_SIGNED}, check.result[:3]
            digests = [digest(b"%d" % i, hash_name) for i in range(len(files_b))]
            ops = Step(lambda: parallel.map_files(signing_key.sign_digest, digests, args.workers))
            warm(files_a)
            ref = Step(lambda: sign_file_loop(files_a, key, hash_name))   # sign-file too replaces each file
            churned()
            settle()
            warm(files_b)
            write = Step(lambda: rewrite_tree(files_b, args.workers))
            churned()
            identical = "n/a (ECDSA is randomised)"
            if kind.startswith("rsa"):
                same = sum(pathlib.Path(a).read_bytes() == pathlib.Path(b).read_bytes()
                           for a, b in zip(files_a, files_b))
                identical = f"{same}/{len(files_a)} byte-identical with sign-file"
            print(f"{kind}/{hash_name}: sign-file loop {ref.seconds:.2f} s | core {core} "
                  f"= {ref.seconds / core.seconds:.1f}x faster than sign-file | private-key ops alone {ops} "
                  f"(core = {core.seconds / ops.seconds:.2f}x of it) | write floor (atomic durable rewrite, "
                  f"no crypto) {write} (core = {core.seconds / write.seconds:.2f}x of it) | "
                  f"re-check signed tree {check} ({check.seconds / t_hash.seconds:.2f}x the sha512 floor) | "
                  f"{identical} | cold read of the tree (readdir + every byte) {cold} | {load()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
