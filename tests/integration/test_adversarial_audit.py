"""Bad input for the audit (skm_module_info) and the gate (skm_enforce_gate): issue 16, 2.5, 2.6, 3.1 and 13.

Every case runs the modules through real ansible-playbook on trees of real Debian modules:
- a FIFO named ``.ko`` and a ``.ko`` link to /dev/zero are refused by name, the rest of the tree is judged
  (skm_sign too); each run has a time limit and a memory limit, so the old hang / MemoryError shows as a
  failure instead of stalling the machine;
- a module file name that is not UTF-8 is reported escaped, and the result still reaches the controller;
- a validly signed ``.ko.xz`` with xz's default CRC64 check, judged against a kernel config with in-kernel xz
  decompression (CONFIG_MODULE_DECOMPRESS=y), which refuses it ("decompression failed with status 6": the
  kernel's xz_dec is built without CRC64), and against Debian's config, where kmod decompresses. Oracle for
  the container: ``xz --robot --list`` (real xz) made the CRC64 file and reads the check of what we write;
- a truncated Debian vmlinuz: the gate names the image and the cause, never "unknown key".
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import tempfile
import threading

import pytest

from ansible_collections.skm.modsign.plugins.module_utils import _compression as compression
from ansible_collections.skm.modsign.plugins.module_utils._kernel_image import builtin_certificates
from tests.lib.ansible_run import ansible_env, bin_path

MEMORY_LIMIT = 3 << 30      # address space for ansible-playbook and its module: reading /dev/zero hits it fast
TIME_LIMIT = 240


def run_limited(module: str, args: dict, timeout: int = TIME_LIMIT) -> dict:
    """``run_module`` with a time and an address-space limit; a hang or a runaway read fails the test, not the host."""
    play = [{"hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": "under test", f"skm.modsign.{module}": args}]}]

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "play.yml"
        path.write_text(json.dumps(play))
        proc = subprocess.Popen([bin_path("ansible-playbook"), "-i", "localhost,", "-c", "local", str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ansible_env(),
                                preexec_fn=limit, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise AssertionError(f"skm.modsign.{module} still running after {timeout}s (hung)")
    try:
        return json.loads(stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"ansible-playbook gave no result (rc={proc.returncode}):\n{stdout}\n{stderr}")


class FifoWriter:
    """Opens the FIFO's write end whenever a reader waits on it, so a blocked ``open`` of the old code ends
    (with an empty read) instead of hanging the test run; a reader that never blocks never notices."""

    def __init__(self, path: pathlib.Path):
        self.path, self.stop = path, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(0.2):
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


@pytest.fixture(scope="module")
def small_modules(debian_kernel):
    """Three small Debian-signed modules (trusted by the certificate built into Debian's vmlinuz)."""
    modules = sorted(debian_kernel.modules(), key=lambda p: p.stat().st_size)
    return [m for m in modules if m.stat().st_size > 8192][:3]


def make_root(base: pathlib.Path, debian_kernel, config_edits: dict | None = None) -> pathlib.Path:
    """/boot (Debian's vmlinuz, its config with ``config_edits``) and an empty /lib/modules/<version>."""
    boot = base / "boot"
    boot.mkdir(parents=True)
    (boot / f"vmlinuz-{debian_kernel.version}").symlink_to(debian_kernel.vmlinuz)
    lines = debian_kernel.config.read_text().splitlines()
    for option, value in (config_edits or {}).items():
        lines = [line for line in lines if not line.startswith(option + "=") and f" {option} is not set" not in line]
        lines.append(f"{option}={value}" if value is not None else f"# {option} is not set")
    (boot / f"config-{debian_kernel.version}").write_text("\n".join(lines) + "\n")
    (base / "lib" / "modules" / debian_kernel.version / "kernel").mkdir(parents=True)
    return base


def modules_dir(root: pathlib.Path, debian_kernel) -> pathlib.Path:
    return root / "lib" / "modules" / debian_kernel.version


IN_KERNEL_XZ = {"CONFIG_MODULE_COMPRESS_NONE": None, "CONFIG_MODULE_COMPRESS_XZ": "y", "CONFIG_MODULE_DECOMPRESS": "y"}


def audit_kernel(root: pathlib.Path, debian_kernel, **extra) -> dict:
    return run_limited("skm_module_info", {"kernel": [debian_kernel.version], "modules_root": str(root / "lib/modules"),
                                           "boot_dir": str(root / "boot"), **extra})


def gate(root: pathlib.Path, debian_kernel, **extra) -> dict:
    return run_limited("skm_enforce_gate", {"root_dir": str(root), "kernel": debian_kernel.version, **extra})


def states(result: dict) -> dict:
    return {m["path"]: m["state"] for m in result["modules"]}


# ------------------------------------------------------------------ 2.5: non-regular files

def test_fifo_named_ko_is_refused_by_name_and_the_rest_is_judged(tmp_path, debian_kernel, small_modules,
                                                                 session_keys):
    root = make_root(tmp_path, debian_kernel)
    tree = modules_dir(root, debian_kernel) / "kernel"
    good = tree / small_modules[0].name
    shutil.copyfile(small_modules[0], good)
    fifo = tree / "fifo.ko"
    os.mkfifo(fifo)
    with FifoWriter(fifo):
        audit = audit_kernel(root, debian_kernel)
        assert not audit.get("failed"), audit.get("msg")
        by_path = {m["path"]: m for m in audit["modules"]}
        assert by_path[str(good)]["state"] == "trusted"
        assert by_path[str(fifo)]["state"] == "unparseable"
        assert "not a regular file (a FIFO)" in by_path[str(fifo)]["reason"]

        refused = gate(root, debian_kernel)
        assert refused.get("failed") is True and refused["modules_total"] == 2
        assert [(o["path"], o["state"]) for o in refused["offenders"]] == [(str(fifo), "unparseable")]
        assert "not a regular file (a FIFO)" in refused["offenders"][0]["reason"] and str(fifo) in refused["msg"]

        key = session_keys("rsa2048")
        unsigned = tree / "unsigned.ko"
        shutil.copyfile(small_modules[1], unsigned)
        signed = run_limited("skm_sign", {"path": [str(tree)], "key": str(key.key), "cert": str(key.cert),
                                          "hash": "sha256", "replace_foreign": True})
        assert [(f["path"], "not a regular file (a FIFO)" in f["reason"]) for f in signed["failures"]] == \
            [(str(fifo), True)], signed.get("msg")
        assert sorted(signed["replaced"]) == sorted([str(good), str(unsigned)])
    assert fifo.is_fifo()


def test_ko_link_to_dev_zero_is_refused_by_name(tmp_path, debian_kernel, small_modules, session_keys):
    root = make_root(tmp_path, debian_kernel)
    tree = modules_dir(root, debian_kernel) / "kernel"
    good = tree / small_modules[0].name
    shutil.copyfile(small_modules[0], good)
    zero = tree / "zero.ko"
    zero.symlink_to("/dev/zero")

    audit = audit_kernel(root, debian_kernel)
    assert not audit.get("failed"), audit.get("msg")
    by_path = {m["path"]: m for m in audit["modules"]}
    assert by_path[str(good)]["state"] == "trusted"
    assert "not a regular file (a character device)" in by_path[str(zero)]["reason"]

    refused = gate(root, debian_kernel)
    assert refused.get("failed") is True and str(zero) in refused["msg"]
    assert [o["path"] for o in refused["offenders"]] == [str(zero)]

    key = session_keys("rsa2048")
    signed = run_limited("skm_sign", {"path": [str(tree)], "key": str(key.key), "cert": str(key.cert),
                                      "hash": "sha256", "replace_foreign": True})
    assert [f["path"] for f in signed["failures"]] == [str(zero)], signed.get("msg")
    assert "character device" in signed["failures"][0]["reason"] and signed["replaced"] == [str(good)]


def test_trusted_certificate_that_is_a_fifo_fails_by_name(tmp_path, debian_kernel, small_modules):
    root = make_root(tmp_path, debian_kernel)
    shutil.copyfile(small_modules[0], modules_dir(root, debian_kernel) / "kernel" / small_modules[0].name)
    fifo = tmp_path / "cert.pem"
    os.mkfifo(fifo)
    with FifoWriter(fifo):
        audit = audit_kernel(root, debian_kernel, trusted_certs=[str(fifo)])
        refused = gate(root, debian_kernel, certificates=[str(fifo)])
    assert audit.get("failed") is True and str(fifo) in audit["msg"] and "FIFO" in audit["msg"]
    assert refused.get("failed") is True and str(fifo) in refused["msg"] and "FIFO" in refused["msg"]


# ------------------------------------------------------------------ 2.6: names that are not UTF-8

def test_module_name_that_is_not_utf8_is_reported_escaped(tmp_path, debian_kernel, small_modules):
    root = make_root(tmp_path, debian_kernel)
    tree = modules_dir(root, debian_kernel) / "kernel"
    good = tree / small_modules[0].name
    shutil.copyfile(small_modules[0], good)
    raw_name = os.fsencode(str(tree)) + b"/drv\xff\xfe.ko"
    with open(raw_name, "wb") as handle:
        handle.write(small_modules[1].read_bytes())
    shown = str(tree) + "/drv\\xff\\xfe.ko"

    audit = audit_kernel(root, debian_kernel)
    assert not audit.get("failed"), audit.get("msg")
    assert states(audit) == {str(good): "trusted", shown: "trusted"}

    untrusted = run_limited("skm_module_info", {"path": [str(tree)], "report": "untrusted"})
    assert not untrusted.get("failed"), untrusted.get("msg")
    assert states(untrusted) == {str(good): "unknown_key", shown: "unknown_key"}

    passed = gate(root, debian_kernel)
    assert passed.get("failed") is not True and passed["passed"] is True, passed.get("msg")
    with open(raw_name, "r+b") as handle:     # tamper with the body: the gate names it, escaped
        handle.seek(4096)
        byte = handle.read(1)
        handle.seek(4096)
        handle.write(bytes([byte[0] ^ 1]))
    refused = gate(root, debian_kernel)
    assert refused.get("failed") is True
    assert [(o["path"], o["state"]) for o in refused["offenders"]] == [(shown, "bad_signature")]
    assert shown in refused["msg"]


# ------------------------------------------------------------------ 3.1: xz with a CRC64 check

def xz_check_of(path: pathlib.Path) -> str:
    """The integrity check of an .xz file as real xz reads it (``xz --robot --list``)."""
    out = subprocess.run(["xz", "--robot", "--list", str(path)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split("\t")
        if fields[0] == "file":
            return fields[6]
    raise AssertionError(out)


def xz_default(path: pathlib.Path) -> pathlib.Path:
    """``xz`` with its defaults (a CRC64 check) over ``path``, as a careless packager runs it."""
    subprocess.run(["xz", str(path)], check=True)
    xz = path.with_name(path.name + ".xz")
    assert xz_check_of(xz) == "CRC64"
    return xz


def crc64_module(source: pathlib.Path, dest_dir: pathlib.Path) -> pathlib.Path:
    """A Debian-signed module compressed by ``xz`` with defaults: validly signed, refused by in-kernel xz."""
    target = dest_dir / source.name
    shutil.copyfile(source, target)
    return xz_default(target)


def test_xz_crc64_module_is_refused_where_the_kernel_decompresses_xz(tmp_path, debian_kernel, small_modules):
    root = make_root(tmp_path / "inkernel", debian_kernel, IN_KERNEL_XZ)
    tree = modules_dir(root, debian_kernel) / "kernel"
    crc64 = crc64_module(small_modules[0], tree)
    crc32 = tree / (small_modules[1].name + ".xz")
    subprocess.run(["xz", "--check=crc32", "--lzma2=dict=1MiB", "-c", str(small_modules[1])],
                   stdout=crc32.open("wb"), check=True)

    audit = audit_kernel(root, debian_kernel)
    assert not audit.get("failed"), audit.get("msg")
    by_path = {m["path"]: m for m in audit["modules"]}
    assert by_path[str(crc32)]["state"] == "trusted" and by_path[str(crc32)]["decompressed_by"] == "kernel"
    assert by_path[str(crc64)]["state"] == "bad_container"
    assert "CRC64" in by_path[str(crc64)]["reason"] and by_path[str(crc64)]["decompressed_by"] == "kernel"
    assert audit["kernels"][0]["decompression"]["by"] == "kernel" and audit["all_trusted"] is False

    refused = gate(root, debian_kernel)
    assert refused.get("failed") is True
    assert [(o["path"], o["state"]) for o in refused["offenders"]] == [(str(crc64), "bad_container")]
    assert "CRC64" in refused["msg"] and refused["decompression"]["by"] == "kernel"


def test_xz_crc64_module_passes_where_kmod_decompresses_and_says_so(tmp_path, debian_kernel, small_modules):
    root = make_root(tmp_path / "kmod", debian_kernel)      # Debian 6.1: no CONFIG_MODULE_DECOMPRESS
    builtin = builtin_certificates(debian_kernel.vmlinuz.read_bytes())[0]
    subprocess.run(["openssl", "x509", "-inform", "DER", "-out", str(tmp_path / "builtin.pem")], input=builtin.der,
                   check=True)
    crc64 = crc64_module(small_modules[0], modules_dir(root, debian_kernel) / "kernel")

    audit = audit_kernel(root, debian_kernel)
    assert not audit.get("failed"), audit.get("msg")
    assert audit["modules"][0]["state"] == "trusted" and audit["modules"][0]["decompressed_by"] == "kmod"
    assert audit["kernels"][0]["decompression"]["by"] == "kmod"

    passed = gate(root, debian_kernel)
    assert passed.get("failed") is not True and passed["passed"] is True, passed.get("msg")
    assert passed["decompression"]["by"] == "kmod" and str(crc64) not in passed["msg"]

    # by path: the module tree it lies in names the kernel, whose config says kmod decompresses
    by_path = run_limited("skm_module_info", {"path": [str(crc64)], "modules_root": str(root / "lib/modules"),
                                              "boot_dir": str(root / "boot"),
                                              "trusted_certs": [str(tmp_path / "builtin.pem")]})
    assert not by_path.get("failed"), by_path.get("msg")
    assert (by_path["modules"][0]["state"], by_path["modules"][0]["decompressed_by"]) == ("trusted", "kmod")


def test_skm_sign_rewrites_an_xz_crc64_module_with_crc32(tmp_path, small_modules, session_keys):
    key = session_keys("rsa2048")
    signed = tmp_path / small_modules[0].name
    shutil.copyfile(small_modules[0], signed)
    args = {"path": [str(tmp_path)], "key": str(key.key), "cert": str(key.cert), "hash": "sha256",
            "replace_foreign": True}
    first = run_limited("skm_sign", args)     # our signature, still a plain .ko
    assert first.get("failed") is not True and first["replaced"] == [str(signed)], first.get("msg")
    crc64 = xz_default(signed)
    before = run_limited("skm_module_info", {"path": [str(crc64)], "trusted_certs": [str(key.cert)]})
    assert before["modules"][0]["state"] == "bad_container"     # no kernel config: in-kernel xz cannot be ruled out

    again = run_limited("skm_sign", args)
    assert again.get("failed") is not True, again.get("msg")
    assert again["already_signed"] == [] and again["replaced"] == [str(crc64)] and again["changed"] is True
    assert xz_check_of(crc64) == "CRC32"
    after = run_limited("skm_module_info", {"path": [str(crc64)], "trusted_certs": [str(key.cert)]})
    assert after["modules"][0]["state"] == "trusted"
    third = run_limited("skm_sign", args)
    assert third["already_signed"] == [str(crc64)] and third["changed"] is False


def test_our_xz_output_has_a_crc32_check_for_real_xz(tmp_path, small_modules):
    out = tmp_path / "ours.ko.xz"
    out.write_bytes(compression.compress(compression.XZ, small_modules[0].read_bytes()))
    assert xz_check_of(out) == "CRC32"
    for check, made_by in (("CRC32", ["--check=crc32"]), ("CRC64", []), ("SHA-256", ["--check=sha256"]),
                           ("None", ["--check=none"])):
        made = subprocess.run(["xz", "-c"] + made_by, input=b"x" * 100, capture_output=True, check=True).stdout
        (tmp_path / "made.xz").write_bytes(made)
        assert xz_check_of(tmp_path / "made.xz") == check
        assert compression.xz_check(made) == check.lower().replace("-", "")


# ------------------------------------------------------------------ 13: a truncated vmlinuz

def test_truncated_vmlinuz_is_blamed_not_an_unknown_key(tmp_path, debian_kernel, small_modules):
    root = make_root(tmp_path, debian_kernel)
    image = root / "boot" / f"vmlinuz-{debian_kernel.version}"
    whole = debian_kernel.vmlinuz.read_bytes()
    image.unlink()
    image.write_bytes(whole[:len(whole) // 2])
    shutil.copyfile(small_modules[0], modules_dir(root, debian_kernel) / "kernel" / small_modules[0].name)

    refused = gate(root, debian_kernel)
    assert refused.get("failed") is True and refused.get("passed") is False, refused.get("msg") or refused.get("module_stderr")
    assert "cannot extract built-in certificates" in refused["msg"] and str(image) in refused["msg"]
    assert "truncated" in refused["msg"] and "unknown key" not in refused["msg"]

    audit = audit_kernel(root, debian_kernel)
    assert audit.get("failed") is True and "cannot extract built-in certificates" in audit["msg"]
    assert str(image) in audit["msg"] and "unknown" not in audit["msg"]
