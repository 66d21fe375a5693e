"""Debian's linux-source-6.1 for the e2e run: the shared helper in tests/lib/kernel_source.py."""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from tests.lib.kernel_source import kernel_source  # noqa: E402,F401

if __name__ == "__main__":
    print(kernel_source())
