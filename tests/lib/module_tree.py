"""Trees of real Debian modules to sign in tests: Debian-signed, stripped, and compressed by the real tools.

Compression uses the command-line tools with the flags of the kernel's scripts/Makefile.modinst
(xz --check=crc32 --lzma2=dict=1MiB, gzip -n -9, zstd), not our own code.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

from ansible_collections.skm.modsign.plugins.module_utils._trailer import strip_signature

COMPRESSORS = {
    ".xz": ["xz", "--check=crc32", "--lzma2=dict=1MiB", "-c"],
    ".gz": ["gzip", "-n", "-9", "-c"],
    ".zst": ["zstd", "-q", "-c"],
}
DECOMPRESSORS = {".xz": ["xz", "-dc"], ".gz": ["gzip", "-dc"], ".zst": ["zstd", "-dcq"]}


@dataclass
class ModuleTree:
    root: pathlib.Path
    debian_signed: list[pathlib.Path] = field(default_factory=list)   # as Debian ships them
    stripped: list[pathlib.Path] = field(default_factory=list)        # Debian's signature cut off
    compressed: list[pathlib.Path] = field(default_factory=list)      # .ko.xz/.gz/.zst (half signed, half not)
    payloads: dict[pathlib.Path, bytes] = field(default_factory=dict)  # every file -> its unsigned module bytes

    @property
    def files(self) -> list[pathlib.Path]:
        return sorted(self.debian_signed + self.stripped + self.compressed)

    def snapshot(self) -> dict[pathlib.Path, bytes]:
        return {p: p.read_bytes() for p in self.files}


def compress(data: bytes, suffix: str) -> bytes:
    return subprocess.run(COMPRESSORS[suffix], input=data, capture_output=True, check=True).stdout


def decompressed(path: pathlib.Path) -> bytes:
    for suffix, cmd in DECOMPRESSORS.items():
        if path.name.endswith(".ko" + suffix):
            return subprocess.run(cmd + [str(path)], capture_output=True, check=True).stdout
    return path.read_bytes()


def make_tree(kernel, sample: list[pathlib.Path], dest: pathlib.Path) -> ModuleTree:
    """Spread ``sample`` (paths relative to the modules dir) over signed / stripped / compressed subtrees."""
    tree = ModuleTree(dest)
    for index, rel in enumerate(sample):
        original = (kernel.modules_dir / rel).read_bytes()
        payload = strip_signature(original, str(rel))
        kind = index % 4
        if kind == 0:
            target = dest / "signed" / rel
            data, bucket = original, tree.debian_signed
        elif kind == 1:
            target = dest / "stripped" / rel
            data, bucket = payload, tree.stripped
        else:
            suffix = list(COMPRESSORS)[(index // 4) % 3]
            target = dest / "compressed" / (str(rel) + suffix)
            data, bucket = compress(original if kind == 2 else payload, suffix), tree.compressed
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        bucket.append(target)
        tree.payloads[target] = payload
    return tree


def sign_file_reference(sign_file: str, key, hash_name: str, payload: bytes, work: pathlib.Path) -> bytes:
    """What the kernel's own sign-file makes of ``payload`` with ``key``."""
    work.mkdir(parents=True, exist_ok=True)
    target = work / "ref.ko"
    target.write_bytes(payload)
    subprocess.run([sign_file, hash_name, str(key.key), str(key.cert), str(target)], check=True,
                   capture_output=True)
    return target.read_bytes()


def openssl_cms_verify(payload: bytes, pkcs7: bytes, cert: pathlib.Path, work: pathlib.Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "payload").write_bytes(payload)
    (work / "sig.p7").write_bytes(pkcs7)
    proc = subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(work / "sig.p7"),
         "-content", str(work / "payload"), "-certfile", str(cert), "-nointern", "-noverify",
         "-purpose", "any", "-out", "/dev/null"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "Verification successful" in proc.stderr, proc.stderr


def modinfo_signature(path: pathlib.Path) -> dict:
    """modinfo's sig_* fields for a (possibly compressed) module: kmod parses the trailer itself.

    Debian's kmod is built without zlib (``kmod --version``: -ZLIB), so a .ko.gz is given to it
    decompressed by gzip; xz and zstd modules are read by kmod itself.
    """
    if path.name.endswith(".ko.gz"):
        with tempfile.TemporaryDirectory() as tmp:
            plain = pathlib.Path(tmp) / path.name[:-3]
            plain.write_bytes(decompressed(path))
            return modinfo_signature(plain)
    out = subprocess.run(["modinfo", "-F", "signer", str(path)], capture_output=True, text=True, check=True).stdout
    fields = {"signer": out.strip()}
    for name in ("sig_key", "sig_hashalgo", "sig_id"):
        fields[name] = subprocess.run(["modinfo", "-F", name, str(path)], capture_output=True, text=True,
                                      check=True).stdout.strip()
    return fields


def copy_tree(src: pathlib.Path, dest: pathlib.Path) -> None:
    shutil.copytree(src, dest, symlinks=True)


def stat_ids(files) -> dict:
    """(inode, mtime) per file: a module that was not rewritten keeps both."""
    return {p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in files}
