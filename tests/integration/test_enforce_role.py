"""The enforce role's tests_<case>.yml playbooks, each run against a freshly prepared tree.

The tree: a systemd-boot ESP (entries as kernel-install writes them) plus Debian's real kernel
(vmlinuz with its built-in certificate, config, every module) as the kernel that boots next.
tests_default also runs twice more: in check mode and for real, both must report no change.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest

from tests.lib.ansible_run import run_playbook
from tests.roles.enforce import trees
from ansible_collections.skm.modsign.plugins.module_utils._signing import read_module

# The default run keeps test_role_default; the other cases (a minute each here) run with `make test-enforce`.
slow = pytest.mark.skipif(not os.environ.get("SKM_SLOW"), reason="slow: run with make test-enforce (SKM_SLOW=1)")

PLAYBOOKS = pathlib.Path(__file__).resolve().parents[1] / "roles" / "enforce"


def _tree(tmp_path, kernel, copy_modules=False):
    tree = trees.systemd_boot_tree(tmp_path / "tree")
    (tree / "etc" / "kernel").mkdir(parents=True)
    trees.install_kernel(tree / "boot", kernel)
    (tree / "boot" / "vmlinuz").symlink_to(f"vmlinuz-{kernel.version}")
    modules = tree / "lib" / "modules"
    modules.mkdir(parents=True)
    if copy_modules:
        subprocess.run(["cp", "-as", str(kernel.modules_dir), str(modules / kernel.version)], check=True)
    else:
        (modules / kernel.version).symlink_to(kernel.modules_dir)
    sysfs = tree / "sys" / "module" / "module" / "parameters"
    sysfs.mkdir(parents=True)
    (sysfs / "sig_enforce").write_text("N\n")
    return tree


def _play(name, tree, check=False, **extra):
    proc = run_playbook(PLAYBOOKS / name, "-e", json.dumps({"skm_test_root": str(tree), **extra}), check=check)
    report = json.loads(proc.stdout) if proc.stdout.startswith("{") else {}
    stats = report.get("stats", {}).get("localhost", {})
    assert proc.returncode == 0 and stats.get("failures", 1) == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return report, stats


def _changed_tasks(report):
    return [t["task"]["name"] for play in report["plays"] for t in play["tasks"]
            if any(h.get("changed") for h in t["hosts"].values())]


def test_role_default(tmp_path, debian_kernel):
    tree = _tree(tmp_path, debian_kernel)
    report, _stats = _play("tests_default.yml", tree)
    assert any(n.endswith("Put the argument on every boot entry (and, if asked, into the running kernel)") for n in _changed_tasks(report))
    snapshot = trees.snapshot(tree / "efi") | {"cmdline": (tree / "etc/kernel/cmdline").read_bytes()}
    for check in (True, False):           # idempotence: check mode then for real, both unchanged
        again, _stats = _play("tests_default.yml", tree, check=check)
        assert _changed_tasks(again) == [], check
    assert trees.snapshot(tree / "efi") | {"cmdline": (tree / "etc/kernel/cmdline").read_bytes()} == snapshot


@slow
def test_role_check_mode_writes_nothing(tmp_path, debian_kernel):
    tree = _tree(tmp_path, debian_kernel)
    before = trees.snapshot(tree / "efi")
    proc = run_playbook(PLAYBOOKS / "tests_default.yml", "-e", json.dumps({"skm_test_root": str(tree)}), check=True)
    report = json.loads(proc.stdout)
    # the role itself reports the change it would make; the verifying asserts then fail, as they must
    assert any(n.endswith("Put the argument on every boot entry (and, if asked, into the running kernel)") for n in _changed_tasks(report))
    assert trees.snapshot(tree / "efi") == before and not (tree / "etc/kernel/cmdline").exists()


@slow
def test_role_gate_refuses_then_override(tmp_path, debian_kernel):
    tree = _tree(tmp_path, debian_kernel, copy_modules=True)
    unsigned = tree / "lib/modules" / debian_kernel.version / "kernel/fs/fat/vfat.ko"
    payload = read_module(str(unsigned)).payload
    unsigned.unlink()
    unsigned.write_bytes(payload)
    assert subprocess.run(["modinfo", "-F", "signer", str(unsigned)], capture_output=True, text=True, check=True).stdout == ""
    _play("tests_gate_refuses.yml", tree, skm_test_unsigned=str(unsigned))


@slow
def test_role_runtime_switch(tmp_path, debian_kernel):
    tree = _tree(tmp_path, debian_kernel)
    running = os.uname().release           # the gate checks the running kernel too: give it Debian's files
    if running != debian_kernel.version:
        trees.install_kernel(tree / "boot", debian_kernel, running)
        (tree / "lib/modules" / running).symlink_to(debian_kernel.modules_dir)
    _play("tests_runtime.yml", tree)


@slow
def test_role_absent(tmp_path, debian_kernel):
    tree = _tree(tmp_path, debian_kernel)
    _play("tests_default.yml", tree)
    _play("tests_absent.yml", tree)
    assert "module.sig_enforce" not in (tree / "etc/kernel/cmdline").read_text()
