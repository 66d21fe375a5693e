"""Crash safety: SIGKILL skm_sign (the whole ansible-playbook process group) in the middle of a large tree.

Afterwards every module must be exactly its old bytes or a complete signed module (the xz tool
decompresses it without error, the payload is the original one, the signature is sign-file's for
RSA) - never torn - and a rerun must complete and sign the rest, remove the temporary files the
killed run left (and say how many), and leave every module exactly as the kernel's sign-file
signs it.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.skm.modsign.plugins.module_utils._atomic import STALE_AGE
from ansible_collections.skm.modsign.plugins.module_utils._trailer import parse_signature, strip_signature
from tests.lib.ansible_run import ansible_env, bin_path, run_module
from tests.lib.module_tree import compress, decompressed, sign_file_reference

TREE_SIZE = 300


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_sigkill_mid_run_leaves_old_or_new_modules_and_a_rerun_completes(debian_kernel, session_keys, sign_file,
                                                                         tmp_path):
    key = session_keys("rsa2048")
    modules = debian_kernel.modules()
    step = max(1, len(modules) // TREE_SIZE)
    root = tmp_path / "tree"
    payloads = {}
    for index, source in enumerate(modules[::step][:TREE_SIZE]):
        payload = strip_signature(source.read_bytes())
        rel = source.relative_to(debian_kernel.modules_dir)
        target = root / (str(rel) + (".xz" if index % 6 == 0 else ""))   # some xz: recompression is the slow part
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(compress(payload, ".xz") if index % 6 == 0 else payload)
        payloads[target] = payload
    old = {p: p.read_bytes() for p in payloads}
    inodes = {p: p.stat().st_ino for p in payloads}

    play = tmp_path / "play.yml"
    play.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [{"skm.modsign.skm_sign": {
        "path": str(root), "key": str(key.key), "cert": str(key.cert), "hash": "sha256", "workers": 2}}]}]))
    proc = subprocess.Popen([bin_path("ansible-playbook"), "-i", "localhost,", "-c", "local", str(play)],
                            env=ansible_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    replaced = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            replaced = sum(1 for p in payloads if p.stat().st_ino != inodes[p])
            if replaced >= len(payloads) // 10:
                break
            time.sleep(0.05)
    finally:
        # Ansible's worker calls setsid(), so the module is not in the playbook's process group:
        # kill every process descending from the playbook we started (module and its forked workers).
        for pid in [proc.pid] + descendants(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 0 < replaced < len(payloads), replaced

    torn, new, unchanged = [], 0, 0
    references = {}
    for path, payload in payloads.items():
        data = path.read_bytes()
        if data == old[path]:
            unchanged += 1
            continue
        try:
            plain = decompressed(path)          # the xz tool checks the stream and its CRC32
        except subprocess.CalledProcessError:
            torn.append(path)
            continue
        signature = parse_signature(plain)
        if signature.payload != payload or signature.pkcs7 is None:
            torn.append(path)
            continue
        if len(references) < 5:                 # a few checked against the kernel's sign-file itself
            references[path] = sign_file_reference(sign_file, key, "sha256", payload, tmp_path / "ref")
            assert plain == references[path], path
        new += 1
    assert not torn, f"torn modules after SIGKILL: {torn[:5]}"
    assert new and unchanged, (new, unchanged)
    print(f"after SIGKILL: {new} modules new, {unchanged} old, none torn")

    # What the killed run left: its temporary files, named as _atomic names them (.<module>.<8 random>.~skm~).
    leftovers = sorted(p for p in root.rglob("*") if p.is_file() and p not in payloads)
    assert all(p.name.startswith(".") and p.name.endswith(".~skm~") for p in leftovers), leftovers
    print(f"temporary files left by the killed run: {len(leftovers)}")
    time.sleep(STALE_AGE)   # the rule: only files older than the run by STALE_AGE (and unlocked) are stale

    rerun = run_module("skm_sign", {"path": str(root), "key": str(key.key), "cert": str(key.cert),
                                    "hash": "sha256"})
    assert not rerun.get("failed"), rerun.get("msg")
    assert (rerun["counts"]["signed"], rerun["counts"]["already_signed"]) == (unchanged, new), rerun["counts"]
    assert rerun["stale_temps_removed"] == len(leftovers), (rerun["stale_temps_removed"], leftovers)
    assert sorted(p for p in root.rglob("*") if p.is_file()) == sorted(payloads), "files left besides the modules"

    # Every module is now exactly what the kernel's sign-file makes of its payload (RSA is deterministic).
    def matches_sign_file(item):
        index, (path, payload) = item
        return decompressed(path) == sign_file_reference(sign_file, key, "sha256", payload, tmp_path / f"all{index}")
    with ThreadPoolExecutor(4) as pool:
        verdicts = pool.map(matches_sign_file, enumerate(payloads.items()))
        mismatched = [path for (path, _p), ok in zip(payloads.items(), verdicts) if not ok]
    assert not mismatched, mismatched[:5]
