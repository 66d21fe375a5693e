"""skm_kernel_cmdline and skm_enforce_gate against real bootloader tools and Debian's real kernel.

Bootloader tools run unmodified in a private mount namespace where a prepared tree is
bind-mounted over /boot, /etc/default, /etc/kernel (see tests/roles/enforce/trees.py):
- GRUB: Debian's grub2-common update-grub / grub-mkconfig (10_linux) writes grub.cfg;
- grubby: Fedora's own grubby (grubby-bls script from Fedora's package, from ../shared/tools/grubby or
  $SKM_GRUBBY; Debian has none; the grubby cases skip, saying so, without it);
- systemd-boot: entries as kernel-install writes them, checked with bootctl when installed.
Each case runs like community.crypto's targets: check mode, for real, check again, real again.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.lib.ansible_run import run_module
from tests.roles.enforce import trees
from tests.roles.enforce.trees import ARG

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")


def _linux_lines(cfg: str) -> list[str]:
    return [line for line in cfg.splitlines() if line.strip().startswith("linux")]


def _four_runs(run, expect_command: bool):
    """check (changed), real (changed), check (unchanged), real (unchanged); the real result."""
    first = run(check=True, diff=True)
    assert first.get("failed") is not True, first.get("msg")
    assert first["changed"] is True
    assert bool(first["command"]) is expect_command
    real = run(check=False, diff=True)
    assert real.get("failed") is not True, real.get("msg")
    assert real["changed"] is True
    again = run(check=True, diff=False)
    assert again["changed"] is False, again
    last = run(check=False, diff=False)
    assert last["changed"] is False and last["command"] == []
    return real


# ------------------------------------------------------------------ GRUB --

@pytest.fixture()
def grub_tree(tmp_path, debian_kernel):
    if not trees.have("update-grub", "grub-mkconfig", "grub-probe"):
        pytest.skip("grub2-common/grub-common not installed (scripts/apt-packages.txt)")
    return trees.debian_grub_tree(tmp_path / "tree", debian_kernel)


def _grub_binds(tree):
    return {tree / "boot": "/boot", tree / "etc" / "default": "/etc/default"}


def test_grub_update_grub_puts_argument_on_every_linux_line_and_changes_nothing_else(grub_tree, tmp_path):
    binds = _grub_binds(grub_tree)
    baseline = trees.in_namespace(binds, ["update-grub"])
    assert baseline.returncode == 0, baseline.stderr
    before = (grub_tree / "boot/grub/grub.cfg").read_text()
    assert len(_linux_lines(before)) >= 4          # two kernels, normal + recovery each
    assert ARG not in before

    def run(check, diff):
        return trees.run_module_in(binds, "skm_kernel_cmdline", {"argument": ARG}, check=check, diff=diff,
                                   tmp=tmp_path)
    check_first = run(True, True)
    assert check_first["bootloader"] == "grub" and check_first["command"] == ["update-grub"]
    assert (grub_tree / "boot/grub/grub.cfg").read_text() == before        # check mode ran nothing
    assert not (grub_tree / "etc/default/grub.d/60-skm-modsign.cfg").exists()
    real = _four_runs(run, expect_command=True)
    assert real["files"] == ["/etc/default/grub.d/60-skm-modsign.cfg"]

    after = (grub_tree / "boot/grub/grub.cfg").read_text()
    old_lines, new_lines = before.splitlines(), after.splitlines()
    assert len(old_lines) == len(new_lines)
    for old, new in zip(old_lines, new_lines):
        if new.strip().startswith("linux"):
            assert new.split().count(ARG) == 1, new
            assert [a for a in new.split() if a != ARG] == old.split()
        else:
            assert new == old
    # grub-mkconfig read our drop-in the way it reads every drop-in: GRUB_CMDLINE_LINUX as it sources it
    sourced = subprocess.run(["bash", "-c", f". {grub_tree}/etc/default/grub; for f in {grub_tree}/etc/default/grub.d/*.cfg;"
                              " do . $f; done; echo \"$GRUB_CMDLINE_LINUX\""], capture_output=True, text=True, check=True)
    assert sourced.stdout.split() == [ARG]

    # absent: drop-in gone, grub.cfg back to the baseline byte for byte
    removed = trees.run_module_in(binds, "skm_kernel_cmdline", {"argument": ARG, "state": "absent"}, tmp=tmp_path)
    assert removed["changed"] is True, removed.get("msg")
    assert not (grub_tree / "etc/default/grub.d/60-skm-modsign.cfg").exists()
    assert (grub_tree / "boot/grub/grub.cfg").read_text() == before


def test_grub_stale_grub_cfg_is_regenerated_and_user_settings_are_kept(grub_tree, tmp_path):
    """The drop-in is right but grub.cfg was never regenerated: not every entry has it, so update-grub runs.
    A user's own GRUB_CMDLINE_LINUX (with a conflicting value) is kept; ours comes last and wins."""
    default = grub_tree / "etc/default/grub"
    default.write_text(default.read_text().replace('GRUB_CMDLINE_LINUX=""',
                                                   'GRUB_CMDLINE_LINUX="console=ttyS0 module.sig_enforce=0"'))
    (grub_tree / "etc/default/grub.d/60-skm-modsign.cfg").write_text(
        "# Managed by skm.modsign (enforce role): kernel module signature enforcement.\n"
        f'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX {ARG}"\n')
    binds = _grub_binds(grub_tree)
    result = trees.run_module_in(binds, "skm_kernel_cmdline", {}, tmp=tmp_path)
    assert result["changed"] is True and result["files"] == [] and result["command"] == ["update-grub"]
    cfg = (grub_tree / "boot/grub/grub.cfg").read_text()
    for line in _linux_lines(cfg):
        args = line.split()
        assert "console=ttyS0" in args and args.index(ARG) > args.index("module.sig_enforce=0")
    assert all(e["satisfied"] for e in result["entries"]) and len(result["entries"]) >= 4


def test_grub_failing_update_grub_fails_the_task(grub_tree, tmp_path):
    (grub_tree / "etc/default/grub").write_text('GRUB_CMDLINE_LINUX="unterminated\n')
    result = trees.run_module_in(_grub_binds(grub_tree), "skm_kernel_cmdline", {}, tmp=tmp_path)
    assert result.get("failed") is True
    assert "update-grub failed" in result["msg"]


# ---------------------------------------------------------------- grubby --

@pytest.fixture()
def grubby(tmp_path):
    script, why = trees.grubby_source()
    if script is None:
        pytest.skip(f"needs {why}; Debian packages no grubby")
    if not trees.have("grub-editenv"):
        pytest.skip("needs grub-editenv (grub-common) for grubby's grubenv")
    return trees.fedora_grubby(tmp_path / "tools", script)


@pytest.mark.parametrize("kernelopts", [False, pytest.param(True, marks=pytest.mark.skipif(
    not os.environ.get("SKM_SLOW"), reason="slow: make test-enforce"))], ids=["options", "kernelopts-in-grubenv"])
def test_grubby_updates_every_bls_entry(grubby, tmp_path, kernelopts):
    tree = trees.grubby_tree(tmp_path / "tree", kernelopts=kernelopts)
    binds = {tree / "boot": "/boot", tree / "etc" / "default": "/etc/default", tree / "etc" / "kernel": "/etc/kernel"}
    entries_before = {p.name: p.read_text() for p in (tree / "boot/loader/entries").iterdir()}

    def run(check, diff):
        return trees.run_module_in(binds, "skm_kernel_cmdline", {"bootloader": "grubby"}, check=check, diff=diff,
                                   path_prefix=str(grubby), tmp=tmp_path)
    check_first = run(True, True)
    assert check_first["command"] == ["grubby", "--update-kernel=ALL", f"--args={ARG}"]
    assert {p.name: p.read_text() for p in (tree / "boot/loader/entries").iterdir()} == entries_before
    _four_runs(run, expect_command=True)

    # what GRUB will boot: expand $kernelopts from grubenv exactly as grub-editenv lists it
    env = dict(line.split("=", 1) for line in subprocess.run(
        ["grub-editenv", str(tree / "boot/grub2/grubenv"), "list"], capture_output=True, text=True, check=True).stdout.splitlines())
    for name, old in entries_before.items():
        new = (tree / "boot/loader/entries" / name).read_text()
        if kernelopts:
            assert new == old                                   # grubby edits kernelopts, not the entry
            assert env["kernelopts"].split()[-1] == ARG
        else:
            assert [line for line in new.splitlines() if not line.startswith("options")] == \
                   [line for line in old.splitlines() if not line.startswith("options")]
            assert new.splitlines()[4].split()[1:] == old.splitlines()[4].split()[1:] + [ARG]
    assert (tree / "etc/kernel/cmdline").read_text().split()[-1] == ARG      # future kernels too
    assert f"{ARG}" in (tree / "etc/default/grub").read_text()

    removed = trees.run_module_in(binds, "skm_kernel_cmdline", {"bootloader": "grubby", "state": "absent"},
                                  path_prefix=str(grubby), tmp=tmp_path)
    assert removed["changed"] is True and removed["command"][-1] == "--remove-args=module.sig_enforce"
    assert {p.name: p.read_text() for p in (tree / "boot/loader/entries").iterdir()} == entries_before


# ---------------------------------------------------------- systemd-boot --

def test_systemd_boot_every_entry_and_kernel_cmdline(tmp_path):
    tree = trees.systemd_boot_tree(tmp_path / "tree")
    (tree / "etc/kernel").mkdir(parents=True)
    entries = tree / "efi/loader/entries"
    before = {p.name: p.read_text() for p in entries.iterdir()}

    def run(check, diff):
        return run_module("skm_kernel_cmdline", {"root_dir": str(tree)}, check=check, diff=diff)
    first = run(True, True)
    assert first["bootloader"] == "systemd_boot"
    assert sorted(first["files"]) == sorted([f"/efi/loader/entries/{n}" for n in before] + ["/etc/kernel/cmdline"])
    assert {p.name: p.read_text() for p in entries.iterdir()} == before and not (tree / "etc/kernel/cmdline").exists()
    _four_runs(run, expect_command=False)
    for name, old in before.items():
        new = (entries / name).read_text()
        assert new == old.replace("ro quiet\n", f"ro quiet {ARG}\n")
    # started from the newest entry, not from the argument alone
    assert (tree / "etc/kernel/cmdline").read_text() == \
        f"root=UUID=0f8e1c2a-55aa-4d1c-9a4e-0c1f2b3c4d5e ro quiet {ARG}\n"
    if shutil.which("bootctl"):
        listed = subprocess.run(["bootctl", f"--esp-path={tree / 'efi'}", "--no-pager", "list"],
                                capture_output=True, text=True, env={**os.environ, "SYSTEMD_RELAX_ESP_CHECKS": "1"}, check=False)
        options = [line for line in listed.stdout.splitlines() if "options:" in line]
        assert len(options) == len(before) and all(ARG in line for line in options), listed.stdout + listed.stderr


def test_systemd_boot_one_entry_missing_is_not_present(tmp_path):
    tree = trees.systemd_boot_tree(tmp_path / "tree", versions=("6.1.0-55-amd64", "6.1.0-56-amd64", "6.1.0-57-amd64"))
    (tree / "etc/kernel").mkdir(parents=True)
    (tree / "etc/kernel/cmdline").write_text(f"root=/dev/vda1 ro {ARG}\n")
    entries = sorted((tree / "efi/loader/entries").iterdir())
    for entry in entries[:2]:
        entry.write_text(entry.read_text().replace("ro quiet", f"ro quiet {ARG}"))
    result = run_module("skm_kernel_cmdline", {"root_dir": str(tree)}, check=True)
    assert result["changed"] is True and result["files"] == [f"/efi/loader/entries/{entries[2].name}"]


def test_kernel_install_uki_writes_cmdline_that_kernel_install_reads(tmp_path):
    tree = tmp_path / "tree"
    (tree / "etc/kernel").mkdir(parents=True)
    (tree / "etc/kernel/install.conf").write_text("layout=uki\n")
    (tree / "etc/kernel/cmdline").write_text("root=/dev/vda2 rw quiet\n")
    result = run_module("skm_kernel_cmdline", {"root_dir": str(tree)})
    assert result["bootloader"] == "kernel_install" and result["changed"] is True
    assert (tree / "etc/kernel/cmdline").read_text() == f"root=/dev/vda2 rw quiet {ARG}\n"
    assert any("unified kernel image" in n for n in result["notes"])
    # the oracle: systemd's kernel-install writes the next kernel's entry from that file
    if shutil.which("kernel-install"):
        conf = tmp_path / "conf"
        conf.mkdir()
        shutil.copy(tree / "etc/kernel/cmdline", conf / "cmdline")
        (conf / "install.conf").write_text("layout=bls\n")        # type #1 entry: readable without ukify
        boot = tmp_path / "esp"
        (boot / "loader/entries").mkdir(parents=True)
        (boot / trees.MACHINE_ID).mkdir()
        kernel = tmp_path / "vmlinuz"
        kernel.write_bytes(b"MZ")
        env = {**os.environ, "KERNEL_INSTALL_CONF_ROOT": str(conf), "BOOT_ROOT": str(boot),
               "KERNEL_INSTALL_MACHINE_ID": trees.MACHINE_ID,
               "KERNEL_INSTALL_PLUGINS": "/usr/lib/kernel/install.d/90-loaderentry.install"}
        proc = subprocess.run(["kernel-install", "add", "6.1.0-99-amd64", str(kernel)], env=env,
                              capture_output=True, text=True, check=False)
        written = list((boot / "loader/entries").glob("*.conf"))
        assert proc.returncode == 0 and len(written) == 1, proc.stderr
        options = next(line for line in written[0].read_text().splitlines() if line.startswith("options"))
        assert options.split()[1:5] == ["root=/dev/vda2", "rw", "quiet", ARG]


def test_unrecognised_bootloader_is_a_clear_failure(tmp_path):
    (tmp_path / "etc").mkdir()
    result = run_module("skm_kernel_cmdline", {"root_dir": str(tmp_path)})
    assert result.get("failed") is True
    assert "no bootloader recognised" in result["msg"] and str(tmp_path) in result["msg"]
