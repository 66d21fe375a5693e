"""Debian's distribution kernel, unpacked once into a cache, as test material and oracle.

The package is the one Debian's linux-image-amd64 depends on now (apt-get download +
dpkg-deb -x); the tree is kept under $SKM_CACHE (default ~/.cache/skm-modsign) between runs.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from dataclasses import dataclass

SIGN_FILE = "/usr/lib/linux-kbuild-6.1/scripts/sign-file"


def cache_dir() -> pathlib.Path:
    root = os.environ.get("SKM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "skm-modsign")
    path = pathlib.Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class DebianKernel:
    package: str
    root: pathlib.Path          # the unpacked package
    version: str                # e.g. 6.1.0-56-amd64

    @property
    def modules_dir(self) -> pathlib.Path:
        return self.root / "lib" / "modules" / self.version

    @property
    def config(self) -> pathlib.Path:
        return self.root / "boot" / f"config-{self.version}"

    @property
    def vmlinuz(self) -> pathlib.Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    def modules(self) -> list[pathlib.Path]:
        return sorted(self.modules_dir.rglob("*.ko"))


def current_package() -> str:
    out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "Depends:" and parts[1].startswith("linux-image-6"):
            return parts[1]
    raise RuntimeError("apt-cache cannot name the package linux-image-amd64 depends on; run apt-get update")


def debian_kernel() -> DebianKernel:
    """Download and unpack the current Debian amd64 kernel image once; return it."""
    cached = sorted(cache_dir().glob("linux-image-6*/.complete"))
    package = None
    try:
        package = current_package()
    except (RuntimeError, OSError, subprocess.CalledProcessError):
        if not cached:
            raise
    root = cache_dir() / package if package else cached[-1].parent
    if not (root / ".complete").exists():
        debs = cache_dir() / "debs"
        debs.mkdir(exist_ok=True)
        subprocess.run(["apt-get", "download", package], cwd=debs, check=True, capture_output=True)
        deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
        root.mkdir(exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        (root / ".complete").write_text(deb.name + "\n")
    version = next((root / "lib" / "modules").iterdir()).name
    return DebianKernel(root.name, root, version)


if __name__ == "__main__":
    print(debian_kernel().modules_dir)
