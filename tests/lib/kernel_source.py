"""Debian's linux-source-6.1, unpacked once into the test cache, shared by every test that needs it.

apt-get download + dpkg-deb -x + tar -xf, under an exclusive lock; a finished tree is marked by `.complete`.
Build into an O= directory of your own: the tree is shared and must stay clean.
"""

from __future__ import annotations

import fcntl
import pathlib
import shutil
import subprocess

from tests.lib.debian_kernel import cache_dir

PACKAGE = "linux-source-6.1"


def kernel_source() -> pathlib.Path:
    """The extracted linux-source-6.1 tree (cached; safe to call from several processes at once)."""
    base = cache_dir() / "e2e" / PACKAGE
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = sorted(base.glob("*/.complete"))
        if done:
            return _tree(done[-1].parent)
        debs = cache_dir() / "debs"
        debs.mkdir(exist_ok=True)
        found = sorted(debs.glob(f"{PACKAGE}_*.deb"))
        if not found:
            proc = subprocess.run(["apt-get", "download", PACKAGE], cwd=debs, capture_output=True, text=True, check=False)
            found = sorted(debs.glob(f"{PACKAGE}_*.deb"))
            if proc.returncode != 0 or not found:
                raise RuntimeError(f"apt-get download {PACKAGE} failed (rc={proc.returncode}; needs a Debian 12 "
                                   f"mirror in sources.list):\n{proc.stdout}{proc.stderr}")
        deb = found[-1]
        root = base / deb.stem
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root / "pkg")], check=True)
        tarball = next((root / "pkg" / "usr" / "src").glob(f"{PACKAGE}.tar.*"))
        subprocess.run(["tar", "-xf", str(tarball), "-C", str(root)], check=True)
        shutil.rmtree(root / "pkg")
        (root / ".complete").write_text(deb.name + "\n")
        return _tree(root)


def _tree(root: pathlib.Path) -> pathlib.Path:
    return next(p for p in root.iterdir() if p.is_dir() and (p / "Makefile").exists())


if __name__ == "__main__":
    print(kernel_source())
