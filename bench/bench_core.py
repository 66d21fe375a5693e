#!/usr/bin/env python3
"""Benchmark the signing core against the kernel's own sign-file on Debian's whole module tree.

Not a test: it prints numbers for the issue notes. Steps, all on the same machine in one run:
  1. unpack Debian's linux-image (cached), copy its modules twice and strip their signatures
     with our core (the kernel's sign-file only appends);
  2. sign copy A with a sequential `sign-file` loop (what DKMS / Arch-SKM / make modules_install do);
  3. sign copy B with the core on every core (key loaded once, forked workers);
  4. re-check the signed tree B (the idempotent re-run: verify, change nothing);
  5. floors: sha512 over all payload bytes, and the private-key operations alone (4023 signatures
     over precomputed digests, on every core).
Each of RSA-4096/sha512 and ECDSA-P384/sha384 by default (--keys to choose).
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from benchlib import HASH_FOR, timed  # noqa: E402  (puts the collection on sys.path)

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
    for path in files:
        subprocess.run([SIGN_FILE, hash_name, str(key.key), str(key.cert), path], check=True)


def main() -> int:
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
              f"{total_bytes / 1e6:.0f} MB; {parallel.default_workers()} cores")
        payloads = [pathlib.Path(p).read_bytes() for p in signing.find_modules([str(source)])]
        t_hash, _ = timed(lambda: [hashlib.sha512(strip_signature(p)).digest() for p in payloads])
        del payloads
        print(f"floor: sha512 over every module, one core: {t_hash:.2f} s")

        for kind in args.keys.split(","):
            hash_name = HASH_FOR[kind]
            key = make_key(work / "keys", kind)
            files_a = stripped_copy(source, work / f"{kind}-signfile")
            files_b = stripped_copy(source, work / f"{kind}-core")
            t_ref, _ = timed(lambda: sign_file_loop(files_a, key, hash_name))
            signing_key = signing.SigningKey.from_files(str(key.key), str(key.cert), hash_name=hash_name)
            t_core, outcomes = timed(lambda: signing.sign_module_files(files_b, signing_key, workers=args.workers))
            assert {o.status for o in outcomes} == {signing.SIGNED}, outcomes[:3]
            t_check, outcomes = timed(lambda: signing.sign_module_files(files_b, signing_key, workers=args.workers))
            assert {o.status for o in outcomes} == {signing.ALREADY_SIGNED}, outcomes[:3]
            digests = [digest(b"%d" % i, hash_name) for i in range(len(files_b))]
            t_ops, _ = timed(lambda: parallel.map_files(signing_key.sign_digest, digests, args.workers))
            identical = "n/a (ECDSA is randomised)"
            if kind.startswith("rsa"):
                same = sum(pathlib.Path(a).read_bytes() == pathlib.Path(b).read_bytes()
                           for a, b in zip(files_a, files_b))
                identical = f"{same}/{len(files_a)} byte-identical with sign-file"
            print(f"{kind}/{hash_name}: sign-file loop {t_ref:.2f} s | core {t_core:.2f} s "
                  f"({t_ref / t_core:.1f}x faster) | private-key ops alone {t_ops:.2f} s "
                  f"(core = {t_core / t_ops:.2f}x of it) | re-check signed tree {t_check:.2f} s "
                  f"({t_check / t_hash:.2f}x the sha512 floor) | {identical}")
            shutil.rmtree(work / f"{kind}-signfile")
            shutil.rmtree(work / f"{kind}-core")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
