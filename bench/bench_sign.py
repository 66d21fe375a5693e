#!/usr/bin/env python3
"""Benchmark skm_sign (host mode and controller mode) on Debian's whole module tree.

Not a test: it prints numbers for the issue notes. Steps, on one machine in one run:
  floor  sha512 over every module's bytes (read from the page cache + hash, one core);
  core   the signing core itself: _signing.sign_module_files (forked via _parallel.map_files) on a stripped copy;
  host   ansible-playbook -m skm_sign (host mode) on another stripped copy, then the idempotent rerun, and
         reruns with verdict_cache (the first fills the cache, the second is answered from it);
  ctrl   the same in controller mode (key on the controller), then the rerun; bytes over the wire per
         module, measured by a wrapper interpreter that keeps what the host receives and sends;
  xz     the whole tree (--xz N: the first N modules; 0: skip) as .ko.xz: the baseline is ONE `xz` process
         (xz -T1 --check=crc32 --lzma2=dict=1MiB, the kernel's flags) compressing every stripped module;
         then host mode signs (decompress, sign, recompress on every core) and reruns, which must not
         rewrite (so not recompress) any file: inode and mtime unchanged.
Every timed step starts after a sync, its tree read into the page cache (benchlib.warm); CPU seconds (all child processes) are printed beside wall seconds.
A step that creates files waits until 60 s after the last step that replaced many (benchlib.settle:
ext4 scans past inodes freed less than 60 s ago); trees are deleted only at the end.
Targets (issue 4): host within 1.5x of core; rerun within 2x of the floor; controller < 2 KiB/module.

    .venv/bin/python bench/bench_sign.py [--key rsa4096] [--limit N] [--xz N]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from benchlib import HASH_FOR, Step, churned, load, settle, warm  # noqa: E402  (puts the collection on sys.path)

from ansible_collections.skm.modsign.plugins.module_utils import _parallel as parallel  # noqa: E402
from ansible_collections.skm.modsign.plugins.module_utils import _signing as signing  # noqa: E402
from ansible_collections.skm.modsign.plugins.module_utils._trailer import strip_signature  # noqa: E402
from tests.lib.ansible_run import bin_path, ansible_env  # noqa: E402
from tests.lib.debian_kernel import debian_kernel  # noqa: E402
from tests.lib.keys import make_key  # noqa: E402



def stripped_copy(sources: list[pathlib.Path], base: pathlib.Path, dest: pathlib.Path) -> list[str]:
    out = []
    for source in sources:
        target = dest / source.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(strip_signature(source.read_bytes()))
        out.append(str(target))
    subprocess.run(["sync"], check=True)
    return out


def xz_one_process(files: list[str], work: pathlib.Path) -> list[str]:
    """Compress ``files`` in place with ONE single-threaded xz process and the kernel's flags (the baseline)."""
    listing = work / "xz-files0"
    listing.write_bytes(b"".join(f.encode() + b"\0" for f in files))
    subprocess.run(["xz", "-T1", "--check=crc32", "--lzma2=dict=1MiB", "--files0=" + str(listing)], check=True)
    return [f + ".xz" for f in files]


def playbook(work: pathlib.Path, args: dict, python: str | None = None) -> tuple[Step, dict]:
    play = work / "play.yml"
    host_vars = {"ansible_python_interpreter": python} if python else {}
    play.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "vars": host_vars,
                                 "tasks": [{"skm.modsign.skm_sign": args}]}]))
    cmd = [bin_path("ansible-playbook"), "-i", "localhost,", "-c", "local", str(play)]
    step = Step(lambda: subprocess.run(cmd, capture_output=True, text=True,
                                       env=ansible_env({"ANSIBLE_PIPELINING": "0"})))
    result = json.loads(step.result.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    if result.get("failed"):
        raise SystemExit(f"skm_sign failed: {result.get('msg')}")
    return step, result


def wire_logger(work: pathlib.Path) -> tuple[str, pathlib.Path]:
    """A host interpreter that keeps the module arguments it receives and the JSON it returns."""
    log = work / "wire"
    log.mkdir()
    wrapper = work / "host-python"
    wrapper.write_text(f"""#!/bin/bash
n=$(date +%s%N)
cp "$1" {log}/$n.in
{sys.executable} "$@" | tee {log}/$n.out
exit ${{PIPESTATUS[0]}}
""")
    wrapper.chmod(0o755)
    return str(wrapper), log


def wire_bytes(log: pathlib.Path) -> int:
    total = 0
    for path in log.glob("*.in"):
        total += len(ast.literal_eval(re.search(r"^\s*params=(.*),$", path.read_text(), re.M).group(1)))
    return total + sum(p.stat().st_size for p in log.glob("*.out"))


def stat_ids(files: list[str]) -> dict:
    return {p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in files}


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # run the cleanup (finally) when killed
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--key", default="rsa4096", choices=sorted(HASH_FOR))
    parser.add_argument("--limit", type=int, default=0, help="only the first N modules (0: all)")
    parser.add_argument("--xz", type=int, default=-1, help="xz tree of the first N modules (-1: all, 0: none)")
    parser.add_argument("--skip", default="", help="comma list of steps to skip: host,ctrl")
    args = parser.parse_args()
    skip = set(args.skip.split(","))

    kernel = debian_kernel()
    base = kernel.modules_dir
    sources = kernel.modules()[:args.limit or None]
    work = pathlib.Path(tempfile.mkdtemp(prefix="skm-bench-sign-"))
    hash_name = HASH_FOR[args.key]
    try:
        key = make_key(work / "keys", args.key)
        n = len(sources)
        print(f"tree: {kernel.package}, {n} modules, {sum(p.stat().st_size for p in sources) / 1e6:.0f} MB; "
              f"{parallel.default_workers()} cores; key {args.key}/{hash_name}; {load()}")

        read_all = lambda: [hashlib.sha512(p.read_bytes()).digest() for p in sources]  # noqa: E731
        read_all()   # from the page cache, as the rerun reads a tree just written
        floor = Step(read_all)
        print(f"floor   sha512 over every module's bytes (page cache), one core: {floor}")

        files = stripped_copy(sources, base, work / "core")
        warm(files)
        signing_key = signing.SigningKey.from_files(str(key.key), str(key.cert), hash_name=hash_name)
        core = Step(lambda: signing.sign_module_files(files, signing_key))
        churned()
        assert {o.status for o in core.result} == {signing.SIGNED}
        print(f"core    sign_module_files: {core}")

        sign_args = {"path": str(work / "host"), "key": str(key.key), "cert": str(key.cert), "hash": hash_name}
        empty, _ = playbook(work, dict(sign_args, path=str(work / "nothing*")))
        print(f"ansible ansible-playbook with nothing to sign (fixed start-up cost): {empty}")
        if "host" not in skip:
            host_files = stripped_copy(sources, base, work / "host")
            settle()
            warm(host_files)
            host, result = playbook(work, sign_args)
            churned()
            assert result["counts"]["signed"] == n, result["counts"]
            rerun, result = playbook(work, sign_args)
            assert result["counts"]["already_signed"] == n and not result["changed"]
            print(f"host    sign {host} = {host.seconds / core.seconds:.2f}x core | idempotent rerun {rerun} = "
                  f"{rerun.seconds / floor.seconds:.2f}x floor ({(rerun.seconds - empty.seconds) / floor.seconds:.2f}x "
                  f"without the start-up); {host.seconds / rerun.seconds:.1f}x faster than signing | {load()}")
            cached_args = dict(sign_args, verdict_cache=str(work / "verdict-cache"))
            filled, result = playbook(work, cached_args)      # verifies every module, fills the cache
            assert result["verdict_cache"]["misses"] == n and not result["changed"]
            cached, result = playbook(work, cached_args)
            assert result["verdict_cache"]["hits"] == n and not result["changed"]
            print(f"host    rerun with verdict_cache: filling it {filled}, then {cached} = "
                  f"{cached.seconds / floor.seconds:.2f}x floor, {host.seconds / cached.seconds:.1f}x faster than "
                  f"signing | {load()}")

        if "ctrl" not in skip:
            python, log = wire_logger(work)
            ctrl_args = dict(sign_args, path=str(work / "ctrl"), key_location="controller")
            ctrl_files = stripped_copy(sources, base, work / "ctrl")
            settle()
            warm(ctrl_files)
            ctrl, result = playbook(work, ctrl_args, python)
            churned()
            assert result["counts"]["signed"] == n, result["counts"]
            per_module = wire_bytes(log) / n
            for path in log.iterdir():
                path.unlink()
            ctrl_rerun, result = playbook(work, ctrl_args, python)
            assert result["counts"]["already_signed"] == n and not result["changed"]
            rerun_bytes = wire_bytes(log) / n
            print(f"ctrl    sign {ctrl} = {ctrl.seconds / core.seconds:.2f}x core, {per_module:.0f} bytes/module both "
                  f"ways | rerun {ctrl_rerun} = {ctrl_rerun.seconds / floor.seconds:.2f}x floor, "
                  f"{rerun_bytes:.0f} bytes/module | {load()}")

        if args.xz:
            subset = sources[:args.xz] if args.xz > 0 else sources
            plain = stripped_copy(subset, base, work / "xz")
            warm(plain)
            baseline = Step(lambda: xz_one_process(plain, work))
            xz_files = baseline.result
            churned()   # xz replaced every .ko by a .ko.xz
            xz_args = dict(sign_args, path=str(work / "xz"))
            settle()
            warm(xz_files)
            first, result = playbook(work, xz_args)
            churned()
            assert result["counts"]["signed"] == len(subset), result["counts"]
            ids = stat_ids(xz_files)
            again, result = playbook(work, xz_args)
            assert result["counts"]["already_signed"] == len(subset) and not result["changed"], result["counts"]
            rewritten = sum(1 for path, ident in stat_ids(xz_files).items() if ids[path] != ident)
            assert not rewritten, f"the rerun rewrote {rewritten} modules"
            print(f"xz      {len(subset)} modules, {sum(os.path.getsize(f) for f in xz_files) / 1e6:.0f} MB "
                  f"compressed | baseline: one xz process compressing them {baseline} | skm_sign host mode "
                  f"(decompress, sign, recompress) {first} = {first.seconds / baseline.seconds:.2f}x the baseline, "
                  f"{first.cpu / first.seconds:.1f} cores busy | rerun {again} = "
                  f"{again.seconds / baseline.seconds:.3f}x the baseline, {first.seconds / again.seconds:.0f}x faster "
                  f"than the first run, 0 of {len(subset)} files rewritten (inode, mtime) | {load()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
