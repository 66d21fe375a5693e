"""pytest entry for the real-kernel proof (slow: not in `make test`; `make e2e` runs the script directly).

    .venv/bin/python -m pytest -s tests/e2e
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


@pytest.mark.parametrize("part", ["ours", "debian"])
def test_kernel_judges_our_signatures(part):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--part", part], capture_output=True, text=True)
    print(proc.stdout)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert re.fullmatch(r"\d+ passed, 0 failed", last), f"{last}\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0
