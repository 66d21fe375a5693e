"""skm_kernel_cmdline against bad input and awkward layouts (issue 16: 1 BLS without grubby, 2.1, 2.2, 2.10).

Oracles we did not write: dash sourcing the GRUB files exactly as update-grub does (`env -i sh`), Debian's
update-grub/grub-mkconfig writing grub.cfg and grub-script-check parsing it, Fedora's grubby (when
../shared/tools/grubby/grubby-bls is there) reading and writing BLS entries.
Real bootloader tools run in a private mount namespace over a scratch tree (tests/roles/enforce/trees.py).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from tests.lib.ansible_run import run_module
from tests.roles.enforce import trees
from tests.roles.enforce.trees import ARG

REPO = pathlib.Path(__file__).resolve().parents[2]
GRUBBY_BLS = REPO.parent / "shared" / "tools" / "grubby" / "grubby-bls"
DROPIN = "etc/default/grub.d/60-skm-modsign.cfg"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")


def sourced(path: pathlib.Path, *names: str) -> list[str]:
    """The values of ``names`` after sourcing ``path`` in a clean dash, as grub-mkconfig does."""
    script = ". \"$1\"; " + "; ".join(f"printf '%s\\0' \"${n}\"" for n in names)
    proc = subprocess.run(["env", "-i", "sh", "-c", script, "sh", str(path)], capture_output=True, text=True,
                          check=True)
    return proc.stdout.split("\0")[:-1]


def linux_lines(cfg: str) -> list[str]:
    return [line.strip() for line in cfg.splitlines() if line.strip().startswith("linux")]


@pytest.fixture()
def grub_tree(tmp_path, debian_kernel):
    if not trees.have("update-grub", "grub-mkconfig", "grub-probe"):
        pytest.skip("grub2-common/grub-common not installed (scripts/apt-packages.txt)")
    return trees.debian_grub_tree(tmp_path / "tree", debian_kernel)


def grub_binds(tree: pathlib.Path) -> dict:
    return {tree / "boot": "/boot", tree / "etc" / "default": "/etc/default"}


def run_grub(tree, tmp_path, args, check=False, diff=False):
    return trees.run_module_in(grub_binds(tree), "skm_kernel_cmdline", args, check=check, diff=diff, tmp=tmp_path)


def bls_tree(base: pathlib.Path, options=("root=/dev/vda2 ro rhgb quiet", "root=/dev/vda2 ro rhgb quiet")):
    """A Fedora-like /boot/loader/entries with GRUB's tools but no grubby (what a minimal RHEL-like image has)."""
    entries = base / "boot" / "loader" / "entries"
    entries.mkdir(parents=True)
    for n, opts in enumerate(options):
        version = f"6.{5 + n}.0-{300 + n}.fc39.x86_64"
        (entries / f"{trees.MACHINE_ID}-{version}.conf").write_text(
            f"title Fedora Linux ({version})\nversion {version}\nlinux /vmlinuz-{version}\n"
            f"initrd /initramfs-{version}.img\noptions {opts}\ngrub_users $grub_users\ngrub_arg --unrestricted\n")
    (base / "usr" / "sbin").mkdir(parents=True)
    (base / "usr" / "sbin" / "grub2-mkconfig").write_text("#!/bin/sh\nexit 1\n")   # present, must not be picked
    (base / "etc" / "default").mkdir(parents=True)
    (base / "etc" / "default" / "grub").write_text('GRUB_CMDLINE_LINUX="rhgb quiet"\nGRUB_ENABLE_BLSCFG=true\n')
    (base / "etc" / "kernel").mkdir(parents=True)
    (base / "etc" / "kernel" / "cmdline").write_text("root=/dev/vda2 ro rhgb quiet\n")
    return base


def options_of(entry: pathlib.Path) -> list[str]:
    return [line.split(None, 1)[1] for line in entry.read_text().splitlines() if line.startswith("options ")]


# --- 1: BLS entries without grubby never go to grub-mkconfig ----------------------------------------------

def test_bls_without_grubby_edits_every_entry_and_kernel_cmdline(tmp_path):
    tree = bls_tree(tmp_path / "tree")
    entries = sorted((tree / "boot/loader/entries").iterdir())
    before = trees.snapshot(tree)

    def run(check, diff=False):
        return run_module("skm_kernel_cmdline", {"root_dir": str(tree)}, check=check, diff=diff)
    first = run(True, True)
    assert first.get("failed") is not True, first["msg"]
    assert first["bootloader"] == "bls" and first["command"] == [] and first["changed"] is True
    assert sorted(first["files"]) == sorted([f"/boot/loader/entries/{e.name}" for e in entries] + ["/etc/kernel/cmdline"])
    assert trees.snapshot(tree) == before                          # check mode wrote nothing
    assert {d["before_header"] for d in first["diff"]} == set(first["files"])
    real = run(False, True)
    assert real["changed"] is True and all(e["satisfied"] for e in real["entries"])
    assert run(True)["changed"] is False and run(False)["changed"] is False
    for entry in entries:
        assert options_of(entry) == [f"root=/dev/vda2 ro rhgb quiet {ARG}"]
        assert [line for line in entry.read_text().splitlines() if not line.startswith("options")] == \
            [line for line in before[str(entry.relative_to(tree))].decode().splitlines() if not line.startswith("options")]
    assert (tree / "etc/kernel/cmdline").read_text() == f"root=/dev/vda2 ro rhgb quiet {ARG}\n"

    removed = run_module("skm_kernel_cmdline", {"root_dir": str(tree), "state": "absent"})
    assert removed["changed"] is True and trees.snapshot(tree) == before


def test_bls_without_grubby_present_only_when_every_entry_has_it(tmp_path):
    tree = bls_tree(tmp_path / "tree", options=(f"root=/dev/vda2 ro {ARG}", "root=/dev/vda2 ro"))
    (tree / "etc/kernel/cmdline").write_text(f"root=/dev/vda2 ro {ARG}\n")
    last = sorted((tree / "boot/loader/entries").iterdir())[-1]
    result = run_module("skm_kernel_cmdline", {"root_dir": str(tree)}, check=True)
    assert result["bootloader"] == "bls" and result["files"] == [f"/boot/loader/entries/{last.name}"]


def test_bls_without_grubby_kernelopts_is_refused_naming_what_is_missing(tmp_path):
    tree = bls_tree(tmp_path / "tree", options=("$kernelopts", "$kernelopts"))
    (tree / "boot/grub2").mkdir()
    subprocess.run(["grub-editenv", str(tree / "boot/grub2/grubenv"), "set", "kernelopts=root=/dev/vda2 ro"],
                   check=True)
    before = trees.snapshot(tree)
    result = run_module("skm_kernel_cmdline", {"root_dir": str(tree)})
    assert result.get("failed") is True
    assert "$kernelopts" in result["msg"] and "grubby" in result["msg"] and "grubenv" in result["msg"]
    assert "grub2-mkconfig" not in " ".join(result.get("command") or [])
    assert trees.snapshot(tree) == before


def fedora_grubby(tools: pathlib.Path) -> pathlib.Path:
    if not GRUBBY_BLS.is_file():
        pytest.skip(f"Fedora's grubby-bls is not at {GRUBBY_BLS} (../shared/tools/grubby); Debian packages none")
    if not trees.have("grub-editenv"):
        pytest.skip("grub-editenv (grub-common) not installed")
    tools.mkdir()
    shutil.copy(GRUBBY_BLS, tools / "grubby")
    (tools / "grubby").chmod(0o755)
    (tools / "grub2-editenv").symlink_to(shutil.which("grub-editenv"))
    return tools


@needs_root
def test_bls_with_grubby_is_detected_and_grubby_edits_every_entry(tmp_path):
    tools = fedora_grubby(tmp_path / "sbin")
    tree = trees.grubby_tree(tmp_path / "tree")
    # grubby as the host sees it: /usr/sbin/grubby (a private bind of a directory holding only grubby and grub2-editenv)
    binds = {tree / "boot": "/boot", tree / "etc" / "default": "/etc/default", tree / "etc" / "kernel": "/etc/kernel",
             tools: "/usr/sbin"}
    result = trees.run_module_in(binds, "skm_kernel_cmdline", {}, path_prefix=str(tools), tmp=tmp_path)
    assert result.get("failed") is not True, result.get("msg")
    assert result["bootloader"] == "grubby" and result["command"] == ["grubby", "--update-kernel=ALL", f"--args={ARG}"]
    listed = trees.in_namespace(binds, ["/usr/sbin/grubby", "--info=ALL"],
                                env={**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"})
    args = [line for line in listed.stdout.splitlines() if line.startswith("args=")]
    assert len(args) == 2 and all(line.rstrip('"').split()[-1] == ARG for line in args), listed.stdout + listed.stderr


# --- 2.1: shell injection through the argument ------------------------------------------------------------

@needs_root
def test_argument_with_shell_syntax_runs_nothing_and_update_grub_sees_it_verbatim(grub_tree, tmp_path):
    marker = tmp_path / "pwned"
    arg = f'x="1;touch {marker};"'
    result = run_grub(grub_tree, tmp_path, {"argument": arg})
    assert not marker.exists(), "a command in the argument ran"
    assert result.get("failed") is not True, result.get("msg")
    dropin = grub_tree / DROPIN
    assert subprocess.run(["sh", "-n", str(dropin)], check=False).returncode == 0
    assert sourced(dropin, "GRUB_CMDLINE_LINUX") == [f" {arg}"]
    assert not marker.exists()
    cfg = (grub_tree / "boot/grub/grub.cfg").read_text()
    assert all(line.endswith(arg) or f"{arg} " in line for line in linux_lines(cfg)), linux_lines(cfg)
    assert subprocess.run(["grub-script-check", str(grub_tree / "boot/grub/grub.cfg")], check=False).returncode == 0
    assert run_grub(grub_tree, tmp_path, {"argument": arg})["changed"] is False


@pytest.mark.parametrize("arg", ['x="1', "x=1;reboot", "a b", "x=1\nGRUB_TIMEOUT=0", "x=$(id)", "x=`id`", "x=\\1",
                                 "\"x=1\"", "=1", "x=\"a\"b\"", "x='1'"])
def test_argument_outside_the_kernel_grammar_is_refused_and_nothing_is_written(tmp_path, arg):
    tree = tmp_path / "tree"
    (tree / "etc/default/grub.d").mkdir(parents=True)
    (tree / "usr/sbin").mkdir(parents=True)
    (tree / "usr/sbin/update-grub").write_text("")
    result = run_module("skm_kernel_cmdline", {"root_dir": str(tree), "argument": arg})
    assert result.get("failed") is True and "argument" in result["msg"]
    assert not (tree / DROPIN).exists()


# --- 2.2: state=absent never cuts inside command substitutions or quotes ----------------------------------

@pytest.mark.parametrize("value", ['"$(echo module.sig_enforce=1)"', '"`echo module.sig_enforce=1`"',
                                   '$(echo module.sig_enforce=1)', '"$EXTRA module.sig_enforce=1"',
                                   '"${X:-module.sig_enforce=1}"'])
@pytest.mark.parametrize("check", [True, False], ids=["check", "real"])
def test_absent_refuses_a_value_it_cannot_parse_and_leaves_the_file(tmp_path, value, check):
    tree = tmp_path / "tree"
    (tree / "etc/default/grub.d").mkdir(parents=True)
    (tree / "usr/sbin").mkdir(parents=True)
    (tree / "usr/sbin/update-grub").write_text("")
    text = f'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX={value}\n'
    (tree / "etc/default/grub").write_text(text)
    result = run_module("skm_kernel_cmdline", {"root_dir": str(tree), "state": "absent"}, check=check)
    assert result.get("failed") is True
    assert str(tree / "etc/default/grub") in result["msg"] and "GRUB_CMDLINE_LINUX" in result["msg"]
    assert (tree / "etc/default/grub").read_text() == text


@needs_root
def test_absent_keeps_quoted_words_and_the_file_sources_the_same_but_our_argument(grub_tree, tmp_path):
    grub = grub_tree / "etc/default/grub"
    grub.write_text(grub.read_text().replace(
        'GRUB_CMDLINE_LINUX=""',
        "GRUB_CMDLINE_LINUX='console=ttyS0 \"acpi_osi=Windows 2020\" module.sig_enforce=1'\n"
        'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX "\'dyndbg="file x.c +p"\'" module.sig-enforce=0 quiet"  # ours'))
    other = grub_tree / "etc/default/grub.d/50-local.cfg"
    other.write_text('GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT module.sig_enforce=1"\n')
    before = sourced(grub, "GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT", "GRUB_DISTRIBUTOR")
    assert before[0] == 'console=ttyS0 "acpi_osi=Windows 2020" module.sig_enforce=1 dyndbg="file x.c +p" ' \
                        'module.sig-enforce=0 quiet'
    result = run_grub(grub_tree, tmp_path, {"state": "absent"}, diff=True)
    assert result.get("failed") is not True, result.get("msg")
    after = sourced(grub, "GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT", "GRUB_DISTRIBUTOR")
    assert after == ['console=ttyS0 "acpi_osi=Windows 2020" dyndbg="file x.c +p" quiet', before[1], before[2]]
    assert sourced(other, "GRUB_CMDLINE_LINUX_DEFAULT") == [""]
    assert 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX "\'dyndbg="file x.c +p"\'" quiet"  # ours\n' in grub.read_text()
    lines = linux_lines((grub_tree / "boot/grub/grub.cfg").read_text())
    assert lines and not any("sig_enforce" in line or "sig-enforce" in line for line in lines)
    assert all('"acpi_osi=Windows 2020"' in line for line in lines)


# --- 2.10: symlinked boot files are written through, the links kept ----------------------------------------

def test_symlinked_entries_and_kernel_cmdline_are_written_through(tmp_path):
    tree = bls_tree(tmp_path / "tree")
    real = tree / "srv" / "boot-config"
    real.mkdir(parents=True)
    entry = sorted((tree / "boot/loader/entries").iterdir())[0]
    shutil.move(entry, real / entry.name)
    entry.symlink_to(os.path.relpath(real / entry.name, entry.parent))           # relative
    shutil.move(tree / "etc/kernel/cmdline", real / "cmdline")
    (tree / "etc/kernel/cmdline").symlink_to("/srv/boot-config/cmdline")        # absolute: inside root_dir
    result = run_module("skm_kernel_cmdline", {"root_dir": str(tree)})
    assert result.get("failed") is not True, result["msg"]
    assert entry.is_symlink() and (tree / "etc/kernel/cmdline").is_symlink()
    assert options_of(real / entry.name) == [f"root=/dev/vda2 ro rhgb quiet {ARG}"]
    assert (real / "cmdline").read_text() == f"root=/dev/vda2 ro rhgb quiet {ARG}\n"
    assert run_module("skm_kernel_cmdline", {"root_dir": str(tree)})["changed"] is False


def test_symlink_leaving_root_dir_is_refused(tmp_path):
    tree = bls_tree(tmp_path / "tree")
    outside = tmp_path / "outside-cmdline"
    outside.write_text("root=/dev/vda2 ro\n")
    (tree / "etc/kernel/cmdline").unlink()
    (tree / "etc/kernel/cmdline").symlink_to(os.path.relpath(outside, tree / "etc/kernel"))
    result = run_module("skm_kernel_cmdline", {"root_dir": str(tree)})
    assert result.get("failed") is True and "outside" in result["msg"]
    assert outside.read_text() == "root=/dev/vda2 ro\n"


@needs_root
def test_symlinked_default_grub_and_dropin_are_written_through(grub_tree, tmp_path):
    managed = grub_tree / "etc/default/managed"
    managed.mkdir()
    grub = grub_tree / "etc/default/grub"
    (managed / "grub").write_text(grub.read_text().replace('GRUB_CMDLINE_LINUX=""', f'GRUB_CMDLINE_LINUX="{ARG}"'))
    grub.unlink()
    grub.symlink_to("managed/grub")
    (managed / "60.cfg").write_text("# placeholder kept by a config tool\n")
    (grub_tree / DROPIN).symlink_to("../managed/60.cfg")
    result = run_grub(grub_tree, tmp_path, {})
    assert result.get("failed") is not True, result.get("msg")
    assert (grub_tree / DROPIN).is_symlink() and sourced(managed / "60.cfg", "GRUB_CMDLINE_LINUX") == [f" {ARG}"]
    result = run_grub(grub_tree, tmp_path, {"state": "absent"})
    assert result.get("failed") is not True, result.get("msg")
    assert grub.is_symlink() and sourced(managed / "grub", "GRUB_CMDLINE_LINUX") == [""]
    assert not any("sig_enforce" in line for line in linux_lines((grub_tree / "boot/grub/grub.cfg").read_text()))
