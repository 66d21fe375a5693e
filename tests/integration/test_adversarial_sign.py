"""skm_sign under bad input and a hostile host (issue 16, items 2.4-2.7, 2.11, 3.2-3.4).

Through real ansible-playbook on copies of real Debian modules, in host and controller mode. Other signatures
are made by the kernel's own sign-file (sha1, sha224, RSA-PSS); what we wrote is checked with sign-file's
output (RSA byte identity) and kmod's modinfo; the signing log against modinfo and openssl.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import struct
import subprocess
import sys

import pytest

from ansible_collections.skm.modsign.plugins.module_utils._trailer import parse_signature, strip_signature
from tests.lib.ansible_run import run_module
from tests.lib.keys import make_key
from tests.lib.module_tree import modinfo_signature, sign_file_reference

MODES = ["host", "controller"]


@pytest.fixture()
def payloads(debian_kernel, debian_sample):
    """Unsigned payloads of a few real Debian modules."""
    return [strip_signature((debian_kernel.modules_dir / rel).read_bytes()) for rel in debian_sample[:6]]


@pytest.fixture(scope="module")
def foreign_keys(tmp_path_factory):
    base = tmp_path_factory.mktemp("foreign")
    return {"rsa": make_key(base / "rsa", "rsa2048", cn="foreign rsa")}


def sign_file_with(sign_file, key, hash_name, path: pathlib.Path) -> None:
    subprocess.run([sign_file, hash_name, str(key.key), str(key.cert), str(path)], check=True, capture_output=True)


def args_for(mode, key, paths, tmp_path, **extra):
    args = {"path": [str(p) for p in paths], "key": str(key.key), "cert": str(key.cert), "hash": "sha256"}
    if mode == "controller":
        args.update(key_location="controller", signing_log=str(tmp_path / "signing.log"))
    args.update(extra)
    return args


def assert_signed_like_sign_file(path, payload, key, sign_file, tmp_path):
    assert path.read_bytes() == sign_file_reference(sign_file, key, "sha256", payload, tmp_path / "ref"), path
    assert modinfo_signature(path)["signer"] == "skm test rsa2048"


# ------------------------------------------------------------------ 2.4 controller signs only under path


def forging_host(tmp_path: pathlib.Path, forged: list[dict]) -> dict:
    """A managed host whose survey answer also asks for signatures of ``forged`` entries (a compromised host)."""
    forged_file = tmp_path / "forged.json"
    forged_file.write_text(json.dumps(forged))
    filt = tmp_path / "forge.py"
    filt.write_text(f"""import json, sys
result = json.loads(sys.stdin.read())
result["entries"] += json.load(open({str(forged_file)!r}))
sys.stdout.write(json.dumps(result))
""")
    wrapper = tmp_path / "host-python"
    wrapper.write_text(f"""#!/bin/bash
out=$({sys.executable} "$@"); rc=$?
if grep -q '"step": "survey"' "$1"; then printf '%s' "$out" | {sys.executable} {filt}; else printf '%s' "$out"; fi
exit $rc
""")
    wrapper.chmod(0o755)
    return {"ansible_python_interpreter": str(wrapper)}


def honest_entry(path: str, real: pathlib.Path) -> dict:
    """The survey entry an honest host would send for the file ``real``, reported under ``path``."""
    st = real.stat()
    return {"p": path, "s": "unsigned", "t": "%d:%d:%d" % (st.st_ino, st.st_size, st.st_mtime_ns),
            "d": base64.b64encode(hashlib.sha256(real.read_bytes()).digest()).decode()}


def test_controller_refuses_survey_entries_outside_the_globs(payloads, session_keys, tmp_path):
    key = session_keys("rsa2048")
    inside, outside = tmp_path / "tree" / "updates", tmp_path / "outside"
    inside.mkdir(parents=True)
    outside.mkdir()
    (inside / "good.ko").write_bytes(payloads[0])
    (outside / "evil.ko").write_bytes(payloads[1])
    (outside / "evil2.ko").write_bytes(payloads[2])
    (inside / "notes.txt").write_bytes(payloads[3])       # under the directory, but not a module name
    forged = [honest_entry(str(outside / "evil.ko"), outside / "evil.ko"),
              honest_entry(str(inside) + "/../../outside/evil2.ko", outside / "evil2.ko"),
              honest_entry(str(inside / "notes.txt"), inside / "notes.txt"),
              {"p": str(inside / "short.ko"), "s": "unsigned", "t": "1:2:3", "d": "c2hvcnQ="}]   # not a digest
    log = tmp_path / "signing.log"
    result = run_module("skm_sign", args_for("controller", key, [inside], tmp_path),
                        vars=forging_host(tmp_path, forged))
    assert result.get("failed") and "failures" in result, result
    refused = {f["path"]: f["reason"] for f in result["failures"]}
    assert set(refused) == {e["p"] for e in forged}, refused
    assert all("the controller does not sign it" in refused[e["p"]] for e in forged[:3]), refused
    assert "malformed survey entry" in refused[forged[3]["p"]]
    assert "'..'" in refused[forged[1]["p"]] and "outside the task's path" in refused[forged[0]["p"]]
    assert result["signed"] == [str(inside / "good.ko")]
    for path in (outside / "evil.ko", outside / "evil2.ko", inside / "notes.txt"):
        assert parse_signature(path.read_bytes()).pkcs7 is None, f"{path} was signed for a compromised host"
    assert [json.loads(line)["path"] for line in log.read_text().splitlines()] == [str(inside / "good.ko")]


def test_controller_refuses_a_link_that_resolves_outside_the_globs(payloads, session_keys, tmp_path):
    key = session_keys("rsa2048")
    inside, outside = tmp_path / "weak-updates", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    (outside / "target.ko").write_bytes(payloads[0])
    (inside / "link.ko").symlink_to(outside / "target.ko")
    (inside / "plain.ko").write_bytes(payloads[1])
    result = run_module("skm_sign", args_for("controller", key, [inside], tmp_path))
    assert result.get("failed") and [f["path"] for f in result["failures"]] == [str(outside / "target.ko")]
    assert "outside" in result["failures"][0]["reason"]
    assert parse_signature((outside / "target.ko").read_bytes()).pkcs7 is None
    assert result["signed"] == [str(inside / "plain.ko")]


def test_controller_logs_every_signature(payloads, session_keys, sign_file, tmp_path):
    key = session_keys("rsa2048")
    tree = tmp_path / "tree"
    tree.mkdir()
    for index in range(3):
        (tree / f"m{index}.ko").write_bytes(payloads[index])
    log = tmp_path / "state" / "signing.log"
    args = args_for("controller", key, [tree / "*.ko"], tmp_path, signing_log=str(log))
    first = run_module("skm_sign", args)
    assert first["changed"] and not first.get("failed"), first["msg"]
    fingerprint = subprocess.run(["openssl", "x509", "-in", str(key.cert), "-noout", "-fingerprint", "-sha256"],
                                 capture_output=True, text=True, check=True).stdout.split("=")[1].strip()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(line["path"] for line in lines) == sorted(str(tree / f"m{i}.ko") for i in range(3))
    for line in lines:
        path = pathlib.Path(line["path"])
        modinfo = {field: subprocess.run(["modinfo", "-F", field, str(path)], capture_output=True, text=True,
                                         check=True).stdout.rstrip("\n") for field in ("name", "vermagic")}
        assert (line["module"], line["vermagic"]) == (modinfo["name"], modinfo["vermagic"]), line
        assert line["host"] == "localhost" and line["time"].endswith("Z")
        assert line["digest"] == "sha256:" + hashlib.sha256(parse_signature(path.read_bytes()).payload).hexdigest()
        assert line["certificate"].replace(":", "").upper() == fingerprint.replace(":", "").upper()
        assert_signed_like_sign_file(path, payloads[int(path.stem[1])], key, sign_file, tmp_path)
    again = run_module("skm_sign", args)
    assert not again["changed"] and len(log.read_text().splitlines()) == 3, "a rerun that signs nothing logs nothing"

    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    (tree / "m0.ko").write_bytes(payloads[0])
    refused = run_module("skm_sign", dict(args, signing_log=str(blocked / "signing.log")))
    assert refused.get("failed") and "signing log" in refused["msg"] and str(blocked) in refused["msg"]
    assert parse_signature((tree / "m0.ko").read_bytes()).pkcs7 is None, "signed although the log cannot be written"


# ------------------------------------------------------------------ 2.5 non-regular files


@pytest.mark.parametrize("mode", MODES)
def test_fifo_and_device_link_fail_by_name_and_the_rest_is_signed(mode, payloads, session_keys, sign_file, tmp_path):
    key = session_keys("rsa2048")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "good.ko").write_bytes(payloads[0])
    os.mkfifo(tree / "fifo.ko")
    (tree / "zero.ko").symlink_to("/dev/zero")
    result = run_module("skm_sign", args_for(mode, key, [tree], tmp_path))   # hung, or MemoryError, before
    assert result.get("failed"), result
    failed = {f["path"]: f["reason"] for f in result["failures"]}
    assert set(failed) == {str(tree / "fifo.ko"), str(tree / "zero.ko")}, failed
    assert "FIFO" in failed[str(tree / "fifo.ko")] and "device" in failed[str(tree / "zero.ko")]
    assert str(tree / "zero.ko") in result["msg"]
    assert result["signed"] == [str(tree / "good.ko")]
    assert_signed_like_sign_file(tree / "good.ko", payloads[0], key, sign_file, tmp_path)


# ------------------------------------------------------------------ 2.6 non-UTF-8 file names


@pytest.mark.parametrize("mode", MODES)
def test_non_utf8_file_name_is_signed_and_reported_escaped(mode, payloads, session_keys, sign_file, tmp_path):
    key = session_keys("rsa2048")
    tree = tmp_path / "tree"
    tree.mkdir()
    raw_name = os.fsdecode(b"caf\xe9.ko")
    (tree / raw_name).write_bytes(payloads[0])
    (tree / "plain.ko").write_bytes(payloads[1])
    args = args_for(mode, key, [tree], tmp_path, verdict_cache=str(tmp_path / "cache"))
    first = run_module("skm_sign", args)
    assert not first.get("failed"), first["msg"]
    assert sorted(first["signed"]) == sorted([str(tree) + "/caf\\xe9.ko", str(tree / "plain.ko")])
    assert_signed_like_sign_file(tree / raw_name, payloads[0], key, sign_file, tmp_path)
    again = run_module("skm_sign", args)
    assert not again.get("failed") and not again["changed"], again["msg"]
    assert str(tree) + "/caf\\xe9.ko" in again["already_signed"] and again["verdict_cache"]["hits"] == 2
    if mode == "controller":
        logged = [json.loads(line)["path"] for line in (tmp_path / "signing.log").read_text().splitlines()]
        assert sorted(logged) == sorted(first["signed"])


# ------------------------------------------------------------------ 2.7 sha1 / sha224 signatures


@pytest.mark.parametrize("mode", MODES)
def test_sha1_and_sha224_signatures_are_read_and_replaced_when_asked(mode, payloads, session_keys, foreign_keys,
                                                                     sign_file, tmp_path):
    key = session_keys("rsa2048")
    tree = tmp_path / "tree"
    tree.mkdir()
    made = {"foreign_sha1.ko": (foreign_keys["rsa"], "sha1"), "foreign_sha224.ko": (foreign_keys["rsa"], "sha224"),
            "ours_sha1.ko": (key, "sha1")}
    for index, (name, (signer, hash_name)) in enumerate(made.items()):
        (tree / name).write_bytes(payloads[index])
        sign_file_with(sign_file, signer, hash_name, tree / name)
    left = run_module("skm_sign", args_for(mode, key, [tree], tmp_path))
    assert not left.get("failed"), left["msg"]
    foreign = {pathlib.Path(f["path"]).name: f for f in left["foreign"]}
    assert set(foreign) == {"foreign_sha1.ko", "foreign_sha224.ko"} and {f["action"] for f in foreign.values()} == {"left"}
    assert "foreign rsa" in foreign["foreign_sha1.ko"]["signer"] and "sha1" in foreign["foreign_sha1.ko"]["signer"]
    assert [pathlib.Path(p).name for p in left["replaced"]] == ["ours_sha1.ko"], "our key with a weak hash: re-signed"
    replaced = run_module("skm_sign", args_for(mode, key, [tree], tmp_path, replace_foreign=True))
    assert not replaced.get("failed"), replaced["msg"]
    assert sorted(pathlib.Path(p).name for p in replaced["replaced"]) == ["foreign_sha1.ko", "foreign_sha224.ko"]
    for index, name in enumerate(made):
        assert_signed_like_sign_file(tree / name, payloads[index], key, sign_file, tmp_path)


# ------------------------------------------------------------------ 2.11 literal names with glob characters


@pytest.mark.parametrize("mode", MODES)
def test_an_existing_literal_path_wins_over_glob_expansion(mode, payloads, session_keys, sign_file, tmp_path):
    key = session_keys("rsa2048")
    literal = tmp_path / "drv[1].ko"
    literal.write_bytes(payloads[0])
    (tmp_path / "drv1.ko").write_bytes(payloads[1])   # what the glob would match instead
    result = run_module("skm_sign", args_for(mode, key, [literal], tmp_path))
    assert not result.get("failed") and result["signed"] == [str(literal)], result["msg"]
    assert_signed_like_sign_file(literal, payloads[0], key, sign_file, tmp_path)
    assert parse_signature((tmp_path / "drv1.ko").read_bytes()).pkcs7 is None


# ------------------------------------------------------------------ 3.2 tampered is never foreign


@pytest.mark.parametrize("mode", MODES)
def test_a_tampered_module_is_not_laundered_by_replace_foreign(mode, payloads, session_keys, sign_file, tmp_path):
    key = session_keys("rsa2048")
    tree = tmp_path / "tree"
    tree.mkdir()
    victim = tree / "victim.ko"
    victim.write_bytes(payloads[0])
    sign_file_with(sign_file, key, "sha256", victim)           # signed with OUR key by the kernel's tool
    data = bytearray(victim.read_bytes())
    data[len(payloads[0]) // 2] ^= 0x01                        # then its code changed: the kernel says EKEYREJECTED
    victim.write_bytes(bytes(data))
    result = run_module("skm_sign", args_for(mode, key, [tree], tmp_path, replace_foreign=True))
    assert victim.read_bytes() == bytes(data), "a tampered module was re-signed"
    assert not result["replaced"] and not result["foreign"] and not result["changed"], result
    assert [t["path"] for t in result["tampered"]] == [str(victim)] and result["tampered"][0]["action"] == "left"
    assert "tamper" in result["msg"] and str(victim) in " ".join(result.get("warnings", []))
    taken = run_module("skm_sign", args_for(mode, key, [tree], tmp_path, replace_tampered=True))
    assert taken["changed"] and taken["replaced"] == [str(victim)], taken["msg"]
    assert taken["tampered"][0]["action"] == "replaced"
    assert modinfo_signature(victim)["signer"] == "skm test rsa2048"


# ------------------------------------------------------------------ 3.3 unreadable signatures, corrupt trailers


def append_rsa_pss_signature(path: pathlib.Path, key, work: pathlib.Path) -> None:
    """Sign ``path`` as sign-file does (openssl cms, detached, no attributes, no certificates) but with RSA-PSS
    padding, which the kernel cannot verify, and append the trailer the kernel reads."""
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "cms", "-sign", "-binary", "-noattr", "-nocerts", "-nosmimecap", "-outform", "DER",
                    "-md", "sha256", "-signer", str(key.cert), "-inkey", str(key.key), "-keyopt",
                    "rsa_padding_mode:pss", "-in", str(path), "-out", str(work / "sig.p7")],
                   check=True, capture_output=True)
    pkcs7 = (work / "sig.p7").read_bytes()
    path.write_bytes(path.read_bytes() + pkcs7 + struct.pack(">BBBBB3sI", 0, 0, 2, 0, 0, b"\0\0\0", len(pkcs7))
                     + b"~Module signature appended~\n")


@pytest.mark.parametrize("mode", MODES)
def test_rsa_pss_signature_is_foreign_and_replaced_when_asked(mode, payloads, session_keys, foreign_keys, sign_file,
                                                              tmp_path):
    key = session_keys("rsa2048")
    tree = tmp_path / "tree"
    tree.mkdir()
    pss, ours_pss = tree / "pss.ko", tree / "ours_pss.ko"
    pss.write_bytes(payloads[0])
    append_rsa_pss_signature(pss, foreign_keys["rsa"], tmp_path / "cms")
    ours_pss.write_bytes(payloads[1])        # RSA-PSS naming OUR certificate: cannot verify, so tampered
    append_rsa_pss_signature(ours_pss, key, tmp_path / "cms")
    corrupt = tree / "corrupt.ko"            # trailer claims 7 bytes less: the cut would leave garbage
    signed = bytearray(pss.read_bytes())
    at = len(signed) - 28 - 4
    signed[at:at + 4] = (int.from_bytes(signed[at:at + 4], "big") - 7).to_bytes(4, "big")
    corrupt.write_bytes(bytes(signed))
    before = {p: p.read_bytes() for p in (corrupt, ours_pss)}
    left = run_module("skm_sign", args_for(mode, key, [pss, ours_pss], tmp_path))
    assert not left.get("failed"), left["msg"]
    assert [(f["path"], f["action"]) for f in left["foreign"]] == [(str(pss), "left")]
    assert "RSA-PSS" in left["foreign"][0]["signer"]
    assert [t["path"] for t in left["tampered"]] == [str(ours_pss)]
    done = run_module("skm_sign", args_for(mode, key, [tree], tmp_path, replace_foreign=True))
    assert done["replaced"] == [str(pss)], done["msg"]
    assert_signed_like_sign_file(pss, payloads[0], key, sign_file, tmp_path)
    assert done.get("failed") and [f["path"] for f in done["failures"]] == [str(corrupt)]
    assert {p: p.read_bytes() for p in (corrupt, ours_pss)} == before


# ------------------------------------------------------------------ 3.4 ECDSA P-384 with sha256


def test_p384_with_sha256_is_refused_as_our_policy(payloads, session_keys, tmp_path):
    key = session_keys("p384")
    (tmp_path / "m.ko").write_bytes(payloads[0])
    result = run_module("skm_sign", {"path": str(tmp_path / "m.ko"), "key": str(key.key), "cert": str(key.cert),
                                     "hash": "sha256"})
    assert result.get("failed") and "policy" in result["msg"] and "kernel" in result["msg"], result["msg"]
    assert parse_signature((tmp_path / "m.ko").read_bytes()).pkcs7 is None


# ------------------------------------------------------------------ 3.1 xz with CRC64, in both modes


def xz_check_of(path: pathlib.Path) -> str:
    """The integrity check of an xz file, as xz itself reports it."""
    listing = subprocess.run(["xz", "--robot", "--list", str(path)], capture_output=True, text=True, check=True)
    return next(line.split("\t")[6] for line in listing.stdout.splitlines() if line.startswith("file\t"))


@pytest.mark.parametrize("mode", MODES)
def test_our_signature_in_an_xz_crc64_container_is_rewritten_with_crc32(mode, payloads, session_keys, tmp_path):
    """The kernel's xz decoder refuses CRC64: a module we signed, then compressed with xz's default, is rewritten."""
    key = session_keys("rsa2048")
    module = tmp_path / "m.ko"
    module.write_bytes(payloads[0])
    first = run_module("skm_sign", args_for(mode, key, [module], tmp_path))
    assert not first.get("failed") and first["signed"] == [str(module)], first.get("msg")
    subprocess.run(["xz", "-k", str(module)], check=True)      # xz's default check: CRC64
    crc64 = tmp_path / "m.ko.xz"
    module.unlink()
    assert xz_check_of(crc64) == "CRC64"
    again = run_module("skm_sign", args_for(mode, key, [crc64], tmp_path))
    assert not again.get("failed"), again.get("msg")
    assert again["replaced"] == [str(crc64)] and again["already_signed"] == [] and again["changed"] is True, again
    assert xz_check_of(crc64) == "CRC32"
    third = run_module("skm_sign", args_for(mode, key, [crc64], tmp_path))
    assert third["already_signed"] == [str(crc64)] and third["changed"] is False, third
