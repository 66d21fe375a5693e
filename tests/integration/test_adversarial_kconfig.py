"""skm_kconfig against bad input (issue 16, items 2.8, 2.10, 2.12 and non-regular files), through real Ansible.

The oracle for CRLF is the kernel's own Kconfig: Debian's linux-source-6.1 `make olddefconfig` reads the file
we wrote (its confdata.c accepts CRLF in both line forms) and warns "override: reassigning to symbol" for
every option that appears twice.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from tests.lib.ansible_run import run_module
from tests.lib.kernel_source import kernel_source


@contextlib.contextmanager
def immutable(path: pathlib.Path):
    """chattr +i (root on ext4 and most local filesystems); skips where the filesystem cannot."""
    proc = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {proc.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def three_configs(directory: pathlib.Path, source: pathlib.Path) -> list[pathlib.Path]:
    directory.mkdir()
    paths = [directory / f"config.{n}" for n in ("a", "b", "c")]
    for path in paths:
        shutil.copy(source, path)
    return paths


# --- 2.8: a partial write over a glob --------------------------------------------------------------------

def test_glob_with_an_immutable_config_reports_what_was_written(tmp_path, debian_kernel):
    first, locked, last = three_configs(tmp_path / "conf", debian_kernel.config)
    original = debian_kernel.config.read_bytes()
    with immutable(locked):
        result = run_module("skm_kconfig", {"path": str(tmp_path / "conf" / "config.*"), "hash": "sha512"})
    assert result["failed"]
    assert result["changed"], "two configs were rewritten: the task changed something"
    # The rest of the glob is still handled: the file after the immutable one is written too.
    assert first.read_bytes() != original and last.read_bytes() != original
    assert locked.read_bytes() == original
    assert result["written"] == [str(first), str(last)] and result["not_written"] == [str(locked)]
    by_path = {f["path"]: f for f in result["files"]}
    assert "permission denied" in by_path[str(locked)]["error"] and not by_path[str(locked)]["changed"]
    assert by_path[str(first)]["changed"] and by_path[str(last)]["changed"]
    msg = result["msg"]
    assert str(locked) in msg and "permission denied" in msg
    assert re.search(r"[Nn]ot written: [^.]*" + re.escape(str(locked)), msg), msg
    assert re.search(r"[Ww]ritten: [^.]*" + re.escape(str(first)), msg), msg
    # A rerun once the file is writable finishes the job and changes only that file.
    again = run_module("skm_kconfig", {"path": str(tmp_path / "conf" / "config.*"), "hash": "sha512"})
    assert again["changed"] and again["written"] == [str(locked)] and not again.get("failed")
    assert first.read_bytes() == locked.read_bytes() == last.read_bytes()


# --- 2.10: a symlinked .config ---------------------------------------------------------------------------

@pytest.mark.parametrize("absolute", [False, True], ids=["relative-link", "absolute-link"])
def test_symlinked_config_is_written_through_and_the_link_kept(absolute, tmp_path, debian_kernel):
    store = tmp_path / "store"
    store.mkdir()
    target = store / "config-6.1"
    shutil.copy(debian_kernel.config, target)
    tree = tmp_path / "linux"
    tree.mkdir()
    link = tree / ".config"
    link.symlink_to(target if absolute else pathlib.Path("..") / "store" / "config-6.1")
    original = target.read_text()
    args = {"path": str(link), "hash": "sha512", "backup": True}

    check = run_module("skm_kconfig", args, check=True, diff=True)
    assert check["changed"] and link.is_symlink() and target.read_text() == original
    real = run_module("skm_kconfig", args, diff=True)
    assert real["changed"] and not real.get("failed")
    assert link.is_symlink() and os.readlink(link) == (str(target) if absolute else "../store/config-6.1")
    assert 'CONFIG_MODULE_SIG_HASH="sha512"' in target.read_text()
    # diff (also in check mode) shows the target's old and new text
    assert check["diff"] == real["diff"]
    assert real["diff"][0]["before"] == original and real["diff"][0]["after"] == target.read_text()
    backup = pathlib.Path(real["files"][0]["backup_file"])
    assert backup.read_text() == original and not backup.is_symlink()
    assert not run_module("skm_kconfig", args)["changed"]
    assert sorted(p.name for p in tree.iterdir()) == [".config"]   # no temp file or stray copy beside the link


def test_dangling_config_link_is_an_error_naming_it(tmp_path, debian_kernel):
    link = tmp_path / ".config"
    link.symlink_to(tmp_path / "gone")
    result = run_module("skm_kconfig", {"path": str(link), "hash": "sha512"})
    assert result["failed"] and str(link) in result["msg"] and link.is_symlink() and not (tmp_path / "gone").exists()


# --- non-regular files in a glob -------------------------------------------------------------------------

def test_fifo_and_device_link_in_a_glob_are_named_and_the_rest_is_written(tmp_path, debian_kernel):
    conf = tmp_path / "conf"
    conf.mkdir()
    good = conf / "config.a"
    shutil.copy(debian_kernel.config, good)
    fifo = conf / "config.fifo"
    os.mkfifo(fifo)
    zero = conf / "config.zero"
    zero.symlink_to("/dev/zero")
    result = run_module("skm_kconfig", {"path": str(conf / "config.*"), "hash": "sha512"})   # must not hang
    assert result["failed"] and result["changed"]
    assert 'CONFIG_MODULE_SIG_HASH="sha512"' in good.read_text()
    assert result["written"] == [str(good)] and result["not_written"] == [str(fifo), str(zero)]
    by_path = {f["path"]: f for f in result["files"]}
    assert "a FIFO" in by_path[str(fifo)]["error"]
    assert "a character device" in by_path[str(zero)]["error"]
    assert str(fifo) in result["msg"] and str(zero) in result["msg"] and "a FIFO" in result["msg"]
    assert zero.is_symlink() and fifo.is_fifo()


# --- 2.12: CRLF .config, judged by the kernel's Kconfig --------------------------------------------------

def to_crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def kconfig_read(config: pathlib.Path, out: pathlib.Path) -> tuple[dict, str]:
    """The kernel's olddefconfig on a copy of ``config``: (values it kept, its warnings)."""
    shutil.copyfile(config, out / ".config")
    proc = subprocess.run(["make", "-s", "-C", str(kernel_source()), f"O={out}", "ARCH=x86", "olddefconfig"],
                          capture_output=True, text=True, check=True)
    return independent_values((out / ".config").read_text()), proc.stderr


def independent_values(text: str) -> dict:
    """A deliberately small reading of a .config (not ours): the last line of a name wins, like Kconfig."""
    found = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith("CONFIG_") and "=" in line:
            name, value = line.split("=", 1)
            found[name] = value
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            found[line[2:-len(" is not set")]] = "n"
    return found


def option_names(text: str) -> list[str]:
    names = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith("CONFIG_") and "=" in line:
            names.append(line.split("=", 1)[0])
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            names.append(line[2:-len(" is not set")])
    return names


def test_crlf_config_keeps_its_line_ending_and_kconfig_agrees(tmp_path, debian_kernel):
    config = tmp_path / "config.crlf"
    config.write_bytes(to_crlf(debian_kernel.config.read_text()).encode())
    args = {"path": str(config), "hash": "sha512", "key_type": "ecdsa", "sig_force": True, "compress": "xz",
            "decompress": True}
    result = run_module("skm_kconfig", args)
    assert result["changed"] and not result.get("failed")
    data = config.read_bytes()
    assert data.count(b"\n") == data.count(b"\r\n"), "line endings mixed"
    assert b"\r\r" not in data
    names = option_names(data.decode())
    duplicated = sorted({n for n in names if names.count(n) > 1})
    assert not duplicated, f"options written twice: {duplicated}"
    # Only the lines of the options we set differ from the original, compared line for line.
    changed = {c["name"] for c in result["files"][0]["changes"]}
    old = debian_kernel.config.read_text().split("\n")
    new = data.decode().split("\r\n")
    # CONFIG_MODULE_DECOMPRESS is not in Debian's config: it is added before the final (CRLF) newline.
    assert old[-1] == new[-1] == "" and len(new) == len(old) + 1
    assert new[-2] == "CONFIG_MODULE_DECOMPRESS=y"
    differing = {independent_key(o) for o, n in zip(old[:-1], new[:-2]) if o != n}
    assert differing <= changed, differing - changed

    kernel, warnings = kconfig_read(config, tmp_path)
    assert "override" not in warnings, warnings
    wanted = {c["name"]: c["after"] for c in result["files"][0]["changes"]}
    lost = {n: (v, kernel.get(n, "n")) for n, v in wanted.items() if kernel.get(n, "n") != v}
    assert not lost, f"the kernel's Kconfig reads something else than we meant to write: {lost}"
    assert not run_module("skm_kconfig", args)["changed"]


def independent_key(line: str) -> str:
    if line.startswith("# CONFIG_"):
        return line[2:].split(" ", 1)[0]
    return line.split("=", 1)[0]
