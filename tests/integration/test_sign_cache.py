"""skm_sign's verdict_cache (host mode), through real ansible-playbook on copies of real Debian modules.

What a user relies on: a re-run over an already signed tree answers from the cache and rewrites nothing, yet a
module changed in any way since (in place with its mtime put back, or replaced by another file) is read and
handled again; another certificate or hash never hits; check mode writes no cache; a cache file others may
write is ignored. Oracles: kmod's modinfo (signer, hash) and the kernel's sign-file (RSA byte identity).
"""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.skm.modsign.plugins.module_utils._trailer import strip_signature
from tests.lib.ansible_run import run_module
from tests.lib.module_tree import make_tree, modinfo_signature, sign_file_reference, stat_ids


@pytest.fixture()
def tree(debian_kernel, debian_sample, tmp_path):
    return make_tree(debian_kernel, debian_sample, tmp_path / "tree")


def sign(tree, key, cache, hash_name="sha384", check=False, **extra):
    args = {"path": str(tree.root), "key": str(key.key), "cert": str(key.cert), "hash": hash_name,
            "replace_foreign": True, "verdict_cache": str(cache), **extra}
    result = run_module("skm_sign", args, check=check)
    assert not result.get("failed"), result["msg"]
    return result


def test_rerun_answers_from_the_cache_and_reads_changed_modules_again(tree, session_keys, sign_file, tmp_path):
    key = session_keys("rsa3072")
    cache = tmp_path / "cache"
    total = len(tree.files)

    first = sign(tree, key, cache)
    assert first["changed"] and first["verdict_cache"]["hits"] == 0 and first["verdict_cache"]["misses"] == total
    cache_file = cache / "signed.json"
    assert cache_file.stat().st_mode & 0o777 == 0o600
    assert len(json.loads(cache_file.read_text())["entries"]) == total

    ids = stat_ids(tree.files + [cache_file])
    again = sign(tree, key, cache)
    assert not again["changed"] and again["counts"]["already_signed"] == total
    assert again["verdict_cache"] == {"path": str(cache_file), "hits": total, "misses": 0, "note": None}
    assert stat_ids(tree.files + [cache_file]) == ids, "a run that learnt nothing rewrote a module or the cache"

    # In place, same size, mtime put back: only the ctime tells. The module must be read and re-signed.
    changed = tree.stripped[0]
    st = changed.stat()
    data = bytearray(changed.read_bytes())
    data[-100] ^= 0xFF                        # inside our signature: it no longer verifies (tampered)
    with open(changed, "r+b") as handle:
        handle.write(data)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (changed.stat().st_size, changed.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    # Replaced by another file (another module, unsigned): a new inode.
    replaced = tree.stripped[1]
    other = tmp_path / "other.ko"
    other.write_bytes(tree.payloads[tree.debian_signed[0]])
    os.rename(other, replaced)

    cache_before = (cache_file.read_bytes(), cache_file.stat().st_ino, cache_file.stat().st_mtime_ns)
    dry = sign(tree, key, cache, check=True)
    assert [f["path"] for f in dry["tampered"]] == [str(changed)] and dry["signed"] == [str(replaced)]
    assert dry["verdict_cache"]["hits"] == total - 2
    assert (cache_file.read_bytes(), cache_file.stat().st_ino, cache_file.stat().st_mtime_ns) == cache_before, \
        "check mode wrote the cache"

    third = sign(tree, key, cache, replace_tampered=True)
    assert third["verdict_cache"]["hits"] == total - 2 and third["verdict_cache"]["misses"] == 2
    assert third["replaced"] == [str(changed)] and third["signed"] == [str(replaced)]
    reference = sign_file_reference(sign_file, key, "sha384", tree.payloads[changed], tmp_path / "ref")
    assert changed.read_bytes() == reference, "not what the kernel's sign-file makes"
    assert strip_signature(replaced.read_bytes()) == tree.payloads[tree.debian_signed[0]]
    for path in (changed, replaced):
        info = modinfo_signature(path)
        assert info["signer"] == "skm test rsa3072" and info["sig_hashalgo"] == "sha384", info

    fourth = sign(tree, key, cache)
    assert not fourth["changed"] and fourth["verdict_cache"]["hits"] == total


def test_another_hash_or_key_never_hits(tree, session_keys, tmp_path):
    cache = tmp_path / "cache"
    total = len(tree.files)
    sign(tree, session_keys("rsa3072"), cache, "sha384")
    other_hash = sign(tree, session_keys("rsa3072"), cache, "sha512")
    assert other_hash["verdict_cache"]["hits"] == 0 and other_hash["counts"]["replaced"] == total
    other_key = sign(tree, session_keys("p256"), cache, "sha256")
    assert other_key["verdict_cache"]["hits"] == 0 and other_key["counts"]["replaced"] == total
    info = modinfo_signature(tree.stripped[0])
    assert info["signer"] == "skm test p256" and info["sig_hashalgo"] == "sha256", info


def test_a_cache_file_others_may_write_is_ignored_and_replaced(tree, session_keys, tmp_path):
    key = session_keys("rsa3072")
    cache = tmp_path / "cache"
    total = len(tree.files)
    sign(tree, key, cache)
    cache_file = cache / "signed.json"
    cache_file.chmod(0o666)
    rerun = sign(tree, key, cache)
    assert rerun["verdict_cache"]["hits"] == 0 and "ignored" in rerun["verdict_cache"]["note"]
    assert not rerun["changed"] and rerun["counts"]["already_signed"] == total    # verified instead
    assert cache_file.stat().st_mode & 0o777 == 0o600
    assert sign(tree, key, cache)["verdict_cache"]["hits"] == total


def test_check_mode_writes_no_cache(tree, session_keys, tmp_path):
    cache = tmp_path / "cache"
    dry = sign(tree, session_keys("rsa3072"), cache, check=True)
    assert dry["changed"] and not (cache / "signed.json").exists()


def test_controller_mode_survey_answers_from_the_host_cache(tree, session_keys, tmp_path):
    key = session_keys("p384")
    cache = tmp_path / "cache"
    total = len(tree.files)
    args = {"path": str(tree.root), "key": str(key.key), "cert": str(key.cert), "hash": "sha384",
            "replace_foreign": True, "key_location": "controller", "verdict_cache": str(cache),
            "signing_log": str(tmp_path / "signing.log")}
    first = run_module("skm_sign", args)
    assert first["changed"] and not first.get("failed"), first["msg"]
    assert first["verdict_cache"]["misses"] == total
    again = run_module("skm_sign", args)
    assert not again["changed"] and again["verdict_cache"]["hits"] == total, again["verdict_cache"]
    assert again["counts"]["already_signed"] == total

    changed = tree.compressed[0]               # a .ko.xz/.gz/.zst replaced by its unsigned payload, same path
    changed.write_bytes(tree.payloads[changed])
    third = run_module("skm_sign", args)
    assert third["verdict_cache"]["hits"] == total - 1 and third["signed"] == [str(changed)], third["msg"]
    info = modinfo_signature(changed)
    assert info["signer"] == "skm test p384" and info["sig_hashalgo"] == "sha384", info
    assert run_module("skm_sign", args)["verdict_cache"]["hits"] == total
