"""skm_enforce_gate and the running kernel's evidence (issue 18), through real ansible-playbook.

The evidence counts only when the gate judges the running kernel on the live root (root_dir /): then a
loaded module with taint E or our certificate in no module-trusting keyring refuses enforcement, and a
disagreement with the prediction is named (unit-tested on real captures in tests/unit/test_runtime.py,
test_gate_evidence_*; proven in a booted Debian kernel by make test-runtime). On a root_dir tree the gate
says why the evidence does not count and judges from files alone, as before.
"""

from __future__ import annotations

import shutil
import subprocess

from tests.lib.ansible_run import run_module


def test_on_a_tree_the_gate_says_the_running_kernels_evidence_does_not_count(tmp_path, debian_kernel):
    tree = tmp_path / "host"
    subprocess.run(["cp", "-as", f"{debian_kernel.root}/.", str(tree)], check=True)
    (tree / "boot" / "vmlinuz").symlink_to(f"vmlinuz-{debian_kernel.version}")
    few = tmp_path / "modules"
    few.mkdir()
    for name in ("crc7.ko", "crc16.ko"):
        shutil.copy(debian_kernel.modules_dir / "kernel" / "lib" / name, few / name)
    result = run_module("skm_enforce_gate", {"root_dir": str(tree), "modules_dir": str(few)})
    assert result.get("failed") is not True, result.get("msg")
    assert result["passed"] is True
    runtime = result["runtime"]
    assert runtime["applied"] is False and "is not the running system" in runtime["reason"]
    assert runtime["problems"] == [] and runtime["disagreements"] == []
    off = run_module("skm_enforce_gate", {"root_dir": str(tree), "modules_dir": str(few), "runtime_evidence": False})
    assert off["passed"] is True and "runtime" not in off
