"""pytest entry for the real-kernel proof: the same run as `make e2e` (slow: not in `make test`).

    .venv/bin/python -m pytest -s tests/e2e

Runs tests/e2e/run_e2e.py as `make e2e` does and passes when every case passed; its one-line-per-case
report is printed (-s shows it live), the FAIL lines are the assertion message.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).with_name("run_e2e.py")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("qemu-system-x86_64"),
    reason="needs root (initramfs /dev/console node) and qemu-system-x86_64")


def test_kernels_judge_our_signatures():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False)
    print(proc.stdout)
    lines = proc.stdout.strip().splitlines()
    failed = [line for line in lines if line.startswith("FAIL ")]
    last = lines[-1] if lines else ""
    assert not failed and proc.returncode == 0, "\n".join(failed + [last, proc.stderr[-3000:]])
    assert re.fullmatch(r"[1-9]\d* passed, 0 failed", last), f"{last}\n{proc.stdout[-6000:]}"
    # the kernel was configured by the collection itself: keys from skm_genkey, options from skm_kconfig
    built = next(line for line in lines if line.startswith("PASS kernel configured and built"))
    assert "skm_genkey" in built and "skm_kconfig" in built, built
